"""Pure power law y = K * (C / C0)^b, fitted by OLS of ln y on ln(C / C0) with statsmodels.

No asymptote: the straight line on log-log axes that the saturating forms bend away from. b < 0
for a loss-like metric, b > 0 for a quality metric; b's t interval and the statsmodels summary are
kept. Errors are multiplicative (iid Gaussian in ln y), so `predict` is the fitted median
exp(k + b ln x), not the mean. C0 is the geometric mean of the observed FLOPs, which makes k the
log-metric at a typical run and nearly uncorrelated with b. `PurePower` is the form's math for
parameter rows (`analysis.curves.Form`); a new run's noise is multiplicative (drawn in ln y).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import statsmodels.api as sm
from scipy import stats

from analysis.curves import FormFit, NoiseSpace, line_fit
from analysis.dataset import ScalingData
from analysis.inputs import ArrayLike, validate_level, validate_points

Array = npt.NDArray[np.float64]


def _power(rows_SP: Array, ln_x_M: Array) -> Array:
    """The form's formula y = exp(k + b ln x), x = C / C0, for rows (k = ln K, b) [S, 2] at ln x [M] -> [S, M]."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.exp(rows_SP[:, 0:1] + rows_SP[:, 1:2] * ln_x_M[None, :])


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class PurePower:
    """y = exp(k + b ln(C / c0)) for rows (k = ln K, b) [S, 2] (`analysis.curves.Form`); no asymptote."""

    name: ClassVar[str] = "pure_power"
    label: ClassVar[str] = "pure power law in C (OLS, log-log)"
    n_params: ClassVar[int] = 2
    needs_nd: ClassVar[bool] = False
    noise_space: ClassVar[NoiseSpace] = "log"
    c0: float
    higher_is_better: bool
    description: str = ""

    def values(self, rows_SP: Array, flops_M: Array) -> Array:
        return _power(rows_SP, np.log(np.asarray(flops_M, np.float64) / self.c0))

    def slope(self, rows_SP: Array, flops_M: Array) -> Array:
        return rows_SP[:, 1:2] * self.values(rows_SP, flops_M) / np.asarray(flops_M, np.float64)[None, :]

    def flops_for(self, rows_SP: Array, target: float) -> Array:
        """Inf for a target <= 0 or where the curve does not improve with compute (b of the wrong sign)."""
        if target <= 0:
            return np.full(rows_SP.shape[0], np.inf)
        k, b = rows_SP[:, 0], rows_SP[:, 1]
        better = 1.0 if self.higher_is_better else -1.0
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = np.where(b * better > 0, self.c0 * np.exp((np.log(target) - k) / b), np.inf)
        return np.where(np.isnan(out), np.inf, out)

    def asymptote(self, point_P: Array) -> float | None:
        return None

    def predict(self, rows_SP: Array, data: ScalingData) -> Array:
        return self.values(rows_SP, data.flops)

    def in_c(self, point_P: Array, draws_SP: Array) -> tuple[PurePower, Array, Array]:
        return self, point_P, draws_SP

    @classmethod
    def fit(cls, data: ScalingData, *, n_bootstrap: int, seed: int, level: float, flops_per_nd: float) -> FormFit:
        f = fit_pure_power_law(data.flops, data.y, level=level, metric_name=data.metric)
        return line_fit(data, cls(c0=f.c0, higher_is_better=data.higher_is_better, description=f.formula), f, f.point,
                        np.log(data.flops / f.c0), n_bootstrap=n_bootstrap, seed=seed, level=level, names=("K", "b"),
                        to_param={"K": math.exp})


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

    @property
    def point(self) -> Array:
        return np.array([math.log(self.params["K"]), self.params["b"]])

    def predict(self, flops: ArrayLike | float) -> Array:
        x = _ln_x(flops, self.c0)
        return _power(self.point[None, :], x.ravel())[0].reshape(x.shape)

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
