"""Which runs share a job: `[dispatch] runs_per_job`, and the planner's choice when it is "auto".

Every job pays a fixed cost before its run trains (a process, the torch import, the claim, the
W&B run, the optimizer's imports: ~8-10 s on 2 CPU cores, benchmarks/results/sweep_throughput.json),
which dwarfs the training of a ladder's smallest rungs. A job that trains several runs one after
another pays the process and the imports once. Each run in it is still claimed, recorded, retried
and checkpointed on its own (`sweeps.worker.execute_attempts`).

"auto" packs so that the fixed cost is at most `OVERHEAD_SHARE` of a job's estimated training
time and never more estimated time than half a job's time limit. A run's time is estimated from
its planned FLOPs with the spec's [cost] table (device peak x MFU), the same estimate `plan`
prints: set [cost] to the hardware the runs train on (its default, an H100, makes CPU runs look
~1000x shorter than they are, so "auto" then packs as many as the slots allow). Whatever the
number per job, a wave has at least `max_parallel` jobs while it has that many runs, so no slot
sits idle. Runs are dealt to jobs longest first, each to the job with the least estimated time
so far (longest-processing-time first), and each job trains its runs longest first. Estimates
are only estimates: a job whose runs are done takes the longest run still queued in another job
of its wave (`sweeps.worker.WaveShare`), so the wave's jobs end close together whatever the
real times are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

from scaling.cost import CostInputs
from scaling.cost import cost as estimate_cost
from slurm.config import DispatchConfig

Run = TypeVar("Run")

JOB_FIXED_COST_S = 10.0  # measured per job on 2 CPU cores (benchmarks/sweep_throughput.py)
OVERHEAD_SHARE = 0.05  # "auto": fixed cost at most this share of a job's estimated training


def estimated_seconds(flops: float, cost: CostInputs) -> float:
    """Wall seconds to train `flops` under the spec's [cost] (device peak x MFU x devices)."""
    return estimate_cost(flops, cost).wall_clock_hours * 3600.0


def runs_per_job(seconds: Sequence[float], dispatch: DispatchConfig) -> int:
    """How many runs each job of a wave trains: the spec's number, or the "auto" choice above."""
    if not seconds:
        return 1
    if dispatch.runs_per_job != "auto":
        return dispatch.runs_per_job
    if dispatch.nodes * dispatch.tasks_per_node > 1:
        return 1  # runs of several processes are never packed (see DispatchConfig.runs_per_job)
    keep_slots_busy = math.ceil(len(seconds) / dispatch.max_parallel)
    typical = sorted(seconds)[len(seconds) // 2]
    enough = math.ceil(JOB_FIXED_COST_S / (OVERHEAD_SHARE * typical)) if typical > 0 else keep_slots_busy
    longest = max(seconds)
    fits = max(1, math.floor(0.5 * dispatch.timeout_min * 60.0 / longest)) if longest > 0 else keep_slots_busy
    return max(1, min(keep_slots_busy, enough, fits))


def pack(runs: Sequence[Run], seconds: Callable[[Run], float], per_job: int, *, min_jobs: int = 1) -> list[list[Run]]:
    """Deal `runs` into max(ceil(len / per_job), min(len, min_jobs)) jobs of at most `per_job`
    runs, longest first onto the least-loaded job; each job then trains its runs longest first
    (what is left for the end of the wave is short, and other jobs can take it over).
    min_jobs: the parallel slots to fill (`dispatch.max_parallel`)."""
    if per_job < 1:
        raise ValueError(f"runs per job must be >= 1, got {per_job}")
    jobs: list[list[Run]] = [[] for _ in range(max(math.ceil(len(runs) / per_job), min(len(runs), min_jobs)))]
    load = [0.0] * len(jobs)
    for run in sorted(runs, key=seconds, reverse=True):
        open_jobs = [j for j in range(len(jobs)) if len(jobs[j]) < per_job]
        j = min(open_jobs, key=lambda i: (load[i], i))
        jobs[j].append(run)
        load[j] += seconds(run)
    for job in jobs:
        job.sort(key=seconds, reverse=True)
    return sorted(jobs, key=lambda job: -sum(seconds(run) for run in job))


__all__ = ["JOB_FIXED_COST_S", "OVERHEAD_SHARE", "estimated_seconds", "pack", "runs_per_job"]
