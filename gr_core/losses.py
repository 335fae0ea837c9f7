"""Sampled-softmax next-item loss with uniform random negatives."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def sample_negatives(
    num_positions: int, num_items: int, num_negatives: int, generator: torch.Generator
) -> torch.Tensor:
    """Uniform item ids in 1..num_items, [num_positions, num_negatives] int64, on the generator's device."""
    return torch.randint(1, num_items + 1, (num_positions, num_negatives), generator=generator, device=generator.device)


def sampled_softmax_loss(
    out_TD: torch.Tensor,
    target_ids_T: torch.Tensor,
    item_vectors_ID: torch.Tensor,
    *,
    num_negatives: int,
    temperature: float,
    generator: torch.Generator | None = None,
    negatives_TR: torch.Tensor | None = None,
    reduction: Literal["mean", "sum"] = "mean",
) -> torch.Tensor:
    """Cross-entropy of the positive among itself and R random negatives per position (mean or sum).

    out_TD: [T, D] (L2-normalised); target_ids_T: [T] in 1..I; item_vectors_ID: [I+1, D]
    (L2-normalised, row 0 padding). A negative equal to its positive gets a -inf logit, so it takes
    no probability mass. The logits come from one `torch.bmm` of candidates [T, R+1, D] (positive
    first) with out [T, D, 1], so FLOP counters see exactly 2 * D * (R+1) per position.
    The negatives are drawn from `generator`, or given as negatives_TR [T, R] (drawn once for a
    batch that several processes or micro-batches share, then sliced).
    """
    if out_TD.shape[0] != target_ids_T.shape[0]:
        raise ValueError(
            f"out [T, D] and target_ids [T] disagree: {tuple(out_TD.shape)} vs {tuple(target_ids_T.shape)}"
        )
    if (generator is None) == (negatives_TR is None):
        raise ValueError("give exactly one of generator (negatives drawn here) and negatives_TR")
    if negatives_TR is None:
        num_items = item_vectors_ID.shape[0] - 1
        negatives_TR = sample_negatives(target_ids_T.numel(), num_items, num_negatives, generator)
    elif negatives_TR.shape != (target_ids_T.numel(), num_negatives):
        raise ValueError(
            f"negatives_TR must be [T, R] = {(target_ids_T.numel(), num_negatives)}, got {tuple(negatives_TR.shape)}"
        )
    negatives = negatives_TR.to(target_ids_T.device)
    candidates_TR = torch.cat([target_ids_T[:, None], negatives], dim=1)
    logits = torch.bmm(item_vectors_ID[candidates_TR], out_TD.unsqueeze(-1)).squeeze(-1) / temperature
    positive_col = torch.zeros_like(target_ids_T[:, None], dtype=torch.bool)
    collision = torch.cat([positive_col, negatives == target_ids_T[:, None]], dim=1)
    logits = logits.masked_fill(collision, float("-inf"))
    return F.cross_entropy(logits, torch.zeros_like(target_ids_T), reduction=reduction)
