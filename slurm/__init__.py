"""Dispatch of planned runs through submitit (local processes, or Slurm job arrays), and a
single-node development Slurm cluster for tests (`python -m slurm.devcluster up|down|status`)."""

from slurm.config import DispatchConfig

__all__ = ["DispatchConfig"]
