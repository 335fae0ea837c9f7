"""What a training run holds while it trains (`Progress`, saved in its checkpoints) and what it
returns (`TrainResult`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np


@dataclasses.dataclass(kw_only=True, slots=True)
class Progress:
    """The trainer's own state, saved in every checkpoint beside the engine's."""

    step: int = 0
    epoch: int = 1  # the epoch being trained (the next one, between epochs)
    batch_in_epoch: int = 0  # global batches of `epoch` done
    epoch_shuffle_state: dict[str, Any] | None = None  # the shuffling generator at the epoch's start
    loss_sum: float = 0.0
    loss_steps: int = 0
    train_tokens: int = 0
    epochs_run: int = 0
    epoch_loss: float = math.nan
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    best: dict[str, float] | None = None  # the history record of the reported epoch
    best_epoch: int = 0
    best_test_per_user: dict[str, Any] = dataclasses.field(default_factory=dict)
    elapsed_s: float = 0.0  # wall time of the run's earlier lives (before its last resume)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class TrainResult:
    """Outcome of `gr_core.trainer.train_run`.

    metrics: test metrics at the best validation epoch: "hr@10", "hr@50", "ndcg@10", "ndcg@50",
    "mrr" (retrieval tasks) and "ne" (ranking tasks); "val_<m>" the validation values of that
    same epoch; "final_<m>" the test metrics of the last evaluation (the last epoch trained);
    "final_train_loss" (mean loss over the last epoch run).
    selection_metric: the validation metric that chose best_epoch.
    history: one dict per evaluation ("epoch", "train_tokens" (cumulative supervised positions up
    to that evaluation), "train/loss", "val/<m>"); the best epoch's and the last one's also hold
    "test/<m>" (test is evaluated once training ends, on those two epochs' weights).
    train_tokens: supervised positions processed in training, summed over the epochs run;
    tokens_at_best: the same, up to the best validation epoch (the compute behind `metrics`).
    test_per_user: each test user's outcome at the best validation epoch, sorted by user:
    "user_ids" and "rank" (retrieval), "ranking_user_ids", "label" and "logit" (ranking); for
    paired per-user comparisons of models (not written to the ledger).
    epochs_run: epochs trained (fewer than train.epochs after an early stop).
    device: where it trained ("cpu", or e.g. "cuda:0 (NVIDIA H100 80GB HBM3)").
    phase_s: seconds per phase of this life of the run (since it started or last resumed):
    "data" (load or generate the sequences), "setup" (model, optimizer and engine), "train"
    (optimizer steps, checkpoints included), "eval" (the full-ranking passes on validation and
    test). The rest of the life's time: joining, seeding, loading a checkpoint, callbacks.
    """

    metrics: dict[str, float]
    best_epoch: int
    history: list[dict[str, float]]
    steps: int
    train_tokens: int
    num_params: dict[str, int]
    wall_time_s: float
    selection_metric: str
    tokens_at_best: int
    test_per_user: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    epochs_run: int = 0
    resumed_from_step: int | None = None
    device: str = "cpu"
    threads: int = 1  # torch intra-op threads it trained with (train.num_threads resolved)
    phase_s: dict[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, progress: Progress, **run: Any) -> TrainResult:
        """The result of a run that ended at `progress`; `run`: the fields progress does not hold
        (num_params, wall_time_s, selection_metric, resumed_from_step, device, threads, phase_s)."""
        best, last = progress.best, progress.history[-1]
        assert best is not None  # the last epoch run is always evaluated
        metrics = {k.removeprefix("test/"): v for k, v in best.items() if k.startswith("test/")}
        metrics.update({f"val_{k.removeprefix('val/')}": v for k, v in best.items() if k.startswith("val/")})
        metrics.update({f"final_{k.removeprefix('test/')}": v for k, v in last.items() if k.startswith("test/")})
        metrics["final_train_loss"] = progress.epoch_loss
        return cls(
            metrics=metrics, best_epoch=progress.best_epoch, history=progress.history, steps=progress.step,
            train_tokens=progress.train_tokens, tokens_at_best=int(best["train_tokens"]),
            test_per_user=progress.best_test_per_user, epochs_run=progress.epochs_run, **run,
        )
