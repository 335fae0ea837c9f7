"""Typed rows: the compute a run spent, and one completed run as the analysis reads it.

`SpentCompute` is what the worker measures and the ledger keeps under "spent" (`RunRecord.spent`):
an early-stopped run spends less than its plan, and its reported metric (the best validation
epoch's) stands for the compute up to that epoch.

`RunRow` is the contract between a sweep and the analysis: `sweeps.status.completed_rows` makes
one per completed run from the ledger (`RunRow.from_record`), `analysis.csv_input` one per line
of a CSV, and `analysis.dataset.select_runs` reads them, placing each run at the compute behind
the checkpoint it reports (`at_best` or `at_last`). `sweep export` writes the ledger's records
(every run, every attribute) flat; its `spent.*` columns are `SpentCompute`'s fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sweeps.ledger import RunRecord


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class SpentCompute:
    """Training compute a completed run spent (`flops` of the ledger record is the plan)."""

    flops: float  # through the last epoch trained
    tokens: float  # supervised positions, likewise
    flops_at_best: float  # through the best validation epoch: the compute behind the reported metric
    tokens_at_best: float
    flops_per_epoch: float
    epochs_run: int
    best_epoch: int

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SpentCompute | None:
        """None for an empty dict (an unfinished run, or a ledger written before it was recorded)."""
        if not raw:
            return None
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Checkpoint:
    """The compute behind one checkpoint a run can report: trained up to `epoch`."""

    flops: float
    tokens: float | None = None
    epoch: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class RunRow:
    """One completed run: its id, metrics, compute (recorded, and at each reportable checkpoint) and shape.

    None means "not known" (a CSV has no config, an old ledger no spent compute).
    """

    run_id: str
    # Test metrics at the best validation epoch ("ndcg@10"), that epoch's validation values
    # ("val_ndcg@10") and the last evaluation's test values ("final_ndcg@10"); a CSV's metric column.
    metrics: Mapping[str, float]
    flops: float  # training FLOPs as recorded: a sweep's plan for all epochs; a CSV's column
    tokens: float | None = None  # training tokens (supervised positions), likewise
    planned: bool = False  # flops and tokens are a sweep's plan, not spent (every sweep row)
    at_best: Checkpoint | None = None  # up to the best validation epoch (what "<metric>" reports)
    at_last: Checkpoint | None = None  # up to the last epoch trained (what "final_<metric>" reports)
    flops_causal: float | None = None
    params_non_embedding: float | None = None  # N
    params_embedding: float | None = None
    num_blocks: int | None = None
    embedding_dim: int | None = None
    num_heads: int | None = None
    num_users: int | None = None
    seed: int | None = None
    shape: str | None = None  # the tuned shape ([tune]) this run is a trial of
    wall_time_s: float | None = None
    replicate_group: str | None = None  # a CSV's --group-col key; else the config decides (analysis)

    @classmethod
    def from_record(cls, record: RunRecord) -> RunRow:
        """The row of a completed ledger record (`RunRecord.state == "complete"`)."""
        model, data, train = record.config["model"], record.config["data"], record.config["train"]
        spent = SpentCompute.from_dict(record.spent)
        return cls(
            run_id=record.run_id,
            metrics=dict(record.metrics),
            flops=float(record.flops["train"]),
            tokens=record.flops.get("train_tokens"),
            planned=True,
            at_best=None if spent is None else Checkpoint(
                flops=spent.flops_at_best, tokens=spent.tokens_at_best, epoch=spent.best_epoch),
            at_last=None if spent is None else Checkpoint(flops=spent.flops, tokens=spent.tokens, epoch=spent.epochs_run),
            flops_causal=record.flops.get("train_causal"),
            params_non_embedding=record.params.get("non_embedding"),
            params_embedding=record.params.get("embedding"),
            num_blocks=model["num_blocks"],
            embedding_dim=model["embedding_dim"],
            num_heads=model["num_heads"],
            num_users=data["num_users"],
            seed=train["seed"],
            shape=(record.tune or {}).get("shape"),
            wall_time_s=record.wall_time_s,
        )


__all__ = ["Checkpoint", "RunRow", "SpentCompute"]
