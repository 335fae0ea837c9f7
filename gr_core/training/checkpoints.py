"""Saving and resuming a run: where and how often (`CheckpointPolicy`), and the saving itself on
every process of the run (`Checkpointer`).

A checkpoint is the engine's state (weights and optimizer, in DeepSpeed's layout for a ZeRO run;
`gr_core.engines`) plus the trainer's own state (`Trainer.state_dict`: its position in the epoch,
the evaluation history and every random generator it draws from), so that a resumed run trains
bit for bit as if it had not stopped. Every process saves (a ZeRO engine holds one shard each);
only rank 0 deletes old ones, after all have written theirs.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gr_core.devices import restore_rng_states, rng_states
from gr_core.distributed import ProcessGroup
from gr_core.engines import TrainingEngine

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class CheckpointPolicy:
    """Where a run keeps its checkpoints and how often it writes them.

    every_steps: optimizer steps between checkpoints (None: only when interrupted). keep: how
    many of the newest to keep on disk.
    """

    directory: Path
    every_steps: int | None = None
    keep: int = 2

    def __post_init__(self) -> None:
        if self.every_steps is not None and self.every_steps < 1:
            raise ValueError(f"checkpoint every_steps must be >= 1 or None, got {self.every_steps}")
        if self.keep < 1:
            raise ValueError(f"checkpoint keep must be >= 1, got {self.keep}")


class TrainingInterrupted(Exception):
    """The run was asked to stop; its state is saved at `step` under `directory`."""

    def __init__(self, step: int, directory: Path) -> None:
        super().__init__(f"interrupted after step {step}; checkpoint in {directory}")
        self.step, self.directory = step, directory


class Checkpointer:
    """Writes a run's checkpoints by its policy and reads the newest back.

    interrupt: polled after every step on every process; true on any of them saves a checkpoint
    and raises TrainingInterrupted (a Slurm job at its time limit, a preempted one).
    """

    def __init__(
        self,
        policy: CheckpointPolicy,
        engine: TrainingEngine,
        group: ProcessGroup,
        *,
        interrupt: Callable[[], bool] | None = None,
        run_id: str = "",
    ) -> None:
        self.policy, self._engine, self._group, self._interrupt = policy, engine, group, interrupt
        self._run_id = run_id

    def load(self) -> dict[str, Any] | None:
        """The trainer state of the newest checkpoint (the engine's own is loaded in place), or None."""
        return self._engine.load(self.policy.directory)

    def save(self, step: int, state: dict[str, Any]) -> Path:
        """Save the engine and the trainer `state` as the checkpoint of `step`; its directory."""
        tag = f"step-{step:08d}"
        self._engine.save(self.policy.directory, tag, state)
        self._group.barrier()  # every shard written before rank 0 deletes an older checkpoint
        if self._group.is_main:
            _drop_old_checkpoints(self.policy.directory, keep=self.policy.keep)
        logger.info("run %s: checkpoint %s", self._run_id, self.policy.directory / tag)
        return self.policy.directory / tag

    def after_step(self, step: int, state: Callable[[], dict[str, Any]]) -> None:
        """After optimizer step `step`: save and raise when interrupted, or save when one is due.

        `state` is called only when saving (it snapshots every generator). Every process must call
        this after every step: the interrupt poll is a collective.
        """
        if self._interrupt is not None and self._group.any(self._interrupt()):
            raise TrainingInterrupted(step, self.save(step, state()))
        every = self.policy.every_steps
        if every is not None and step % every == 0:
            self.save(step, state())


def capture_generators(
    shuffle: np.random.Generator, negatives: torch.Generator, device: torch.device
) -> dict[str, Any]:
    """Every random generator a run draws from: its batch shuffling's and its negatives' own, and
    the process-wide ones (torch's for dropout, NumPy's, Python's, the device's)."""
    return {
        "shuffle": shuffle.bit_generator.state,
        "negatives": negatives.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "device": rng_states(device),
    }


def restore_generators(
    state: dict[str, Any], shuffle: np.random.Generator, negatives: torch.Generator, device: torch.device
) -> None:
    # Absent from checkpoints written before it was saved: those were all taken mid-epoch, where
    # `Trainer.train_epoch` restores the shuffling from `Progress.epoch_shuffle_state` anyway.
    if "shuffle" in state:
        shuffle.bit_generator.state = state["shuffle"]
    negatives.set_state(state["negatives"])
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    restore_rng_states(state.get("device", {}), device)


def _drop_old_checkpoints(directory: Path, *, keep: int) -> None:
    tags = sorted(p for p in Path(directory).glob("step-*") if p.is_dir())
    for old in tags[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
