"""The Performance Law (arXiv 2412.00430): HR/NDCG in layers, embedding dimension and data quality.

The form its fitting script fits (USTC-StarTeam/Performance-Law,
`Performance_Law_Appendix_Result/performance_law_fitting.py`), one term per input, each a weight
times g(x; a) = -x^(-a) / 2 - a ln x:

    y = w_L g(L; a_L) + w_d g(d; a_d) + w_D g(D'; a_D) + b

L: attention blocks, d: embedding dimension, D' = training tokens x ApEn (the paper's data proxy
"#tokens x ApEn", `analysis.apen`). The published script fits one data set at a time, so its data
term is a constant (a free D with weight 1); here the runs differ in data, so D' is each run's
own and its term has a weight like the others. Seven parameters: the exponents (>= 0) by bounded
least squares, the weights and b by linear least squares given them (`fit`).

No intervals yet: Wald intervals from the Jacobian at the optimum were tried and checked by
simulation (100 simulated 64-run studies, nominal 90%): coverage 80-99% across the parameters at
small noise, 95-100% at seed-like noise, so they are not reported. `backtest` fits on the runs
below the top decade of training compute and predicts that decade, the test every form of
`analysis.forms` gets.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize

Array = npt.NDArray[np.float64]
PARAMS = ("w_L", "a_L", "w_d", "a_d", "w_D", "a_D", "b")
_EXPONENT_GRID = (0.05, 0.2, 0.5, 1.0, 2.0)  # each exponent's grid; the search starts from its best 3 points


def term(x: Array, weight: float, exponent: float) -> Array:
    """w g(x; a) = w (-x^(-a) / 2 - a ln x)."""
    return weight * (-0.5 * np.power(x, -exponent) - exponent * np.log(x))


def predict(params: Array, layers: Array, dim: Array, data: Array) -> Array:
    w_l, a_l, w_d, a_d, w_big_d, a_big_d, b = params
    return term(layers, w_l, a_l) + term(dim, w_d, a_d) + term(data, w_big_d, a_big_d) + b


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class PerformanceLawFit:
    params: Array  # [7] in PARAMS order
    r2: float
    residual_sd: float  # sqrt(RSS / (n - 7))
    n_runs: int
    # parameter -> why the runs cannot tell it: an input with fewer than 3 distinct values leaves
    # one contrast for its weight and exponent together (g(1; a) = -1/2 for every a, so layers in
    # {1, 2} is such a case); predictions at the runs' inputs are still determined.
    not_identified: dict[str, str] = dataclasses.field(default_factory=dict)

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
            "not_identified": dict(self.not_identified),
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


def _basis(exponents: Array, layers: Array, dim: Array, data: Array) -> Array:
    """[n, 4]: g(L; a_L), g(d; a_d), g(D'; a_D) and 1, the columns the weights and b multiply."""
    return np.column_stack([term(x, 1.0, a) for x, a in zip((layers, dim, data), exponents)] + [np.ones_like(layers)])


def fit(layers: Array, dim: Array, data: Array, y: Array) -> PerformanceLawFit:
    """Fit the form above to runs (one value of each per run); ValueError when it cannot be fitted.

    Variable projection: for given exponents the weights and b are a linear least-squares
    solution, so only the three exponents are searched (bounded trust-region least squares from
    the best points of a grid), which is fast and needs no start for the weights."""
    layers, dim, data, y = (np.asarray(v, dtype=np.float64) for v in (layers, dim, data, y))
    _check_inputs(layers, dim, data, y)

    def linear(exponents: Array) -> tuple[Array, Array]:
        basis = _basis(exponents, layers, dim, data)
        weights, *_ = np.linalg.lstsq(basis, y, rcond=None)
        return weights, basis @ weights - y

    grid = sorted(itertools.product(_EXPONENT_GRID, repeat=3), key=lambda a: float(np.sum(linear(np.array(a))[1] ** 2)))
    best = None
    for start in grid[:3]:
        with np.errstate(over="ignore", invalid="ignore"):
            result = optimize.least_squares(lambda a: linear(a)[1], np.array(start), bounds=(0.0, np.inf), method="trf",
                                            max_nfev=2000)
        if np.all(np.isfinite(result.fun)) and (best is None or result.cost < best.cost):
            best = result
    if best is None:
        raise ValueError("the Performance Law could not be fitted to these runs (no start converged)")
    weights, residual = linear(best.x)
    params = np.array([weights[0], best.x[0], weights[1], best.x[1], weights[2], best.x[2], weights[3]])
    n, p = y.shape[0], len(PARAMS)
    rss = float(np.sum(residual**2))
    total = float(np.sum((y - y.mean()) ** 2))
    not_identified = {}
    for (name, values), (w, a) in zip((("layers", layers), ("embedding dimension", dim), ("data", data)),
                                      (("w_L", "a_L"), ("w_d", "a_d"), ("w_D", "a_D"))):
        distinct = np.unique(values)
        if distinct.size < 3:
            why = (f"{name} takes {distinct.size} distinct value(s) ({', '.join(f'{v:g}' for v in distinct)}): "
                   "the runs fix one contrast of its term, not its weight and exponent apart")
            not_identified.update({w: why, a: why})
    return PerformanceLawFit(params=params, r2=1.0 - rss / total if total > 0 else float("nan"),
                             residual_sd=math.sqrt(rss / (n - p)), n_runs=n, not_identified=not_identified)


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
