"""One training run: data -> encoder (HSTU or SASRec) -> retrieval and/or ranking -> metrics.

Selection: the validation value of `train.selection_metric` (a sweep sets it to its metric;
"auto" is ndcg@10, or NE for task "ranking"), evaluated every `eval_every` epochs and after the
last one; test metrics are computed at every evaluation and the ones at the best validation
epoch are reported (the first such epoch on ties), with that epoch's validation values and the
supervised tokens trained up to it. With `train.patience`, training stops once that many epochs
have passed since the best evaluation. Deterministic for a given config and thread count.

A run may span several processes (`gr_core.distributed`): each draws the same global batch and
trains on its share through the engine (`gr_core.engines`). With a `CheckpointPolicy` the run
saves its engine state and its own progress (position in the epoch, every random generator, the
evaluation history) every `every_steps` steps and when `interrupt()` turns true on any process
(then it raises `TrainingInterrupted`); started again with the same policy it resumes from the
newest checkpoint and trains exactly as if it had not stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gr_core.config import METRICS, RunConfig
from gr_core.data import EvalSplit, JaggedBatch, eval_batches, train_batches
from gr_core.devices import autocast, describe, restore_rng_states, rng_states
from gr_core.distributed import ProcessGroup, join_on_device, micro_batch_ranges
from gr_core.encoder import build_model, count_parameters
from gr_core.engines import build_engine
from gr_core.lengths import stochastic_length_plan
from gr_core.loaders import load_sequence_data
from gr_core.losses import sample_negatives
from gr_core.metrics import evaluate
from gr_core.objective import TrainingObjective
from gr_core.ranking import evaluate_ranking
from gr_core.sequences import SequenceData

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, dict[str, float]], None]
EvalCallback = Callable[[int, dict[str, float]], None]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class TrainResult:
    """Outcome of `train_run`.

    metrics: test metrics at the best validation epoch: "hr@10", "hr@50", "ndcg@10", "ndcg@50",
    "mrr" (retrieval tasks) and "ne" (ranking tasks); "val_<m>" the validation values of that
    same epoch; "final_<m>" the test metrics of the last evaluation (the last epoch trained);
    "final_train_loss" (mean loss over the last epoch run).
    selection_metric: the validation metric that chose best_epoch.
    history: one dict per evaluation ("epoch", "train_tokens" (cumulative supervised positions up
    to that evaluation), "train/loss", "val/<m>", "test/<m>").
    train_tokens: supervised positions processed in training, summed over the epochs run;
    tokens_at_best: the same, up to the best validation epoch (the compute behind `metrics`).
    test_per_user: each test user's outcome at the best validation epoch, sorted by user:
    "user_ids" and "rank" (retrieval), "ranking_user_ids", "label" and "logit" (ranking); for
    paired per-user comparisons of models (not written to the ledger).
    epochs_run: epochs trained (fewer than train.epochs after an early stop).
    device: where it trained ("cpu", or e.g. "cuda:0 (NVIDIA H100 80GB HBM3)").
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


class StoppedByMainProcess(Exception):
    """Another process of the run stopped it (its callback raised); that process has the reason."""


