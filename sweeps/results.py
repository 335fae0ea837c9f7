"""What a completed run records: its metrics, the compute it spent, and how fast it ran.

The worker writes this document to `runs/<id>/result.json` and into the ledger (`Ledger.complete`,
as user attrs), so `sweeps.rebuild` can restore a ledger from the run directories alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gr_core.config import RunConfig
from sweeps.rows import SpentCompute

if TYPE_CHECKING:
    from gr_core.trainer import TrainResult

log = logging.getLogger(__name__)


def spent_compute(planned: Mapping[str, Any], epochs: int, result: TrainResult, *, run_id: str) -> SpentCompute:
    """Training FLOPs and tokens actually spent: through the last epoch, and through the best one.

    Every epoch trains the same sequences (the Stochastic Length draw is fixed per run), so the
    FLOPs of e epochs are exactly e / epochs of the planned total; the tokens are counted by the
    trainer. An early-stopped run spends less than planned, and its reported metric (best
    validation epoch) stands for the compute up to that epoch: the x-axis of a fit.
    """
    per_epoch = float(planned.get("train", 0.0)) / epochs
    tokens_per_epoch = float(planned.get("train_tokens", 0.0)) / epochs
    if tokens_per_epoch and abs(result.train_tokens - tokens_per_epoch * result.epochs_run) > 0.5:
        log.warning("run %s trained %d tokens in %d epochs; the plan says %.0f per epoch", run_id,
                    result.train_tokens, result.epochs_run, tokens_per_epoch)
    return SpentCompute(
        flops=per_epoch * result.epochs_run,
        tokens=result.train_tokens,
        flops_at_best=per_epoch * result.best_epoch,
        tokens_at_best=result.tokens_at_best,
        flops_per_epoch=per_epoch,
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
    )


def run_results(
    planned: Mapping[str, Any], config: RunConfig, result: TrainResult, *, run_id: str, wall_time_s: float,
    processes: int,
) -> dict[str, Any]:
    """The results document of a completed run (JSON-ready).

    Test metrics at the best validation epoch of the sweep's metric (the trainer selects on it:
    train.selection_metric), that epoch's validation values, the last evaluation's test values
    ("final_<m>"), and the compute actually spent (`spent_compute`). The trainer's wall time covers
    training and its evaluation passes (and data generation), so achieved FLOP/s counts the analytic
    matmul FLOPs of both; ledgers planned before evaluation was counted (no "eval_total") fall back
    to training FLOPs alone. MFU is against the peak of the device the run trained on, at its
    precision, times its processes (`run_peak_flops`).
    """
    from scaling.hardware import mfu as model_flops_utilisation
    from scaling.measure import run_peak_flops

    executed = planned.get("train", 0.0) + planned.get("eval_total", 0.0)
    timed = result.wall_time_s > 0
    achieved = executed / result.wall_time_s if timed else 0.0
    peak, peak_source = run_peak_flops(
        result.device, config.train.precision, threads=result.threads, processes=processes
    )
    spent = spent_compute(planned, config.train.epochs, result, run_id=run_id)
    results: dict[str, Any] = {
        "metrics": result.metrics,
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "train_tokens": result.train_tokens,
        "spent": spent.to_dict(),
        "protocol": {
            "selection_metric": result.selection_metric,
            "eval_filter": config.train.eval_filter,
            "candidates": config.data.candidates,
        },
        "wall_time_s": wall_time_s,
        "train_time_s": result.wall_time_s,
        "achieved_flops_per_s": achieved,
        "mfu": model_flops_utilisation(executed, result.wall_time_s, peak) if timed else 0.0,
        "peak_flops_per_s": peak,
        "peak_source": peak_source,
        "device": result.device,
        "threads": result.threads,
        "precision": config.train.precision,
        "history": [{**h, "train_flops": spent.flops_per_epoch * h["epoch"]} for h in result.history],
    }
    if result.resumed_from_step is not None:
        results["resumed_from_step"] = result.resumed_from_step
    return results


__all__ = ["run_results", "spent_compute"]
