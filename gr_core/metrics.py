"""Full-ranking retrieval metrics: HR@K, NDCG@K and MRR over all items, history filtered.

Scores are float32 dot products even under a bf16 autocast (`train.precision`).

Ranks are 1-based and pessimistic on ties: an item scoring exactly as the target counts as
ranked above it. A target that is itself in the filtered history scores -inf and so is ranked
last (a miss), as in upstream's filtering.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from gr_core.data import JaggedBatch
from gr_core.devices import full_precision
from gr_core.encoder import SequenceEncoder

KS: tuple[int, ...] = (10, 50)


def filter_history(scores_BI: torch.Tensor, history_ids: torch.Tensor, history_offsets: torch.Tensor) -> torch.Tensor:
    """Copy of scores [B, I+1] with column 0 (padding) and each row's history items set to -inf.

    history_ids: [Th] jagged by history_offsets [B+1].
    """
    scores = scores_BI.clone()
    scores[:, 0] = float("-inf")
    lengths = history_offsets[1:] - history_offsets[:-1]
    rows = torch.repeat_interleave(torch.arange(scores.shape[0], device=scores.device), lengths)
    scores[rows, history_ids] = float("-inf")
    return scores


def target_ranks(scores_BI: torch.Tensor, target_ids_B: torch.Tensor) -> torch.Tensor:
    """1-based rank [B] of each target among its row; ties pessimistic; at most I (padding excluded)."""
    target_scores = scores_BI.gather(1, target_ids_B[:, None])
    rank = (scores_BI >= target_scores).sum(dim=1)
    return rank.clamp(max=scores_BI.shape[1] - 1)


def ranking_metrics(ranks_B: torch.Tensor, ks: Iterable[int] = KS) -> dict[str, float]:
    """Means over users of hr@K (rank <= K), ndcg@K (1/log2(rank+1) if rank <= K) and mrr."""
    if ranks_B.numel() == 0:
        raise ValueError("no ranks to average: the evaluation produced no users")
    ranks = ranks_B.to(torch.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        out[f"hr@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 1.0), 0.0).mean().item()
    out["mrr"] = (1.0 / ranks).mean().item()
    return out


@torch.no_grad()
def evaluate(
    model: SequenceEncoder, batches: Iterable[JaggedBatch], ks: Iterable[int] = KS,
    *, per_user: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Rank every eval batch's target by the last position's scores against all items.

    per_user: when given, filled with "user_ids" [U] (sorted) and "rank" [U] (each user's target
    rank), for paired per-user comparisons of two models (`benchmarks/ml100k.py`).
    """
    was_training = model.training
    model.eval()
    items_ID = model.item_vectors()
    all_ranks, all_users = [], []
    for batch in batches:
        if batch.history_ids is None or batch.history_offsets is None:
            raise ValueError("evaluate needs eval batches (with history_ids); got a training batch")
        out_TD = model(batch.item_ids, batch.timestamps, batch.seq_offsets, batch.request_timestamps)
        last_BD = out_TD[batch.seq_offsets[1:] - 1]
        with full_precision(last_BD.device):  # bf16 scores would tie items within 2^-8 of the target
            scores_BI = last_BD.float() @ items_ID.float().T
        scores = filter_history(scores_BI, batch.history_ids, batch.history_offsets)
        all_ranks.append(target_ranks(scores, batch.target_ids))
        all_users.append(batch.user_ids)
    model.train(was_training)
    ranks = torch.cat(all_ranks)
    if per_user is not None:
        users = torch.cat(all_users).cpu().numpy()
        order = np.argsort(users, kind="stable")
        per_user.update(user_ids=users[order], rank=ranks.cpu().numpy()[order])
    return ranking_metrics(ranks, ks)
