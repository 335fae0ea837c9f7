"""Reading a sweep back: progress by state, FLOPs spent, failures with their error line, and the
typed rows the analysis fits (`sweeps.rows.RunRow`, one per completed run)."""

from __future__ import annotations

import collections
from pathlib import Path

from scaling.cost import cost as estimate_cost
from sweeps.driver import DriverInfo
from sweeps.layout import SweepLayout
from sweeps.ledger import RunRecord
from sweeps.rows import RunRow, SpentCompute
from sweeps.spec import SweepSpec


def load_sweep(sweep_dir: str | Path) -> tuple[SweepSpec, dict[str, RunRecord]]:
    """The stored spec and every run of the sweep in `sweep_dir` (its ledger must exist)."""
    layout = SweepLayout(Path(sweep_dir))
    spec = layout.load_spec()
    return spec, layout.open_ledger(spec).runs()


def spent_flops(record: RunRecord) -> float:
    """Training FLOPs a completed run spent (its plan on ledgers that predate `RunRecord.spent`)."""
    spent = SpentCompute.from_dict(record.spent)
    return float(record.flops.get("train", 0.0) if spent is None else spent.flops)


# The phases of a job (`sweeps.job_timing`), in the order they happen.
JOB_PHASES = ("startup", "imports", "claim", "tracker", "data", "setup", "train", "eval", "record")


def time_in_jobs(complete: list[RunRecord]) -> str | None:
    """One line: where the completed runs' jobs spent their time up to the results document
    (`sweeps.job_timing`; the ledger write, W&B's finish, process exit and dispatch come after or
    outside it), summed over runs, and the share that trained or evaluated. None when no run
    recorded its timings."""
    timed = [r.timings for r in complete if r.timings]
    if not timed:
        return None
    totals = {phase: sum(t.get(f"{phase}_s") or 0.0 for t in timed) for phase in JOB_PHASES}
    # The trainer's imports, joining, seeding, checkpoint loading and evaluation callbacks: its
    # call minus the phases it reports.
    totals["trainer other"] = sum(
        max((t.get("train_call_s") or 0.0) - sum(t.get(f"{p}_s") or 0.0 for p in ("data", "setup", "train", "eval")), 0.0)
        for t in timed
    )
    whole = sum(totals.values())
    in_run = totals["train"] + totals["eval"]
    parts = ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in totals.items() if seconds >= 0.5)
    return (f"  time in jobs ({len(timed)} run(s)): {parts}; training and evaluation "
            f"{in_run / whole:.0%} of it (evaluation {totals['eval'] / max(in_run, 1e-9):.0%} of those)"
            if whole > 0 else None)


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
    timed = time_in_jobs(complete)
    if timed:
        lines.append(timed)
    metric = spec.sweep.metric
    done = sorted(complete, key=lambda r: r.flops.get("train", 0.0))
    if done:
        best = (max if spec.sweep.higher_is_better else min)(done, key=lambda r: r.metrics[metric])
        lines.append(f"  best {metric}: {best.metrics[metric]:.4f} (run {best.run_id}, {best.axis_values})")
    for record in runs.values():
        if record.state == "failed":
            lines.append(f"  FAILED {record.run_id} after {record.attempts} attempt(s): {record.error}")
            if record.log_path:
                lines.append(f"    log: {record.log_path}")
    return "\n".join(lines)


def completed_rows(spec: SweepSpec, runs: dict[str, RunRecord], *, best_tuned_only: bool = True) -> list[RunRow]:
    """One `RunRow` per completed run, smallest planned FLOPs first.

    In a tuned sweep ([tune]) only the best run of each shape by validation metric is kept, so
    that each point of a scaling curve is its size's best-tuned run (`best_tuned_only=False`
    keeps them all).
    """
    rows = [RunRow.from_record(record) for record in runs.values() if record.state == "complete"]
    if spec.tune.enabled and best_tuned_only:
        rows = _best_per_shape(rows, key=f"val_{spec.sweep.metric}", maximize=spec.sweep.higher_is_better)
    return sorted(rows, key=lambda row: row.flops)


def _best_per_shape(rows: list[RunRow], *, key: str, maximize: bool) -> list[RunRow]:
    """Untuned rows, and for each tuned shape the row with the best `key` metric (the first of equals)."""
    best: dict[str, RunRow] = {}
    untuned = []
    for row in rows:
        if row.shape is None:
            untuned.append(row)
            continue
        current = best.get(row.shape)
        value = row.metrics[key]
        if current is None or (value > current.metrics[key] if maximize else value < current.metrics[key]):
            best[row.shape] = row
    return [*untuned, *best.values()]
