"""Planning: expand a sweep spec into runs with exact parameter counts and training FLOPs."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gr_core.lengths import train_sequence_lengths
from scaling import FLOPS_CONVENTION, count_params, run_flops
from sweeps.ledger import PlannedRun
from sweeps.designs import SkippedRun, expand
from sweeps.spec import SweepSpec

MAX_TABLE_ROWS = 60


@functools.lru_cache(maxsize=256)
def _lengths(data: DataConfig, max_seq_len: int) -> np.ndarray:
    # Many grid points share a data set; its length draw is the only non-trivial planning cost.
    return train_sequence_lengths(data, max_seq_len)


@functools.lru_cache(maxsize=4096)
def _flops(data: DataConfig, model: ModelConfig, train: TrainConfig) -> dict:
    return run_flops(data, model, train, lengths=_lengths(data, model.max_seq_len)).to_dict()


def plan_run(config: RunConfig, axis_values: dict) -> PlannedRun:
    # The training seed and optimiser settings do not change FLOPs: grids over seeds or learning
    # rates share one count per shape.
    flops_key = dataclasses.replace(config.train, seed=0, lr=1e-3, beta1=0.9, beta2=0.98, weight_decay=0.0)
    return PlannedRun(
        run_id=config.run_id,
        axis_values=axis_values,
        config=config.to_dict(),
        flops=dict(_flops(config.data, config.model, flops_key)),
        params=count_params(config.model, config.data.num_items).to_dict(),
    )


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    runs: list[PlannedRun]  # smallest training FLOPs first
    skipped: list[SkippedRun]  # points the design could not place, with the reason
    max_flops: float | None  # the spec's budget, if any

    @property
    def total_flops(self) -> float:
        return sum(run.flops["train"] for run in self.runs)

    def within_budget(self, already_spent: float = 0.0) -> list[PlannedRun]:
        """The runs that launching would start, in order, before the next would exceed the budget."""
        if self.max_flops is None:
            return list(self.runs)
        chosen, spent = [], already_spent
        for run in self.runs:
            if spent + run.flops["train"] > self.max_flops:
                break
            chosen.append(run)
            spent += run.flops["train"]
        return chosen


def plan_sweep(spec: SweepSpec) -> Plan:
    """All runs of the spec, smallest training FLOPs first (early results come from cheap runs)."""
    configs, skipped = expand(spec)
    runs = [plan_run(config, axis_values) for axis_values, config in configs]
    ids = [run.run_id for run in runs]
    if len(set(ids)) != len(ids):  # e.g. two ladder rungs that round to the same data volume
        seen, dupes = set(), set()
        for rid in ids:
            (dupes if rid in seen else seen).add(rid)
        raise ValueError(
            f"{spec.source}: the design produces identical runs ({len(dupes)} duplicated configs); "
            "check the axes, budgets or multipliers for values that resolve to the same run"
        )
    runs.sort(key=lambda run: run.flops["train"])
    return Plan(runs=runs, skipped=skipped, max_flops=spec.budget.max_flops)


def format_plan(plan: Plan) -> str:
    """A table of the planned runs, for `gr-scaling sweep plan`."""
    runs = plan.runs
    if not runs:
        return "no runs" + "".join(f"\nskipped {s.axis_values}: {s.reason}" for s in plan.skipped)
    axis_names = list(runs[0].axis_values)
    header = ["run_id", *axis_names, "params(non-emb)", "params(emb)", "train FLOPs"]
    rows = [
        [
            run.run_id,
            *(str(run.axis_values[a]) for a in axis_names),
            f"{run.params['non_embedding']:,}",
            f"{run.params['embedding']:,}",
            f"{run.flops['train']:.3e}",
        ]
        for run in runs
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    if len(rows) > MAX_TABLE_ROWS:  # a 10,000-run grid: the head and the tail say enough
        half = MAX_TABLE_ROWS // 2
        rows = [*rows[:half], ["..."] * len(header), *rows[-half:]]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    total = plan.total_flops
    span = max(r.flops["train"] for r in runs) / min(r.flops["train"] for r in runs)
    lines.append(
        f"{len(runs)} runs, total {total:.3e} training FLOPs, span {np.log10(span):.2f} orders of magnitude"
    )
    if plan.max_flops is not None:
        fits = plan.within_budget()
        lines.append(
            f"budget {plan.max_flops:.3e} FLOPs: {len(fits)} of {len(runs)} runs fit "
            f"({sum(r.flops['train'] for r in fits):.3e} FLOPs); launching stops there"
        )
    for skip in plan.skipped:
        lines.append(f"skipped {skip.axis_values}: {skip.reason}")
    lines.append(f"convention: {FLOPS_CONVENTION}")
    return "\n".join(lines)
