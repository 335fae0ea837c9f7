"""Dispatch settings from the sweep spec's [dispatch] table (torch- and submitit-free)."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

# sbatch options that have their own field here, or that submitit sets itself.
_MANAGED_SBATCH_OPTIONS = {
    "partition": "dispatch.partition",
    "account": "dispatch.account",
    "qos": "dispatch.qos",
    "time": "dispatch.timeout_min",
    "nodes": "dispatch.nodes",
    "ntasks-per-node": "dispatch.tasks_per_node",
    "gpus-per-node": "dispatch.gpus_per_node",
    "cpus-per-task": "dispatch.cpus_per_task",
    "mem": "dispatch.mem_gb",
    "array": "dispatch.max_parallel (the array itself is one task per job of dispatch.runs_per_job runs)",
    "job-name": "submitit",
    "output": "submitit (it writes each job's logs under the sweep's jobs/ folder)",
    "error": "submitit (it writes each job's logs under the sweep's jobs/ folder)",
    "open-mode": "submitit",
    "signal": "submitit (it requeues on the signal it sets)",
}
_SBATCH_OPTION = re.compile(r"[a-z][a-z0-9_-]*")

SbatchValue = str | int | float | bool


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class DispatchConfig:
    """Where and how runs execute.

    executor: "local" runs each run as a subprocess on this machine (submitit's LocalExecutor);
    "slurm" submits job arrays; "auto" picks Slurm when `srun` is on PATH, else local.
    The Slurm resources (partition, account, qos, nodes, tasks_per_node, gpus_per_node, mem_gb,
    cpus_per_task, timeout_min) apply to each run's job; `slurm_additional_parameters` adds any
    other sbatch option by its long name without dashes, e.g. {constraint = "a100",
    exclusive = true, mail-type = "END"}.
    """

    executor: Literal["local", "slurm", "auto"] = "local"
    max_parallel: int = 2  # runs in flight at once (local) / slurm_array_parallelism
    timeout_min: int = 120
    cpus_per_task: int = 1
    poll_interval_s: float = 1.0  # between checks of Slurm jobs (squeue); a local job's end is seen within 0.05 s
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    mem_gb: float | None = None  # per node; None: the cluster's default
    slurm_additional_parameters: dict[str, SbatchValue] = dataclasses.field(default_factory=dict)
    # Steps between a run's checkpoints; None: only when Slurm signals a timeout or preemption
    # (a job killed without warning then starts its run over).
    checkpoint_every_steps: int | None = None
    # Runs one job trains one after another (one process, imports paid once; each run still claimed,
    # recorded, retried and checkpointed on its own). "auto": the planner's choice from the runs'
    # estimated time (sweeps.packing). Runs of several processes (nodes x tasks_per_node > 1) are
    # never packed.
    runs_per_job: int | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        for name in ("max_parallel", "timeout_min", "cpus_per_task", "nodes", "tasks_per_node"):
            if getattr(self, name) < 1:
                raise ValueError(f"dispatch.{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every_steps is not None and self.checkpoint_every_steps < 1:
            raise ValueError(
                f"dispatch.checkpoint_every_steps must be >= 1 (or left out: checkpoint only on "
                f"preemption), got {self.checkpoint_every_steps}"
            )
        if self.runs_per_job != "auto" and (
            isinstance(self.runs_per_job, bool) or not isinstance(self.runs_per_job, int) or self.runs_per_job < 1
        ):
            raise ValueError(
                f'dispatch.runs_per_job must be an integer >= 1 or "auto" (the planner packs small runs), '
                f"got {self.runs_per_job!r}"
            )
        if self.runs_per_job not in ("auto", 1) and self.nodes * self.tasks_per_node > 1:
            raise ValueError(
                f"dispatch.runs_per_job = {self.runs_per_job} needs runs of one process, but nodes x tasks_per_node "
                f'= {self.nodes * self.tasks_per_node}: set runs_per_job = 1 (or "auto")'
            )
        if self.gpus_per_node < 0:
            raise ValueError(f"dispatch.gpus_per_node must be >= 0, got {self.gpus_per_node}")
        if self.poll_interval_s <= 0:
            raise ValueError(f"dispatch.poll_interval_s must be > 0, got {self.poll_interval_s}")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise ValueError(f"dispatch.mem_gb must be > 0 (or left out for the cluster's default), got {self.mem_gb}")
        for name in ("partition", "account", "qos"):
            value = getattr(self, name)
            if value is not None and (not value or any(c.isspace() for c in value)):
                raise ValueError(f"dispatch.{name} must be a non-empty name without spaces, got {value!r}")
        self._check_additional_parameters()

    def _check_additional_parameters(self) -> None:
        extra = self.slurm_additional_parameters
        if not isinstance(extra, dict):
            raise TypeError(f"dispatch.slurm_additional_parameters must be a table, got {extra!r}")
        for key, value in extra.items():
            label = f"dispatch.slurm_additional_parameters.{key}"
            if not isinstance(key, str) or not _SBATCH_OPTION.fullmatch(key):
                hint = f" (write {key.lstrip('-')!r})" if isinstance(key, str) and key.startswith("-") else ""
                raise ValueError(f"{label}: not an sbatch long option name{hint}")
            owner = _MANAGED_SBATCH_OPTIONS.get(key.replace("_", "-"))
            if owner is not None:
                raise ValueError(f"{label}: --{key.replace('_', '-')} is set by {owner}; set it there instead")
            if not isinstance(value, SbatchValue):
                raise TypeError(f"{label} must be a string, number or true, got {value!r}")
            if value is False:
                raise ValueError(f"{label} = false: leave the option out instead (sbatch flags have no 'off' form)")

    def slurm_only_settings(self) -> list[str]:
        """Fields set away from their defaults that only the Slurm executor uses."""
        defaults = DispatchConfig()
        names = ("partition", "account", "qos", "nodes", "tasks_per_node", "gpus_per_node", "mem_gb", "cpus_per_task")
        changed = [name for name in names if getattr(self, name) != getattr(defaults, name)]
        return changed + (["slurm_additional_parameters"] if self.slurm_additional_parameters else [])
