"""Reading a sweep back: progress by state, FLOPs spent, failures with their error line, and rows
for the analysis (one per completed run)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from scaling.cost import cost as estimate_cost
from sweeps.driver import DriverInfo
from sweeps.launch import SPEC_COPY, open_ledger
from sweeps.ledger import RunRecord
from sweeps.spec import SweepSpec, load_spec
from sweeps.tuning import best_per_shape


def load_sweep(sweep_dir: str | Path) -> tuple[SweepSpec, dict[str, RunRecord]]:
    sweep_dir = Path(sweep_dir)
    spec_file = sweep_dir / SPEC_COPY
    if not spec_file.exists():
        raise ValueError(f"{sweep_dir} is not a sweep directory (no {SPEC_COPY}); launch a sweep into it first")
    spec = load_spec(spec_file)
    return spec, open_ledger(spec, sweep_dir).runs()


def spent_flops(record: RunRecord) -> float:
    """Training FLOPs a completed run spent (its plan on ledgers that predate `RunRecord.spent`)."""
    return float(record.spent.get("flops", record.flops.get("train", 0.0)))


def format_status(spec: SweepSpec, runs: dict[str, RunRecord], driver: DriverInfo | None = None) -> str:
    """The sweep's progress; with `driver` (`sweeps.driver.read_driver`), whether its driver lives."""
    counts = collections.Counter(r.state for r in runs.values())
    complete = [r for r in runs.values() if r.state == "complete"]
    spent = sum(spent_flops(r) for r in complete)
    planned_done = sum(r.flops.get("train", 0.0) for r in complete)
    planned = sum(r.flops.get("train", 0.0) for r in runs.values())
    lines = [
        f"sweep {spec.sweep.name}: {len(runs)} runs",
        "  " + ", ".join(f"{state} {counts.get(state, 0)}" for state in ("complete", "running", "pending", "failed")),
        f"  training FLOPs: {spent:.3e} spent of {planned:.3e} planned",
    ]
    if spent < planned_done * (1 - 1e-9):
        stopped = sum(1 for r in complete if r.spent and r.spent.get("epochs_run", 0) < r.config["train"]["epochs"])
        lines[-1] += (f" (completed runs planned {planned_done:.3e}; {stopped} stopped early)")
    for extra in ("pruned", "cancelled"):
        if counts.get(extra):
            lines[1] += f", {extra} {counts[extra]}"
    if driver is not None:
        lines.append(f"  {driver.describe()}")
    if spec.budget.max_flops is not None:
        lines.append(f"  budget: {spent:.3e} of {spec.budget.max_flops:.3e} FLOPs spent ({spent / spec.budget.max_flops:.1%})")
    if spec.budget.max_device_hours is not None:
        hours = estimate_cost(spent, spec.cost).device_hours if spent > 0 else 0.0
        lines.append(
            f"  budget: {hours:.3g} of {spec.budget.max_device_hours:g} device-hours spent "
            f"({spec.cost.device} at MFU {spec.cost.mfu:g})"
        )
    requeued = [r for r in runs.values() if r.requeued]
    if requeued:
        lines.append(
            f"  requeued and resumed from a checkpoint: {len(requeued)} run(s), "
            f"{sum(r.requeued for r in requeued)} requeue(s) in all"
        )
    metric = spec.sweep.metric
    done = sorted((r for r in runs.values() if r.state == "complete"), key=lambda r: r.flops.get("train", 0.0))
    if done:
        best = (max if spec.sweep.higher_is_better else min)(done, key=lambda r: r.metrics[metric])
        lines.append(f"  best {metric}: {best.metrics[metric]:.4f} (run {best.run_id}, {best.axis_values})")
    for record in runs.values():
        if record.state == "failed":
            lines.append(f"  FAILED {record.run_id} after {record.attempts} attempt(s): {record.error}")
            if record.log_path:
                lines.append(f"    log: {record.log_path}")
    return "\n".join(lines)


def completed_rows(spec: SweepSpec, runs: dict[str, RunRecord], *, best_tuned_only: bool = True) -> list[dict[str, Any]]:
    """One flat dict per completed run: id, FLOPs, tokens, params, shape and all metrics.

    Compute, planned and spent kept apart: "flops_planned"/"tokens_planned" (all epochs of the
    plan; "flops"/"train_tokens" are the same, for older readers), "flops_spent"/"tokens_spent"
    (through the last epoch trained) and "flops_at_best"/"tokens_at_best" (through the best
    validation epoch, whose test values "<metric>" are reported; "final_<metric>" are the last
    epoch's). Ledgers written before spent compute was recorded have no spent keys.

    In a tuned sweep ([tune]) only the best run of each shape by validation metric is kept, so
    that each point of a scaling curve is its size's best-tuned run (`best_tuned_only=False`
    keeps them all).
    """
    rows = []
    for record in runs.values():
        if record.state != "complete":
            continue
        model, data, train = record.config["model"], record.config["data"], record.config["train"]
        spent = record.spent
        rows.append(
            {
                "run_id": record.run_id,
                "flops": record.flops["train"],
                "flops_planned": record.flops["train"],
                "flops_causal": record.flops.get("train_causal"),
                "train_tokens": record.flops.get("train_tokens"),  # supervised positions, all epochs
                "tokens_planned": record.flops.get("train_tokens"),
                **({"flops_spent": spent["flops"], "tokens_spent": spent["tokens"],
                    "flops_at_best": spent["flops_at_best"], "tokens_at_best": spent["tokens_at_best"],
                    "best_epoch": spent["best_epoch"], "epochs_run": spent["epochs_run"]} if spent else {}),
                "shape": (record.tune or {}).get("shape"),
                "params_non_embedding": record.params.get("non_embedding"),
                "params_embedding": record.params.get("embedding"),
                "num_blocks": model["num_blocks"],
                "embedding_dim": model["embedding_dim"],
                "num_heads": model["num_heads"],
                "num_users": data["num_users"],
                "seed": train["seed"],
                "wall_time_s": record.wall_time_s,
                **record.metrics,
            }
        )
    if spec.tune.enabled and best_tuned_only:
        return best_per_shape(rows, selection_key=f"val_{spec.sweep.metric}", maximize=spec.sweep.higher_is_better)
    return sorted(rows, key=lambda row: row["flops"])
