"""Sampled-softmax next-item loss with uniform random negatives.

The candidates' logits (the positive and R negatives of each of T positions) are computed one of
two ways, with the same value up to float rounding:

- "gather": the candidates' item vectors gathered into [T, R+1, D], then one `torch.bmm` with the
  outputs. Exactly the model's FLOPs, 2 * D * (R+1) per position, which is what the FLOP
  convention counts (DESIGN.md section 3) and what `FlopCounterMode` must see when it checks that
  count; but its memory traffic (the gathered copy, and a scatter-add of as many rows in the
  backward) dominated a CPU training step at MovieLens sizes (at an ML-100K batch's ~7,500
  positions, 346 ms forward and backward against 107 ms dense: benchmarks/candidate_scoring.py).
- "dense": scores of every position against the whole item table, [T, I+1] by one matmul, then
  the candidates' columns taken. (I+1)/(R+1) times the FLOPs, run at matmul speed.

"auto" takes "dense" while the catalogue is at most DENSE_SCORING_MAX_RATIO x the candidates per
position (benchmarks/candidate_scoring.py on one CPU core, D 50: dense 3.2x faster at 13x,
1.25x at 29x, 0.8x at 62x; the wider D is, the later gather wins), else "gather". Either way the run's FLOPs are
counted by the convention (the model's 2 * D * (R+1)), not by what the dense form executes.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

CandidateScoring = Literal["auto", "gather", "dense"]
CANDIDATE_SCORINGS: tuple[str, ...] = ("auto", "gather", "dense")
DENSE_SCORING_MAX_RATIO = 32


def chosen_scoring(scoring: CandidateScoring, num_items: int, num_candidates: int) -> Literal["gather", "dense"]:
    """The form "auto" stands for with a catalogue of num_items (+ padding row) and R+1 candidates."""
    if scoring not in CANDIDATE_SCORINGS:
        raise ValueError(f"scoring must be one of {list(CANDIDATE_SCORINGS)}, got {scoring!r}")
    if scoring != "auto":
        return scoring
    return "dense" if num_items + 1 <= DENSE_SCORING_MAX_RATIO * num_candidates else "gather"


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
    scoring: CandidateScoring = "auto",
) -> torch.Tensor:
    """Cross-entropy of the positive among itself and R random negatives per position (mean or sum).

    out_TD: [T, D] (L2-normalised); target_ids_T: [T] in 1..I; item_vectors_ID: [I+1, D]
    (L2-normalised, row 0 padding). A negative equal to its positive gets a -inf logit, so it takes
    no probability mass. scoring: how the [T, R+1] logits (positive first) are computed (module
    docstring); "gather" is one `torch.bmm` of candidates [T, R+1, D] with out [T, D, 1], so FLOP
    counters see exactly 2 * D * (R+1) per position.
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
    if chosen_scoring(scoring, item_vectors_ID.shape[0] - 1, num_negatives + 1) == "dense":
        scores = torch.mm(out_TD, item_vectors_ID.t()).gather(1, candidates_TR)
    else:
        scores = torch.bmm(item_vectors_ID[candidates_TR], out_TD.unsqueeze(-1)).squeeze(-1)
    logits = scores / temperature
    positive_col = torch.zeros_like(target_ids_T[:, None], dtype=torch.bool)
    collision = torch.cat([positive_col, negatives == target_ids_T[:, None]], dim=1)
    logits = logits.masked_fill(collision, float("-inf"))
    return F.cross_entropy(logits, torch.zeros_like(target_ids_T), reduction=reduction)
