"""Where a job's wall time goes, from its process start to its recorded result.

A sweep of small runs can spend more time starting processes, importing and recording than
training (issue 15). The worker marks each step of an attempt with a `JobClock`; the trainer
reports its own phases (`TrainResult.phase_s`: data, setup, train, eval). Together they make the
`timings` of a run's results, which `benchmarks/sweep_throughput.py` reads. All of them cover the
job's life that completed the run (after a requeue: since it resumed), up to its recorded result:

    startup_s   process start -> the attempt begins (interpreter, submitit, unpickling, imports);
                None where the process start cannot be read (no /proc); 0 for the later runs
                of a packed job (`[dispatch] runs_per_job`), which begin when the previous ends
    imports_s   the worker's first torch import (paid once per process: ~0 after the first run)
    claim_s     joining the run's processes, reading the run from the ledger, claiming it
    tracker_s   the run directory and the W&B run
    train_call_s  the trainer, end to end: data_s, setup_s, train_s and eval_s, plus its imports,
                joining and seeding, loading a checkpoint and the per-evaluation callbacks
                (W&B log, ledger value, tuner)
    in_run_s    train_s + eval_s: the work the sweep exists for
    record_s    building the results document (result.json, the ledger and W&B's finish follow)
    process_started_at  Unix time of the process start (None without /proc); with the ledger's
                completion time it gives the job's wall time up to its recorded result (the
                ledger write and W&B's finish come after the document is sealed)
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping


def process_started_at() -> float | None:
    """This process's start as Unix time (10 ms resolution, Linux /proc), or None elsewhere."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 is index 0
        with open("/proc/uptime") as f:
            uptime_s = float(f.read().split()[0])
        started_after_boot_s = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime_s - started_after_boot_s)


class JobClock:
    """Seconds between successive marks of one attempt, from the moment it began.

    first_in_process: the attempt is its process's first, so the process's start-up is its own;
    a later run of a packed job starts up in no time.
    """

    def __init__(self, *, first_in_process: bool = True) -> None:
        self.began = time.time()
        self.process_started_at = process_started_at()
        self.startup_s = (
            None if self.process_started_at is None
            else max(self.began - self.process_started_at, 0.0) if first_in_process
            else 0.0
        )
        self._last = time.perf_counter()
        self.marks: dict[str, float] = {}

    def mark(self, name: str) -> float:
        """Record the time since the previous mark (or the start) as `name`; returns it."""
        now = time.perf_counter()
        self.marks[name] = self.marks.get(name, 0.0) + now - self._last
        self._last = now
        return self.marks[name]

    def timings(self, phase_s: Mapping[str, float]) -> dict[str, float | None]:
        """The run's timings document: the marks, the trainer's phases and the in-run time."""
        phases = {f"{name}_s": seconds for name, seconds in phase_s.items()}
        return {
            "process_started_at": self.process_started_at,
            "startup_s": self.startup_s,
            **{f"{name}_s": seconds for name, seconds in self.marks.items()},
            **phases,
            "in_run_s": phase_s.get("train", 0.0) + phase_s.get("eval", 0.0),
        }


__all__ = ["JobClock", "process_started_at"]
