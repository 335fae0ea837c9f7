"""Which evaluation a run reports, and when it stops early: both on one validation metric.

The reported epoch is the one with the best validation value of `train.selection_metric` (a
sweep sets it to its own metric), so the test metrics a run reports were chosen without looking
at test data. Only a strictly better value moves it: on ties the first such epoch stays, and a
NaN never wins. With `train.patience`, the run stops once that many epochs have passed since the
reported one; on the last epoch there is nothing left to stop.
"""

from __future__ import annotations

import dataclasses

from gr_core.config import METRICS, TrainConfig


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Selection:
    """metric: the validation metric that chooses (e.g. "ndcg@10", "ne"); patience: epochs without
    a better value before stopping (None: never early); epochs: the run's last epoch."""

    metric: str
    higher_is_better: bool
    patience: int | None
    epochs: int

    @classmethod
    def from_config(cls, train: TrainConfig) -> Selection:
        metric = train.selection  # "auto" resolved: ndcg@10, or ne for task "ranking"
        return cls(metric=metric, higher_is_better=METRICS[metric], patience=train.patience, epochs=train.epochs)

    def improves(self, value: float, best: float | None) -> bool:
        """Whether validation `value` beats `best`, the best so far (None before the first evaluation)."""
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best

    def should_stop(self, epoch: int, best_epoch: int) -> bool:
        """Whether to stop after evaluating `epoch`, the reported epoch being `best_epoch`."""
        return self.patience is not None and epoch - best_epoch >= self.patience and epoch < self.epochs
