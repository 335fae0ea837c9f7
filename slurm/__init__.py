"""Dispatch of planned runs through submitit (local executor here; Slurm when there is one)."""

from slurm.config import DispatchConfig

__all__ = ["DispatchConfig"]
