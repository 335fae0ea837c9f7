"""The Performance Law (arXiv 2412.00430): HR/NDCG in layers, embedding dimension and data quality.

The form its fitting script fits (USTC-StarTeam/Performance-Law,
`Performance_Law_Appendix_Result/performance_law_fitting.py`), one term per input, each a weight
times g(x; a) = -x^(-a) / 2 - a ln x:

    y = w_L g(L; a_L) + w_d g(d; a_d) + w_D g(D'; a_D) + b

L: attention blocks, d: embedding dimension, D' = training tokens x ApEn (the paper's data proxy
"#tokens x ApEn", `analysis.apen`). The published script fits one data set at a time, so its data
term is a constant (a free D with weight 1); here the runs differ in data, so D' is each run's
own and its term has a weight like the others. Seven parameters, fitted by bounded least squares
(scipy's trust-region reflective, from several starts: the exponents are >= 0, the weights free).

No intervals yet: Wald intervals from the Jacobian at the optimum were tried and checked by
simulation (100 simulated 64-run studies, nominal 90%): coverage 80-99% across the parameters at
small noise, 95-100% at seed-like noise, so they are not reported. `backtest` fits on the runs
below the top decade of training compute and predicts that decade, the test every form of
`analysis.forms` gets.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize

Array = npt.NDArray[np.float64]
PARAMS = ("w_L", "a_L", "w_d", "a_d", "w_D", "a_D", "b")
_STARTS = ((1.0, 0.5), (-1.0, 0.5), (0.1, 1.0), (-0.1, 2.0), (0.01, 0.1))  # (weight, exponent) per term


def term(x: Array, weight: float, exponent: float) -> Array:
    """w g(x; a) = w (-x^(-a) / 2 - a ln x)."""
    return weight * (-0.5 * np.power(x, -exponent) - exponent * np.log(x))


def _jacobian(params: Array, layers: Array, dim: Array, data: Array) -> Array:
    """d prediction / d params [n, 7]: dg/dw = g, d(w g)/da = w ln x (x^(-a) / 2 - 1), dy/db = 1."""
    columns = []
    for x, (weight, exponent) in zip((layers, dim, data), (params[0:2], params[2:4], params[4:6])):
        power, log_x = np.power(x, -exponent), np.log(x)
        columns += [-0.5 * power - exponent * log_x, weight * log_x * (0.5 * power - 1.0)]
    return np.column_stack([*columns, np.ones_like(layers)])


def predict(params: Array, layers: Array, dim: Array, data: Array) -> Array:
    w_l, a_l, w_d, a_d, w_big_d, a_big_d, b = params
    return term(layers, w_l, a_l) + term(dim, w_d, a_d) + term(data, w_big_d, a_big_d) + b


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class PerformanceLawFit:
    params: Array  # [7] in PARAMS order
    r2: float
    residual_sd: float  # sqrt(RSS / (n - 7))
    n_runs: int

    def predict(self, layers: Array, dim: Array, data: Array) -> Array:
        return predict(self.params, np.asarray(layers, float), np.asarray(dim, float), np.asarray(data, float))

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {
            "form": "performance_law",
            "equation": "y = w_L g(L;a_L) + w_d g(d;a_d) + w_D g(D';a_D) + b, g(x;a) = -x^-a/2 - a ln x, "
                        "D' = training tokens x ApEn",
            "params": {name: num(v) for name, v in zip(PARAMS, self.params)},
            "r2": num(self.r2), "residual_sd": num(self.residual_sd), "n_runs": self.n_runs,
        }


def _check_inputs(layers: Array, dim: Array, data: Array, y: Array) -> None:
    n = y.shape[0]
    for name, values in (("layers", layers), ("embedding dimension", dim), ("data (tokens x ApEn)", data)):
        if values.shape != (n,):
            raise ValueError(f"{name} must have one value per run ({n}), got shape {values.shape}")
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise ValueError(f"{name} must be finite and > 0 for every run")
    if not np.all(np.isfinite(y)):
        raise ValueError("the metric must be finite for every run")
    if n <= len(PARAMS):
        raise ValueError(f"the Performance Law has {len(PARAMS)} parameters; fitting it needs more runs, got {n}")


def fit(layers: Array, dim: Array, data: Array, y: Array) -> PerformanceLawFit:
    """Fit the form above to runs (one value of each per run); ValueError when it cannot be fitted."""
    layers, dim, data, y = (np.asarray(v, dtype=np.float64) for v in (layers, dim, data, y))
    _check_inputs(layers, dim, data, y)
    lower_bounds = np.array([-np.inf, 0.0, -np.inf, 0.0, -np.inf, 0.0, -np.inf])

    def residuals(p: Array) -> Array:
        return predict(p, layers, dim, data) - y

    best = None
    for (w0, a0) in _STARTS:
        start = np.array([w0, a0, w0, a0, w0, a0, float(np.mean(y))])
        with np.errstate(over="ignore", invalid="ignore"):
            result = optimize.least_squares(residuals, start, jac=lambda p: _jacobian(p, layers, dim, data),
                                            bounds=(lower_bounds, np.inf), method="trf", x_scale="jac", max_nfev=5000)
        if np.all(np.isfinite(result.fun)) and (best is None or result.cost < best.cost):
            best = result
    if best is None:
        raise ValueError("the Performance Law could not be fitted to these runs (no start converged)")
    n, p = y.shape[0], len(PARAMS)
    rss = float(np.sum(best.fun**2))
    total = float(np.sum((y - y.mean()) ** 2))
    return PerformanceLawFit(params=best.x, r2=1.0 - rss / total if total > 0 else float("nan"),
                             residual_sd=math.sqrt(rss / (n - p)), n_runs=n)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class PerformanceLawBacktest:
    n_fit: int
    n_held_out: int
    mean_relative_error: float
    max_relative_error: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def backtest(layers: Array, dim: Array, data: Array, y: Array, flops: Array) -> PerformanceLawBacktest:
    """Fit on the runs below the top decade of training compute (C < max C / 10), predict the top
    decade; the relative errors |predicted - observed| / |observed| there."""
    layers, dim, data, y, flops = (np.asarray(v, dtype=np.float64) for v in (layers, dim, data, y, flops))
    held_out = flops >= flops.max() / 10.0
    if held_out.all() or not held_out.any():
        raise ValueError("a backtest needs runs both inside and below the top decade of training FLOPs")
    fitted = fit(layers[~held_out], dim[~held_out], data[~held_out], y[~held_out])
    predicted = fitted.predict(layers[held_out], dim[held_out], data[held_out])
    relative = np.abs(predicted - y[held_out]) / np.abs(y[held_out])
    return PerformanceLawBacktest(n_fit=int((~held_out).sum()), n_held_out=int(held_out.sum()),
                                  mean_relative_error=float(relative.mean()), max_relative_error=float(relative.max()))


__all__ = ["PARAMS", "PerformanceLawBacktest", "PerformanceLawFit", "backtest", "fit", "predict", "term"]
