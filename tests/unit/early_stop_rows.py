"""Rows of a sweep whose runs early-stopped at different epochs, as `sweeps.status.completed_rows` makes them.

Each config plans EPOCHS epochs at a fixed cost per epoch. It reports (best_val) the test metric
of its best validation epoch, reached after `best_epoch` epochs, and stops `PATIENCE` epochs later
(or at the last planned epoch). The metric follows a saturating power law in the compute spent up
to the best epoch, so only a fit at the spent FLOPs recovers it. The last epoch's metric
(final_<metric>) is a little worse than the best one (overfitting after the best epoch).
"""

from __future__ import annotations

import numpy as np

from sweeps.rows import Checkpoint, RunRow

EPOCHS = 10
PATIENCE = 3
BEST_EPOCHS = (2, 7, 4, 9, 3, 6, 5, 8)  # one per config: every run stops at a different epoch


def early_stopped_rows(metric: str = "ndcg@10", *, seed: int = 0) -> list[RunRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for i, best in enumerate(BEST_EPOCHS):
        flops_per_epoch, tokens_per_epoch = 1e12 * 2.2**i, 1e6 * 1.6**i
        run = min(best + PATIENCE, EPOCHS)
        at_best = flops_per_epoch * best
        value = 0.20 - 0.05 * (at_best / 1e14) ** -0.35 + rng.normal(0.0, 1e-3)
        rows.append(RunRow(
            run_id=f"run{i}",
            flops=flops_per_epoch * EPOCHS, tokens=tokens_per_epoch * EPOCHS, planned=True,
            at_best=Checkpoint(flops=at_best, tokens=tokens_per_epoch * best, epoch=best),
            at_last=Checkpoint(flops=flops_per_epoch * run, tokens=tokens_per_epoch * run, epoch=run),
            metrics={metric: value, f"val_{metric}": value + 0.01, f"final_{metric}": value - 0.002 * (run - best)},
            params_non_embedding=10_000 * 1.5**i, num_blocks=2, embedding_dim=16 * (1 + i % 4),
            num_users=1000 * (1 + i // 4), seed=0,
        ))
    return rows
