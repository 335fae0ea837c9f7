"""The runs an analysis fits: one row per completed run, from a sweep's ledger or a CSV.

`ScalingData` holds, per run, the training FLOPs C, the metric y and optionally the model size N
(non-embedding parameters) and training tokens D, plus a replicate-group key: runs that share a
config and differ only in seed. Rows are the flat dicts of `sweeps.status.completed_rows` (or of
`analysis.csv_input`): keys "run_id", "flops", the metric, and where present
"params_non_embedding" (N) and "train_tokens" (D).

Which checkpoint of a run is reported, and at what compute (`select_runs`): a sweep's row carries
the test metric at the best validation epoch ("<metric>") and at the last epoch trained
("final_<metric>"), and the cumulative training FLOPs and tokens up to each ("flops_at_best",
"tokens_at_best"; "flops_spent", "tokens_spent"), beside the planned ones of all epochs
("flops_planned", "tokens_planned"; "flops" and "train_tokens" in older rows). An early-stopped run
never spent its planned FLOPs, so each run is placed at the compute spent up to the checkpoint
whose metric is reported: selection "best_val" (the default) or "final". Rows without those keys
(ledgers written before they were recorded, CSVs) keep "flops"/"train_tokens", and the selection
says so in one line.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]
N_KEY = "params_non_embedding"
D_KEY = "train_tokens"
GROUP_KEY = "replicate_group"  # set by the CSV reader from --group-col; else CONFIG_KEYS decide
# Runs that agree on all of these (and differ in seed) are replicates of one config. Planned
# compute, not spent: two seeds of one config that early-stop at different epochs are still
# replicates (rows without the planned keys use "flops"/"train_tokens", see `config_key`).
CONFIG_KEYS = ("flops_planned", "params_non_embedding", "num_blocks", "embedding_dim", "num_users", "tokens_planned")
_PLANNED_FALLBACK = {"flops_planned": "flops", "tokens_planned": D_KEY}

SELECTIONS = ("best_val", "final")
X_AXIS_SPENT = "training FLOPs spent up to the reported checkpoint"
X_AXIS_AS_GIVEN = "training FLOPs as recorded in 'flops' (for a sweep: planned for all epochs, not spent)"
# selection -> (x key, D key, y key template, the checkpoint in words, its epoch's key)
_SOURCES = {
    "best_val": ("flops_at_best", "tokens_at_best", "{metric}", "the best validation epoch", "best_epoch"),
    "final": ("flops_spent", "tokens_spent", "final_{metric}", "the last epoch trained (early stop included)",
              "epochs_run"),
}


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Selection:
    """Which checkpoint each run reports and at what compute it is plotted and fitted."""

    name: str  # "best_val" | "final"
    checkpoint: str  # the checkpoint in words
    x_key: str
    d_key: str
    y_key: str
    x_axis: str  # what the x-axis is, for the report
    n_fallback: int  # runs without x_key/y_key, kept at "flops" with "<metric>"
    fallback: str | None  # one line saying so, or None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_key(row: Mapping[str, Any]) -> tuple[Hashable, ...]:
    """The replicate-group key of a row: its config's planned compute and shape."""
    return tuple(_hashable(row.get(k, row.get(_PLANNED_FALLBACK.get(k, k)))) for k in CONFIG_KEYS)


def select_runs(
    rows: Sequence[Mapping[str, Any]], *, metric: str, selection: str = "best_val"
) -> tuple[list[Any], Selection]:
    """Rows with "flops", "train_tokens" and `metric` set to the selected checkpoint's; -> (rows, Selection).

    With "best_val", x = flops_at_best, D = tokens_at_best, y = <metric>; with "final", x =
    flops_spent, D = tokens_spent, y = final_<metric>. Each row also gets "reported_epoch" (the
    reported checkpoint's) and keeps its other keys ("flops_planned", ...). A row lacking x or y keeps its
    "flops", "train_tokens" and `metric` as they are (logged, and stated by `Selection.fallback`).
    Anything that is not a mapping passes through, for `analysis.report.split_rows` to reject.
    """
    if selection not in _SOURCES:
        raise ValueError(f"selection must be 'best_val' or 'final', got {selection!r}")
    x_key, d_key, y_template, checkpoint, epoch_key = _SOURCES[selection]
    y_key = y_template.format(metric=metric)
    out: list[Any] = []
    fallback = 0
    for row in rows:
        if not isinstance(row, Mapping):
            out.append(row)
            continue
        r = dict(row)
        if x_key in row and y_key in row:
            r["flops"], r[metric] = row[x_key], row[y_key]
            if d_key in row:
                r[D_KEY] = row[d_key]
            else:
                r.pop(D_KEY, None)  # planned tokens with spent FLOPs would contradict each other
            if epoch_key in row:
                r["reported_epoch"] = row[epoch_key]
        else:
            fallback += 1
        out.append(r)
    n = sum(isinstance(r, Mapping) for r in out)
    note = None
    if fallback:
        what = x_key if selection == "best_val" else f"{x_key} or {y_key}"
        note = (f"{fallback} of {n} runs have no {what} (a ledger written before the compute spent was recorded, or "
                f"a CSV): they are plotted and fitted at 'flops' as given (for a sweep, the FLOPs planned for all "
                f"epochs, not spent) with the metric in {metric!r}"
                + (" (a sweep's best-validation value, not the last epoch's)" if selection == "final" else ""))
        log.warning("%s", note)
    if n and fallback == n:  # say what was used: the rows' own keys
        return out, Selection(
            name=selection, checkpoint="the checkpoint the rows record (for a sweep: the best validation epoch)",
            x_key="flops", d_key=D_KEY, y_key=metric, x_axis=X_AXIS_AS_GIVEN, n_fallback=fallback, fallback=note,
        )
    return out, Selection(name=selection, checkpoint=checkpoint, x_key=x_key, d_key=d_key, y_key=y_key,
                          x_axis=X_AXIS_SPENT, n_fallback=fallback, fallback=note)


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
        keys = [config_key(r) for r in runs]
    groups = tuple(keys) if len(set(keys)) < len(keys) else None
    return ScalingData(
        metric=metric, higher_is_better=bool(higher_is_better), flops=flops, y=y,
        run_ids=tuple(str(r["run_id"]) for r in runs), n_params=n, tokens=d, groups=groups, nd_missing=missing,
    )


def _hashable(v: Any) -> Hashable:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v if isinstance(v, Hashable) else str(v)
