"""The range a metric can take, derived from its name in one place.

HR@K, NDCG@K, MRR (and recall/precision/MAP/AUC/accuracy) are fractions in [0, 1]; NE and losses
are positive. Fits and forecasts use the bounds so that a curve cannot promise an impossible value:
the saturating law's asymptote is constrained (y_max <= 1, E >= 0), forecast intervals are clipped
to the range, and a form whose point forecast leaves it is flagged and not chosen. A metric the
name does not identify is unbounded (nothing is clipped, nothing flagged).
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
# Names are matched case-insensitively after stripping a split prefix such as "val_" or "test/".
_FRACTION = re.compile(r"^(hr|hit_?rate|ndcg|mrr|recall|precision|map|auc|accuracy|acc)(@\d+)?$")
_POSITIVE = re.compile(r"^(ne|normalized_entropy|nll|perplexity|ppl|mse|rmse|mae|.*loss|.*entropy)$")
_PREFIX = re.compile(r"^(train|val|valid|validation|eval|test)[_/.]")


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class MetricBounds:
    lo: float  # -inf when unbounded below
    hi: float  # +inf when unbounded above
    why: str  # e.g. "ndcg@10 is a fraction in [0, 1]"

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.lo) or math.isfinite(self.hi)

    def contains(self, values: Array | float) -> npt.NDArray[np.bool_]:
        v = np.asarray(values, np.float64)
        return (v >= self.lo) & (v <= self.hi)

    def clip(self, values: Array) -> Array:
        return np.clip(values, self.lo, self.hi) if self.bounded else values

    def text(self) -> str:
        """"[0, 1]", "> 0" or "unbounded", for messages."""
        if math.isfinite(self.lo) and math.isfinite(self.hi):
            return f"[{self.lo:g}, {self.hi:g}]"
        if math.isfinite(self.lo):
            return f">= {self.lo:g}"
        if math.isfinite(self.hi):
            return f"<= {self.hi:g}"
        return "unbounded"

    def to_dict(self) -> dict[str, float | str | None]:
        return {"lo": self.lo if math.isfinite(self.lo) else None, "hi": self.hi if math.isfinite(self.hi) else None,
                "why": self.why}


UNBOUNDED = MetricBounds(lo=-math.inf, hi=math.inf, why="no known range for this metric name")


def metric_bounds(metric: str) -> MetricBounds:
    """[0, 1] for ranking fractions (hr@K, ndcg@K, mrr, ...), [0, inf) for NE and losses, else unbounded."""
    name = _PREFIX.sub("", metric.strip().lower())
    if _FRACTION.match(name):
        return MetricBounds(lo=0.0, hi=1.0, why=f"{metric} is a fraction in [0, 1]")
    if _POSITIVE.match(name):
        return MetricBounds(lo=0.0, hi=math.inf, why=f"{metric} is positive")
    return dataclasses.replace(UNBOUNDED, why=f"no known range for the metric {metric!r}")


def check_in_bounds(y: Array, bounds: MetricBounds) -> None:
    """ValueError when observed values lie outside the metric's range (percent instead of fraction?)."""
    bad = ~bounds.contains(y)
    if np.any(bad):
        raise ValueError(
            f"{int(bad.sum())} metric value(s) lie outside the metric's range {bounds.text()} ({bounds.why}), e.g. "
            f"{float(np.asarray(y)[bad][0]):.6g}: check the column (a percentage needs dividing by 100)"
        )
