"""Run a batch of tasks through submitit, with at most `max_parallel` in flight.

The local path submits one subprocess per task and tops the pool up as tasks finish (submitit's
LocalExecutor has no concurrency cap of its own). The Slurm path submits one `sbatch --array`
with `slurm_array_parallelism` as the cap (several, one after another, when the tasks outnumber
the cluster's MaxArraySize). Either way each task's outcome comes back with the
job id, the remote error text and the path of the job's log, and nothing here knows what a
task does: the callable writes its own results (to the ledger), so a dead driver loses nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import submitit

from slurm.config import DispatchConfig

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Task:
    key: Any  # caller's handle (e.g. a ledger trial id)
    args: tuple[Any, ...]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class TaskOutcome:
    key: Any
    job_id: str
    ok: bool
    result: Any = None
    error: str | None = None  # last line of the remote exception, when it failed
    log_path: str | None = None


def cpus_per_run(config: DispatchConfig, executor: str) -> int | None:
    """The CPUs each run may use (what train.num_threads = "auto" takes): on the local executor
    the machine's CPUs shared by dispatch.max_parallel runs; on Slurm None, the job reads its own
    allocation (dispatch.cpus_per_task, as SLURM_CPUS_PER_TASK)."""
    if executor == "slurm":
        return None
    return max(1, len(os.sched_getaffinity(0)) // config.max_parallel)  # the CPUs this driver may use


def resolve_executor(config: DispatchConfig) -> str:
    """The executor kind to use: "auto" means Slurm when `srun` is on PATH, else local."""
    if config.executor != "auto":
        return config.executor
    kind = "slurm" if shutil.which("srun") else "local"
    log.info("dispatch.executor=auto: using %s", kind)
    return kind


def _make_executor(config: DispatchConfig, folder: Path, job_name: str | None = None) -> submitit.Executor:
    kind = resolve_executor(config)
    if kind == "local":
        ignored = config.slurm_only_settings()
        if ignored:
            log.warning("the local executor ignores dispatch.%s", ", dispatch.".join(ignored))
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=config.timeout_min)
        return executor
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    executor.update_parameters(**slurm_parameters(config), **({"name": job_name} if job_name else {}))
    return executor


def slurm_parameters(config: DispatchConfig) -> dict[str, Any]:
    """`AutoExecutor.update_parameters` keywords for a job of each run (one array task)."""
    params: dict[str, Any] = {
        "timeout_min": config.timeout_min,
        "nodes": config.nodes,
        "tasks_per_node": config.tasks_per_node,
        "cpus_per_task": config.cpus_per_task,
        "slurm_array_parallelism": config.max_parallel,
    }
    if config.gpus_per_node:  # "--gpus-per-node=0" is refused by clusters without GPU gres
        params["gpus_per_node"] = config.gpus_per_node
    if config.mem_gb is not None:
        params["mem_gb"] = config.mem_gb
    for name in ("partition", "account", "qos"):
        if getattr(config, name) is not None:
            params[f"slurm_{name}"] = getattr(config, name)
    if config.slurm_additional_parameters:
        params["slurm_additional_parameters"] = dict(config.slurm_additional_parameters)
    return params


DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize


def parse_max_array_size(scontrol_config: str) -> int | None:
    """MaxArraySize from `scontrol show config` output ("MaxArraySize            = 1001")."""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", scontrol_config, flags=re.MULTILINE)
    return int(match.group(1)) if match else None


@functools.lru_cache(maxsize=1)
def cluster_max_array_size() -> int:
    """The cluster's MaxArraySize (an array holds at most this many tasks: indices 0..N-1)."""
    try:
        proc = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30, check=True)
        found = parse_max_array_size(proc.stdout)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not read MaxArraySize (`scontrol show config`: %s); assuming %d", exc, DEFAULT_MAX_ARRAY_SIZE)
        return DEFAULT_MAX_ARRAY_SIZE
    if found is None:
        log.warning("`scontrol show config` lists no MaxArraySize; assuming %d", DEFAULT_MAX_ARRAY_SIZE)
        return DEFAULT_MAX_ARRAY_SIZE
    return found


def array_chunks(tasks: Sequence[Task], max_array_size: int) -> list[Sequence[Task]]:
    """Split tasks into arrays of at most `max_array_size` (MaxArraySize <= 1: one job per task)."""
    size = max(1, max_array_size)
    return [tasks[i : i + size] for i in range(0, len(tasks), size)]


