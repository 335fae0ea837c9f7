"""Pure power law y = K * (C / C0)^b, fitted by OLS of ln y on ln(C / C0) with statsmodels.

No asymptote: the straight line on log-log axes that the saturating forms bend away from. b < 0
for a loss-like metric, b > 0 for a quality metric; b's t interval and the statsmodels summary are
kept. Errors are multiplicative (iid Gaussian in ln y), so `predict` is the fitted median
exp(k + b ln x), not the mean. C0 is the geometric mean of the observed FLOPs, which makes k the
log-metric at a typical run and nearly uncorrelated with b.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import statsmodels.api as sm
from scipy import stats

from analysis.inputs import ArrayLike, validate_level, validate_points

Array = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class PurePowerFit:
    formula: str
    params: dict[str, float]  # "K" (metric at C0), "b" (exponent)
    param_intervals: dict[str, tuple[float, float]]
    level: float
    c0: float
    r2_log: float  # R^2 in log space
    n_points: int
    cov: tuple[tuple[float, float], tuple[float, float]]  # covariance of (k = ln K, b)
    df_resid: float
    sigma_log: float  # residual standard deviation of ln y
    # statsmodels results, for the summary table; rendering it costs ~10 ms, so only on demand.
    ols: Any = dataclasses.field(default=None, repr=False, compare=False)
    summary_names: tuple[str, ...] = dataclasses.field(default=(), repr=False, compare=False)

    @property
    def summary_text(self) -> str:
        """statsmodels' OLS summary table."""
        if self.ols is None:
            return ""
        with warnings.catch_warnings():
            # The summary's normality tests warn below 8 (kurtosis: 20) points; the fit is still valid.
            warnings.simplefilter("ignore")
            return str(self.ols.summary(yname=self.summary_names[0], xname=list(self.summary_names[1:])))

    def predict(self, flops: ArrayLike | float) -> Array:
        x = _ln_x(flops, self.c0)
        return np.exp(math.log(self.params["K"]) + self.params["b"] * x)

    def band(self, flops: ArrayLike | float, level: float | None = None) -> tuple[Array, Array]:
        """Pointwise t band (lo, hi) of the fitted median curve."""
        lvl = validate_level(self.level if level is None else level)
        x = _ln_x(flops, self.c0)
        cov = np.asarray(self.cov)
        se = np.sqrt(np.maximum(cov[0, 0] + 2 * cov[0, 1] * x + cov[1, 1] * x**2, 0.0))
        half = stats.t.ppf((1 + lvl) / 2, self.df_resid) * se
        centre = math.log(self.params["K"]) + self.params["b"] * x
        return np.exp(centre - half), np.exp(centre + half)

    def to_dict(self) -> dict[str, Any]:
        return {
            "formula": self.formula,
            "params": dict(self.params),
            "param_intervals": {k: list(v) for k, v in self.param_intervals.items()},
            "level": self.level,
            "c0": self.c0,
            "r2_log": self.r2_log,
            "sigma_log": self.sigma_log,
            "n_points": self.n_points,
        }


def _ln_x(flops: ArrayLike | float, c0: float) -> Array:
    c = np.asarray(flops, dtype=np.float64)
    if not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise ValueError("flops to predict at must be finite and positive (training FLOPs, C > 0)")
    return np.log(c / c0)


def fit_pure_power_law(flops: ArrayLike, y: ArrayLike, *, level: float = 0.95, metric_name: str = "y") -> PurePowerFit:
    """OLS of ln y on ln(C / C0); needs >= 3 points at >= 2 distinct FLOPs and y > 0."""
    level = validate_level(level)
    c, v = validate_points(flops, y, min_points=3, min_distinct_flops=2, model="pure power law")
    if np.any(v <= 0):
        raise ValueError(
            f"the pure power law is fitted in log space and needs y > 0, but {int(np.sum(v <= 0))} "
            "value(s) are <= 0: use the log-linear or saturating form for this metric"
        )
    c0 = float(np.exp(np.mean(np.log(c))))
    design = sm.add_constant(np.log(c / c0), has_constant="add")
    res = sm.OLS(np.log(v), design).fit()
    ci = res.conf_int(alpha=1 - level)
    cov = res.cov_params()
    return PurePowerFit(
        formula=f"{metric_name} = K * (C / C0)^b, C0 = {c0:.4g} FLOPs",
        params={"K": float(math.exp(res.params[0])), "b": float(res.params[1])},
        param_intervals={"K": (float(math.exp(ci[0, 0])), float(math.exp(ci[0, 1]))), "b": (float(ci[1, 0]), float(ci[1, 1]))},
        level=level,
        c0=c0,
        r2_log=float(res.rsquared),
        n_points=int(c.size),
        cov=((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1]))),
        df_resid=float(res.df_resid),
        sigma_log=float(math.sqrt(res.scale)),
        ols=res,
        summary_names=(f"ln {metric_name}", "k = ln K (const)", "b (ln C/C0)"),
    )
