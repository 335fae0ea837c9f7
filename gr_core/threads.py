"""How many CPU threads a run computes with (`train.num_threads`); torch-free, so a sweep job
can say what its runs may use before it imports torch."""

from __future__ import annotations

import os

# Set in a sweep job's process to the CPUs each of its runs may use (`sweeps.worker`).
CPUS_PER_RUN_ENV = "GR_SCALING_CPUS_PER_RUN"


def intra_op_threads(setting: int | str) -> int:
    """torch's intra-op thread count for `train.num_threads`.

    An integer is taken as given. "auto": the CPUs this run's job was given, from the first of
    GR_SCALING_CPUS_PER_RUN (a sweep sets it: the machine's CPUs over dispatch.max_parallel for the
    local executor), SLURM_CPUS_PER_TASK (Slurm's --cpus-per-task) and the CPUs this process may
    run on (its affinity mask).
    """
    if setting != "auto":
        return int(setting)
    for name in (CPUS_PER_RUN_ENV, "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) >= 1:
            return int(value)
    return max(1, len(os.sched_getaffinity(0)))


__all__ = ["CPUS_PER_RUN_ENV", "intra_op_threads"]
