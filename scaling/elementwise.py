"""Approximate non-matmul ("elementwise") FLOPs of an encoder pass, listed apart from the matmuls.

These are not part of the training-FLOPs x-axis (`scaling.flops.FLOPS_CONVENTION`): they are
memory-bound, PyTorch's `FlopCounterMode` does not count them, and the per-element costs below
are conventions, not measurements. They are listed so that a reader can see how much work sits
outside the matmuls (at small widths the attention-pair terms are not negligible).

Per-element costs (forward, one FLOP per add/mul/compare/exp/log/divide):

- LayerNorm (no affine): 5 per element: mean (add), centre (subtract), variance (square, add),
  normalise (multiply by the row's rsqrt; the rsqrt itself is per row and ignored).
- SiLU x * sigmoid(x): 4 per element: exp, add, divide, multiply.
- L2 normalisation: 3 per element: square, add, divide (the per-row sqrt is ignored).
- Dropout (training only, p > 0): 2 per element: compare with the random draw, scale.
- Residual add, output bias add, the U * LN(AV) gate: 1 per element each.
- Embedding scaling x0 = E[id] * sqrt(D) + P[pos]: 2 per element (the gathers are free).
- Attention, per (query, key) pair and head: SiLU of the logit (4), the alpha scale and the
  mask / n normalisation (2); with rab, the positional and the time bias adds (2 per pair and
  head) plus the time bucket b(ts[i+1] - ts[j]) once per pair, shared over heads (7: subtract,
  abs, clamp, log, divide, floor, clamp; the positional index j - i + N - 1 is integer work).
  Pairs follow the matmul conventions: n^2 per sequence (dense-jagged, the default) or
  n (n + 1) / 2 (causal-exact).
- Sampled-softmax loss: 5 per logit: temperature divide, collision mask, and log-softmax's
  subtract, exp and sum.
- Full-ranking evaluation: 3 per scored item: history filter, compare with the target, count.

What each family's blocks do per element (LayerNorms, SiLU or softmax, rab, gates, its dropout)
is listed by kind in its `gr_core.families` module (`Family.elementwise_costs`); this module adds
the shared parts: the embedding scaling, the input dropout (summed into the family's "dropout"),
the L2 norms of outputs and item table, the loss or ranking scores and the ranking head.

Ranking head (`gr_core.ranking`), per scored position: feature scaling and the product (4 D),
bias adds (D + 1), ReLU (D) and the binary cross-entropy (5, training) or nothing (evaluation).

Training elementwise FLOPs are taken as 3 x forward (backward ~ 2 x forward, as for matmuls):
an approximation, stated wherever the figure is shown.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gr_core.config import ModelConfig
from gr_core.families import FAMILIES
from gr_core.families.contract import (
    BCE_PER_POSITION,
    DROPOUT_PER_ELEMENT,
    EMBEDDING_SCALE_PER_ELEMENT,
    L2_NORM_PER_ELEMENT,
    LOSS_PER_LOGIT,
    RANKING_PER_SCORE,
    RELU_PER_ELEMENT,
)

ELEMENTWISE_CONVENTION = (
    "elementwise (non-matmul) FLOPs: approximate per-element costs (LayerNorm 5, SiLU 4, L2 norm 3, "
    "dropout 2, adds/gates 1; rab 2 per pair and head + 7 per pair for the time bucket), attention "
    "pairs dense-jagged (n^2), training = 3 x forward; listed apart, not in the training-FLOPs x-axis"
)


@dataclasses.dataclass(frozen=True, slots=True)
class ElementwiseFlops:
    """Forward non-matmul FLOPs of one pass over a set of sequences, by kind of operation.

    The kinds are the shared ones (embedding_scale, dropout, l2_norm, loss, ranking_head) and the
    family's (`Family.elementwise_costs`: e.g. HSTU's layernorm, silu_uvqk, rab, gate), every kind
    present even when 0 (outside training, dropout is 0), so stored keys are stable per family.
    """

    components: dict[str, float]

    def __getitem__(self, kind: str) -> float:
        return self.components[kind]

    @property
    def total(self) -> float:
        return sum(self.components.values())

    def to_dict(self) -> dict[str, float]:
        return {name: float(value) for name, value in self.components.items()}

    def scaled(self, factor: float) -> ElementwiseFlops:
        return ElementwiseFlops({name: value * factor for name, value in self.components.items()})


def elementwise_flops(
    lengths: np.ndarray,
    model: ModelConfig,
    *,
    head_candidates: int,
    num_items: int,
    item_table_norms: int,
    training: bool,
    causal: bool = False,
    ranking: bool = False,
) -> ElementwiseFlops:
    """Forward elementwise FLOPs of the encoder over sequences of the given `lengths`.

    head_candidates: items scored per supervised position in training (R + 1); 0 for an
    evaluation pass, whose scoring (one row of num_items + 1 scores per sequence) is counted by
    `ranking_flops`. item_table_norms: how many times the pass L2-normalises the whole item table
    [num_items + 1, D] (the trainer does it once per step; evaluation once per pass).
    training: counts dropout (if model.dropout > 0). causal: pairs n (n + 1) / 2 instead of n^2.
    ranking: adds the ranking head at every position (with its loss when training).
    """
    n = np.asarray(lengths, dtype=np.float64)
    tokens = float(n.sum())
    pairs = float((n * (n + 1) / 2).sum()) if causal else float((n * n).sum())
    d = model.embedding_dim
    blocks = {
        name: cost.flops(tokens, pairs)
        for name, cost in FAMILIES[model.family].elementwise_costs(model, training).items()
    }
    input_dropout = DROPOUT_PER_ELEMENT * tokens * d if training and model.dropout > 0 else 0.0
    ranking_head = (
        tokens * (4 * d + (d + 1) + RELU_PER_ELEMENT * d + (BCE_PER_POSITION if training else 0)) if ranking else 0.0
    )
    components = {"embedding_scale": EMBEDDING_SCALE_PER_ELEMENT * tokens * d, **blocks}
    components["dropout"] = components.get("dropout", 0.0) + input_dropout
    components.update(
        l2_norm=L2_NORM_PER_ELEMENT * (tokens * d + item_table_norms * (num_items + 1) * d),
        loss=LOSS_PER_LOGIT * tokens * head_candidates,
        ranking_head=ranking_head,
    )
    return ElementwiseFlops(components)


def ranking_flops(num_sequences: int, num_items: int) -> float:
    """Elementwise FLOPs of full-ranking scoring: filter, compare and count over num_items + 1 scores."""
    return float(RANKING_PER_SCORE * num_sequences * (num_items + 1))
