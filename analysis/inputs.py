"""Validation of (training FLOPs, metric) points before any fit.

Every fit in `analysis` goes through `validate_points`, so a bad sweep result (a diverged run's
NaN, a missing FLOPs count, a metric key that never changed) is reported once, with the fix,
instead of surfacing as an optimiser warning or a silently flat curve.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

ArrayLike = Sequence[float] | npt.NDArray[np.floating]


def _as_1d(values: ArrayLike, name: str) -> npt.NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D sequence of numbers: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per run), got shape {arr.shape}")
    return arr


def _first_bad(mask: npt.NDArray[np.bool_]) -> str:
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(i) for i in idx[:5])
    return f"{idx.size} value(s), at index {shown}{', ...' if idx.size > 5 else ''}"


def validate_points(
    flops: ArrayLike,
    y: ArrayLike,
    *,
    min_points: int,
    min_distinct_flops: int,
    model: str,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return (flops, y) as float64 arrays, or raise ValueError naming the problem and the fix.

    `min_points` is the number of free parameters + 1 (one residual degree of freedom, so the fit
    is not an interpolation); `model` names the fitted form in messages.
    """
    c = _as_1d(flops, "flops")
    v = _as_1d(y, "y (the metric)")
    if c.shape != v.shape:
        raise ValueError(
            f"flops has {c.size} values but y has {v.size}: pass one FLOPs count and one metric "
            "value per run, in the same order"
        )
    if not np.all(np.isfinite(c)):
        raise ValueError(
            f"flops contains NaN or inf ({_first_bad(~np.isfinite(c))}); drop those runs or "
            "recompute their training FLOPs"
        )
    if not np.all(np.isfinite(v)):
        raise ValueError(
            f"y (the metric) contains NaN or inf ({_first_bad(~np.isfinite(v))}); drop diverged "
            "or unfinished runs before fitting"
        )
    if np.any(c <= 0):
        raise ValueError(
            f"flops must be positive ({_first_bad(c <= 0)} are <= 0); a power law in compute is "
            "only defined for C > 0: check the FLOPs accounting for those runs"
        )
    if c.size < min_points:
        raise ValueError(
            f"got {c.size} points; the {model} needs at least {min_points} (parameters + 1): "
            "add runs at more compute budgets"
        )
    distinct = np.unique(c).size
    if distinct < min_distinct_flops:
        raise ValueError(
            f"got {distinct} distinct flops value(s); the {model} needs at least "
            f"{min_distinct_flops} distinct compute budgets (seed replicates at one budget do not "
            "constrain the curve): add runs at other model sizes or data volumes"
        )
    scale = max(float(np.max(np.abs(v))), np.finfo(np.float64).tiny)
    if float(np.ptp(v)) <= 1e-12 * scale:
        raise ValueError(
            f"y (the metric) is constant (all values = {v[0]:.6g}); there is no trend to fit: "
            "check that the metric key is right and that the runs actually trained"
        )
    return c, v


def validate_level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95 for 95% intervals; got {level}")
    return float(level)


def validate_nd_points(
    n: ArrayLike,
    d: ArrayLike,
    y: ArrayLike,
    *,
    min_points: int,
    min_distinct: int,
    model: str,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Return (N, D, y) as float64 arrays for a two-variable law, or raise ValueError with the fix.

    N (parameters) and D (training tokens) must be finite and positive and each take at least
    `min_distinct` values: with fewer, an exponent and its amplitude cannot be told apart.
    """
    nn, dd = _as_1d(n, "N (parameters)"), _as_1d(d, "D (training tokens)")
    if nn.shape != dd.shape:
        raise ValueError(f"N has {nn.size} values but D has {dd.size}: pass one (N, D, y) triple per run")
    for name, arr in (("N (parameters)", nn), ("D (training tokens)", dd)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or inf ({_first_bad(~np.isfinite(arr))}); drop or fix those runs")
        if np.any(arr <= 0):
            raise ValueError(f"{name} must be positive ({_first_bad(arr <= 0)} are <= 0): a power law needs > 0")
    # validate_points checks y (finite, length, constant) using N as the positive "compute" column.
    _, v = validate_points(nn, y, min_points=min_points, min_distinct_flops=1, model=model)
    for name, arr in (("N (parameters)", nn), ("D (training tokens)", dd)):
        distinct = np.unique(arr).size
        if distinct < min_distinct:
            raise ValueError(
                f"{name} takes {distinct} distinct value(s); the {model} needs at least {min_distinct} "
                "to separate each exponent from its amplitude: vary model size and data volume both"
            )
    return nn, dd, v
