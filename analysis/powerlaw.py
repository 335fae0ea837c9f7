"""Saturating power law of a metric in training compute, with bootstrap intervals.

Forms, with x = C / C0 and C0 the geometric mean of the observed FLOPs:
  loss-like (lower is better, e.g. NE, loss):   y = E     + A * x^(-alpha)
  quality   (higher is better, e.g. HR, NDCG):  y = y_max - A * x^(-alpha)
C0 makes A the gap to the asymptote at a typical run (O(y)) instead of O(y * 1e15^alpha), which
keeps the optimiser well conditioned; it is recorded so predictions use the same scale.

Constraints: A >= 0 (the metric moves towards its asymptote as compute grows) and
alpha in [1e-4, 5]. At alpha = 0 only E + A is identified, so the lower bound sits just above it;
above 5 the curve changes by > 1e10 over two decades, indistinguishable from a step, so larger
values carry no information. A fit that ends on either bound is flagged in `params_at_bounds`.

Fitting: `scipy.optimize.least_squares` (trf, analytic Jacobian) from a grid of starts (alphas x
asymptote offsets, A by linear least squares at each start) plus the variable-projection optimum;
the lowest cost wins. Bootstrap refits (runs resampled with replacement) use the vectorised
variable-projection solver in `analysis.varpro`, which minimises the same objective.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Hashable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.optimize import OptimizeResult, least_squares

from analysis.inputs import ArrayLike, validate_level, validate_points
from analysis.resample import group_index
from analysis.varpro import ALPHA_BOUNDS, MIN_BOOTSTRAP_FOR_INTERVALS, bootstrap_fits, profile_fit

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]
DEFAULT_START_ALPHAS = (0.05, 0.2, 0.5, 1.0, 2.0)
# Start asymptotes lie beyond the best observed value by these multiples of the observed range.
DEFAULT_START_ASYMPTOTE_GAPS = (0.02, 0.3, 1.0, 3.0)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class _Form:
    name: Literal["loss_like", "quality"]
    asymptote: str
    sign: float  # +1: y falls towards E; -1: y rises towards y_max
    template: str


_FORMS = {
    False: _Form(name="loss_like", asymptote="E", sign=1.0, template="{m} = E + A * (C / C0)^(-alpha)"),
    True: _Form(name="quality", asymptote="y_max", sign=-1.0, template="{m} = y_max - A * (C / C0)^(-alpha)"),
}


def _curves(params_P3: Array, x_M: Array, sign: float) -> Array:
    """Curves for P parameter rows (asymptote, A, alpha) at M normalised computes -> [P, M]."""
    asym, amp, alpha = params_P3[:, 0:1], params_P3[:, 1:2], params_P3[:, 2:3]
    return asym + sign * amp * np.exp(-alpha * np.log(x_M)[None, :])


def _as_flops(flops: ArrayLike | float) -> Array:
    c = np.asarray(flops, dtype=np.float64)
    if not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise ValueError("flops to predict at must be finite and positive (training FLOPs, C > 0)")
    return c


def _float_or_none(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class PowerLawFit:
    """A fitted saturating power law; parameters refer to the normalised compute C / c0."""

    form: Literal["loss_like", "quality"]
    formula: str
    higher_is_better: bool
    params: dict[str, float]  # asymptote ("E" or "y_max"), "A", "alpha"
    param_intervals: dict[str, tuple[float, float]]  # bootstrap percentile, NaN if too few
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
    n_bootstrap_degenerate: int  # skipped: fewer than 3 distinct FLOPs values in the resample
    seed: int
    bootstrap_params: Array = dataclasses.field(repr=False, compare=False)  # [B_used, 3]
    bootstrap_unit: str = "run"  # or "replicate group (config)" when fitted with groups

    @property
    def asymptote_name(self) -> str:
        return _FORMS[self.higher_is_better].asymptote

    @property
    def alpha_at_bound(self) -> bool:
        return "alpha" in self.params_at_bounds

    def _vector(self) -> Array:
        p = self.params
        return np.array([[p[self.asymptote_name], p["A"], p["alpha"]]])

    def predict(self, flops: ArrayLike | float) -> Array:
        """Fitted metric at the given training FLOPs (any shape)."""
        c = _as_flops(flops)
        sign = _FORMS[self.higher_is_better].sign
        return _curves(self._vector(), c.ravel() / self.c0, sign)[0].reshape(c.shape)

    def band(self, flops: ArrayLike | float, level: float | None = None) -> tuple[Array, Array]:
        """Pointwise bootstrap percentile band (lo, hi) of the mean curve at `level` (default: the fit's)."""
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
        return _curves(self.bootstrap_params, c / self.c0, _FORMS[self.higher_is_better].sign)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (plain floats; NaN as None); the bootstrap samples are left out."""
        return {
            "form": self.form,
            "formula": self.formula,
            "higher_is_better": self.higher_is_better,
            "params": {k: float(v) for k, v in self.params.items()},
            "param_intervals": {
                k: [_float_or_none(lo), _float_or_none(hi)] for k, (lo, hi) in self.param_intervals.items()
            },
            "level": self.level,
            "c0": self.c0,
            "n_points": self.n_points,
            "flops_range": list(self.flops_range),
            "converged": self.converged,
            "message": self.message,
            "rss": self.rss,
            "r2": self.r2,
            "params_at_bounds": list(self.params_at_bounds),
            "n_bootstrap": self.n_bootstrap,
            "n_bootstrap_used": self.n_bootstrap_used,
            "n_bootstrap_degenerate": self.n_bootstrap_degenerate,
            "seed": self.seed,
            "bootstrap_unit": self.bootstrap_unit,
        }


def _least_squares_fit(lnx: Array, y: Array, sign: float, starts: Sequence[Array]) -> tuple[OptimizeResult, int, int]:
    """Best of the multi-start fits -> (result, starts that reached its cost, starts tried)."""
    def residuals(p: Array) -> Array:
        return p[0] + sign * p[1] * np.exp(-p[2] * lnx) - y

    def jacobian(p: Array) -> Array:
        z = np.exp(-p[2] * lnx)
        return np.stack([np.ones_like(z), sign * z, -sign * p[1] * z * lnx], axis=1)

    bounds = ([-np.inf, 0.0, ALPHA_BOUNDS[0]], [np.inf, np.inf, ALPHA_BOUNDS[1]])
    results = [
        least_squares(
            residuals, x0, jac=jacobian, bounds=bounds, method="trf", x_scale="jac",
            ftol=1e-10, xtol=1e-10, gtol=1e-10, max_nfev=3000,
        )
        for x0 in starts
    ]
    best = min(results, key=lambda r: r.cost)
    agree = sum(r.cost <= best.cost * (1 + 1e-6) + 1e-15 for r in results)
    return best, agree, len(results)


def _starts(lnx: Array, y: Array, form: _Form, alphas: Sequence[float], gaps: Sequence[float]) -> list[Array]:
    span = float(np.ptp(y))
    edge = float(np.min(y)) if form.sign > 0 else float(np.max(y))
    starts = []
    for alpha in alphas:
        if not ALPHA_BOUNDS[0] <= alpha <= ALPHA_BOUNDS[1]:
            raise ValueError(f"start_alphas must lie in {ALPHA_BOUNDS}, got {alpha}")
        z = np.exp(-alpha * lnx)
        for gap in gaps:
            asym = edge - form.sign * gap * span
            amp = max(form.sign * float(np.dot(y - asym, z)) / float(np.dot(z, z)), 1e-6)
            starts.append(np.array([asym, amp, alpha]))
    return starts


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
) -> PowerLawFit:
    """Fit y against training FLOPs (one point per run; seed replicates are separate points).

    The bootstrap resamples runs with replacement `n_bootstrap` times (deterministic in `seed`),
    or, with `groups` (one key per run, e.g. the config without its seed), whole replicate groups;
    resamples with fewer than 3 distinct FLOPs values cannot constrain 3 parameters and are
    skipped and counted.
    """
    if not isinstance(higher_is_better, (bool, np.bool_)):
        raise TypeError(f"higher_is_better must be a bool, got {higher_is_better!r}")
    higher_is_better = bool(higher_is_better)
    if not isinstance(n_bootstrap, (int, np.integer)) or isinstance(n_bootstrap, bool) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be a non-negative int (e.g. 500), got {n_bootstrap!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int so the bootstrap is reproducible, got {seed!r}")
    n_bootstrap, seed = int(n_bootstrap), int(seed)
    level = validate_level(level)
    form = _FORMS[higher_is_better]
    c, v = validate_points(flops, y, min_points=4, min_distinct_flops=3, model="3-parameter saturating power law")
    c0 = float(np.exp(np.mean(np.log(c))))
    lnx = np.log(c / c0)
    # Fit in standardised units so tolerances and start offsets mean the same for NE ~ 0.8 as for HR ~ 0.03.
    mu, sd = float(np.mean(v)), float(np.std(v))
    ys = (v - mu) / sd
    n = c.size

    profile = profile_fit(lnx, ys, np.ones((1, n)), form.sign)[0]
    starts = _starts(lnx, ys, form, start_alphas, start_asymptote_gaps)
    starts.append(np.array([profile[0], max(profile[1], 1e-6), profile[2]]))
    best, agree, total = _least_squares_fit(lnx, ys, form.sign, starts)
    converged = bool(best.status > 0)
    message = f"{best.message} (status {best.status}); {agree} of {total} starts reached the best cost"
    if not converged:
        log.warning("power-law fit of %s did not converge: %s", metric_name, message)
    asym_s, amp_s, alpha = (float(p) for p in best.x)
    params = {form.asymptote: mu + sd * asym_s, "A": sd * amp_s, "alpha": alpha}
    rss_s = 2.0 * float(best.cost)

    boot, n_degenerate = bootstrap_fits(lnx, c, ys, form.sign, n_bootstrap, seed, group_index(groups, n))
    boot = boot * np.array([sd, sd, 1.0]) + np.array([mu, 0.0, 0.0])
    intervals = _percentile_intervals(boot, [form.asymptote, "A", "alpha"], level)

    at_bounds = []
    if alpha <= ALPHA_BOUNDS[0] * 1.01 or alpha >= ALPHA_BOUNDS[1] * 0.999:
        at_bounds.append("alpha")
    if amp_s <= 1e-9:
        at_bounds.append("A")
    return PowerLawFit(
        form=form.name,
        formula=form.template.format(m=metric_name) + f", C0 = {c0:.4g} FLOPs",
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
        bootstrap_unit="run" if groups is None else "replicate group (config)",
    )


def _percentile_intervals(boot: Array, names: list[str], level: float) -> dict[str, tuple[float, float]]:
    if boot.shape[0] < MIN_BOOTSTRAP_FOR_INTERVALS:
        return {k: (math.nan, math.nan) for k in names}
    q = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return {k: (float(q[0, i]), float(q[1, i])) for i, k in enumerate(names)}
