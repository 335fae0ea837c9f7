"""The interface every fit form implements, and the generic fitted objects built on it.

A form is defined once, in its own module: the saturating law (`analysis.powerlaw.PowerLaw`), the
HSTU paper's log-linear form (`analysis.loglinear.LogLinear`), the pure power law
(`analysis.purepower.PurePower`) and L(N, D) (`analysis.chinchilla.Chinchilla`). A `Form` says how
it is fitted with its resampled parameter rows (`fit`), what it predicts at the runs for any rows
[S, P] in its own parametrisation (`predict`), and what its curve in training FLOPs C is (`in_c`):
a one-variable form is its own `CurveInC` (value, slope and inverse in closed form, for all rows at
once); the two-variable law's is the saturating law along its compute-optimal frontier.

Generic on top, with no branch on a form's name: `FormFit` (one form fitted to runs: point and
resampled rows, residuals, noise, information criteria) and `CurveFamily` (its curve in C with the
draws and noise that forecasts need). A new run is a curve draw plus Gaussian noise whose SD is
drawn for that row (`analysis.noise`), never a resampled raw residual, whose spread ignores the
degrees of freedom the fit used; everything is clipped to the metric's range (`analysis.bounds`).

Information criteria use a Gaussian likelihood of the residuals in metric units, for every form:
AIC = n ln(RSS / n) + 2k, BIC = n ln(RSS / n) + k ln n, with k = curve parameters + 1 (the noise
variance). Only differences between forms on the same runs mean anything. The two-variable law is
fitted by a Huber loss, not least squares, so its AIC is that of its residuals, not a maximised
likelihood; it is a comparison of fit quality, not a formal test.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import numpy.typing as npt

from analysis.bounds import UNBOUNDED, MetricBounds, metric_bounds
from analysis.dataset import ScalingData
from analysis.noise import NoiseModel, estimate_noise
from analysis.resample import group_index
from analysis.varpro import MIN_BOOTSTRAP_FOR_INTERVALS

Array = npt.NDArray[np.float64]
NoiseSpace = Literal["metric", "log"]  # new-run noise added to the metric, or multiplied (ln units)


class CurveInC(Protocol):
    """The metric as a closed-form function of training FLOPs, for parameter rows [S, P]."""

    noise_space: ClassVar[NoiseSpace]
    higher_is_better: bool
    description: str  # the formula, for reports

    def values(self, rows_SP: Array, flops_M: Array) -> Array:
        """Metric for each row at each FLOPs -> [S, M]."""

    def slope(self, rows_SP: Array, flops_M: Array) -> Array:
        """d metric / d C (per FLOP) -> [S, M]."""

    def flops_for(self, rows_SP: Array, target: float) -> Array:
        """FLOPs at which each row's curve reaches `target` -> [S]; inf where it never does."""

    def asymptote(self, point_P: Array) -> float | None:
        """The value the curve approaches as C grows (None: it has none)."""


class Form(Protocol):
    """One fit form; an instance holds one fit's constants (C0, the direction, N0, D0, k)."""

    name: ClassVar[str]  # its key in `analysis.forms.FORMS` and in fit.json
    label: ClassVar[str]
    n_params: ClassVar[int]  # columns of a parameter row
    needs_nd: ClassVar[bool]  # fitted in (N, D), not in C
    noise_space: ClassVar[NoiseSpace]
    higher_is_better: bool

    @classmethod
    def fit(cls, data: ScalingData, *, n_bootstrap: int, seed: int, level: float, flops_per_nd: float) -> FormFit:
        """Fit the runs of `data`; ValueError (with the reason) when the form cannot be fitted to them."""

    def predict(self, rows_SP: Array, data: ScalingData) -> Array:
        """Metric for each row at the runs of `data` (their C, or their N and D) -> [S, M]."""

    def in_c(self, point_P: Array, draws_SP: Array) -> tuple[CurveInC, Array, Array]:
        """The curve in C that forecasts use, with the point and draws as its rows."""


def float_or_none(v: float) -> float | None:
    """A JSON-ready number: NaN and inf as None."""
    return float(v) if math.isfinite(v) else None


