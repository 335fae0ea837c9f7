"""Model families compared on one set of runs: each family fitted alone, their scaling slopes compared.

"Does HSTU scale better than SASRec here, and from what compute on?" is answered with the
log-linear form of the HSTU paper, y = a + b ln C, fitted to each family's runs by OLS
(`analysis.loglinear`): a family scales better when its gain per decade of training compute,
b ln 10, is larger (smaller for a lower-is-better metric such as NE). Two families' fits are
independent, so the difference of their slopes has standard error sqrt(se_a^2 + se_b^2); it is
tested with Welch's t (Welch-Satterthwaite degrees of freedom) and its interval uses the same t
quantile (coverage checked by simulation in tests/unit/test_family_comparison.py). Only when the
difference is significant is a crossover computed: the compute at which the two lines meet,
ln C* = (a_b - a_a) / (b_a - b_b), with a percentile interval from draws of both fits' (a, b)
under their OLS covariances. The verdict sentence is built from those numbers alone, and says
so when the data cannot tell.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import stats

from analysis.loglinear import LogLinearFit, fit_log_linear

_CROSSOVER_DRAWS = 4000


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class SlopeComparison:
    """Family a's log-linear gain per decade minus family b's, on one metric."""

    family_a: str
    family_b: str
    metric: str
    higher_is_better: bool
    gain_a: float  # per decade of training FLOPs (b ln 10)
    gain_b: float
    difference: float  # gain_a - gain_b
    interval: tuple[float, float]
    level: float
    p_value: float  # two-sided Welch t, H0: equal slopes
    df: float
    flops_range: tuple[float, float]  # the compute the two families' runs span together
    crossover_flops: float | None  # where the lines meet (significant difference only)
    crossover_interval: tuple[float, float] | None

    @property
    def significant(self) -> bool:
        return self.p_value < 1.0 - self.level

    @property
    def better(self) -> str | None:
        """The family that scales better (significantly), or None."""
        if not self.significant:
            return None
        a_steeper = self.difference > 0
        return self.family_a if a_steeper == self.higher_is_better else self.family_b

    def verdict(self) -> str:
        lo, hi = self.interval
        numbers = (f"gain per decade of training FLOPs {self.family_a} {self.gain_a:+.4f}, {self.family_b} "
                   f"{self.gain_b:+.4f}, difference {self.difference:+.4f} ({self.level:.0%} interval {lo:+.4f} to "
                   f"{hi:+.4f}; Welch t on the log-linear slopes, p = {self.p_value:.2g})")
        if self.better is None:
            return (f"On {self.metric}, the data cannot tell whether {self.family_a} or {self.family_b} scales better "
                    f"with compute: {numbers}, an interval that holds 0.")
        other = self.family_b if self.better == self.family_a else self.family_a
        return f"On {self.metric}, {self.better} scales better with compute than {other}: {numbers}. {self._crossover_words()}"

    def _crossover_words(self) -> str:
        """Where the lines cross, worded from the crossover's interval (not its point alone)."""
        if self.crossover_flops is None or self.crossover_interval is None:
            return "The lines do not meet."
        lo_c, hi_c = self.flops_range
        cross, (lo_x, hi_x) = self.crossover_flops, self.crossover_interval
        assert self.better is not None
        other = self.family_b if self.better == self.family_a else self.family_a
        where = f"{cross:.2e} FLOPs ({self.level:.0%} interval {lo_x:.2e} to {hi_x:.2e})"
        studied = f"the range of compute studied ({lo_c:.2e} to {hi_c:.2e} FLOPs)"
        if hi_x <= lo_c:
            return f"Its line is ahead of {other}'s over {studied}; the lines would meet below it, at {where}."
        if lo_x >= hi_c:
            return (f"Its line is behind {other}'s over {studied} and would pass it at {where}, an extrapolation "
                    "beyond the largest run.")
        if lo_c <= lo_x and hi_x <= hi_c:
            return (f"Its line passes {other}'s at {where}, inside {studied}: behind below that compute, ahead "
                    "above it.")
        return (f"The lines cross at {where}; the data cannot place that point relative to {studied}, so "
                "whether it is ahead at the small end is not settled.")

    def to_dict(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc.update(significant=self.significant, better=self.better, verdict=self.verdict(),
                   test="Welch t on the OLS slopes of y = a + b ln C (independent fits)")
        return doc


def compare_slopes(
    family_a: str, flops_a: np.ndarray, y_a: np.ndarray, family_b: str, flops_b: np.ndarray, y_b: np.ndarray, *,
    metric: str, higher_is_better: bool, level: float = 0.95, seed: int = 0,
) -> SlopeComparison:
    """Fit y = a + b ln C to each family's runs and compare the slopes (see the module docstring)."""
    fit_a = fit_log_linear(flops_a, y_a, level=level, metric_name=metric)
    fit_b = fit_log_linear(flops_b, y_b, level=level, metric_name=metric)
    return compare_fits(family_a, fit_a, flops_a, family_b, fit_b, flops_b, metric=metric,
                        higher_is_better=higher_is_better, level=level, seed=seed)


def compare_fits(
    family_a: str, fit_a: LogLinearFit, flops_a: np.ndarray, family_b: str, fit_b: LogLinearFit, flops_b: np.ndarray,
    *, metric: str, higher_is_better: bool, level: float = 0.95, seed: int = 0,
) -> SlopeComparison:
    var_a, var_b = fit_a.cov[1][1], fit_b.cov[1][1]
    diff_b = fit_a.params["b"] - fit_b.params["b"]
    se = math.sqrt(var_a + var_b)
    if se > 0:
        df = (var_a + var_b) ** 2 / (var_a**2 / fit_a.df_resid + var_b**2 / fit_b.df_resid)
        p_value = float(2 * stats.t.sf(abs(diff_b / se), df))
    else:  # both fits exact (no residual): the slopes are known
        df, p_value = math.inf, 0.0 if diff_b != 0 else 1.0
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se if se > 0 else 0.0
    ln10 = math.log(10.0)
    studied = (min(float(np.min(flops_a)), float(np.min(flops_b))), max(float(np.max(flops_a)), float(np.max(flops_b))))
    cross, cross_interval = None, None
    if p_value < 1.0 - level:
        cross, cross_interval = _crossover(fit_a, fit_b, level=level, seed=seed)
    return SlopeComparison(
        family_a=family_a, family_b=family_b, metric=metric, higher_is_better=higher_is_better,
        gain_a=fit_a.params["b"] * ln10, gain_b=fit_b.params["b"] * ln10, difference=diff_b * ln10,
        interval=((diff_b - half) * ln10, (diff_b + half) * ln10), level=level, p_value=p_value, df=float(df),
        flops_range=studied, crossover_flops=cross, crossover_interval=cross_interval,
    )


def _crossover(fit_a: LogLinearFit, fit_b: LogLinearFit, *, level: float, seed: int) -> tuple[float, tuple[float, float]]:
    """C* where a_a + b_a ln C = a_b + b_b ln C, and a percentile interval from (a, b) draws of both fits."""
    rng = np.random.default_rng(seed)

    def draws(fit: LogLinearFit) -> np.ndarray:
        return rng.multivariate_normal([fit.params["a"], fit.params["b"]], np.array(fit.cov), size=_CROSSOVER_DRAWS)

    da, db = draws(fit_a), draws(fit_b)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ln_c = (db[:, 0] - da[:, 0]) / (da[:, 1] - db[:, 1])
    point = (fit_b.params["a"] - fit_a.params["a"]) / (fit_a.params["b"] - fit_b.params["b"])
    tail = (1.0 - level) / 2
    lo, hi = np.nanquantile(ln_c, [tail, 1.0 - tail])
    with np.errstate(over="ignore"):
        return float(np.exp(point)), (float(np.exp(lo)), float(np.exp(hi)))


def top_decade_holdout(flops: np.ndarray) -> int:
    """How many runs lie in the top decade of training compute (C >= max C / 10): a backtest's
    held-out count, fitted on the runs below (`analysis.study.StudyOptions.holdout`)."""
    return int(np.sum(np.asarray(flops, dtype=float) >= float(np.max(flops)) / 10.0))


__all__ = ["SlopeComparison", "compare_fits", "compare_slopes", "top_decade_holdout"]
