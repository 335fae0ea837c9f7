"""The runs an analysis fits: one row per completed run, from a sweep's ledger or a CSV.

`ScalingData` holds, per run, the training FLOPs C, the metric y and optionally the model size N
(non-embedding parameters) and training tokens D, plus a replicate-group key: runs that share a
config and differ only in seed. Rows are the flat dicts of `sweeps.status.completed_rows` (or of
`analysis.csv_input`): keys "run_id", "flops", the metric, and where present
"params_non_embedding" (N) and "train_tokens" (D).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
N_KEY = "params_non_embedding"
D_KEY = "train_tokens"
GROUP_KEY = "replicate_group"  # set by the CSV reader from --group-col; else CONFIG_KEYS decide
# Runs that agree on all of these (and differ in seed) are replicates of one config.
CONFIG_KEYS = ("flops", "params_non_embedding", "num_blocks", "embedding_dim", "num_users", "train_tokens")


def _positive(values: list[Any]) -> Array | None:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.size and np.all(np.isfinite(arr)) and np.all(arr > 0) else None


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ScalingData:
    metric: str
    higher_is_better: bool
    flops: Array  # [n] training FLOPs
    y: Array  # [n] metric
    run_ids: tuple[str, ...]
    n_params: Array | None = None  # [n] N, non-embedding parameters
    tokens: Array | None = None  # [n] D, training tokens
    groups: tuple[Hashable, ...] | None = None  # replicate group per run; None: every run its own
    nd_missing: str = ""  # why N, D are absent (shown in reports)

    def __post_init__(self) -> None:
        n = self.y.size
        for name, arr in (("flops", self.flops), ("n_params", self.n_params), ("tokens", self.tokens)):
            if arr is not None and arr.shape != (n,):
                raise ValueError(f"{name} has shape {arr.shape}; expected ({n},), one value per run")
        if len(self.run_ids) != n or (self.groups is not None and len(self.groups) != n):
            raise ValueError("run_ids and groups need one entry per run")

    @property
    def has_nd(self) -> bool:
        return self.n_params is not None and self.tokens is not None

    @property
    def n_replicated_groups(self) -> int:
        return 0 if self.groups is None else sum(c > 1 for c in Counter(self.groups).values())

    def require_nd(self, purpose: str) -> tuple[Array, Array]:
        if self.n_params is None or self.tokens is None:
            raise ValueError(f"cannot {purpose}: the runs have no N and D ({self.nd_missing or 'not given'})")
        return self.n_params, self.tokens

    def subset(self, mask: npt.NDArray[np.bool_]) -> ScalingData:
        idx = np.flatnonzero(mask)
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return dataclasses.replace(
            self, flops=self.flops[idx], y=self.y[idx], run_ids=tuple(self.run_ids[i] for i in idx),
            n_params=pick(self.n_params), tokens=pick(self.tokens),
            groups=None if self.groups is None else tuple(self.groups[i] for i in idx),
        )


def data_from_runs(runs: Sequence[Mapping[str, Any]], *, metric: str, higher_is_better: bool) -> ScalingData:
    """ScalingData from usable runs (finite metric, positive FLOPs: see `analysis.report`)."""
    flops = np.array([float(r["flops"]) for r in runs], dtype=np.float64)
    y = np.array([float(r[metric]) for r in runs], dtype=np.float64)
    n = _positive([r.get(N_KEY) for r in runs])
    d = _positive([r.get(D_KEY) for r in runs])
    missing = ""
    if n is None or d is None:
        absent = [k for k, arr in ((N_KEY, n), (D_KEY, d)) if arr is None]
        missing = f"{' and '.join(absent)} missing or not positive in some run"
        n = d = None
    if any(GROUP_KEY in r for r in runs):
        keys: list[Hashable] = [str(r.get(GROUP_KEY)) for r in runs]
    else:
        keys = [tuple(_hashable(r.get(k)) for k in CONFIG_KEYS) for r in runs]
    groups = tuple(keys) if len(set(keys)) < len(keys) else None
    return ScalingData(
        metric=metric, higher_is_better=bool(higher_is_better), flops=flops, y=y,
        run_ids=tuple(str(r["run_id"]) for r in runs), n_params=n, tokens=d, groups=groups, nd_missing=missing,
    )


def _hashable(v: Any) -> Hashable:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v if isinstance(v, Hashable) else str(v)