@dataclasses.dataclass(kw_only=True, slots=True)
class _Progress:
    """The trainer's own state, saved in every checkpoint beside the engine's."""

    step: int = 0
    epoch: int = 1
    batch_in_epoch: int = 0  # global batches of `epoch` done
    epoch_shuffle_state: dict[str, Any] | None = None  # the shuffling generator at the epoch's start
    loss_sum: float = 0.0
    loss_steps: int = 0
    train_tokens: int = 0
    epochs_run: int = 0
    epoch_loss: float = math.nan
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    best: dict[str, float] | None = None
    best_epoch: int = 0
    best_test_per_user: dict[str, Any] = dataclasses.field(default_factory=dict)
    elapsed_s: float = 0.0


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _generators_state(negatives_gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    return {
        "negatives": negatives_gen.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "device": rng_states(device),
    }


def _restore_generators(state: dict[str, Any], negatives_gen: torch.Generator, device: torch.device) -> None:
    negatives_gen.set_state(state["negatives"])
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    restore_rng_states(state.get("device", {}), device)


def train_run(
    config: RunConfig,
    *,
    on_step: StepCallback | None = None,
    on_eval: EvalCallback | None = None,
    data: SequenceData | None = None,
    checkpoint: CheckpointPolicy | None = None,
    interrupt: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train and evaluate one run; `on_step(step, {"train/loss", ...})`, `on_eval(epoch, {"val/<m>"})`.

    data: the run's sequences if already loaded (must be what `config.data` describes); loaded
    (or generated) from the config otherwise. checkpoint: save (and resume from) checkpoints;
    interrupt: polled after every step, true -> save a checkpoint and raise TrainingInterrupted
    (needs `checkpoint`). In a multi-process run (WORLD_SIZE > 1, engine "deepspeed") every
    process calls this; the callbacks run on rank 0 only, and every process returns the result.
    Process-wide side effects: seeds Python's, NumPy's and torch's global generators from
    train.seed (dropout draws from torch's) and sets torch's intra-op thread count; on a GPU
    (`train.device`), makes it the current device and turns TF32 matmuls off. Batches and negatives are drawn on the CPU
    whatever the device, so a run sees the same data on either.
    """
    start = time.perf_counter()
    data_cfg, model_cfg, train_cfg = config.data, config.model, config.train
    if interrupt is not None and checkpoint is None:
        raise ValueError("interrupt needs a checkpoint policy: an interrupted run must have somewhere to save")
    torch.set_num_threads(train_cfg.num_threads)
    _seed_everything(train_cfg.seed)
    device, group = join_on_device(train_cfg.device)
    if data is None:
        data = load_sequence_data(data_cfg)
    model = build_model(model_cfg, data.num_items, ranking_head=train_cfg.ranking)
    num_params = count_parameters(model)
    logger.info("run %s: %d users, %d events, params %s, on %s in %s", config.run_id, data.num_users,
                data.offsets[-1], num_params, describe(device), train_cfg.precision)
    engine = build_engine(TrainingObjective(model, config).to(device), train_cfg, group)
    objective = engine.module
    model = objective.encoder
    shuffle_rng = np.random.default_rng(train_cfg.seed)
    negatives_gen = torch.Generator().manual_seed(train_cfg.seed)
    max_len = model_cfg.max_seq_len
    # The same draw as `gr_core.lengths.train_sequence_lengths`, so planned FLOPs are what runs.
    subsampled, subsample_length = stochastic_length_plan(data.lengths, data_cfg, max_len)

    progress = _Progress()
    resumed_from = None
    clock = [start]  # progress.elapsed_s holds the time up to clock[0] (over every process lifetime)
    if checkpoint is not None:
        client_state = engine.load(checkpoint.directory)
        if client_state is not None:
            progress = _Progress(**client_state["progress"])
            _restore_generators(client_state["generators"], negatives_gen, device)
            resumed_from = progress.step
            logger.info("run %s: resumed from step %d (epoch %d)", config.run_id, progress.step, progress.epoch)

    def save_checkpoint() -> Path:
        assert checkpoint is not None
        progress.elapsed_s += time.perf_counter() - clock[0]
        clock[0] = time.perf_counter()
        tag = f"step-{progress.step:08d}"
        state = {"progress": dataclasses.asdict(progress), "generators": _generators_state(negatives_gen, device)}
        engine.save(checkpoint.directory, tag, state)
        group.barrier()
        if group.is_main:
            _drop_old_checkpoints(checkpoint.directory, keep=checkpoint.keep)
        logger.info("run %s: checkpoint %s", config.run_id, checkpoint.directory / tag)
        return checkpoint.directory / tag

    def run_eval(split: EvalSplit, per_user: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        out: dict[str, float] = {}
        size = train_cfg.eval_batch_size
        with engine.evaluation() as evaluated, autocast(device, train_cfg.precision):
            eval_model = evaluated.encoder
            if train_cfg.retrieval:
                batches = eval_batches(data, split=split, max_seq_len=max_len, batch_size=size, by_length=True,
                                       history=train_cfg.eval_filter)
                out.update(evaluate(eval_model, (batch.to(device) for batch in batches), per_user=per_user))
            if train_cfg.ranking:
                batches = eval_batches(
                    data, split=split, max_seq_len=max_len, batch_size=size, target_aware=True, by_length=True
                )
                out.update(evaluate_ranking(eval_model, (batch.to(device) for batch in batches), per_user=per_user))
        return out

    def train_step(batch: JaggedBatch) -> dict[str, float]:
        """One optimizer step on a global batch; its losses, averaged over the batch's positions."""
        negatives = (
            sample_negatives(batch.num_tokens, data.num_items, train_cfg.num_negatives, negatives_gen).to(device)
            if train_cfg.retrieval
            else None
        )
        sums: dict[str, float | torch.Tensor] = {"retrieval": 0.0, "ranking": 0.0}  # read once per step
        scale = engine.loss_multiplier / batch.num_tokens
        for first, stop in micro_batch_ranges(batch.num_seqs, group, train_cfg.grad_accumulation):
            weight = 1.0
            if first == stop:  # an empty share: a zero-weight pass keeps every process in step
                first, stop, weight = 0, 1, 0.0
            micro = batch if (first, stop) == (0, batch.num_seqs) else batch.select_sequences(first, stop)
            tokens = slice(int(batch.seq_offsets[first]), int(batch.seq_offsets[stop]))
            with autocast(device, train_cfg.precision):
                parts = objective(micro.to(device), negatives[tokens] if negatives is not None else None)
                loss = parts.get("retrieval", 0.0) + train_cfg.ranking_weight * parts.get("ranking", 0.0)
            assert isinstance(loss, torch.Tensor)
            engine.backward(loss * (weight * scale))
            engine.step()
            for name, part in parts.items():
                sums[name] = sums[name] + weight * part.detach()
        names = [name for name, on in (("retrieval", train_cfg.retrieval), ("ranking", train_cfg.ranking)) if on]
        means = {name: group.sum(float(sums[name])) / batch.num_tokens for name in names}
        logged = {"train/loss": means.get("retrieval", 0.0) + train_cfg.ranking_weight * means.get("ranking", 0.0)}
        if len(means) > 1:
            logged.update({f"train/{name}_loss": value for name, value in means.items()})
        return logged

    selection = train_cfg.selection
    sign = 1.0 if METRICS[selection] else -1.0  # compare sign * value, larger is better
    for epoch in range(progress.epoch, train_cfg.epochs + 1):
        objective.train()
        if progress.batch_in_epoch == 0:
            progress.epoch_shuffle_state = shuffle_rng.bit_generator.state
            progress.loss_sum, progress.loss_steps = 0.0, 0
        else:  # resuming mid-epoch: the epoch's batches again, from its start, skipping those done
            shuffle_rng.bit_generator.state = progress.epoch_shuffle_state
        batches = train_batches(
            data, max_seq_len=max_len, batch_size=train_cfg.batch_size, rng=shuffle_rng,
            subsampled=subsampled, subsample_length=subsample_length,
        )
        for index, batch in enumerate(batches):
            if index < progress.batch_in_epoch:
                continue
            logged = train_step(batch)
            progress.step += 1
            progress.batch_in_epoch = index + 1
            progress.train_tokens += batch.num_tokens
            loss_value = logged["train/loss"]
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"training loss became {loss_value} at step {progress.step} (epoch {epoch}); lower train.lr"
                )
            progress.loss_sum += loss_value
            progress.loss_steps += 1
            if on_step is not None and group.is_main:
                on_step(progress.step, logged)
            if checkpoint is not None:
                if interrupt is not None and group.any(interrupt()):
                    raise TrainingInterrupted(progress.step, save_checkpoint())
                if checkpoint.every_steps is not None and progress.step % checkpoint.every_steps == 0:
                    save_checkpoint()
        progress.epoch_loss = progress.loss_sum / max(progress.loss_steps, 1)
        progress.epochs_run = epoch
        progress.epoch, progress.batch_in_epoch = epoch + 1, 0
        if epoch % train_cfg.eval_every != 0 and epoch != train_cfg.epochs:
            continue
        test_per_user: dict[str, np.ndarray] = {}
        val, test = run_eval("val"), run_eval("test", test_per_user)
        record: dict[str, Any] = {"epoch": epoch, "train_tokens": progress.train_tokens,
                                  "train/loss": progress.epoch_loss}
        record.update({f"val/{k}": v for k, v in val.items()})
        record.update({f"test/{k}": v for k, v in test.items()})
        progress.history.append(record)
        logger.info("epoch %d: train loss %.4f, val %s", epoch, progress.epoch_loss,
                    ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
        _report_eval(on_eval, epoch, {f"val/{k}": v for k, v in val.items()}, group)
        if progress.best is None or sign * val[selection] > sign * progress.best[f"val/{selection}"]:
            progress.best, progress.best_epoch = record, epoch
            progress.best_test_per_user = test_per_user
        if (
            train_cfg.patience is not None
            and epoch - progress.best_epoch >= train_cfg.patience
            and epoch < train_cfg.epochs
        ):
            logger.info("early stop after epoch %d: no better validation %s since epoch %d", epoch, selection,
                        progress.best_epoch)
            break

    best = progress.best
    assert best is not None  # the last epoch run is always evaluated
    last = progress.history[-1]
    metrics = {k.removeprefix("test/"): v for k, v in best.items() if k.startswith("test/")}
    metrics.update({f"val_{k.removeprefix('val/')}": v for k, v in best.items() if k.startswith("val/")})
    metrics.update({f"final_{k.removeprefix('test/')}": v for k, v in last.items() if k.startswith("test/")})
    metrics["final_train_loss"] = progress.epoch_loss
    return TrainResult(
        metrics=metrics,
        best_epoch=progress.best_epoch,
        history=progress.history,
        steps=progress.step,
        train_tokens=progress.train_tokens,
        num_params=num_params,
        wall_time_s=progress.elapsed_s + time.perf_counter() - clock[0],
        selection_metric=selection,
        tokens_at_best=int(best["train_tokens"]),
        test_per_user=progress.best_test_per_user,
        epochs_run=progress.epochs_run,
        resumed_from_step=resumed_from,
        device=describe(device),
    )


def _report_eval(on_eval: EvalCallback | None, epoch: int, values: dict[str, float], group: ProcessGroup) -> None:
    """Run the evaluation callback on rank 0; if it raises (a pruner stopping the run), every process stops."""
    raised: BaseException | None = None
    if on_eval is not None and group.is_main:
        try:
            on_eval(epoch, values)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after telling the other processes
            raised = exc
    if group.any(raised is not None):
        if raised is not None:
            raise raised
        raise StoppedByMainProcess(f"rank 0 stopped the run after epoch {epoch}")


def _drop_old_checkpoints(directory: Path, *, keep: int) -> None:
    tags = sorted(p for p in Path(directory).glob("step-*") if p.is_dir())
    for old in tags[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