def new_runs(curves_SM: Array, sd_S: Array, space: NoiseSpace, bounds: MetricBounds,
             rng: np.random.Generator) -> Array:
    """One simulated new run per curve row: curve + N(0, sd) (times exp(N(0, sd)) in "log") -> [S, M], clipped."""
    z = sd_S[:, None] * rng.normal(size=curves_SM.shape)
    with np.errstate(over="ignore", invalid="ignore"):
        return bounds.clip(curves_SM * np.exp(z) if space == "log" else curves_SM + z)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class FormFit:
    """One form fitted to runs (`analysis.forms.fit_form`), as backtests, model choice and forecasts use it."""

    form: Form
    fit: Any  # the form's own result (PowerLawFit, ...): parameters, intervals, diagnostics, to_dict()
    point: Array  # [P] the fitted row
    draws: Array  # [S, P] resampled rows (parametric draws; bootstrap refits for L(N, D)); S may be 0
    residuals: Array  # [n] observed - fitted at the fitted runs, metric units
    noise: NoiseModel | None
    noise_sd: Array  # [S] new-run noise SD paired with each draw (ln units for a "log" form)
    bounds: MetricBounds = UNBOUNDED

    @property
    def name(self) -> str:
        return self.form.name

    @property
    def n_params(self) -> int:
        return self.form.n_params

    @property
    def n_points(self) -> int:
        return int(self.residuals.size)

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
        return n * math.log(max(self.rss, 1e-300) / n) + penalty * (self.n_params + 1)

    @property
    def aic(self) -> float:
        return self._ic(2.0)

    @property
    def bic(self) -> float:
        return self._ic(math.log(self.n_points))

    def predict(self, data: ScalingData) -> Array:
        return self.form.predict(self.point[None, :], data)[0]

    def draws_at(self, data: ScalingData) -> Array:
        """Resampled mean-curve draws at the runs of `data` -> [S, M] (S may be 0)."""
        return self.form.predict(self.draws, data)

    def new_run_at(self, data: ScalingData, rng: np.random.Generator) -> Array:
        """One simulated new run per draw at the runs of `data` -> [S, M], clipped to the range."""
        curves = self.draws_at(data)
        if self.noise_sd.size != curves.shape[0]:
            return np.full(curves.shape, np.nan)
        return new_runs(curves, self.noise_sd, self.form.noise_space, self.bounds, rng)

    def curve(self) -> CurveFamily:
        """The metric as a function of FLOPs (along the compute-optimal frontier for L(N, D))."""
        law, point, draws = self.form.in_c(self.point, self.draws)
        return CurveFamily(form=law, point=point, draws=draws, residuals=self.residuals, noise_sd=self.noise_sd,
                           bounds=self.bounds, n_params=self.n_params, noise=self.noise)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: what every form has, then under "fit" the form's own result without repeating it.

        The metric, its direction and its range are the study's (`analysis.study.Study.to_dict`), once.
        """
        out = {"form": self.name, "label": self.form.label, "n_params": self.n_params, "n_points": self.n_points,
               "rss": self.rss, "aic": self.aic, "bic": self.bic, "converged": self.converged,
               "message": self.message, "noise": None if self.noise is None else self.noise.to_dict()}
        own = {k: v for k, v in self.fit.to_dict().items()
               if k not in out and k not in ("metric", "higher_is_better", "bounds")}
        # The saturating law's "form" (quality or loss_like) is its direction, which the study states.
        return out | {"fit": own}


def percentile_intervals(
    rows_SP: Array, names: Sequence[str], level: float, to_param: Mapping[str, Callable[[float], float]] | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile interval of each column of the resampled rows at `level`, mapped by to_param[name]
    (default: float); NaN with fewer than `MIN_BOOTSTRAP_FOR_INTERVALS` rows."""
    if rows_SP.shape[0] < MIN_BOOTSTRAP_FOR_INTERVALS:
        return {k: (math.nan, math.nan) for k in names}
    q = np.quantile(rows_SP, [(1 - level) / 2, (1 + level) / 2], axis=0)
    maps = to_param or {}
    return {k: (maps.get(k, float)(q[0, i]), maps.get(k, float)(q[1, i])) for i, k in enumerate(names)}


