"""One training run: data -> encoder (HSTU or SASRec) -> retrieval and/or ranking -> metrics.

`train_run` builds a `Trainer` and runs it. The trainer steps through epochs of global batches,
evaluates validation every `eval_every` epochs and after the last one, keeping a copy of the
weights of the best validation epoch, and evaluates test once training ends: on the last weights
(the "final" metrics) and on the kept best ones (the reported metrics; one pass when the best
epoch is the last). It leaves two decisions to small units of their own: which evaluation it reports and when it stops
early (`gr_core.training.selection`: on the validation value of `train.selection_metric`), and
when it saves (`gr_core.training.checkpoints`). The result carries the test metrics of the
reported epoch, that epoch's validation values and the supervised tokens trained up to it.
Deterministic for a given config and thread count.

A run may span several processes (`gr_core.distributed`): each draws the same global batch and
trains on its share through the engine (`gr_core.engines`). With a `CheckpointPolicy` the run
saves its engine state and its own (`Trainer.state_dict`) every `every_steps` steps and when
`interrupt()` turns true on any process (then it raises `TrainingInterrupted`); started again
with the same policy it resumes from the newest checkpoint and trains exactly as if it had not
stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from gr_core.config import RunConfig
from gr_core.data import EvalSplit, JaggedBatch, eval_batches, train_batches
from gr_core.devices import autocast, describe
from gr_core.distributed import join_on_device, micro_batch_ranges
from gr_core.encoder import build_model, count_parameters
from gr_core.engines import build_engine
from gr_core.lengths import stochastic_length_plan
from gr_core.loaders import load_sequence_data
from gr_core.losses import sample_negatives
from gr_core.metrics import evaluate  # looked up here at each evaluation: tests script it through this name
from gr_core.objective import TrainingObjective
from gr_core.ranking import evaluate_ranking
from gr_core.sequences import SequenceData
from gr_core.threads import intra_op_threads
from gr_core.training.callbacks import Callbacks, EvalCallback, StepCallback, StoppedByMainProcess
from gr_core.training.checkpoints import (
    Checkpointer,
    CheckpointPolicy,
    TrainingInterrupted,
    capture_generators,
    restore_generators,
)
from gr_core.training.selection import Selection
from gr_core.training.state import Progress, TrainResult
from kernels.hstu_attention import batch_scope

logger = logging.getLogger(__name__)


class Trainer:
    """One run's model, engine, data and progress; `fit` trains it to the end.

    Building it has the process-wide side effects `train_run` lists. `callbacks` run on rank 0 only
    (`gr_core.training.callbacks`).
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        data: SequenceData | None = None,
        callbacks: Callbacks = Callbacks(),
    ) -> None:
        self._started = time.perf_counter()
        self.config, self.callbacks = config, callbacks
        self._train = train = config.train
        self.threads = intra_op_threads(train.num_threads)
        torch.set_num_threads(self.threads)
        # Python's, NumPy's and torch's global generators: dropout draws from torch's.
        random.seed(train.seed)
        np.random.seed(train.seed)
        torch.manual_seed(train.seed)
        self.device, self.group = join_on_device(train.device)
        began = time.perf_counter()
        self.data = load_sequence_data(config.data) if data is None else data
        data_s, began = time.perf_counter() - began, time.perf_counter()
        model = build_model(config.model, self.data.num_items, ranking_head=train.ranking)
        self.num_params = count_parameters(model)
        logger.info("run %s: %d users, %d events, params %s, on %s in %s", config.run_id, self.data.num_users,
                    self.data.offsets[-1], self.num_params, describe(self.device), train.precision)
        self.engine = build_engine(TrainingObjective(model, config).to(self.device), train, self.group)
        self.objective = self.engine.module
        # Batches and negatives are drawn on the CPU whatever the device: a run sees the same data on either.
        self.shuffle_rng = np.random.default_rng(train.seed)
        self.negatives_gen = torch.Generator().manual_seed(train.seed)
        # The same draw as `gr_core.lengths.train_sequence_lengths`, so planned FLOPs are what runs.
        self._subsampled, self._subsample_length = stochastic_length_plan(
            self.data.lengths, config.data, config.model.max_seq_len)
        self.selection = Selection.from_config(train)
        self.progress = Progress()
        # Seconds per phase of this life of the run (not checkpointed: the job's own marks,
        # `sweeps.job_timing`, cover this life too).
        self.phase_s = {"data": data_s, "setup": time.perf_counter() - began}
        self.resumed_from_step: int | None = None
        # The weights of the best validation epoch so far (CPU copies), for its test evaluation.
        self._best_weights: dict[str, torch.Tensor] | None = None

    # ---- state ---------------------------------------------------------------------------
    def elapsed_s(self) -> float:
        """Wall time of the run over every process lifetime, up to now."""
        return self.progress.elapsed_s + time.perf_counter() - self._started

    def state_dict(self) -> dict[str, Any]:
        """Everything of the run's but the engine's weights and optimizer: progress and generators."""
        progress = dataclasses.asdict(self.progress)
        progress["elapsed_s"] = self.elapsed_s()
        generators = capture_generators(self.shuffle_rng, self.negatives_gen, self.device)
        return {"progress": progress, "generators": generators, "best_weights": self._best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()` of an earlier life of this run (its engine already loaded)."""
        self.progress = Progress(**state["progress"])
        self._best_weights = state.get("best_weights")  # None in an older trainer's checkpoint
        restore_generators(state["generators"], self.shuffle_rng, self.negatives_gen, self.device)
        self.resumed_from_step = self.progress.step
        logger.info("run %s: resumed from step %d (epoch %d)", self.config.run_id, self.progress.step,
                    self.progress.epoch)

    # ---- training ------------------------------------------------------------------------
    def step(self, batch: JaggedBatch) -> dict[str, float]:
        """One optimizer step on a global batch; its losses, averaged over the batch's positions."""
        train, group = self._train, self.group
        negatives = (
            sample_negatives(batch.num_tokens, self.data.num_items, train.num_negatives, self.negatives_gen)
            .to(self.device) if train.retrieval else None
        )
        sums: dict[str, float | torch.Tensor] = {"retrieval": 0.0, "ranking": 0.0}  # read once per step
        scale = self.engine.loss_multiplier / batch.num_tokens
        for first, stop in micro_batch_ranges(batch.num_seqs, group, train.grad_accumulation):
            weight = 1.0
            if first == stop:  # an empty share: a zero-weight pass keeps every process in step
                first, stop, weight = 0, 1, 0.0
            micro = batch if (first, stop) == (0, batch.num_seqs) else batch.select_sequences(first, stop)
            tokens = slice(int(batch.seq_offsets[first]), int(batch.seq_offsets[stop]))
            # The attention layers' forward and backward share the batch's time tables (one build).
            with batch_scope():
                with autocast(self.device, train.precision):
                    parts = self.objective(micro.to(self.device), negatives[tokens] if negatives is not None else None)
                    loss = parts.get("retrieval", 0.0) + train.ranking_weight * parts.get("ranking", 0.0)
                assert isinstance(loss, torch.Tensor)
                self.engine.backward(loss * (weight * scale))
            self.engine.step()
            for name, part in parts.items():
                sums[name] = sums[name] + weight * part.detach()
        names = [name for name, on in (("retrieval", train.retrieval), ("ranking", train.ranking)) if on]
        means = {name: group.sum(float(sums[name])) / batch.num_tokens for name in names}
        logged = {"train/loss": means.get("retrieval", 0.0) + train.ranking_weight * means.get("ranking", 0.0)}
        if len(means) > 1:
            logged.update({f"train/{name}_loss": value for name, value in means.items()})
        return logged

    def train_epoch(self, checkpointer: Checkpointer | None = None) -> None:
        """Train `progress.epoch` to its end (from where a resumed run left it), then count it done."""
        with self._timed("train"):
            self._train_epoch(checkpointer)

    def _train_epoch(self, checkpointer: Checkpointer | None) -> None:
        progress, train = self.progress, self._train
        self.objective.train()
        if progress.batch_in_epoch == 0:
            progress.epoch_shuffle_state = self.shuffle_rng.bit_generator.state
            progress.loss_sum, progress.loss_steps = 0.0, 0
        else:  # resuming mid-epoch: the epoch's batches again, from its start, skipping those done
            self.shuffle_rng.bit_generator.state = progress.epoch_shuffle_state
        batches = train_batches(
            self.data, max_seq_len=self.config.model.max_seq_len, batch_size=train.batch_size, rng=self.shuffle_rng,
            subsampled=self._subsampled, subsample_length=self._subsample_length,
        )
        for index, batch in enumerate(batches):
            if index < progress.batch_in_epoch:
                continue
            logged = self.step(batch)
            progress.step += 1
            progress.batch_in_epoch = index + 1
            progress.train_tokens += batch.num_tokens
            loss_value = logged["train/loss"]
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"training loss became {loss_value} at step {progress.step} "
                                         f"(epoch {progress.epoch}); lower train.lr")
            progress.loss_sum += loss_value
            progress.loss_steps += 1
            self.callbacks.after_step(progress.step, logged, self.group)
            if checkpointer is not None:
                checkpointer.after_step(progress.step, self.state_dict)
        progress.epoch_loss = progress.loss_sum / max(progress.loss_steps, 1)
        progress.epochs_run = progress.epoch
        progress.epoch, progress.batch_in_epoch = progress.epoch + 1, 0

    # ---- evaluation ----------------------------------------------------------------------
    def evaluate(self, split: EvalSplit, per_user: dict[str, np.ndarray] | None = None, *,
                 weights: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """Metrics of `split` ("val" or "test") under full ranking; fills `per_user` when given.
        weights: evaluate these (a `_snapshot`) instead of the current ones, which they replace."""
        out: dict[str, float] = {}
        size, max_len = self._train.eval_batch_size, self.config.model.max_seq_len
        with self.engine.evaluation() as evaluated, autocast(self.device, self._train.precision):
            if weights is not None:
                evaluated.load_state_dict(weights)
            model = evaluated.encoder
            if self._train.retrieval:
                batches = eval_batches(self.data, split=split, max_seq_len=max_len, batch_size=size, by_length=True,
                                       history=self._train.eval_filter)
                out.update(evaluate(model, (batch.to(self.device) for batch in batches), per_user=per_user))
            if self._train.ranking:
                batches = eval_batches(self.data, split=split, max_seq_len=max_len, batch_size=size, target_aware=True,
                                       by_length=True)
                out.update(evaluate_ranking(model, (batch.to(self.device) for batch in batches), per_user=per_user))
        return out

    def evaluate_epoch(self) -> None:
        """Evaluate the epoch just trained on validation: record it, report it, and keep its
        weights if it is the best so far (test waits for `evaluate_test`)."""
        progress, epoch, metric = self.progress, self.progress.epochs_run, self.selection.metric
        with self._timed("eval"):
            val = self.evaluate("val")
        record: dict[str, Any] = {"epoch": epoch, "train_tokens": progress.train_tokens,
                                  "train/loss": progress.epoch_loss}
        record.update({f"val/{k}": v for k, v in val.items()})
        progress.history.append(record)
        logger.info("epoch %d: train loss %.4f, val %s", epoch, progress.epoch_loss,
                    ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
        self.callbacks.after_eval(epoch, {f"val/{k}": v for k, v in val.items()}, self.group)
        if self.selection.improves(val[metric], None if progress.best is None else progress.best[f"val/{metric}"]):
            progress.best, progress.best_epoch = record, epoch
            with self._timed("eval"):
                self._best_weights = self._snapshot()

    def _snapshot(self) -> dict[str, torch.Tensor]:
        """A CPU copy of every weight, as the evaluated module holds them."""
        with self.engine.evaluation() as evaluated:
            return {name: tensor.detach().to("cpu", copy=True) for name, tensor in evaluated.state_dict().items()}

    def evaluate_test(self) -> None:
        """Training has ended: test on the last weights (the last record's "test/<m>") and on the
        best validation epoch's (the best record's, with each user's outcome): one pass when the
        best epoch is the last. The module then holds the best weights. Records an older trainer
        tested before its checkpoint keep their values."""
        progress = self.progress
        best, last = progress.best, progress.history[-1]
        assert best is not None  # the last epoch run is always evaluated
        tested = lambda record: any(key.startswith("test/") for key in record)  # noqa: E731
        per_user: dict[str, np.ndarray] = {}
        with self._timed("eval"):
            if not tested(best) and best["epoch"] == last["epoch"]:
                at_best = at_last = self.evaluate("test", per_user)
            else:
                at_last = None if tested(last) else self.evaluate("test")
                at_best = None
                if not tested(best):
                    if self._best_weights is None:
                        raise RuntimeError(f"run {self.config.run_id}: the weights of epoch {best['epoch']} were not kept")
                    at_best = self.evaluate("test", per_user, weights=self._best_weights)
        if at_last is not None:
            last.update({f"test/{k}": v for k, v in at_last.items()})
        if at_best is not None:
            for record in (best, *(r for r in progress.history if r["epoch"] == best["epoch"])):
                record.update({f"test/{k}": v for k, v in at_best.items()})
            progress.best_test_per_user = per_user

    @contextlib.contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.phase_s[phase] = self.phase_s.get(phase, 0.0) + time.perf_counter() - began

    # ---- the run -------------------------------------------------------------------------
    def fit(self, checkpointer: Checkpointer | None = None) -> TrainResult:
        """Train from the current progress to the last epoch, or to an early stop."""
        train, progress = self._train, self.progress
        while progress.epoch <= train.epochs:
            self.train_epoch(checkpointer)
            epoch = progress.epochs_run
            if epoch % train.eval_every != 0 and epoch != train.epochs:
                continue
            self.evaluate_epoch()
            if self.selection.should_stop(epoch, progress.best_epoch):
                logger.info("early stop after epoch %d: no better validation %s since epoch %d", epoch,
                            self.selection.metric, progress.best_epoch)
                break
        self.evaluate_test()
        return self.result()

    def result(self) -> TrainResult:
        return TrainResult.of(
            self.progress, num_params=self.num_params, wall_time_s=self.elapsed_s(),
            selection_metric=self.selection.metric, resumed_from_step=self.resumed_from_step,
            device=describe(self.device), threads=self.threads, phase_s=dict(self.phase_s),
        )


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
    (`train.device`), makes it the current device and turns TF32 matmuls off. Batches and
    negatives are drawn on the CPU whatever the device, so a run sees the same data on either.
    """
    if interrupt is not None and checkpoint is None:
        raise ValueError("interrupt needs a checkpoint policy: an interrupted run must have somewhere to save")
    trainer = Trainer(config, data=data, callbacks=Callbacks(on_step=on_step, on_eval=on_eval))
    checkpointer = None
    if checkpoint is not None:
        checkpointer = Checkpointer(checkpoint, trainer.engine, trainer.group, interrupt=interrupt,
                                    run_id=config.run_id)
        state = checkpointer.load()
        if state is not None:
            trainer.load_state_dict(state)
    return trainer.fit(checkpointer)


__all__ = ["CheckpointPolicy", "StoppedByMainProcess", "TrainResult", "Trainer", "TrainingInterrupted", "train_run"]
