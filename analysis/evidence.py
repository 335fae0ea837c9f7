"""Does quality improve with compute over the observed range? Two tests, both required.

1. Fitted gain: the metric predicted at the largest observed compute minus at the smallest,
   signed so that positive = better, with its interval at the fit's level from the fit's
   (parametric) resamples. Because A >= 0 the fitted gain can never be negative, so this interval
   alone is biased towards "improves" on flat data; it must exclude 0 (lower end > 0), not merely
   be positive.
2. A one-sided Spearman rank correlation between FLOPs and the metric, in the "better" direction,
   p < `test_size`, over one point per configuration: seed replicates of a config share its
   config-level effect, so counting them as independent points (8 configs x 2 seeds as 16 runs)
   made "p < 1e-12" out of 8 configurations and, in simulation with a config-level random effect
   and no trend, called noise significant far more often than 5%. Replicates are averaged (metric
   mean, geometric-mean FLOPs) and the p-value is a permutation p over configurations: exact
   (all G! orderings) up to 8 configurations, else 20,000 seeded random permutations. Under no
   effect the configuration means are exchangeable, so the test's size is at most `test_size`;
   tests/unit/test_analysis_coverage.py measures the false-positive rate of the whole verdict.
   It assumes no functional form, so it guards against a power law that manufactured a trend
   from one outlying run.

`verdict` is one short sentence; caveats (non-convergence, a parameter on its bound, no
saturation seen) are listed once in `caveats`, for the report to show beside it.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from analysis.inputs import ArrayLike, validate_points
from analysis.powerlaw import ALPHA_BOUNDS, MIN_BOOTSTRAP_FOR_INTERVALS, PowerLawFit
from analysis.resample import group_index

Array = npt.NDArray[np.float64]
EXACT_MAX_CONFIGS = 8  # 8! = 40,320 orderings, enumerated in a few ms
N_RANDOM_PERMUTATIONS = 20_000


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ImprovementEvidence:
    improves: bool
    verdict: str  # one sentence; the caveats are separate
    metric_name: str
    level: float
    flops_min: float
    flops_max: float
    orders_of_magnitude: float
    predicted_at_min: float
    predicted_at_max: float
    gain: float  # predicted_at_max - predicted_at_min, signed so positive = better
    gain_interval: tuple[float, float]  # from the fit's resamples; NaN without enough of them
    gain_interval_excludes_zero: bool
    spearman_rho: float  # on configuration means (or runs, without replicate groups)
    spearman_p_one_sided: float  # permutation p over configurations
    test_size: float
    caveats: tuple[str, ...]
    n_rank_points: int = 0  # configurations (or runs) the rank test used
    rank_unit: str = "runs"  # "configuration means" or "runs"
    rank_test: str = ""  # e.g. "Spearman on configuration means, n=8, one-sided exact permutation p"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["gain_interval"] = [None if not math.isfinite(v) else v for v in self.gain_interval]
        out["caveats"] = list(self.caveats)
        for key in ("spearman_rho", "spearman_p_one_sided"):
            if not math.isfinite(out[key]):
                out[key] = None
        return out


def _g(v: float) -> str:
    return f"{v:.3g}"


def _caveats(fit: PowerLawFit) -> list[str]:
    out = []
    if not fit.converged:
        out.append(f"the power-law fit did not converge ({fit.message})")
    alpha = fit.params["alpha"]
    if fit.alpha_at_bound and alpha < 1.0:
        out.append(
            f"alpha = {alpha:.2g} is at its lower bound: no saturation is visible over this range, "
            f"so the asymptote {fit.asymptote_name} is not identified (the log-linear fit describes "
            "the data as well; do not extrapolate the asymptote)"
        )
    elif fit.alpha_at_bound:
        out.append(
            f"alpha = {alpha:.2g} is at its upper bound: the fit is a step driven by the smallest "
            "runs; add runs at intermediate compute"
        )
    elif fit.param_intervals["alpha"][0] <= ALPHA_BOUNDS[0] * 1.01:
        out.append(
            f"the {round(100 * fit.level)}% interval of alpha reaches its lower bound: saturation is "
            f"not resolved over this range, so the asymptote {fit.asymptote_name} is poorly "
            "determined (do not extrapolate it)"
        )
    if "A" in fit.params_at_bounds:
        out.append("A = 0: the best power law is flat")
    if fit.asymptote_name in fit.params_at_bounds:
        out.append(fit.not_identified.get(fit.asymptote_name, f"{fit.asymptote_name} is at the metric's bound"))
    if fit.n_bootstrap_degenerate:
        out.append(
            f"{fit.n_bootstrap_degenerate} of {fit.n_bootstrap} bootstrap resamples had < 3 distinct "
            "FLOPs values and were skipped"
        )
    return out


def config_means(
    flops: Array, y: Array, group_idx: npt.NDArray[np.intp] | None
) -> tuple[Array, Array]:
    """One point per replicate group: (geometric-mean FLOPs [G], mean metric [G]); runs without groups."""
    if group_idx is None:
        return flops, y
    counts = np.bincount(group_idx).astype(np.float64)
    log_c = np.bincount(group_idx, weights=np.log(flops)) / counts
    return np.exp(log_c), np.bincount(group_idx, weights=y) / counts


@functools.lru_cache(maxsize=4)
def _all_orderings(n: int) -> npt.NDArray[np.int8]:
    return np.array(list(itertools.permutations(range(n))), dtype=np.int8)


def spearman_permutation(x: Array, y: Array, *, greater: bool, seed: int = 0) -> tuple[float, float, str]:
    """One-sided Spearman rho and its permutation p -> (rho, p, method).

    For fixed ranks of x, rho is an increasing function of sum(rank_x * rank_y) (both rank
    variances are invariant under permutation), so the permutation distribution of that sum is
    the permutation distribution of rho; ties get average ranks.
    """
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return math.nan, math.nan, "undefined (constant ranks)"
    rho = float(stats.spearmanr(x, y).statistic)
    sign = 1.0 if greater else -1.0
    rxc = rx - rx.mean()
    if x.size <= EXACT_MAX_CONFIGS:
        perms = ry[_all_orderings(x.size)]
        method = "exact permutation"
    else:
        rng = np.random.default_rng(seed)
        perms = rng.permuted(np.tile(ry, (N_RANDOM_PERMUTATIONS, 1)), axis=1)
        method = f"{N_RANDOM_PERMUTATIONS} random permutations"
    null = sign * (perms @ rxc)
    observed = sign * float(ry @ rxc)
    hits = int(np.sum(null >= observed - 1e-9))
    p = hits / null.size if x.size <= EXACT_MAX_CONFIGS else (hits + 1) / (null.size + 1)
    return rho, p, method


def assess_improvement(
    fit: PowerLawFit,
    flops: ArrayLike,
    y: ArrayLike,
    *,
    metric_name: str = "the metric",
    test_size: float = 0.05,
    groups: Sequence[Hashable] | None = None,
) -> ImprovementEvidence:
    """Decide whether the metric improves with compute; `flops`, `y` are the points `fit` used.

    `groups` (one replicate-group key per run) defaults to the groups the fit was given.
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), e.g. 0.05; got {test_size}")
    c, v = validate_points(flops, y, min_points=4, min_distinct_flops=3, model="improvement test")
    if c.size != fit.n_points or not math.isclose(float(c.min()), fit.flops_range[0]) or not math.isclose(
        float(c.max()), fit.flops_range[1]
    ):
        raise ValueError(
            f"the points ({c.size} runs, FLOPs {c.min():.3g}..{c.max():.3g}) are not the ones the fit "
            f"used ({fit.n_points} runs, {fit.flops_range[0]:.3g}..{fit.flops_range[1]:.3g}): pass "
            "the same flops and y arrays to both"
        )
    better = 1.0 if fit.higher_is_better else -1.0
    ends = np.array([c.min(), c.max()])
    at_min, at_max = (float(p) for p in fit.predict(ends))
    gain = better * (at_max - at_min)
    if fit.bootstrap_params.shape[0] >= MIN_BOOTSTRAP_FOR_INTERVALS:
        ends_B2 = fit.bootstrap_curves(ends)
        gains = better * (ends_B2[:, 1] - ends_B2[:, 0])
        lo, hi = np.quantile(gains, [(1 - fit.level) / 2, (1 + fit.level) / 2])
        interval = (float(lo), float(hi))
    else:
        interval = (math.nan, math.nan)
    excludes_zero = bool(interval[0] > 0.0)

    gidx = group_index(groups, c.size) if groups is not None else fit.group_idx
    grouped = gidx is not None and int(gidx.max()) + 1 < c.size
    xm, ym = config_means(c, v, gidx if grouped else None)
    rho, p, method = spearman_permutation(xm, ym, greater=fit.higher_is_better, seed=fit.seed)
    rank_ok = bool(math.isfinite(p) and p < test_size)
    improves = excludes_zero and rank_ok
    unit = "configuration means" if grouped else "runs"
    rank_test = f"Spearman on {unit}, n={xm.size}, one-sided {method} p"

    decades = math.log10(float(c.max() / c.min()))
    pct = round(100 * fit.level)
    change = at_max - at_min
    lo_c, hi_c = sorted((better * interval[0], better * interval[1]))  # the interval in metric units
    span = f"over {decades:.1f} decades of training FLOPs"
    rank_txt = f"Spearman on {xm.size} {unit}, permutation p = {p:.2g}"
    if improves:
        verdict = (f"{metric_name} improves with compute: {change:+.3g} ({pct}% interval {_g(lo_c)} to {_g(hi_c)}) "
                   f"{span}; significant ({rank_txt}).")
    else:
        if math.isfinite(interval[0]):
            iv = f"{pct}% interval {_g(lo_c)} to {_g(hi_c)}{'' if excludes_zero else ', which includes 0'}"
        else:
            iv = "no interval: too few resamples"
        verdict = (f"The data cannot tell whether {metric_name} improves with compute: fitted change {change:+.3g} "
                   f"({iv}) {span}; {'significant' if rank_ok else 'not significant'} ({rank_txt}).")
    return ImprovementEvidence(
        improves=improves,
        verdict=verdict,
        metric_name=metric_name,
        level=fit.level,
        flops_min=float(c.min()),
        flops_max=float(c.max()),
        orders_of_magnitude=decades,
        predicted_at_min=at_min,
        predicted_at_max=at_max,
        gain=gain,
        gain_interval=interval,
        gain_interval_excludes_zero=excludes_zero,
        spearman_rho=rho,
        spearman_p_one_sided=p,
        test_size=test_size,
        caveats=tuple(_caveats(fit)),
        n_rank_points=int(xm.size),
        rank_unit=unit,
        rank_test=rank_test,
    )
