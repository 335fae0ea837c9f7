"""Dispatch settings from the sweep spec's [dispatch] table (torch- and submitit-free)."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class DispatchConfig:
    """Where and how runs execute.

    executor: "local" runs each run as a subprocess on this machine (submitit's LocalExecutor);
    "slurm" submits job arrays; "auto" picks Slurm when `srun` is on PATH, else local.
    """

    executor: Literal["local", "slurm", "auto"] = "local"
    max_parallel: int = 2  # runs in flight at once (local) / slurm_array_parallelism
    timeout_min: int = 120
    cpus_per_task: int = 1
    poll_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_parallel < 1:
            raise ValueError(f"dispatch.max_parallel must be >= 1, got {self.max_parallel}")
        if self.timeout_min < 1:
            raise ValueError(f"dispatch.timeout_min must be >= 1, got {self.timeout_min}")
        if self.cpus_per_task < 1:
            raise ValueError(f"dispatch.cpus_per_task must be >= 1, got {self.cpus_per_task}")
        if self.poll_interval_s <= 0:
            raise ValueError(f"dispatch.poll_interval_s must be > 0, got {self.poll_interval_s}")
