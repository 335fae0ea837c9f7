"""What a model family provides, so that nothing outside its module branches on `model.family`.

A family (HSTU, SASRec, ...) is one module of `gr_core.families` holding a `Family` entry: its
`[model]` options (a frozen dataclass), its cross-field rules, its parameters by tensor group,
its forward FLOPs by named component (matmul and elementwise), a one-line description for
reports, and a lazy `build()` of its torch module. `gr_core.config`, `gr_core.encoder` and
`scaling` consult `gr_core.families.FAMILIES`; the parts every family shares (item and position
embeddings, the sampled-softmax and ranking heads, evaluation, the counting conventions) stay
in `gr_core.encoder` and `scaling`.

FLOPs are reported as `Cost(per_token, per_pair)`: the work of a component over a set of jagged
sequences is `per_token * sum(n) + per_pair * sum(pairs)`, with pairs per sequence n^2
(dense-jagged, the default convention) or n (n + 1) / 2 (causal-exact), chosen by `scaling`.
Every block of a sequence encoder is linear in n and in its (query, key) pairs, so this form is
exact, and it lets `scaling.grid` solve budgets from two evaluations.

Torch-free: this module and the family modules are imported by `gr_core.config`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gr_core.config import ModelConfig
    from gr_core.encoder import SequenceEncoder

# Per-element costs of the elementwise (non-matmul) count, one FLOP per add/mul/compare/exp/log/
# divide (`scaling.elementwise` states the convention). Here because each family's
# `elementwise_costs` uses them and gr_core may not import scaling.
LAYERNORM_PER_ELEMENT = 5  # mean, centre, variance (square, add), normalise; the per-row rsqrt ignored
SILU_PER_ELEMENT = 4  # exp, add, divide, multiply
L2_NORM_PER_ELEMENT = 3  # square, add, divide; the per-row sqrt ignored
DROPOUT_PER_ELEMENT = 2  # compare with the random draw, scale
EMBEDDING_SCALE_PER_ELEMENT = 2  # E[id] * sqrt(D) + P[pos]; the gathers are free
ATTENTION_SCALE_MASK_PER_PAIR_HEAD = 2  # the logit scale and the mask (or / n normalisation)
RAB_ADDS_PER_PAIR_HEAD = 2  # positional and time bias adds
RAB_TIME_BUCKET_PER_PAIR = 7  # subtract, abs, clamp, log, divide, floor, clamp; shared over heads
SOFTMAX_PER_PAIR_HEAD = 5  # max, subtract, exp, sum, divide
RELU_PER_ELEMENT = 1
GELU_PER_ELEMENT = 8
LOSS_PER_LOGIT = 5  # temperature divide, collision mask, log-softmax's subtract, exp and sum
RANKING_PER_SCORE = 3  # full-ranking evaluation: history filter, compare with the target, count
BCE_PER_POSITION = 5

# Names `scaling` gives its own rows and keys beside a family's components; a family may not use them.
RESERVED_COMPONENTS: frozenset[str] = frozenset(
    {"head", "ranking_head", "total", "total_causal", "attention_dense", "attention_causal"}
)
# Elementwise kinds `scaling` adds for the shared parts; a family's entry of the same name (its
# block dropout) is summed with the shared one (the input dropout).
SHARED_ELEMENTWISE: tuple[str, ...] = ("embedding_scale", "dropout", "l2_norm", "loss", "ranking_head")


@dataclasses.dataclass(frozen=True, slots=True)
class Cost:
    """Forward FLOPs of one component over jagged sequences: per token plus per (query, key) pair.

    `label` names a matmul component in reports ("uvqk projection"); elementwise kinds print
    their key.
    """

    per_token: float = 0.0
    per_pair: float = 0.0
    label: str = ""

    def flops(self, tokens: float, pairs: float) -> float:
        return self.per_token * tokens + self.per_pair * pairs


def no_params(model: ModelConfig) -> dict[str, int]:
    """`Family.outside_block_params` of a family whose every non-embedding parameter is in a block."""
    del model
    return {}


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Family:
    """One model family: everything the rest of the project needs to know about it.

    Every callable takes the whole (validated) `ModelConfig`: the family reads the shared fields
    (embedding_dim, num_heads, num_blocks, max_seq_len, dropout) and its own options
    (`model.options`, an instance of `options`).
    """

    name: str  # the model.family value; the key of `FAMILIES`
    label: str  # how reports name it ("HSTU")
    options: type[Any]  # frozen options dataclass: the [model] keys only this family reads
    validate: Callable[[ModelConfig], None]  # rules between its options and the shared fields
    head_dims: Callable[[ModelConfig], tuple[int, int]]  # (dqk, dv): per-head query/key and value widths
    block_params: Callable[[ModelConfig], dict[str, int]]  # non-embedding params of ONE block, by tensor group
    matmul_costs: Callable[[ModelConfig], dict[str, Cost]]  # forward matmul FLOPs of all blocks, by component
    # Forward elementwise FLOPs of all blocks by kind; training=True counts the blocks' dropout.
    elementwise_costs: Callable[[ModelConfig, bool], dict[str, Cost]]
    describe: Callable[[ModelConfig], str]  # the shape for a report line, e.g. "2 head(s), FFN 64"
    build: Callable[[ModelConfig, int], SequenceEncoder]  # (model, num_items) -> torch module; imports torch
    outside_block_params: Callable[[ModelConfig], dict[str, int]] = no_params  # e.g. a final norm's weights
