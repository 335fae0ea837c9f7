"""Chinchilla's approach 2: an IsoFLOP parabola per compute budget, then N_opt ~ C^a.

Runs are grouped into budgets whose FLOPs agree within `rel_tol` (a designed IsoFLOP sweep has
equal FLOPs along each profile). In each budget with >= 3 distinct model sizes the metric (as a
loss: y, or -y for a higher-is-better metric) is fitted by a parabola in ln N; its vertex is
N_opt(C). A vertex outside the sampled sizes is an extrapolation of the parabola and is left out
of the exponent fit (and listed). Then OLS (statsmodels) of ln N_opt on ln C gives the exponent a
with its t interval; with C = k N D, D_opt = C / (k N_opt) grows as C^(1 - a). The interval is
conditional on the vertices (their own scatter is in the residuals, their fitting error is not).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import statsmodels.api as sm

from analysis.dataset import ScalingData

Array = npt.NDArray[np.float64]
DEFAULT_REL_TOL = 0.05


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class IsoFlopBudget:
    flops: float  # geometric mean of the budget's runs
    n_params: Array
    y: Array
    coeffs: tuple[float, float, float] | None  # metric-as-loss = c2 u^2 + c1 u + c0, u = ln N
    n_opt: float | None
    metric_opt: float | None
    used: bool
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"flops": self.flops, "n_runs": int(self.y.size), "n_sizes": int(np.unique(self.n_params).size),
                "n_opt": self.n_opt, "metric_opt": self.metric_opt, "used": self.used, "note": self.note}


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class IsoFlopResult:
    budgets: tuple[IsoFlopBudget, ...]
    a: float | None  # N_opt ~ C^a
    a_interval: tuple[float, float] | None
    coefficient: float | None  # N_opt = coefficient * C^a
    level: float
    rel_tol: float
    note: str
    summary_text: str = dataclasses.field(default="", repr=False, compare=False)

    @property
    def b(self) -> float | None:
        return None if self.a is None else 1.0 - self.a

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "approach 2: parabola in ln N per FLOPs budget, then OLS ln N_opt ~ ln C",
            "a": self.a,
            "a_interval": None if self.a_interval is None else list(self.a_interval),
            "b": self.b,
            "b_interval": None if self.a_interval is None else [1.0 - self.a_interval[1], 1.0 - self.a_interval[0]],
            "coefficient": self.coefficient,
            "level": self.level,
            "rel_tol": self.rel_tol,
            "note": self.note,
            "budgets": [b.to_dict() for b in self.budgets],
        }


def _bins(flops: Array, rel_tol: float) -> list[npt.NDArray[np.intp]]:
    order = np.argsort(flops, kind="stable")
    bins: list[list[int]] = []
    start = -math.inf
    for i in order:
        if math.log(flops[i]) - start > math.log1p(rel_tol):
            bins.append([])
            start = math.log(flops[i])
        bins[-1].append(int(i))
    return [np.array(b, dtype=np.intp) for b in bins]


def _budget(c: Array, n: Array, y: Array, higher_is_better: bool) -> IsoFlopBudget:
    flops = float(np.exp(np.mean(np.log(c))))
    sizes = np.unique(n).size
    if sizes < 3:
        return IsoFlopBudget(flops=flops, n_params=n, y=y, coeffs=None, n_opt=None, metric_opt=None, used=False,
                             note=f"{sizes} model size(s); a parabola needs >= 3")
    u = np.log(n)
    loss = -y if higher_is_better else y
    c2, c1, c0 = (float(v) for v in np.polyfit(u, loss, 2))
    if c2 <= 0:
        return IsoFlopBudget(flops=flops, n_params=n, y=y, coeffs=(c2, c1, c0), n_opt=None, metric_opt=None,
                             used=False, note="the parabola opens the wrong way (no interior optimum)")
    u_opt = -c1 / (2 * c2)
    best = c0 - c1 * c1 / (4 * c2)
    metric_opt = -best if higher_is_better else best
    inside = u.min() <= u_opt <= u.max()
    note = "vertex inside the sampled sizes" if inside else "vertex outside the sampled sizes (extrapolated; not used)"
    return IsoFlopBudget(flops=flops, n_params=n, y=y, coeffs=(c2, c1, c0), n_opt=float(math.exp(u_opt)),
                         metric_opt=float(metric_opt), used=bool(inside), note=note)


def fit_isoflop(data: ScalingData, *, rel_tol: float = DEFAULT_REL_TOL, level: float = 0.95) -> IsoFlopResult:
    """IsoFLOP profiles and the N_opt ~ C^a exponent; never raises for thin data (the note says why)."""
    if not 0.0 <= rel_tol < 1.0:
        raise ValueError(f"rel_tol (budget grouping tolerance) must be in [0, 1), got {rel_tol}")
    n, _ = data.require_nd("draw IsoFLOP profiles")
    budgets = tuple(
        _budget(data.flops[idx], n[idx], data.y[idx], data.higher_is_better) for idx in _bins(data.flops, rel_tol)
    )
    used = [b for b in budgets if b.used]
    empty = dict(a=None, a_interval=None, coefficient=None, level=level, rel_tol=rel_tol)
    if len(used) < 2:
        with_sizes = sum(b.coeffs is not None for b in budgets)
        return IsoFlopResult(budgets=budgets, note=(
            f"approach 2 needs >= 2 budgets with an interior optimum; found {len(used)} "
            f"({with_sizes} of {len(budgets)} budgets within {100 * rel_tol:g}% FLOPs have >= 3 model sizes). "
            "Design IsoFLOP profiles (several model sizes at one FLOPs budget) to use it"), **empty)
    x = np.log([b.flops for b in used])
    yv = np.log([b.n_opt for b in used])
    if len(used) == 2:
        a = float((yv[1] - yv[0]) / (x[1] - x[0]))
        return IsoFlopResult(budgets=budgets, a=a, a_interval=None, coefficient=float(math.exp(yv[0] - a * x[0])),
                             level=level, rel_tol=rel_tol, note="2 budgets: exponent without an interval")
    res = sm.OLS(yv, sm.add_constant(x, has_constant="add")).fit()
    ci = res.conf_int(alpha=1 - level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = str(res.summary(yname="ln N_opt", xname=["const", "a (ln C)"]))
    return IsoFlopResult(
        budgets=budgets, a=float(res.params[1]), a_interval=(float(ci[1, 0]), float(ci[1, 1])),
        coefficient=float(math.exp(res.params[0])), level=level, rel_tol=rel_tol,
        note=f"{len(used)} budgets with an interior optimum", summary_text=summary,
    )
