"""Planning: expand a sweep spec into runs with exact parameter counts and training FLOPs."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gr_core.lengths import train_sequence_lengths
from scaling import FLOPS_CONVENTION, run_flops, run_params
from sweeps.ledger import PlannedRun
from sweeps.designs import SkippedRun, expand
from scaling.cost import CostEstimate, CostInputs
from scaling.cost import cost as estimate_cost
from sweeps.spec import BudgetConfig, SweepSpec

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
        params=run_params(config.data, config.model, config.train).to_dict(),
    )


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    runs: list[PlannedRun]  # smallest training FLOPs first
    skipped: list[SkippedRun]  # points the design could not place, with the reason
    budget: BudgetConfig
    cost_inputs: CostInputs  # what the estimated device-hours and money assume

    @property
    def max_flops(self) -> float | None:
        return self.budget.max_flops

    @property
    def total_flops(self) -> float:
        return sum(run.flops["train"] for run in self.runs)

    def estimate(self, flops: float) -> CostEstimate:
        return estimate_cost(flops, self.cost_inputs)

    def within_budget(self) -> list[PlannedRun]:
        """The runs that launching would start, in order, before the next would exceed a cap."""
        chosen, flops = [], 0.0
        for run in self.runs:
            flops += run.flops["train"]
            if self.budget.max_flops is not None and flops > self.budget.max_flops:
                break
            if (
                self.budget.max_device_hours is not None
                and self.estimate(flops).device_hours > self.budget.max_device_hours
            ):
                break
            chosen.append(run)
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
    return Plan(runs=runs, skipped=skipped, budget=spec.budget, cost_inputs=spec.cost)


def format_plan(plan: Plan) -> str:
    """A table of the planned runs, for `gr-scaling sweep plan`."""
    runs = plan.runs
    if not runs:
        return "no runs" + "".join(f"\nskipped {s.axis_values}: {s.reason}" for s in plan.skipped)
    axis_names = list(runs[0].axis_values)
    header = ["run_id", *axis_names, "params(non-emb)", "params(emb)", "train FLOPs", "device-h", "cost"]
    rows = [
        [
            run.run_id,
            *(str(run.axis_values[a]) for a in axis_names),
            f"{run.params['non_embedding']:,}",
            f"{run.params['embedding']:,}",
            f"{run.flops['train']:.3e}",
            f"{plan.estimate(run.flops['train']).device_hours:.3g}",
            f"{plan.estimate(run.flops['train']).cost:.3g}",
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
    total_cost = plan.estimate(total)
    c = plan.cost_inputs
    lines.append(
        f"estimated {total_cost.device_hours:.3g} device-hours on {c.num_devices} x {c.device} at MFU {c.mfu:g} "
        f"({total_cost.wall_clock_hours:.3g} h wall clock), cost {total_cost.cost:.3g} at {c.price_per_device_hour:g} "
        "per device-hour (training only; set [cost] in the spec)"
    )
    if plan.budget.max_flops is not None or plan.budget.max_device_hours is not None:
        fits = plan.within_budget()
        caps = [f"{plan.budget.max_flops:.3e} FLOPs"] if plan.budget.max_flops is not None else []
        if plan.budget.max_device_hours is not None:
            caps.append(f"{plan.budget.max_device_hours:g} device-hours")
        lines.append(
            f"budget {' and '.join(caps)}: {len(fits)} of {len(runs)} runs fit "
            f"({sum(r.flops['train'] for r in fits):.3e} FLOPs); launching stops there"
        )
    for skip in plan.skipped:
        lines.append(f"skipped {skip.axis_values}: {skip.reason}")
    lines.append(f"convention: {FLOPS_CONVENTION}")
    return "\n".join(lines)