def line_fit(
    data: ScalingData, form: Form, fit: Any, point: Array, x: Array, *, n_bootstrap: int, seed: int, level: float,
    names: tuple[str, str], to_param: Mapping[str, Callable[[float], float]] | None = None,
) -> FormFit:
    """`FormFit` of a straight-line OLS form: y (or ln y, for a "log" form) = p0 + p1 x.

    Parametric draws: each row is the least-squares line through fitted + noise
    (`NoiseModel.resample`), in closed form p_b = p_hat + (X'X)^-1 X' e_b. Without replicate
    groups these rows are draws from the t-based joint distribution of the two parameters, so their
    percentiles reproduce statsmodels' t intervals; with seed replicates (noise shared within a
    config, G - 2 degrees of freedom) the parameter intervals are taken from the draws instead,
    each mapped by to_param[name] (e.g. K = exp(k)).
    """
    fitted = form.predict(point[None, :], data)[0]
    yy, fitted_yy = (np.log(data.y), np.log(fitted)) if form.noise_space == "log" else (data.y, fitted)
    gidx = group_index(data.groups, data.y.size)
    noise = estimate_noise(yy - fitted_yy, form.n_params, gidx, form.noise_space)
    ystar, noise_sd = noise.resample(fitted_yy, gidx, n_bootstrap, np.random.default_rng(seed))
    draws = np.linalg.lstsq(np.column_stack([np.ones_like(x), x]), ystar.T, rcond=None)[0].T
    if noise.unit != "run" and draws.shape[0] >= MIN_BOOTSTRAP_FOR_INTERVALS:
        fit = dataclasses.replace(fit, param_intervals=percentile_intervals(draws, names, level, to_param))
    return FormFit(form=form, fit=fit, point=point, draws=draws, residuals=data.y - fitted, noise=noise,
                   noise_sd=noise_sd, bounds=metric_bounds(data.metric))


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class CurveFamily:
    """A fitted curve in C: its form's math, the point and resampled rows, and the new-run noise.

    Forecasts give both the interval of the fitted curve (the draws) and the wider interval for one
    new run (`new_run`). `noise_sd` pairs an SD with each draw; when it does not (or is empty), the
    SD is derived from the residuals with ddof = the fit's parameters and drawn per row.
    """

    form: CurveInC
    point: Array  # [P]
    draws: Array  # [S, P] (S may be 0)
    residuals: Array = dataclasses.field(default_factory=lambda: np.empty(0))  # observed - fitted, metric units
    noise_sd: Array = dataclasses.field(default_factory=lambda: np.empty(0))  # [S]
    bounds: MetricBounds = UNBOUNDED
    n_params: int = 0  # parameters the fit used (0: the curve's own P; the frontier curve's fit has 5)
    noise: NoiseModel | None = None  # the fit's noise model (replicate-aware); None: from the residuals

    @property
    def fit_params(self) -> int:
        return self.n_params or self.point.size

    @property
    def higher_is_better(self) -> bool:
        return self.form.higher_is_better

    @property
    def description(self) -> str:
        return self.form.description

    @property
    def asymptote(self) -> float | None:
        """The best value the point-estimate curve approaches (None: it has no asymptote)."""
        return self.form.asymptote(self.point)

    def values(self, rows_SP: Array, flops_M: Array) -> Array:
        return self.form.values(rows_SP, flops_M)

    def slope(self, rows_SP: Array, flops_M: Array) -> Array:
        return self.form.slope(rows_SP, flops_M)

    def flops_for(self, rows_SP: Array, target: float) -> Array:
        return self.form.flops_for(rows_SP, target)

    def new_run(self, flops_M: Array, rng: np.random.Generator) -> Array:
        """One simulated new run per draw at each FLOPs -> [S, M], clipped to the metric's range."""
        curves = self.values(self.draws, flops_M)
        sd = self.noise_sd
        if sd.size != self.draws.shape[0]:
            if self.residuals.size <= self.fit_params:
                return np.full(curves.shape, np.nan)
            sd = estimate_noise(self.residuals, self.fit_params).draw_sd(self.draws.shape[0], rng)[1]
        return new_runs(curves, sd, self.form.noise_space, self.bounds, rng)

    def in_bounds(self, flops_M: Array) -> npt.NDArray[np.bool_]:
        """Whether the point-estimate curve stays inside the metric's range at each FLOPs -> [M]."""
        return self.bounds.contains(self.values(self.point[None, :], flops_M)[0])
