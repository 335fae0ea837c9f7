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

Intervals come from a residual bootstrap: the fitted values plus residuals drawn with
replacement (scaled by sqrt(n / (n - 7)) for the degrees of freedom the fit used), refitted, and
the parameters' percentiles. Checked by simulation (`benchmarks/performance_law_coverage.py`,
benchmarks/results/performance_law_coverage.json): at a nominal 90%, over 100 simulated 64-run
studies at small noise, each parameter's interval held its true value in 87-93% of the studies
that got one (binomial sd 3%); the width and data terms were flagged not identified (no interval)
in 22% and 16% of them. Wald intervals from the Jacobian were tried first
and covered 80-99% (too narrow for some parameters, too wide for others), so they are not used.
A parameter that the runs cannot tell (`not_identified`) gets no interval. `backtest` fits on the
runs below the top decade of training compute and predicts that decade, the test every form of
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
    # Residual-bootstrap percentile intervals at `level` ([7] each; NaN without a bootstrap or for
    # a parameter that is not identified).
    lower: Array | None = None
    upper: Array | None = None
    level: float | None = None
    n_bootstrap: int = 0

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
            "intervals": None if self.lower is None or self.upper is None else {
                name: [num(lo), num(hi)] for name, lo, hi in zip(PARAMS, self.lower, self.upper)},
            "level": self.level, "n_bootstrap": self.n_bootstrap,
            "interval_method": "residual bootstrap, percentile",
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


def fit(layers: Array, dim: Array, data: Array, y: Array, *, n_bootstrap: int = 0, level: float = 0.95,
        seed: int = 0) -> PerformanceLawFit:
    """Fit the form above to runs (one value of each per run), with residual-bootstrap intervals
    from `n_bootstrap` refits (none when 0); ValueError when it cannot be fitted."""
    layers, dim, data, y = (np.asarray(v, dtype=np.float64) for v in (layers, dim, data, y))
    _check_inputs(layers, dim, data, y)
    point = _point_fit(layers, dim, data, y)
    if n_bootstrap <= 0:
        return point
    rng = np.random.default_rng(seed)
    fitted = point.predict(layers, dim, data)
    n = y.shape[0]
    residuals = (y - fitted) * math.sqrt(n / (n - len(PARAMS)))
    draws = []
    for _ in range(n_bootstrap):
        try:
            draws.append(_point_fit(layers, dim, data, fitted + rng.choice(residuals, size=n, replace=True)).params)
        except ValueError:
            continue  # a resample no start fits: left out (counted by n_bootstrap below)
    if not draws:
        return point
    tail = (1.0 - level) / 2
    lower, upper = np.quantile(np.array(draws), [tail, 1.0 - tail], axis=0)
    unknown = [PARAMS.index(name) for name in point.not_identified]
    lower[unknown], upper[unknown] = np.nan, np.nan
    return dataclasses.replace(point, lower=lower, upper=upper, level=level, n_bootstrap=len(draws))


def _point_fit(layers: Array, dim: Array, data: Array, y: Array) -> PerformanceLawFit:
    """The least-squares fit, by variable projection: for given exponents the weights and b are a
    linear least-squares solution, so only the three exponents are searched (bounded trust-region
    least squares from the best points of a grid), which is fast and needs no start for the weights."""
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
            continue
        # Profile check: halve and double the exponent (the weights and b refitted): if the fit is
        # as good both ways (RSS within chi2_1 95% = 3.84 residual variances), the runs cannot
        # tell it even to a factor of 2 (e.g. x^-a vanishes over their range, leaving w a ln x).
        index = PARAMS.index(a) // 2
        sigma2 = rss / (n - p) if n > p else math.inf
        worse = []
        for factor in (0.5, 2.0):
            shifted = best.x.copy()
            shifted[index] = shifted[index] * factor if shifted[index] > 0.05 else shifted[index] + 0.5 * factor
            worse.append(float(np.sum(linear(shifted)[1] ** 2)) - rss)
        if sigma2 > 0 and max(worse) < 3.84 * sigma2:
            why = (f"the runs fit as well with {a} halved or doubled (residual sum of squares within chi2_1 95% of "
                   f"the best): they fix about the product {w} x {a}, not the two apart")
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
