"""The caller's hooks into a run, and how they behave when the run spans several processes.

They run on rank 0 only (one process reports to the ledger and W&B). An evaluation hook may
stop the run by raising (a tuner's pruner does): the other processes must stop too, at the same
point, or they would wait forever in the next collective; so every process asks whether rank 0
raised, and the others raise `StoppedByMainProcess`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from gr_core.distributed import ProcessGroup

StepCallback = Callable[[int, dict[str, float]], None]
EvalCallback = Callable[[int, dict[str, float]], None]


class StoppedByMainProcess(Exception):
    """Another process of the run stopped it (its callback raised); that process has the reason."""


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Callbacks:
    """on_step(step, {"train/loss", ...}) after every optimizer step; on_eval(epoch, {"val/<m>": ...})
    after every evaluation."""

    on_step: StepCallback | None = None
    on_eval: EvalCallback | None = None

    def after_step(self, step: int, logged: dict[str, float], group: ProcessGroup) -> None:
        if self.on_step is not None and group.is_main:
            self.on_step(step, logged)

    def after_eval(self, epoch: int, values: dict[str, float], group: ProcessGroup) -> None:
        """Run on_eval on rank 0; if it raises, every process raises (a collective: all must call it)."""
        raised: BaseException | None = None
        if self.on_eval is not None and group.is_main:
            try:
                self.on_eval(epoch, values)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after telling the other processes
                raised = exc
        if group.any(raised is not None):
            if raised is not None:
                raise raised
            raise StoppedByMainProcess(f"rank 0 stopped the run after epoch {epoch}")
