"""Launching a sweep: plan, register in the ledger, dispatch what is not done, retry failures.

A sweep directory holds everything about one sweep:
    spec.toml      the spec it was launched with
    ledger.db      the Optuna storage (the durable record)
    runs/<id>/     each run's resolved config.json, result.json or error.txt
    jobs/          submitit's pickles and logs
    wandb/         offline W&B runs
Launching again with the same spec skips completed runs, fails attempts whose worker died, and
retries failed runs until they have used `sweep.max_attempts`. On Slurm, an attempt whose worker
went quiet is failed only once Slurm says its job has ended: a requeued job waiting in the queue
keeps its attempt, and takes it back when it runs again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
from pathlib import Path

from slurm.dispatch import Task, TaskOutcome, resolve_executor, run_tasks
from slurm.jobs import Requeueable
from slurm.liveness import slurm_jobs_alive
from sweeps import tuning
from sweeps.ledger import Ledger, PlannedRun, RunRecord, storage_url_for
from sweeps.plan import plan_sweep
from sweeps.spec import SweepSpec, load_spec
from sweeps.worker import execute_attempt

log = logging.getLogger(__name__)

SPEC_COPY = "spec.toml"
DRIVER_PID = "driver.pid"


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class LaunchSummary:
    sweep_dir: Path
    planned: int
    skipped_complete: int  # already complete before this launch
    completed: int  # completed by this launch
    failed: list[RunRecord]  # out of attempts


def open_ledger(spec: SweepSpec, sweep_dir: str | Path) -> Ledger:
    return Ledger(
        storage_url_for(sweep_dir, spec.ledger.url), spec.sweep.name, higher_is_better=spec.sweep.higher_is_better
    )


def _store_spec(spec_path: Path, sweep_dir: Path) -> None:
    copy = sweep_dir / SPEC_COPY
    if copy.exists() and copy.read_bytes() != spec_path.read_bytes():
        log.warning("%s differs from the spec this sweep was launched with; keeping the new one", spec_path)
    if not copy.exists() or copy.resolve() != spec_path.resolve():
        shutil.copyfile(spec_path, copy)


def launch_sweep(spec_path: str | Path, sweep_dir: str | Path) -> LaunchSummary:
    """Run every planned run that is not complete yet; blocks until the sweep is done."""
    spec_path, sweep_dir = Path(spec_path), Path(sweep_dir)
    spec = load_spec(spec_path)  # validated in full before anything starts
    plan = plan_sweep(spec)
    for skip in plan.skipped:
        log.warning("design skipped %s: %s", skip.axis_values, skip.reason)
    planned = plan.within_budget()
    if len(planned) < len(plan.runs):
        log.warning(
            "budget %s: launching %d of %d planned runs (%.3e FLOPs); the next would exceed it",
            spec.budget, len(planned), len(plan.runs), sum(r.flops["train"] for r in planned),
        )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    _store_spec(spec_path, sweep_dir)
    ledger = open_ledger(spec, sweep_dir)
    pid_file = sweep_dir / DRIVER_PID
    pid_file.write_text(f"{socket.gethostname()} {os.getpid()}\n")  # for `sweep cancel`
    try:
        return _launch(spec, sweep_dir, ledger, planned)
    finally:
        pid_file.unlink(missing_ok=True)


def _launch(spec: SweepSpec, sweep_dir: Path, ledger: Ledger, planned: list[PlannedRun]) -> LaunchSummary:
    """Dispatch pending runs in waves until none is left; with [tune], each wave first asks the
    shapes' tuning studies for new values (the planned runs are then the shapes, not runs)."""
    studies = {}
    if spec.tune.enabled:
        studies = {
            shape.run_id: tuning.open_study(
                ledger.storage, spec.sweep.name, shape.run_id, spec.tune, maximize=spec.sweep.higher_is_better
            )
            for shape in planned
        }
        tuning.fail_orphans(ledger, studies)
        shape_ids = set(studies)
        in_sweep = lambda record: (record.tune or {}).get("shape") in shape_ids  # noqa: E731
    else:
        ledger.register(planned)
        plan_ids = {run.run_id for run in planned}
        in_sweep = lambda record: record.run_id in plan_ids  # noqa: E731
    before = [r for r in ledger.runs().values() if in_sweep(r)]
    already = sum(1 for r in before if r.state == "complete")
    log.info("%d runs registered, %d already complete", len(before), already)

    # Local attempts have no scheduler to ask: their worker pid and heartbeat decide alone.
    job_alive = slurm_jobs_alive if resolve_executor(spec.dispatch) == "slurm" else None
    while True:
        requeued = ledger.recover(max_attempts=spec.sweep.max_attempts, job_alive=job_alive)
        if requeued:
            log.info("retrying %d run(s): %s", len(requeued), ", ".join(requeued))
        if studies:
            room = max(spec.dispatch.max_parallel - len(ledger.pending()), 0)
            tuning.top_up(ledger, spec, planned, studies, room=room)
        pending = sorted(
            (r for r in ledger.pending() if in_sweep(r)), key=lambda r: r.flops.get("train", 0.0)
        )
        if not pending:
            break
        _dispatch(spec, sweep_dir, ledger, pending)

    after = [r for r in ledger.runs().values() if in_sweep(r)]
    done = sum(1 for r in after if r.state == "complete")
    failed = [r for r in after if r.state == "failed"]
    return LaunchSummary(
        sweep_dir=sweep_dir, planned=len(after), skipped_complete=already, completed=done - already, failed=failed
    )


def _dispatch(spec: SweepSpec, sweep_dir: Path, ledger: Ledger, pending: list[RunRecord]) -> None:
    tasks = [
        Task(
            key=record.trial_id,
            args=(
                ledger.url, spec.sweep.name, record.trial_id, str(sweep_dir), spec.sweep.metric, spec.tracking,
                spec.tune if spec.tune.enabled else None, spec.dispatch.checkpoint_every_steps,
            ),
        )
        for record in pending
    ]
    run_ids = {record.trial_id: record.run_id for record in pending}

    def on_submit(task: Task, job_id: str, log_path: str) -> None:
        ledger.set_job(task.key, job_id, log_path)

    def on_done(outcome: TaskOutcome) -> None:
        if outcome.ok and isinstance(outcome.result, dict) and outcome.result.get("skipped"):
            log.warning(
                "job %s did not train run %s: its attempt was taken or had ended (see %s)",
                outcome.job_id, run_ids[outcome.key], outcome.log_path,
            )
        elif outcome.ok:
            log.info("run %s finished (job %s)", run_ids[outcome.key], outcome.job_id)
        else:
            log.error("run %s failed (job %s): %s; log: %s", run_ids[outcome.key], outcome.job_id, outcome.error, outcome.log_path)
            ledger.fail_unfinished(outcome.key, f"job {outcome.job_id} ended without a result: {outcome.error}")

    run_tasks(
        Requeueable(execute_attempt), tasks, config=spec.dispatch, folder=sweep_dir / "jobs",
        on_submit=on_submit, on_done=on_done, job_name=f"gr-{spec.sweep.name}",
    )
