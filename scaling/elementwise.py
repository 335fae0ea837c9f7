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

SASRec (`gr_core.sasrec`), with the same per-element costs where they apply: two LayerNorms per
block over D; softmax 5 per (query, key) pair and head (max, subtract, exp, sum, divide) plus
the scale and mask (2); bias adds of the five linears (5 D + F per token) and the two residual
adds (2 D) under `residual`; the FFN activation over F (ReLU 1, GELU 8); dropout on the input,
the attention probabilities, the FFN hidden and the FFN output. No SiLU, gate or rab.

Ranking head (`gr_core.ranking`), per scored position: feature scaling and the product (4 D),
bias adds (D + 1), ReLU (D) and the binary cross-entropy (5, training) or nothing (evaluation).

Training elementwise FLOPs are taken as 3 x forward (backward ~ 2 x forward, as for matmuls):
an approximation, stated wherever the figure is shown.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gr_core.config import ModelConfig

LAYERNORM_PER_ELEMENT = 5
SILU_PER_ELEMENT = 4
L2_NORM_PER_ELEMENT = 3
DROPOUT_PER_ELEMENT = 2
EMBEDDING_SCALE_PER_ELEMENT = 2
ATTENTION_SCALE_MASK_PER_PAIR_HEAD = 2
RAB_ADDS_PER_PAIR_HEAD = 2
RAB_TIME_BUCKET_PER_PAIR = 7
LOSS_PER_LOGIT = 5
RANKING_PER_SCORE = 3
SOFTMAX_PER_PAIR_HEAD = 5
RELU_PER_ELEMENT = 1
GELU_PER_ELEMENT = 8
BCE_PER_POSITION = 5

ELEMENTWISE_CONVENTION = (
    "elementwise (non-matmul) FLOPs: approximate per-element costs (LayerNorm 5, SiLU 4, L2 norm 3, "
    "dropout 2, adds/gates 1; rab 2 per pair and head + 7 per pair for the time bucket), attention "
    "pairs dense-jagged (n^2), training = 3 x forward; listed apart, not in the training-FLOPs x-axis"
)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ElementwiseFlops:
    """Forward non-matmul FLOPs of one pass over a set of sequences, by component."""

    embedding_scale: float  # E[id] * sqrt(D) + P[pos]
    layernorm: float  # LN(x) and LN(AV) in every block
    silu_uvqk: float
    silu_attention: float
    attention_mask_norm: float  # alpha scale and mask / n on every pair
    rab: float  # positional + time bias: bucket computation and adds; 0 without rab
    gate: float  # U * LN(AV)
    residual: float  # output bias add and residual add
    dropout: float  # input dropout and the block dropout; 0 outside training or with p = 0
    l2_norm: float  # encoder outputs and the item table (once per step / evaluation pass)
    loss: float  # sampled-softmax logits (training) or full-ranking scores (evaluation)
    softmax: float = 0.0  # SASRec's attention softmax; 0 for HSTU
    ffn_activation: float = 0.0  # SASRec's FFN ReLU / GELU; 0 for HSTU
    ranking_head: float = 0.0  # the ranking task's head and its loss; 0 without it

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in dataclasses.fields(self))

    def to_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def scaled(self, factor: float) -> ElementwiseFlops:
        return ElementwiseFlops(**{k: v * factor for k, v in self.to_dict().items()})


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
    d, h, dqk, dv, layers = model.embedding_dim, model.num_heads, model.dqk, model.dv, model.num_blocks
    dropout_on = training and model.dropout > 0
    ranking_head = (
        tokens * (4 * d + (d + 1) + RELU_PER_ELEMENT * d + (BCE_PER_POSITION if training else 0)) if ranking else 0.0
    )
    common = dict(
        embedding_scale=EMBEDDING_SCALE_PER_ELEMENT * tokens * d,
        l2_norm=L2_NORM_PER_ELEMENT * (tokens * d + item_table_norms * (num_items + 1) * d),
        loss=LOSS_PER_LOGIT * tokens * head_candidates,
        ranking_head=ranking_head,
    )
    if model.family == "sasrec":
        f = model.ffn_dim
        activation = GELU_PER_ELEMENT if model.ffn_activation == "gelu" else RELU_PER_ELEMENT
        dropout_elements = tokens * d + layers * (pairs * h + tokens * f + tokens * d) if dropout_on else 0.0
        return ElementwiseFlops(
            layernorm=layers * LAYERNORM_PER_ELEMENT * tokens * 2 * d,
            silu_uvqk=0.0,
            silu_attention=0.0,
            attention_mask_norm=layers * ATTENTION_SCALE_MASK_PER_PAIR_HEAD * pairs * h,
            rab=0.0,
            gate=0.0,
            residual=layers * tokens * (2 * d + 5 * d + f),
            dropout=DROPOUT_PER_ELEMENT * dropout_elements,
            softmax=layers * SOFTMAX_PER_PAIR_HEAD * pairs * h,
            ffn_activation=layers * activation * tokens * f,
            **common,
        )
    hdv = h * dv
    rab_per_pair = RAB_ADDS_PER_PAIR_HEAD * h + RAB_TIME_BUCKET_PER_PAIR if model.use_rab else 0
    dropout_elements = tokens * (d + layers * hdv) if dropout_on else 0.0
    return ElementwiseFlops(
        layernorm=layers * LAYERNORM_PER_ELEMENT * tokens * (d + hdv),
        silu_uvqk=layers * SILU_PER_ELEMENT * tokens * (2 * hdv + 2 * h * dqk),
        silu_attention=layers * SILU_PER_ELEMENT * pairs * h,
        attention_mask_norm=layers * ATTENTION_SCALE_MASK_PER_PAIR_HEAD * pairs * h,
        rab=layers * pairs * rab_per_pair,
        gate=layers * tokens * hdv,
        residual=layers * 2.0 * tokens * d,
        dropout=DROPOUT_PER_ELEMENT * dropout_elements,
        **common,
    )


def ranking_flops(num_sequences: int, num_items: int) -> float:
    """Elementwise FLOPs of full-ranking scoring: filter, compare and count over num_items + 1 scores."""
    return float(RANKING_PER_SCORE * num_sequences * (num_items + 1))
