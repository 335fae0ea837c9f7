"""Log-linear fit y = a + b ln C, the form of the HSTU paper's scaling plot (arXiv 2402.17152).

Ordinary least squares via statsmodels, so intervals are the classical t intervals under iid
Gaussian errors; kept beside the power law as the paper's reference and as a check that does not
depend on a nonlinear optimiser. C is in raw FLOPs (not normalised) to match the paper; `a` is
therefore the extrapolated value at C = 1 FLOP and only `b` is meant to be read. `LogLinear` is the
form's math for parameter rows (`analysis.curves.Form`); with seed replicates its parameter
intervals come from replicate-aware parametric draws (`analysis.curves.line_fit`).
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


def _line(rows_SP: Array, ln_c_M: Array) -> Array:
    """The form's formula y = a + b ln C, for rows (a, b) [S, 2] at ln C [M] -> [S, M]."""
    return rows_SP[:, 0:1] + rows_SP[:, 1:2] * ln_c_M[None, :]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class LogLinear:
    """y = a + b ln C for rows (a, b) [S, 2] (`analysis.curves.Form`); C in raw FLOPs, no asymptote."""

    name: ClassVar[str] = "log_linear"
    label: ClassVar[str] = "log-linear in C (HSTU paper)"
    n_params: ClassVar[int] = 2
    needs_nd: ClassVar[bool] = False
    noise_space: ClassVar[NoiseSpace] = "metric"
    higher_is_better: bool
    description: str = ""

    def values(self, rows_SP: Array, flops_M: Array) -> Array:
        return _line(rows_SP, np.log(np.asarray(flops_M, np.float64)))

    def slope(self, rows_SP: Array, flops_M: Array) -> Array:
        return rows_SP[:, 1:2] / np.asarray(flops_M, np.float64)[None, :]

    def flops_for(self, rows_SP: Array, target: float) -> Array:
        """Inf where the line does not improve with compute (b of the wrong sign)."""
        a, b = rows_SP[:, 0], rows_SP[:, 1]
        better = 1.0 if self.higher_is_better else -1.0
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = np.where(b * better > 0, np.exp((target - a) / b), np.inf)
        return np.where(np.isnan(out), np.inf, out)

    def asymptote(self, point_P: Array) -> float | None:
        return None

    def predict(self, rows_SP: Array, data: ScalingData) -> Array:
        return self.values(rows_SP, data.flops)

    def in_c(self, point_P: Array, draws_SP: Array) -> tuple[LogLinear, Array, Array]:
        return self, point_P, draws_SP

    @classmethod
    def fit(cls, data: ScalingData, *, n_bootstrap: int, seed: int, level: float, flops_per_nd: float) -> FormFit:
        f = fit_log_linear(data.flops, data.y, level=level, metric_name=data.metric)
        return line_fit(data, cls(higher_is_better=data.higher_is_better, description=f.formula), f,
                        f.point, np.log(data.flops), n_bootstrap=n_bootstrap, seed=seed,
                        level=level, names=("a", "b"))


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class LogLinearFit:
    formula: str
    params: dict[str, float]  # "a", "b"
    param_intervals: dict[str, tuple[float, float]]
    level: float
    slope_p_value: float  # two-sided, H0: b = 0
    r2: float
    n_points: int
    cov: tuple[tuple[float, float], tuple[float, float]]  # covariance of (a, b)
    df_resid: float
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
    def gain_per_decade(self) -> float:
        """Change of the metric per 10x compute (b ln 10)."""
        return self.params["b"] * math.log(10.0)

    @property
    def point(self) -> Array:
        return np.array([self.params["a"], self.params["b"]])

    def predict(self, flops: ArrayLike | float) -> Array:
        lnc = _ln_flops(flops)
        return _line(self.point[None, :], lnc.ravel())[0].reshape(lnc.shape)

    def band(self, flops: ArrayLike | float, level: float | None = None) -> tuple[Array, Array]:
        """Pointwise t confidence band (lo, hi) of the mean line at `level` (default: the fit's)."""
        lvl = validate_level(self.level if level is None else level)
        lnc = _ln_flops(flops)
        cov = np.asarray(self.cov)
        var = cov[0, 0] + 2 * cov[0, 1] * lnc + cov[1, 1] * lnc**2
        half = stats.t.ppf((1 + lvl) / 2, self.df_resid) * np.sqrt(np.maximum(var, 0.0))
        mean = self.predict(flops)
        return mean - half, mean + half

    def to_dict(self) -> dict[str, Any]:
        return {
            "formula": self.formula,
            "params": dict(self.params),
            "param_intervals": {k: list(v) for k, v in self.param_intervals.items()},
            "level": self.level,
            "gain_per_decade": self.gain_per_decade,
            "slope_p_value": self.slope_p_value,
            "r2": self.r2,
            "n_points": self.n_points,
        }


def _ln_flops(flops: ArrayLike | float) -> Array:
    c = np.asarray(flops, dtype=np.float64)
    if not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise ValueError("flops to predict at must be finite and positive (training FLOPs, C > 0)")
    return np.log(c)


def fit_log_linear(flops: ArrayLike, y: ArrayLike, *, level: float = 0.95, metric_name: str = "y") -> LogLinearFit:
    """OLS of y on ln(FLOPs); needs >= 3 points (2 parameters + 1) at >= 2 distinct FLOPs."""
    level = validate_level(level)
    c, v = validate_points(flops, y, min_points=3, min_distinct_flops=2, model="log-linear fit")
    design = sm.add_constant(np.log(c), has_constant="add")
    res = sm.OLS(v, design).fit()
    ci = res.conf_int(alpha=1 - level)
    cov = res.cov_params()
    return LogLinearFit(
        formula=f"{metric_name} = a + b * ln(C)",
        params={"a": float(res.params[0]), "b": float(res.params[1])},
        param_intervals={"a": (float(ci[0, 0]), float(ci[0, 1])), "b": (float(ci[1, 0]), float(ci[1, 1]))},
        level=level,
        slope_p_value=float(res.pvalues[1]),
        r2=float(res.rsquared),
        n_points=int(c.size),
        cov=((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1]))),
        df_resid=float(res.df_resid),
        ols=res,
        summary_names=(metric_name, "a (const)", "b (ln C)"),
    )
