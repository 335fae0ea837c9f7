"""The runs an analysis fits: typed rows in, one point per run at the checkpoint it reports.

Rows are `sweeps.rows.RunRow`s: a sweep's completed runs (`sweeps.status.completed_rows`) or a
CSV's lines (`analysis.csv_input`). Plain dicts with the same names as keys ("run_id", "flops",
"train_tokens", "params_non_embedding", the metrics, ...; `row_from_mapping`) are accepted too,
for scripts and notebooks.

Which checkpoint of a run is reported, and at what compute (`select_runs`): a sweep's row carries
the test metric at the best validation epoch ("<metric>") and at the last epoch trained
("final_<metric>"), and the cumulative training FLOPs and tokens up to each (`RunRow.at_best`,
`RunRow.at_last`), beside the planned ones of all epochs (`RunRow.flops`, `RunRow.tokens`). An
early-stopped run never spent its planned FLOPs, so each run is placed at the compute spent up to
the checkpoint whose metric is reported: selection "best_val" (the default) or "final". Rows
without that checkpoint (ledgers written before it was recorded, CSVs) keep their recorded
FLOPs and tokens, and the selection says so in one line.

`ScalingData` holds, per selected run, the training FLOPs C, the metric y and optionally the
model size N (non-embedding parameters) and training tokens D, plus a replicate-group key: runs
that share a config and differ only in seed. It is built from the selected points, the dicts
that the report also writes to fit.json ("points").
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

from sweeps.rows import Checkpoint, RunRow

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
# selection -> (x key, D key, y key template, the checkpoint in words): the keys name the checkpoint's
# figures in a flat row (`row_from_mapping`, `sweep export`), shown in the report's selection line.
_SOURCES = {
    "best_val": ("flops_at_best", "tokens_at_best", "{metric}", "the best validation epoch"),
    "final": ("flops_spent", "tokens_spent", "final_{metric}", "the last epoch trained (early stop included)"),
}
# The flat-row names of RunRow's fields (the names `sweeps.status.completed_rows` used as dict keys).
_MAPPED = {"flops": "flops", "train_tokens": "tokens", "flops_causal": "flops_causal",
           "params_non_embedding": "params_non_embedding", "params_embedding": "params_embedding",
           "num_blocks": "num_blocks", "embedding_dim": "embedding_dim", "num_heads": "num_heads",
           "num_users": "num_users", "seed": "seed", "shape": "shape", "wall_time_s": "wall_time_s",
           GROUP_KEY: "replicate_group"}
_NOT_METRICS = {"run_id", *_MAPPED, "flops_planned", "tokens_planned", "flops_spent", "tokens_spent", "flops_at_best",
                "tokens_at_best", "best_epoch", "epochs_run", "reported_epoch"}


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


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def row_from_mapping(raw: Mapping[str, Any], index: int = 0) -> RunRow:
    """A `RunRow` from a flat dict: "run_id" and "flops" are required; "flops_at_best" (with
    "tokens_at_best", "best_epoch") and "flops_spent" (with "tokens_spent", "epochs_run") give the
    checkpoints; "flops_planned" marks "flops" as a plan; every other key not named in
    `RunRow` is a metric (a value that is not a number reads as NaN, so the run is excluded)."""
    for key in ("run_id", "flops"):
        if key not in raw:
            raise ValueError(f"rows[{index}] (run_id {raw.get('run_id')!r}) has no {key!r}; its keys are "
                             f"{sorted(raw)}: add the field to every row")

    def checkpoint(x: str, d: str, epoch: str) -> Checkpoint | None:
        return None if x not in raw else Checkpoint(flops=raw[x], tokens=raw.get(d), epoch=raw.get(epoch))

    return RunRow(
        run_id=str(raw["run_id"]),
        metrics={k: _number(v) for k, v in raw.items() if k not in _NOT_METRICS},
        planned="flops_planned" in raw,
        at_best=checkpoint("flops_at_best", "tokens_at_best", "best_epoch"),
        at_last=checkpoint("flops_spent", "tokens_spent", "epochs_run"),
        **{field: raw[key] for key, field in _MAPPED.items() if key in raw},  # type: ignore[arg-type]
    )


def _as_row(row: Any, index: int) -> RunRow:
    if isinstance(row, RunRow):
        return row
    if isinstance(row, Mapping):
        return row_from_mapping(row, index)
    raise ValueError(f"rows[{index}] is a {type(row).__name__}; each row must be a RunRow or a dict describing one run")


def _point(row: RunRow, metric: str, value: float, at: Checkpoint | None) -> dict[str, Any]:
    """The flat point of one run at checkpoint `at` (None: at its recorded FLOPs): what is fitted,
    plotted, listed in the report and written to fit.json. Unknown (None) fields are left out."""
    flops, tokens = (row.flops, row.tokens) if at is None else (at.flops, at.tokens)
    optional: dict[str, Any] = {
        D_KEY: tokens, "reported_epoch": None if at is None else at.epoch,
        "epochs_run": None if row.at_last is None else row.at_last.epoch,
        "flops_planned": row.flops if row.planned else None, "tokens_planned": row.tokens if row.planned else None,
        N_KEY: row.params_non_embedding, "num_blocks": row.num_blocks, "embedding_dim": row.embedding_dim,
        "num_users": row.num_users, "seed": row.seed, "wall_time_s": row.wall_time_s, GROUP_KEY: row.replicate_group,
    }
    return {"run_id": row.run_id, "flops": flops, metric: value, **{k: v for k, v in optional.items() if v is not None}}


def select_runs(
    rows: Sequence[RunRow | Mapping[str, Any]], *, metric: str, selection: str = "best_val"
) -> tuple[list[dict[str, Any]], Selection]:
    """One point per row at the selected checkpoint: "flops", "train_tokens" and `metric` are that
    checkpoint's; -> (points, Selection).

    With "best_val", x = FLOPs up to the best validation epoch, y = <metric>; with "final", x =
    FLOPs up to the last epoch trained, y = final_<metric> (D likewise). Each point also carries
    "reported_epoch" and the run's planned compute and shape (`_point`). A row without that
    checkpoint or metric keeps its recorded "flops", "train_tokens" and `metric` (logged, and
    stated by `Selection.fallback`). A row with no `metric` at all is a ValueError naming it.
    """
    if selection not in _SOURCES:
        raise ValueError(f"selection must be 'best_val' or 'final', got {selection!r}")
    x_key, d_key, y_template, checkpoint = _SOURCES[selection]
    y_key = y_template.format(metric=metric)
    out: list[dict[str, Any]] = []
    fallback = 0
    for i, raw in enumerate(rows):
        row = _as_row(raw, i)
        at = row.at_best if selection == "best_val" else row.at_last
        if at is not None and y_key in row.metrics:
            out.append(_point(row, metric, row.metrics[y_key], at))
            continue
        if metric not in row.metrics:
            raise ValueError(f"rows[{i}] (run_id {row.run_id!r}) has no {metric!r}; its metrics are "
                             f"{sorted(row.metrics)}: pass metric= one of those or add the field to every row")
        fallback += 1
        out.append(_point(row, metric, row.metrics[metric], None))
    n = len(out)
    note = None
    if fallback:
        what = x_key if selection == "best_val" else f"{x_key} or {y_key}"
        note = (f"{fallback} of {n} runs have no {what} (a ledger written before the compute spent was recorded, or "
                f"a CSV): they are plotted and fitted at 'flops' as given (for a sweep, the FLOPs planned for all "
                f"epochs, not spent) with the metric in {metric!r}"
                + (" (a sweep's best-validation value, not the last epoch's)" if selection == "final" else ""))
        log.warning("%s", note)
    if n and fallback == n:  # say what was used: the rows' own figures
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
    """ScalingData from the usable points of `select_runs` (finite metric, positive FLOPs: see
    `analysis.report.split_rows`)."""
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
