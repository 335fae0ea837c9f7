"""Stopping a sweep's dispatched work: mark active attempts cancelled, then stop their workers.

Used by `sweep cancel` (another process) and by an interrupted driver (Ctrl-C, SIGTERM). The
ledger is written first, so a worker that finishes while it is being stopped cannot turn a
cancelled attempt into a failed one; a cancelled attempt does not count against max_attempts.
"""

from __future__ import annotations

import dataclasses
import os
import socket

from slurm.cancel import cancel_slurm_jobs, kill_local_process
from sweeps.ledger import Ledger
from sweeps.optuna_adapter import trial_id_of


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Stopped:
    cancelled: int  # attempts marked cancelled (pending or running)
    running: int  # of which were running
    slurm_jobs: list[str]  # job ids handed to scancel


def stop_active_attempts(ledger: Ledger, *, on_slurm: bool) -> Stopped:
    """Cancel every pending or running attempt of the sweep and stop the workers behind them.

    On Slurm the jobs are `scancel`led (also a job that is queued or requeued); local workers
    get SIGKILL by pid (submitit's local job processes do not stop on SIGTERM), never this one.
    """
    host, slurm_jobs, workers, cancelled, running = socket.gethostname(), [], [], 0, 0
    for trial in ledger.active_attempts():
        worker = trial.system_attrs.get("worker", {})
        job_id = trial.user_attrs.get("job_id")
        was_running = trial.state.name == "RUNNING"
        if ledger.cancel(trial_id_of(trial)):
            cancelled += 1
            running += was_running
        if on_slurm and job_id:
            # Not the worker's pid even when it runs here: a job whose process is gone may be
            # queued again (requeued), and killing a task's process leaves the job to Slurm.
            slurm_jobs.append(job_id)
        elif worker.get("host") == host and worker.get("pid") and int(worker["pid"]) != os.getpid():
            workers.append(int(worker["pid"]))
    for pid in workers:
        kill_local_process(pid)
    if slurm_jobs:
        cancel_slurm_jobs(slurm_jobs)
    return Stopped(cancelled=cancelled, running=running, slurm_jobs=sorted(set(slurm_jobs)))


__all__ = ["Stopped", "stop_active_attempts"]
