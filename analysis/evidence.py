"""Does quality improve with compute over the observed range? Two tests, both required.

1. Fitted gain: the metric predicted at the largest observed compute minus at the smallest,
   signed so that positive = better, with its bootstrap percentile interval at the fit's level.
   Because A >= 0 the fitted gain can never be negative, so this interval alone is biased towards
   "improves" on flat data; it must exclude 0 (lower end > 0), not merely be positive.
2. A one-sided Spearman rank correlation between FLOPs and the metric (scipy.stats.spearmanr,
   alternative in the "better" direction), p < `test_size`. It assumes no functional form, so it
   guards against a power law that manufactured a trend from one outlying run.

The verdict is a plain-English sentence for the report; caveats (non-convergence, a parameter
on its bound, no saturation seen) are appended rather than hidden.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import stats

from analysis.inputs import ArrayLike, validate_points
from analysis.powerlaw import ALPHA_BOUNDS, MIN_BOOTSTRAP_FOR_INTERVALS, PowerLawFit


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ImprovementEvidence:
    improves: bool
    verdict: str
    metric_name: str
    level: float
    flops_min: float
    flops_max: float
    orders_of_magnitude: float
    predicted_at_min: float
    predicted_at_max: float
    gain: float  # predicted_at_max - predicted_at_min, signed so positive = better
    gain_interval: tuple[float, float]  # bootstrap percentile; NaN without enough resamples
    gain_interval_excludes_zero: bool
    spearman_rho: float
    spearman_p_one_sided: float
    test_size: float
    caveats: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["gain_interval"] = [None if not math.isfinite(v) else v for v in self.gain_interval]
        out["caveats"] = list(self.caveats)
        for key in ("spearman_rho", "spearman_p_one_sided"):
            if not math.isfinite(out[key]):
                out[key] = None
        return out


def _g(v: float) -> str:
    return f"{v:.4g}"


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
    if fit.n_bootstrap_degenerate:
        out.append(
            f"{fit.n_bootstrap_degenerate} of {fit.n_bootstrap} bootstrap resamples had < 3 distinct "
            "FLOPs values and were skipped"
        )
    return out


def assess_improvement(
    fit: PowerLawFit,
    flops: ArrayLike,
    y: ArrayLike,
    *,
    metric_name: str = "the metric",
    test_size: float = 0.05,
) -> ImprovementEvidence:
    """Decide whether the metric improves with compute; `flops`, `y` are the points `fit` used."""
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

    res = stats.spearmanr(c, v, alternative="greater" if fit.higher_is_better else "less")
    rho, p = float(res.statistic), float(res.pvalue)
    rank_ok = bool(math.isfinite(p) and p < test_size)
    improves = excludes_zero and rank_ok

    decades = math.log10(float(c.max() / c.min()))
    moves = "rises" if at_max > at_min else "falls"
    pct = round(100 * fit.level)
    gain_txt = (
        f"{pct}% interval of the gain {_g(interval[0])} to {_g(interval[1])}"
        if math.isfinite(interval[0])
        else "no bootstrap interval for the gain (too few resamples)"
    )
    # A perfectly monotone sample gives p = 0 from the t approximation; say so without false precision.
    p_txt = "p < 1e-12" if p < 1e-12 else f"p = {p:.2g}"
    rank_txt = f"Spearman rho {rho:.2f}, one-sided {p_txt}"
    if improves:
        verdict = (
            f"Quality improves with compute: {metric_name} {moves} from {_g(at_min)} to {_g(at_max)} (fitted) "
            f"over {decades:.1f} orders of magnitude of training FLOPs ({gain_txt}; {rank_txt})."
        )
    else:
        reasons = []
        if not excludes_zero:
            reasons.append(f"the {gain_txt} does not exclude 0" if math.isfinite(interval[0]) else gain_txt)
        if not rank_ok:
            reasons.append(f"the rank correlation is not significant ({rank_txt} >= {test_size:g})")
        verdict = (
            f"No evidence that quality improves with compute over this range: {metric_name} goes from "
            f"{_g(at_min)} to {_g(at_max)} (fitted) over {decades:.1f} orders of magnitude of training "
            f"FLOPs, but {' and '.join(reasons)}."
        )
    caveats = _caveats(fit)
    if caveats:
        verdict += " Caveats: " + "; ".join(caveats) + "."
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
        caveats=tuple(caveats),
    )
