"""What a job's callable needs from submitit: requeueing, its job id, and the process-group env.

`Requeueable(fn)` is a callable submitit can checkpoint: on timeout or preemption it asks to be
called again with the same arguments (the callable itself resumes from its own checkpoints).
`export_distributed_env()` makes a multi-task job's tasks one torch process group.

Importing this module (as unpickling a job's callable does, inside the job) also makes
submitit's in-job requeue survive its own success (`requeue_job`): the one place this project
reaches into submitit's internals.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import submitit
from submitit.slurm import slurm as submitit_slurm

log = logging.getLogger(__name__)
REQUEUE_TIMEOUT_S = 60  # submitit's own bound on `scontrol requeue`


def _ignore_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def requeue_job(job_id: str) -> None:
    """`scontrol requeue job_id` from inside that job, with SIGTERM ignored by scontrol.

    Requeueing makes Slurm SIGTERM every process of the job, scontrol included. When that
    landed before scontrol had exited (a loaded CI node did it), `check_call` raised
    "died with SIGTERM", and submitit recorded the job as failed although Slurm had requeued
    it. SIG_IGN survives exec and only the scontrol child has it.
    """
    subprocess.check_call(["scontrol", "requeue", job_id], timeout=REQUEUE_TIMEOUT_S, preexec_fn=_ignore_sigterm)


def _submitit_requeue(env: submitit_slurm.SlurmJobEnvironment, countdown: int) -> None:
    """submitit's `SlurmJobEnvironment._requeue`, through `requeue_job`."""
    requeue_job(env.job_id)
    log.info("requeued job %s (%d remaining timeouts)", env.job_id, countdown)


submitit_slurm.SlurmJobEnvironment._requeue = _submitit_requeue  # type: ignore[method-assign]


class Requeueable(submitit.helpers.Checkpointable):
    """`fn` as a job callable that submitit requeues (same arguments) when the job is preempted."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Requeueable({getattr(self.fn, '__qualname__', self.fn)!r})"


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class JobPlace:
    """Where this process runs: its job (None outside a submitit job) and rank among its tasks."""

    job_id: str | None = None
    rank: int = 0
    world_size: int = 1
    log_path: str | None = None  # this task's stderr log (submitit's JobPaths)


def current_job() -> JobPlace:
    """This process's submitit job and task rank (a plain process: no job, rank 0 of 1)."""
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:
        return JobPlace()
    return JobPlace(job_id=env.job_id, rank=env.global_rank, world_size=env.num_tasks, log_path=str(env.paths.stderr))


def export_distributed_env() -> JobPlace:
    """For a job of several tasks, export MASTER_ADDR/PORT, RANK, WORLD_SIZE and LOCAL_RANK
    (submitit's TorchDistributedEnvironment) so that `torch.distributed` can join them."""
    place = current_job()
    if place.world_size > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        log.info("job %s: task %d of %d", place.job_id, place.rank, place.world_size)
    return place
