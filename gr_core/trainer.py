"""One training run: data -> encoder (HSTU or SASRec) -> retrieval and/or ranking -> metrics.

Selection: validation ndcg@10 (tasks "retrieval" and "both") or validation NE (task "ranking"),
evaluated every `eval_every` epochs and after the last one; test metrics are computed at every
evaluation and the ones at the best validation epoch are reported (the first such epoch on
ties). With `train.patience`, training stops once that many epochs have passed since the best
evaluation. Deterministic for a given config and thread count.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from gr_core.config import RunConfig
from gr_core.data import EvalSplit, eval_batches, train_batches
from gr_core.encoder import build_model, count_parameters
from gr_core.lengths import split_lengths, stochastic_length_subsampled, stochastic_length_target
from gr_core.loaders import load_sequence_data
from gr_core.losses import sampled_softmax_loss
from gr_core.metrics import evaluate
from gr_core.ranking import evaluate_ranking, ranking_logits, ranking_loss
from gr_core.sequences import SequenceData

logger = logging.getLogger(__name__)

SELECTION_METRIC = "ndcg@10"  # higher is better; task "ranking" selects on RANKING_SELECTION_METRIC
RANKING_SELECTION_METRIC = "ne"  # lower is better
StepCallback = Callable[[int, dict[str, float]], None]
EvalCallback = Callable[[int, dict[str, float]], None]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class TrainResult:
    """Outcome of `train_run`.

    metrics: test metrics at the best validation epoch: "hr@10", "hr@50", "ndcg@10", "ndcg@50",
    "mrr" (retrieval tasks) and "ne" (ranking tasks); the best validation value ("val_ndcg@10" or,
    for task "ranking", "val_ne") and "final_train_loss" (mean loss over the last epoch run).
    history: one dict per evaluation ("epoch", "train/loss", "val/<m>", "test/<m>").
    train_tokens: supervised positions processed in training, summed over the epochs run.
    epochs_run: epochs trained (fewer than train.epochs after an early stop).
    """

    metrics: dict[str, float]
    best_epoch: int
    history: list[dict[str, float]]
    steps: int
    train_tokens: int
    num_params: dict[str, int]
    wall_time_s: float
    epochs_run: int = 0


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_run(
    config: RunConfig,
    *,
    on_step: StepCallback | None = None,
    on_eval: EvalCallback | None = None,
    data: SequenceData | None = None,
) -> TrainResult:
    """Train and evaluate one run; `on_step(step, {"train/loss", ...})`, `on_eval(epoch, {"val/<m>"})`.

    data: the run's sequences if already loaded (must be what `config.data` describes); loaded
    (or generated) from the config otherwise. Process-wide side effects: seeds Python's, NumPy's
    and torch's global generators from train.seed (dropout draws from torch's) and sets torch's
    intra-op thread count.
    """
    start = time.perf_counter()
    data_cfg, model_cfg, train_cfg = config.data, config.model, config.train
    torch.set_num_threads(train_cfg.num_threads)
    _seed_everything(train_cfg.seed)
    if data is None:
        data = load_sequence_data(data_cfg)
    model = build_model(model_cfg, data.num_items, ranking_head=train_cfg.ranking)
    num_params = count_parameters(model)
    logger.info("run %s: %d users, %d events, params %s", config.run_id, data.num_users, data.offsets[-1], num_params)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=train_cfg.lr,
        betas=(train_cfg.beta1, train_cfg.beta2),
        weight_decay=train_cfg.weight_decay,
    )
    shuffle_rng = np.random.default_rng(train_cfg.seed)
    negatives_gen = torch.Generator().manual_seed(train_cfg.seed)
    max_len, alpha = model_cfg.max_seq_len, data_cfg.stochastic_length_alpha
    # The same draw as `gr_core.lengths.train_sequence_lengths`, so planned FLOPs are what runs.
    subsampled = stochastic_length_subsampled(split_lengths(data.lengths, "train", max_len), max_len, alpha, data_cfg.seed)
    subsample_length = stochastic_length_target(max_len, alpha) if alpha is not None else 0

    def run_eval(split: EvalSplit) -> dict[str, float]:
        out: dict[str, float] = {}
        size = train_cfg.eval_batch_size
        if train_cfg.retrieval:
            batches = eval_batches(data, split=split, max_seq_len=max_len, batch_size=size, by_length=True)
            out.update(evaluate(model, batches))
        if train_cfg.ranking:
            batches = eval_batches(
                data, split=split, max_seq_len=max_len, batch_size=size, target_aware=True, by_length=True
            )
            out.update(evaluate_ranking(model, batches))
        return out

    selection = SELECTION_METRIC if train_cfg.retrieval else RANKING_SELECTION_METRIC
    sign = 1.0 if train_cfg.retrieval else -1.0  # compare sign * value, larger is better
    step = train_tokens = 0
    history: list[dict[str, float]] = []
    best: dict[str, float] | None = None
    best_epoch = epochs_run = 0
    epoch_loss = math.nan
    for epoch in range(1, train_cfg.epochs + 1):
        model.train()
        loss_sum, loss_steps = 0.0, 0
        batches = train_batches(
            data, max_seq_len=max_len, batch_size=train_cfg.batch_size, rng=shuffle_rng,
            subsampled=subsampled, subsample_length=subsample_length,
        )
        for batch in batches:
            out_TD = model(batch.item_ids, batch.timestamps, batch.seq_offsets)
            parts: dict[str, torch.Tensor] = {}
            if train_cfg.retrieval:
                parts["retrieval"] = sampled_softmax_loss(
                    out_TD, batch.target_ids, model.item_vectors(),
                    num_negatives=train_cfg.num_negatives, temperature=model_cfg.temperature, generator=negatives_gen,
                )
            if train_cfg.ranking:
                assert batch.actions is not None
                parts["ranking"] = ranking_loss(ranking_logits(model, out_TD, batch.item_ids), batch.actions)
            loss = parts.get("retrieval", 0.0) + train_cfg.ranking_weight * parts.get("ranking", 0.0)
            assert isinstance(loss, torch.Tensor)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            train_tokens += batch.num_tokens
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"training loss became {loss_value} at step {step} (epoch {epoch}); lower train.lr"
                )
            loss_sum, loss_steps = loss_sum + loss_value, loss_steps + 1
            if on_step is not None:
                logged = {"train/loss": loss_value}
                if len(parts) > 1:
                    logged.update({f"train/{name}_loss": part.item() for name, part in parts.items()})
                on_step(step, logged)
        epoch_loss = loss_sum / max(loss_steps, 1)
        epochs_run = epoch
        if epoch % train_cfg.eval_every != 0 and epoch != train_cfg.epochs:
            continue
        val, test = run_eval("val"), run_eval("test")
        record: dict[str, Any] = {"epoch": epoch, "train/loss": epoch_loss}
        record.update({f"val/{k}": v for k, v in val.items()})
        record.update({f"test/{k}": v for k, v in test.items()})
        history.append(record)
        logger.info("epoch %d: train loss %.4f, val %s", epoch, epoch_loss,
                    ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
        if on_eval is not None:
            on_eval(epoch, {f"val/{k}": v for k, v in val.items()})
        if best is None or sign * val[selection] > sign * best[f"val/{selection}"]:
            best, best_epoch = record, epoch
        if train_cfg.patience is not None and epoch - best_epoch >= train_cfg.patience and epoch < train_cfg.epochs:
            logger.info("early stop after epoch %d: no better validation %s since epoch %d", epoch, selection,
                        best_epoch)
            break

    assert best is not None  # the last epoch run is always evaluated
    metrics = {k.removeprefix("test/"): v for k, v in best.items() if k.startswith("test/")}
    metrics[f"val_{selection}"] = best[f"val/{selection}"]
    metrics["final_train_loss"] = epoch_loss
    return TrainResult(
        metrics=metrics,
        best_epoch=best_epoch,
        history=history,
        steps=step,
        train_tokens=train_tokens,
        num_params=num_params,
        wall_time_s=time.perf_counter() - start,
        epochs_run=epochs_run,
    )