@contextlib.contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Start local jobs with SIGINT ignored (a disposition they inherit, and Python keeps).

    Ctrl-C signals the whole foreground process group: submitit's local job controllers would
    die with a KeyboardInterrupt traceback on the driver's terminal, and their workers would stop
    mid-write. The driver alone handles the interrupt: it cancels the attempts and stops the
    workers (`sweeps.stopping`).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _outcome(task: Task, job: submitit.Job) -> TaskOutcome:
    log_path = str(job.paths.stderr)
    try:
        return TaskOutcome(key=task.key, job_id=job.job_id, ok=True, result=job.results()[0], log_path=log_path)  # task 0 of the job
    except Exception as exc:
        return TaskOutcome(key=task.key, job_id=job.job_id, ok=False, error=remote_error_line(exc), log_path=log_path)


def remote_error_line(exc: BaseException) -> str:
    """The exception line of a job's remote traceback ("ValueError: ...").

    submitit's FailedJobError message holds the remote traceback between two dashed rules,
    followed by the log paths; the last line inside the rules is the original exception.
    """
    text = str(exc)
    sections = text.split("-" * 22)
    body = sections[1] if len(sections) >= 3 else text
    lines = [line.strip() for line in body.strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


LOCAL_CHECK_S = 0.05  # a local job's check is a waitpid: the driver looks this often


def _wait_for_local_end(jobs: Sequence[submitit.Job], poll_interval_s: float) -> None:
    """Sleep up to poll_interval_s, returning early once a local job has ended (its slot is free
    and its outcome waits); Slurm's `squeue` is what poll_interval_s spares, a waitpid costs nothing."""
    deadline = time.monotonic() + poll_interval_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or any(job.done() for job in jobs):
            return
        time.sleep(min(LOCAL_CHECK_S, left))


def run_tasks(
    fn: Callable[..., Any],
    tasks: Sequence[Task],
    *,
    config: DispatchConfig,
    folder: str | Path,
    on_submit: Callable[[Task, str, str], None] | None = None,
    on_done: Callable[[TaskOutcome], None] | None = None,
    on_poll: Callable[[], None] | None = None,
    max_array_size: int | None = None,
    job_name: str | None = None,
) -> list[TaskOutcome]:
    """Run `fn(*task.args)` for every task; return the outcomes in completion order.

    `on_submit(task, job_id, log_path)` runs as each job is submitted (on Slurm the job id of an
    array task is "<array job id>_<index>"), `on_done(outcome)` as it ends (a local job's end is
    seen within `LOCAL_CHECK_S`, a Slurm job's at the next poll), `on_poll()` every
    `poll_interval_s` while jobs run and after each local job's end (to follow them by other means). On Slurm, tasks go
    out as one `sbatch --array`, split into several when there are more than `max_array_size`
    (default: the cluster's MaxArraySize). job_name: the Slurm job name (default: fn's name).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    executor = _make_executor(config, folder, job_name)
    outcomes: list[TaskOutcome] = []

    def finish(task: Task, job: submitit.Job) -> None:
        outcome = _outcome(task, job)
        outcomes.append(outcome)
        if on_done is not None:
            on_done(outcome)

    if resolve_executor(config) == "slurm":
        limit = max_array_size if max_array_size is not None else cluster_max_array_size()
        chunks = array_chunks(tasks, limit)
        if len(chunks) > 1:
            # One array after another keeps slurm_array_parallelism a cap on the whole sweep.
            log.info("%d tasks exceed MaxArraySize=%d: submitting %d arrays in turn", len(tasks), limit, len(chunks))
        for chunk in chunks:
            jobs = executor.map_array(fn, *zip(*(task.args for task in chunk)))
            for task, job in zip(chunk, jobs):
                if on_submit is not None:
                    on_submit(task, job.job_id, str(job.paths.stderr))
            pending = list(zip(chunk, jobs))
            while pending:
                time.sleep(config.poll_interval_s)
                if on_poll is not None:
                    on_poll()
                still = []
                for task, job in pending:
                    if job.done():
                        finish(task, job)
                    else:
                        still.append((task, job))
                pending = still
        return outcomes

    queue = list(tasks)
    in_flight: list[tuple[Task, submitit.Job]] = []
    while queue or in_flight:
        while queue and len(in_flight) < config.max_parallel:
            task = queue.pop(0)
            with _children_ignore_sigint():
                job = executor.submit(fn, *task.args)
            if on_submit is not None:
                on_submit(task, job.job_id, str(job.paths.stderr))
            in_flight.append((task, job))
        _wait_for_local_end([job for _, job in in_flight], config.poll_interval_s)
        if on_poll is not None:
            on_poll()
        running = []
        for task, job in in_flight:
            if job.done():
                finish(task, job)
            else:
                running.append((task, job))
        in_flight = running
    return outcomes
