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

from analysis.chinchilla import ChinchillaFit, fit_chinchilla
from analysis.curves import CurveFamily
from analysis.dataset import ScalingData
from analysis.frontier import frontier_curve
from analysis.loglinear import LogLinearFit, fit_log_linear
from analysis.powerlaw import PowerLawFit, fit_saturating_power_law
from analysis.purepower import PurePowerFit, fit_pure_power_law
from analysis.resample import group_index, group_weights

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


def _ols_bootstrap(x: Array, y: Array, w_Bn: Array) -> Array:
    """Weighted simple regressions y ~ p0 + p1 x for B weightings -> [B, 2] (closed form)."""
    sw = w_Bn.sum(1)
    mx, my = (w_Bn @ x) / sw, (w_Bn @ y) / sw
    sxx = w_Bn @ (x * x) - sw * mx * mx
    sxy = w_Bn @ (x * y) - sw * mx * my
    ok = sxx > 1e-12 * np.maximum(w_Bn @ (x * x), 1e-300)
    slope = np.where(ok, sxy / np.where(ok, sxx, 1.0), np.nan)
    rows = np.stack([my - slope * mx, slope], axis=1)
    return rows[ok]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class FormFit:
    name: FormName
    fit: PowerLawFit | LogLinearFit | PurePowerFit | ChinchillaFit
    n_points: int
    residuals: Array  # observed - fitted at the fitted runs, metric units
    draws: Array  # [S, P] bootstrap rows in the form's own parametrisation
    flops_per_nd: float
    higher_is_better: bool

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

    def curve(self) -> CurveFamily:
        """The metric as a function of FLOPs (along the compute-optimal frontier for chinchilla)."""
        fit = self.fit
        hib = self.higher_is_better
        if self.name == "chinchilla":
            return frontier_curve(fit, self.flops_per_nd, residuals=self.residuals)
        if self.name == "power_law":
            sign = -1.0 if fit.higher_is_better else 1.0
            point = np.array([fit.params[fit.asymptote_name], fit.params["A"], fit.params["alpha"]])
            return CurveFamily(kind="saturating", point=point, draws=fit.bootstrap_params, c0=fit.c0, sign=sign,
                               higher_is_better=hib, residuals=self.residuals, description=fit.formula)
        if self.name == "log_linear":
            point = np.array([fit.params["a"], fit.params["b"]])
            return CurveFamily(kind="log_linear", point=point, draws=self.draws, higher_is_better=hib,
                               residuals=self.residuals, description=fit.formula)
        point = np.array([math.log(fit.params["K"]), fit.params["b"]])
        return CurveFamily(kind="pure_power", point=point, draws=self.draws, c0=fit.c0, higher_is_better=hib,
                           residuals=self.residuals, description=fit.formula)

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
            "fit": self.fit.to_dict(),
        }


def fit_form(
    name: str, data: ScalingData, *, n_bootstrap: int = 500, seed: int = 0, level: float = 0.95,
    flops_per_nd: float = 6.0,
) -> FormFit:
    """Fit one form to the runs of `data`; ValueError (with the reason) when it cannot be fitted."""
    if name not in FORM_NAMES:
        raise ValueError(f"form must be one of {list(FORM_NAMES)}, got {name!r}")
    groups = data.groups
    kw: dict[str, Any] = {"level": level, "metric_name": data.metric}
    if name == "power_law":
        fit: Any = fit_saturating_power_law(data.flops, data.y, higher_is_better=data.higher_is_better,
                                            n_bootstrap=n_bootstrap, seed=seed, groups=groups, **kw)
        draws = fit.bootstrap_params
        fitted = fit.predict(data.flops)
    elif name == "chinchilla":
        n, d = data.require_nd("fit the two-variable law")
        fit = fit_chinchilla(n, d, data.y, higher_is_better=data.higher_is_better, n_bootstrap=n_bootstrap,
                             seed=seed, groups=groups, **kw)
        draws = fit.bootstrap_theta
        fitted = fit.predict(n, d)
    else:
        fit = (fit_log_linear if name == "log_linear" else fit_pure_power_law)(data.flops, data.y, **kw)
        x = np.log(data.flops) if name == "log_linear" else np.log(data.flops / fit.c0)
        yy = data.y if name == "log_linear" else np.log(data.y)
        w = group_weights(data.flops.size, group_index(groups, data.flops.size), n_bootstrap, np.random.default_rng(seed))
        draws = _ols_bootstrap(x, yy, w) if n_bootstrap else np.empty((0, 2))
        fitted = fit.predict(data.flops)
    return FormFit(name=name, fit=fit, n_points=int(data.y.size), residuals=data.y - fitted, draws=draws,
                   flops_per_nd=flops_per_nd, higher_is_better=data.higher_is_better)
