"""Saturating power law of a metric in training compute, with parametric-bootstrap intervals.

Forms, with x = C / C0 and C0 the geometric mean of the observed FLOPs:
  loss-like (lower is better, e.g. NE, loss):   y = E     + A * x^(-alpha)
  quality   (higher is better, e.g. HR, NDCG):  y = y_max - A * x^(-alpha)
C0 makes A the gap to the asymptote at a typical run (O(y)) instead of O(y * 1e15^alpha), which
keeps the optimiser well conditioned; it is recorded so predictions use the same scale.

Constraints: A >= 0 (the metric moves towards its asymptote as compute grows), alpha in
[1e-4, 5], and the asymptote inside the metric's range (`analysis.bounds`: y_max <= 1 for HR, NDCG,
MRR; E >= 0 for NE and losses). At alpha = 0 only E + A is identified, so the lower bound sits just
above it; above 5 the curve changes by > 1e10 over two decades, indistinguishable from a step.
Without the range constraint an unsaturated NDCG sweep fitted y_max = 143. A parameter that ends
on a bound is flagged in `params_at_bounds` and reported as not identified (no interval), together
with the parameters that bound makes unidentifiable (alpha -> 0 leaves only y_max - A and A alpha).

Fitting: `scipy.optimize.least_squares` (trf, analytic Jacobian) from the variable-projection
optimum (a fine global search over alpha, `analysis.varpro`) and a few other starts (alphas x
asymptote offsets, A by linear least squares at each start); the lowest cost wins. The form's
math for parameter rows (value, slope, inverse in C; `analysis.curves.Form`) is `PowerLaw`.

Intervals (`resampling="parametric"`, the default): the fitted curve plus Gaussian noise whose SD
is itself drawn from its chi-square posterior (`analysis.noise`: ddof = 3, or per config with
seed replicates), refitted with the vectorised solver in `analysis.varpro`; parameter intervals
are percentiles of the refits, and each refit carries the noise SD a new run would have with it.
Checked by simulation (tests/unit/test_analysis_coverage.py, 200 sweeps of 8 and of 16 runs over
1-3 decades): 95% parameter intervals cover 93.5-95.5%, 95% new-run intervals 93-97% mid-range and
at 10x beyond the largest run. `resampling="runs"` is the former bootstrap over runs (or replicate
groups), kept to compare: with 8 runs it skips degenerate resamples and, with resampled raw
residuals as new-run noise, its 95% new-run intervals covered 80% mid-range.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from analysis.bounds import UNBOUNDED, MetricBounds, check_in_bounds, metric_bounds
from analysis.curves import FormFit, NoiseSpace, float_or_none, percentile_intervals
from analysis.dataset import ScalingData
from analysis.inputs import ArrayLike, validate_level, validate_points
from analysis.noise import NoiseModel, estimate_noise
from analysis.resample import group_index
from analysis.varpro import (
    ALPHA_BOUNDS, MIN_BOOTSTRAP_FOR_INTERVALS, bootstrap_fits, least_squares_fit, local_starts, profile_fit,
    profile_fit_batches,
)

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]
Resampling = Literal["parametric", "runs"]
# Two local starts beside the variable-projection optimum, which already searches alpha globally
# (a 121-point grid over [1e-4, 5] then golden-section). The former 5 x 4 grid costs ~7 ms a start
# and found no lower cost on 300 simulated sweeps of varied shape, noise and span.
DEFAULT_START_ALPHAS = (0.2, 1.0)
# Start asymptotes lie beyond the best observed value by these multiples of the observed range.
DEFAULT_START_ASYMPTOTE_GAPS = (0.5,)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class PowerLaw:
    """The saturating law (`analysis.curves.Form`) for rows (asymptote, A, alpha) [S, 3]:
    y = asymptote + sign * A * (C / c0)^(-alpha), sign -1 (rising to y_max) for a quality metric.

    It is also the two-variable law's curve along its compute-optimal frontier (c0 = k there).
    """

    name: ClassVar[str] = "power_law"
    label: ClassVar[str] = "saturating power law in C"
    n_params: ClassVar[int] = 3
    needs_nd: ClassVar[bool] = False
    noise_space: ClassVar[NoiseSpace] = "metric"
    c0: float
    higher_is_better: bool
    description: str = ""

    @property
    def sign(self) -> float:
        return -1.0 if self.higher_is_better else 1.0

    @property
    def asymptote_name(self) -> str:
        return "y_max" if self.higher_is_better else "E"

    def values(self, rows_SP: Array, flops_M: Array) -> Array:
        c = np.asarray(flops_M, np.float64)[None, :]
        with np.errstate(over="ignore", invalid="ignore"):
            return rows_SP[:, 0:1] + self.sign * rows_SP[:, 1:2] * np.exp(-rows_SP[:, 2:3] * np.log(c / self.c0))

    def slope(self, rows_SP: Array, flops_M: Array) -> Array:
        c = np.asarray(flops_M, np.float64)[None, :]
        p = rows_SP
        with np.errstate(over="ignore", invalid="ignore"):
            return -self.sign * p[:, 1:2] * p[:, 2:3] * np.exp(-p[:, 2:3] * np.log(c / self.c0)) / c

    def flops_for(self, rows_SP: Array, target: float) -> Array:
        """Inf beyond the asymptote or on a flat curve (A <= 0). A target the curve already passed
        gives FLOPs below the data, which is the honest answer (any larger run reaches it)."""
        p = rows_SP
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ratio = self.sign * (target - p[:, 0]) / p[:, 1]
            out = np.where((p[:, 1] > 0) & (ratio > 0), self.c0 * np.exp(-np.log(ratio) / p[:, 2]), np.inf)
        return np.where(np.isnan(out), np.inf, out)

    def asymptote(self, point_P: Array) -> float | None:
        return float(point_P[0])

    def predict(self, rows_SP: Array, data: ScalingData) -> Array:
        return self.values(rows_SP, data.flops)

    def in_c(self, point_P: Array, draws_SP: Array) -> tuple[PowerLaw, Array, Array]:
        return self, point_P, draws_SP

    @classmethod
    def fit(cls, data: ScalingData, *, n_bootstrap: int, seed: int, level: float, flops_per_nd: float) -> FormFit:
        f = fit_saturating_power_law(data.flops, data.y, higher_is_better=data.higher_is_better,
                                     n_bootstrap=n_bootstrap, seed=seed, groups=data.groups,
                                     bounds=metric_bounds(data.metric), level=level, metric_name=data.metric)
        return FormFit(form=f.law, fit=f, point=f.point, draws=f.bootstrap_params,
                       residuals=data.y - f.predict(data.flops), noise=f.noise, noise_sd=f.bootstrap_noise_sd,
                       bounds=f.bounds)


def _as_flops(flops: ArrayLike | float) -> Array:
    c = np.asarray(flops, dtype=np.float64)
    if not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise ValueError("flops to predict at must be finite and positive (training FLOPs, C > 0)")
    return c


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class PowerLawFit:
    """A fitted saturating power law; parameters refer to the normalised compute C / c0."""

    form: Literal["loss_like", "quality"]
    formula: str
    higher_is_better: bool
    params: dict[str, float]  # asymptote ("E" or "y_max"), "A", "alpha"
    param_intervals: dict[str, tuple[float, float]]  # percentile; NaN if too few draws or not identified
    level: float
    c0: float
    n_points: int
    flops_range: tuple[float, float]
    converged: bool
    message: str
    rss: float
    r2: float
    params_at_bounds: tuple[str, ...]
    n_bootstrap: int  # requested resamples
    n_bootstrap_used: int
    n_bootstrap_degenerate: int  # "runs" resampling: skipped, fewer than 3 distinct FLOPs (0 for parametric)
    seed: int
    bootstrap_params: Array = dataclasses.field(repr=False, compare=False)  # [B_used, 3]
    bootstrap_unit: str = "run"  # or "replicate group (config)" when fitted with groups
    not_identified: dict[str, str] = dataclasses.field(default_factory=dict)  # parameter -> why (no interval)
    resampling: str = "parametric"
    noise: NoiseModel | None = None  # run-to-run noise behind the intervals
    # New-run noise SD paired with each bootstrap row [B_used] (`analysis.noise`).
    bootstrap_noise_sd: Array = dataclasses.field(default_factory=lambda: np.empty(0), repr=False, compare=False)
    bounds: MetricBounds = UNBOUNDED
    group_idx: npt.NDArray[np.intp] | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def law(self) -> PowerLaw:
        return PowerLaw(c0=self.c0, higher_is_better=self.higher_is_better, description=self.formula)

    @property
    def asymptote_name(self) -> str:
        return self.law.asymptote_name

    @property
    def alpha_at_bound(self) -> bool:
        return "alpha" in self.params_at_bounds

    @property
    def point(self) -> Array:
        """The fitted row (asymptote, A, alpha) [3]."""
        p = self.params
        return np.array([p[self.asymptote_name], p["A"], p["alpha"]])

    def predict(self, flops: ArrayLike | float) -> Array:
        """Fitted metric at the given training FLOPs (any shape)."""
        c = _as_flops(flops)
        return self.law.values(self.point[None, :], c.ravel())[0].reshape(c.shape)

    def band(self, flops: ArrayLike | float, level: float | None = None) -> tuple[Array, Array]:
        """Pointwise percentile band (lo, hi) of the mean curve at `level` (default: the fit's)."""
        lvl = validate_level(self.level if level is None else level)
        if self.bootstrap_params.shape[0] < MIN_BOOTSTRAP_FOR_INTERVALS:
            raise ValueError(
                f"the fit has {self.bootstrap_params.shape[0]} usable bootstrap resamples; a band "
                f"needs >= {MIN_BOOTSTRAP_FOR_INTERVALS}: refit with n_bootstrap >= 200"
            )
        c = _as_flops(flops)
        curves = self.bootstrap_curves(c.ravel())
        lo, hi = np.quantile(curves, [(1 - lvl) / 2, (1 + lvl) / 2], axis=0)
        return lo.reshape(c.shape), hi.reshape(c.shape)

    def bootstrap_curves(self, flops: ArrayLike) -> Array:
        """Each bootstrap refit evaluated at 1-D `flops` -> [n_bootstrap_used, len(flops)]."""
        c = _as_flops(flops)
        if c.ndim != 1:
            raise ValueError(f"bootstrap_curves takes 1-D flops, got shape {c.shape}")
        return self.law.values(self.bootstrap_params, c)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (plain floats; NaN as None); the bootstrap samples are left out.

        A parameter that is not identified has interval None and its reason in "not_identified".
        """
        return {
            "form": self.form,
            "formula": self.formula,
            "higher_is_better": self.higher_is_better,
            "params": {k: float(v) for k, v in self.params.items()},
            "param_intervals": {
                k: None if k in self.not_identified else [float_or_none(lo), float_or_none(hi)]
                for k, (lo, hi) in self.param_intervals.items()
            },
            "not_identified": dict(self.not_identified),
            "level": self.level,
            "c0": self.c0,
            "n_points": self.n_points,
            "flops_range": list(self.flops_range),
            "converged": self.converged,
            "message": self.message,
            "rss": self.rss,
            "r2": self.r2,
            "params_at_bounds": list(self.params_at_bounds),
            "bounds": self.bounds.to_dict(),
            "n_bootstrap": self.n_bootstrap,
            "n_bootstrap_used": self.n_bootstrap_used,
            "n_bootstrap_degenerate": self.n_bootstrap_degenerate,
            "seed": self.seed,
            "bootstrap_unit": self.bootstrap_unit,
            "resampling": self.resampling,
            "noise": None if self.noise is None else self.noise.to_dict(),
        }


def _check_options(higher_is_better: Any, n_bootstrap: Any, seed: Any, resampling: Any) -> None:
    if not isinstance(higher_is_better, (bool, np.bool_)):
        raise TypeError(f"higher_is_better must be a bool, got {higher_is_better!r}")
    if not isinstance(n_bootstrap, (int, np.integer)) or isinstance(n_bootstrap, bool) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative int (e.g. 500), got {n_bootstrap!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int so the bootstrap is reproducible, got {seed!r}")
    if resampling not in ("parametric", "runs"):
        raise ValueError(f"resampling must be 'parametric' or 'runs', got {resampling!r}")


def fit_saturating_power_law(
    flops: ArrayLike,
    y: ArrayLike,
    *,
    higher_is_better: bool,
    n_bootstrap: int = 500,
    seed: int = 0,
    level: float = 0.95,
    metric_name: str = "y",
    start_alphas: Sequence[float] = DEFAULT_START_ALPHAS,
    start_asymptote_gaps: Sequence[float] = DEFAULT_START_ASYMPTOTE_GAPS,
    groups: Sequence[Hashable] | None = None,
    bounds: MetricBounds | None = None,
    resampling: Resampling = "parametric",
) -> PowerLawFit:
    """Fit y against training FLOPs (one point per run; seed replicates are separate points).

    `bounds` (default: from `metric_name`, see `analysis.bounds`) constrains the asymptote.
    `groups` (one key per run, e.g. the config without its seed) makes the replicate group the
    unit of the noise model (parametric) or of the resampling (runs). `n_bootstrap` resamples,
    deterministic in `seed`; with "runs", resamples with fewer than 3 distinct FLOPs values cannot
    constrain 3 parameters and are skipped and counted.
    """
    _check_options(higher_is_better, n_bootstrap, seed, resampling)
    higher_is_better, n_bootstrap, seed = bool(higher_is_better), int(n_bootstrap), int(seed)
    level = validate_level(level)
    law = PowerLaw(c0=1.0, higher_is_better=higher_is_better)  # in standardised units: C / C0 and (y - mu) / sd
    c, v = validate_points(flops, y, min_points=4, min_distinct_flops=3, model="3-parameter saturating power law")
    bounds = metric_bounds(metric_name) if bounds is None else bounds
    check_in_bounds(v, bounds)
    c0 = float(np.exp(np.mean(np.log(c))))
    lnx = np.log(c / c0)
    # Fit in standardised units so tolerances and start offsets mean the same for NE ~ 0.8 as for HR ~ 0.03.
    mu, sd = float(np.mean(v)), float(np.std(v))
    ys = (v - mu) / sd
    n = c.size
    # The asymptote's range: only the side the curve approaches matters (y_max <= hi, E >= lo).
    bound_s = ((bounds.hi if law.sign < 0 else bounds.lo) - mu) / sd
    asym_bound = bound_s if math.isfinite(bound_s) else None
    asym_bounds = (-np.inf, bound_s) if law.sign < 0 else (bound_s, np.inf)

    profile = profile_fit(lnx, ys, np.ones((1, n)), law.sign, asym_bound)[0]
    starts = local_starts(lnx, ys, law.sign, start_alphas, start_asymptote_gaps, asym_bounds)
    starts.append(np.array([profile[0], max(profile[1], 1e-6), profile[2]]))
    best, agree, total = least_squares_fit(lnx, ys, law.sign, starts, asym_bounds)
    converged = bool(best.status > 0)
    message = f"{best.message} (status {best.status}); {agree} of {total} starts reached the best cost"
    if not converged:
        log.warning("power-law fit of %s did not converge: %s", metric_name, message)
    asym_s, amp_s, alpha = (float(p) for p in best.x)
    params = {law.asymptote_name: mu + sd * asym_s, "A": sd * amp_s, "alpha": alpha}
    rss_s = 2.0 * float(best.cost)
    resid_s = ys - law.values(best.x[None, :], np.exp(lnx))[0]

    gidx = group_index(groups, n)
    noise = estimate_noise(resid_s, 3, gidx)
    rng = np.random.default_rng(seed)
    n_degenerate = 0
    if resampling == "parametric":
        ystar, noise_sd = noise.resample(ys - resid_s, gidx, n_bootstrap, rng)
        boot = (profile_fit_batches(lnx, ystar, np.ones((1, n)), law.sign, asym_bound) if n_bootstrap
                else np.empty((0, 3)))
    else:
        boot, n_degenerate = bootstrap_fits(lnx, c, ys, law.sign, n_bootstrap, seed, gidx, asym_bound)
        noise_sd = noise.draw_sd(boot.shape[0], rng)[1]
    boot = boot * np.array([sd, sd, 1.0]) + np.array([mu, 0.0, 0.0])

    at_bounds = []
    if alpha <= ALPHA_BOUNDS[0] * 1.01 or alpha >= ALPHA_BOUNDS[1] * 0.999:
        at_bounds.append("alpha")
    if amp_s <= 1e-9:
        at_bounds.append("A")
    if asym_bound is not None and abs(asym_s - asym_bound) <= 1e-6:
        at_bounds.append(law.asymptote_name)
    names = [law.asymptote_name, "A", "alpha"]
    intervals = percentile_intervals(boot, names, level)
    unidentified = _not_identified(params, intervals, at_bounds, law, bounds)
    intervals = {k: (math.nan, math.nan) if k in unidentified else iv for k, iv in intervals.items()}
    return PowerLawFit(
        form="quality" if higher_is_better else "loss_like",
        formula=f"{metric_name} = {law.asymptote_name} {'-' if higher_is_better else '+'} A * (C / C0)^(-alpha), "
                f"C0 = {c0:.4g} FLOPs",
        higher_is_better=higher_is_better,
        params=params,
        param_intervals=intervals,
        level=level,
        c0=c0,
        n_points=n,
        flops_range=(float(c.min()), float(c.max())),
        converged=converged,
        message=message,
        rss=sd**2 * rss_s,
        r2=1.0 - rss_s / n,  # sum(ys^2) = n after standardising
        params_at_bounds=tuple(at_bounds),
        n_bootstrap=n_bootstrap,
        n_bootstrap_used=int(boot.shape[0]),
        n_bootstrap_degenerate=n_degenerate,
        seed=seed,
        bootstrap_params=boot,
        bootstrap_unit=noise.unit if resampling == "parametric" or gidx is None else "replicate group (config)",
        not_identified=unidentified,
        resampling=resampling,
        noise=dataclasses.replace(noise, sd_curve=sd * noise.sd_curve, sd_extra=sd * noise.sd_extra),
        bootstrap_noise_sd=sd * noise_sd,
        bounds=bounds,
        group_idx=gidx,
    )


def _not_identified(
    params: dict[str, float], intervals: dict[str, tuple[float, float]], at_bounds: list[str], law: PowerLaw,
    bounds: MetricBounds,
) -> dict[str, str]:
    """Parameters the data do not determine -> reason; they get no interval.

    An interval of a parameter at its bound would be one-sided by construction and, as a
    percentile interval, could exclude the estimate itself (alpha 0.0001 [0.0001094, 5]).
    """
    out: dict[str, str] = {}
    asym = law.asymptote_name
    if "alpha" in at_bounds and params["alpha"] < 1.0:
        why = (f"alpha is at its lower bound {ALPHA_BOUNDS[0]:g}: no saturation is visible, so only {asym} - A "
               "and A * alpha (the log-linear slope) are determined")
        out.update({asym: why, "A": why, "alpha": why})
    elif "alpha" in at_bounds:
        why = f"alpha is at its upper bound {ALPHA_BOUNDS[1]:g}: the curve is a step at the smallest runs"
        out.update({"A": why, "alpha": why})
    if "A" in at_bounds:
        why = "A = 0: the best curve is flat, so the exponent is arbitrary"
        out.update({"A": why, "alpha": why})
    if asym in at_bounds:
        edge = bounds.hi if law.sign < 0 else bounds.lo
        out.setdefault(asym, f"{asym} is at the metric's bound {edge:g} ({bounds.why}): the data show no "
                             "saturation inside the range")
    for k, (lo, hi) in intervals.items():
        if k not in out and math.isfinite(lo) and not lo <= params[k] <= hi:
            out[k] = (f"the resampled {k} interval [{lo:.4g}, {hi:.4g}] excludes the estimate {params[k]:.4g}: "
                      "the fit is too nonlinear there for an interval")
    return out
