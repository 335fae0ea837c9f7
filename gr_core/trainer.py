"""One training run: synthetic data -> HSTU with sampled softmax -> full-ranking metrics.

Selection: validation ndcg@10, evaluated every `eval_every` epochs and after the last one; test
metrics are computed at every evaluation and the ones at the best validation epoch are reported
(the first such epoch on ties). Deterministic for a given config and thread count.
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
from gr_core.hstu import HSTU, count_parameters
from gr_core.losses import sampled_softmax_loss
from gr_core.metrics import evaluate
from gr_core.synthetic import generate_synthetic

logger = logging.getLogger(__name__)

SELECTION_METRIC = "ndcg@10"
StepCallback = Callable[[int, dict[str, float]], None]
EvalCallback = Callable[[int, dict[str, float]], None]


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class TrainResult:
    """Outcome of `train_run`.

    metrics: test "hr@10", "hr@50", "ndcg@10", "ndcg@50", "mrr" at the best validation epoch, plus
    "val_ndcg@10" (that best value) and "final_train_loss" (mean loss over the last epoch).
    history: one dict per evaluation ("epoch", "train/loss", "val/<m>", "test/<m>").
    train_tokens: supervised positions processed in training, summed over epochs.
    """

    metrics: dict[str, float]
    best_epoch: int
    history: list[dict[str, float]]
    steps: int
    train_tokens: int
    num_params: dict[str, int]
    wall_time_s: float


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_run(
    config: RunConfig, *, on_step: StepCallback | None = None, on_eval: EvalCallback | None = None
) -> TrainResult:
    """Train and evaluate one run; `on_step(step, {"train/loss"})`, `on_eval(epoch, {"val/<m>"})`.

    Process-wide side effects: seeds Python's, NumPy's and torch's global generators from
    train.seed (dropout draws from torch's) and sets torch's intra-op thread count.
    """
    start = time.perf_counter()
    data_cfg, model_cfg, train_cfg = config.data, config.model, config.train
    torch.set_num_threads(train_cfg.num_threads)
    _seed_everything(train_cfg.seed)
    data = generate_synthetic(data_cfg)
    model = HSTU(model_cfg, data.num_items)
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

    def run_eval(split: EvalSplit) -> dict[str, float]:
        return evaluate(
            model,
            eval_batches(data, split=split, max_seq_len=model_cfg.max_seq_len, batch_size=train_cfg.eval_batch_size),
        )

    step = train_tokens = 0
    history: list[dict[str, float]] = []
    best: dict[str, float] | None = None
    best_epoch = 0
    epoch_loss = math.nan
    for epoch in range(1, train_cfg.epochs + 1):
        model.train()
        loss_sum, loss_steps = 0.0, 0
        batches = train_batches(
            data, max_seq_len=model_cfg.max_seq_len, batch_size=train_cfg.batch_size, rng=shuffle_rng
        )
        for batch in batches:
            out_TD = model(batch.item_ids, batch.timestamps, batch.seq_offsets)
            loss = sampled_softmax_loss(
                out_TD, batch.target_ids, model.item_vectors(),
                num_negatives=train_cfg.num_negatives, temperature=model_cfg.temperature, generator=negatives_gen,
            )
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
                on_step(step, {"train/loss": loss_value})
        epoch_loss = loss_sum / max(loss_steps, 1)
        if epoch % train_cfg.eval_every != 0 and epoch != train_cfg.epochs:
            continue
        val, test = run_eval("val"), run_eval("test")
        record: dict[str, Any] = {"epoch": epoch, "train/loss": epoch_loss}
        record.update({f"val/{k}": v for k, v in val.items()})
        record.update({f"test/{k}": v for k, v in test.items()})
        history.append(record)
        logger.info(
            "epoch %d: train loss %.4f, val ndcg@10 %.4f, val hr@10 %.4f",
            epoch, epoch_loss, val["ndcg@10"], val["hr@10"],
        )
        if on_eval is not None:
            on_eval(epoch, {f"val/{k}": v for k, v in val.items()})
        if best is None or val[SELECTION_METRIC] > best[f"val/{SELECTION_METRIC}"]:
            best, best_epoch = record, epoch

    assert best is not None  # the last epoch is always evaluated
    metrics = {k.removeprefix("test/"): v for k, v in best.items() if k.startswith("test/")}
    metrics["val_ndcg@10"] = best[f"val/{SELECTION_METRIC}"]
    metrics["final_train_loss"] = epoch_loss
    return TrainResult(
        metrics=metrics,
        best_epoch=best_epoch,
        history=history,
        steps=step,
        train_tokens=train_tokens,
        num_params=num_params,
        wall_time_s=time.perf_counter() - start,
    )
