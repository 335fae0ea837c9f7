"""One interface over the fitted forms, so backtests, model choice and forecasts treat them alike.

Forms: "power_law" (saturating, `analysis.powerlaw`), "log_linear" (`analysis.loglinear`),
"pure_power" (`analysis.purepower`) in training FLOPs C, and "chinchilla" (`analysis.chinchilla`)
in (N, D). `fit_form` fits one to a `ScalingData` and wraps it as a `FormFit`, which predicts at
the points of any `ScalingData` (FLOPs for the one-variable forms, (N, D) for the two-variable
one), gives bootstrap curve draws there, and exposes the curve in C for forecasts.

Information criteria use a Gaussian likelihood of the residuals in metric units, for every form:
AIC = n ln(RSS / n) + 2k, BIC = n ln(RSS / n) + k ln n, with k = curve parameters + 1 (the noise
variance). Only differences between forms on the same runs mean anything. The two-variable law is
fitted by a Huber loss, not least squares, so its AIC is that of its residuals, not a maximised
likelihood; it is a comparison of fit quality, not a formal test.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from analysis.bounds import UNBOUNDED, MetricBounds, check_in_bounds, metric_bounds
from analysis.chinchilla import ChinchillaFit, fit_chinchilla
from analysis.curves import CurveFamily
from analysis.dataset import ScalingData
from analysis.frontier import frontier_curve
from analysis.loglinear import LogLinearFit, fit_log_linear
from analysis.noise import NoiseModel, estimate_noise
from analysis.powerlaw import PowerLawFit, fit_saturating_power_law
from analysis.purepower import PurePowerFit, fit_pure_power_law
from analysis.resample import group_index

Array = npt.NDArray[np.float64]
FormName = Literal["power_law", "log_linear", "pure_power", "chinchilla"]
FORM_NAMES: tuple[FormName, ...] = ("power_law", "log_linear", "pure_power", "chinchilla")
N_PARAMS = {"power_law": 3, "log_linear": 2, "pure_power": 2, "chinchilla": 5}
LABELS = {
    "power_law": "saturating power law in C",
    "log_linear": "log-linear in C (HSTU paper)",
    "pure_power": "pure power law in C (OLS, log-log)",
    "chinchilla": "L(N, D) = E + A/N^alpha + B/D^beta",
}


def _ols_draws(x: Array, y: Array, fitted: Array, noise: NoiseModel, group_idx: Any, n_draws: int,
               rng: np.random.Generator) -> tuple[Array, Array]:
    """Parametric draws of a straight-line fit y ~ p0 + p1 x -> (rows [S, 2], new-run SD [S]).

    Each row is the least-squares line through fitted + noise (`NoiseModel.resample`), in closed
    form: p_b = p_hat + (X'X)^-1 X' e_b. Without replicate groups these rows are draws from the
    t-based joint distribution of (a, b), so their percentiles reproduce the exact t intervals.
    """
    design = np.column_stack([np.ones_like(x), x])
    ystar, new_sd = noise.resample(fitted, group_idx, n_draws, rng)
    rows = np.linalg.lstsq(design, ystar.T, rcond=None)[0].T
    return rows, new_sd


def _draw_intervals(
    rows: Array, names: tuple[str, ...], level: float, transform: dict[str, Any]
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of the draws' columns, each mapped by transform[name] (default: float)."""
    q = np.quantile(rows, [(1 - level) / 2, (1 + level) / 2], axis=0)
    out = {}
    for i, k in enumerate(names):
        f = transform.get(k, float)
        out[k] = (f(q[0, i]), f(q[1, i]))
    return out


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class FormFit:
    name: FormName
    fit: PowerLawFit | LogLinearFit | PurePowerFit | ChinchillaFit
    n_points: int
    residuals: Array  # observed - fitted at the fitted runs, metric units
    draws: Array  # [S, P] resampled rows (parametric; bootstrap for chinchilla) in the form's own parametrisation
    flops_per_nd: float
    higher_is_better: bool
    noise_sd: Array = dataclasses.field(default_factory=lambda: np.empty(0))  # [S] new-run SD per draw
    noise: NoiseModel | None = None
    bounds: MetricBounds = UNBOUNDED

    @property
    def n_params(self) -> int:
        return N_PARAMS[self.name]

    @property
    def converged(self) -> bool:
        return bool(getattr(self.fit, "converged", True))

    @property
    def message(self) -> str:
        return str(getattr(self.fit, "message", "closed-form OLS"))

    @property
    def rss(self) -> float:
        return float(np.sum(self.residuals**2))

    def _ic(self, penalty: float) -> float:
        n = self.n_points
        rss = max(self.rss, 1e-300)
        return n * math.log(rss / n) + penalty * (self.n_params + 1)

    @property
    def aic(self) -> float:
        return self._ic(2.0)

    @property
    def bic(self) -> float:
        return self._ic(math.log(self.n_points))

    def predict(self, data: ScalingData) -> Array:
        if self.name == "chinchilla":
            n, d = data.require_nd("predict with the two-variable law")
            return self.fit.predict(n, d)
        return self.fit.predict(data.flops)

    def draws_at(self, data: ScalingData) -> Array:
        """Bootstrap mean-curve draws at the points of `data` -> [S, M] (S may be 0)."""
        if self.name == "chinchilla":
            n, d = data.require_nd("predict with the two-variable law")
            return self.fit.bootstrap_curves(n, d)
        if self.name == "power_law":
            return self.fit.bootstrap_curves(data.flops)
        return self.curve().values(self.draws, data.flops)

    def new_run_at(self, data: ScalingData, rng: np.random.Generator) -> Array:
        """One simulated new run per draw at the points of `data` -> [S, M], clipped to the range."""
        curves = self.draws_at(data)
        if self.noise_sd.size != curves.shape[0]:
            return np.full(curves.shape, np.nan)
        z = self.noise_sd[:, None] * rng.normal(size=curves.shape)
        return self.bounds.clip(curves * np.exp(z) if self.name == "pure_power" else curves + z)

    def curve(self) -> CurveFamily:
        """The metric as a function of FLOPs (along the compute-optimal frontier for chinchilla)."""
        fit = self.fit
        hib = self.higher_is_better
        extra: dict[str, Any] = {"noise_sd": self.noise_sd, "bounds": self.bounds, "noise": self.noise}
        if self.name == "chinchilla":
            return dataclasses.replace(frontier_curve(fit, self.flops_per_nd, residuals=self.residuals), n_params=5,
                                       **extra)
        if self.name == "power_law":
            sign = -1.0 if fit.higher_is_better else 1.0
            point = np.array([fit.params[fit.asymptote_name], fit.params["A"], fit.params["alpha"]])
            return CurveFamily(kind="saturating", point=point, draws=fit.bootstrap_params, c0=fit.c0, sign=sign,
                               higher_is_better=hib, residuals=self.residuals, description=fit.formula, **extra)
        if self.name == "log_linear":
            point = np.array([fit.params["a"], fit.params["b"]])
            return CurveFamily(kind="log_linear", point=point, draws=self.draws, higher_is_better=hib,
                               residuals=self.residuals, description=fit.formula, **extra)
        point = np.array([math.log(fit.params["K"]), fit.params["b"]])
        return CurveFamily(kind="pure_power", point=point, draws=self.draws, c0=fit.c0, higher_is_better=hib,
                           residuals=self.residuals, description=fit.formula, noise_space="log", **extra)

    def to_dict(self) -> dict[str, Any]:
        return {
            "form": self.name,
            "label": LABELS[self.name],
            "n_params": self.n_params,
            "n_points": self.n_points,
            "rss": self.rss,
            "aic": self.aic,
            "bic": self.bic,
            "converged": self.converged,
            "message": self.message,
            "n_bootstrap_draws": int(self.draws.shape[0]),
            "noise": None if self.noise is None else self.noise.to_dict(),
            "bounds": self.bounds.to_dict(),
            "fit": self.fit.to_dict(),
        }


def fit_form(
    name: str, data: ScalingData, *, n_bootstrap: int = 500, seed: int = 0, level: float = 0.95,
    flops_per_nd: float = 6.0,
) -> FormFit:
    """Fit one form to the runs of `data`; ValueError (with the reason) when it cannot be fitted.

    The metric's range (`analysis.bounds`, from `data.metric`) constrains the saturating law and
    clips every form's draws; values outside it are rejected. The one-variable forms get
    parametric draws (`analysis.noise`); the two-variable law keeps its bootstrap refits, with
    new-run noise from its residuals (ddof 5; not checked by simulation).
    """
    if name not in FORM_NAMES:
        raise ValueError(f"form must be one of {list(FORM_NAMES)}, got {name!r}")
    groups = data.groups
    bounds = metric_bounds(data.metric)
    check_in_bounds(data.y, bounds)
    gidx = group_index(groups, data.y.size)
    rng = np.random.default_rng(seed)
    kw: dict[str, Any] = {"level": level, "metric_name": data.metric}
    if name == "power_law":
        fit: Any = fit_saturating_power_law(data.flops, data.y, higher_is_better=data.higher_is_better,
                                            n_bootstrap=n_bootstrap, seed=seed, groups=groups, bounds=bounds, **kw)
        draws, noise, noise_sd = fit.bootstrap_params, fit.noise, fit.bootstrap_noise_sd
        fitted = fit.predict(data.flops)
    elif name == "chinchilla":
        n, d = data.require_nd("fit the two-variable law")
        fit = fit_chinchilla(n, d, data.y, higher_is_better=data.higher_is_better, n_bootstrap=n_bootstrap,
                             seed=seed, groups=groups, **kw)
        draws = fit.bootstrap_theta
        fitted = fit.predict(n, d)
        noise = estimate_noise(data.y - fitted, N_PARAMS[name], gidx) if data.y.size > N_PARAMS[name] else None
        noise_sd = noise.draw_sd(draws.shape[0], rng)[1] if noise is not None else np.empty(0)
    else:
        fit = (fit_log_linear if name == "log_linear" else fit_pure_power_law)(data.flops, data.y, **kw)
        x = np.log(data.flops) if name == "log_linear" else np.log(data.flops / fit.c0)
        yy = data.y if name == "log_linear" else np.log(data.y)
        fitted_y = fit.predict(data.flops)
        fitted_yy = fitted_y if name == "log_linear" else np.log(fitted_y)
        noise = estimate_noise(yy - fitted_yy, 2, gidx, "metric" if name == "log_linear" else "log")
        draws, noise_sd = _ols_draws(x, yy, fitted_yy, noise, gidx, n_bootstrap, rng)
        if noise.unit != "run" and draws.shape[0] >= 20:
            # Seed replicates: statsmodels' t intervals treat every run as independent; the draws
            # do not (noise shared within a config, G - 2 degrees of freedom).
            names = ("a", "b") if name == "log_linear" else ("K", "b")
            fit = dataclasses.replace(fit, param_intervals=_draw_intervals(draws, names, level, {"K": math.exp}))
        fitted = fitted_y
    return FormFit(name=name, fit=fit, n_points=int(data.y.size), residuals=data.y - fitted, draws=draws,
                   flops_per_nd=flops_per_nd, higher_is_better=data.higher_is_better, noise_sd=noise_sd,
                   noise=noise, bounds=bounds)
