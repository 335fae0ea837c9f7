"""SASRec (Kang & McAuley, ICDM'18) as a model family: its [model] options, parameters and FLOPs.

The baseline as upstream GR trains it (`gr_core.sasrec`, imported only by `build`). D =
embedding_dim, H = num_heads (heads D / H wide), L = num_blocks, F = the FFN width (`ffn_dim`).

Parameters per block: Q, KV and output projections with biases (4 D^2 + 4 D) and the FFN
(2 D F + F + D). LayerNorms carry no affine weights.

Forward matmul FLOPs per token and block: the QKV projections 2 D (3D), the output projection
2 D D, the FFN 2 (2 D F); per (query, key) pair and block: QK^T and AV, 2 H (D/H + D/H).

Elementwise FLOPs per block (per-element costs in `gr_core.families.contract`): two LayerNorms
over D; softmax per pair and head plus the 1/sqrt(d) scale and mask; bias adds of the five
linears (5 D + F) and the two residual adds (2 D) under "residual"; the FFN activation over F
(ReLU 1, GELU 8); dropout (training) on the attention probabilities, the FFN hidden and the FFN
output. No SiLU, gate or rab.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

from gr_core.config_io import require, require_finite
from gr_core.families.contract import (
    ATTENTION_SCALE_MASK_PER_PAIR_HEAD,
    DROPOUT_PER_ELEMENT,
    GELU_PER_ELEMENT,
    LAYERNORM_PER_ELEMENT,
    RELU_PER_ELEMENT,
    SOFTMAX_PER_PAIR_HEAD,
    Cost,
    Family,
)

if TYPE_CHECKING:
    from gr_core.config import ModelConfig
    from gr_core.encoder import SequenceEncoder


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class SASRecOptions:
    """The [model] keys only SASRec reads (`ModelConfig.options` when model.family = "sasrec")."""

    ffn_hidden_dim: int | None = None  # pointwise FFN width; None = embedding_dim (as published)
    ffn_activation: Literal["relu", "gelu"] = "relu"

    def __post_init__(self) -> None:
        require_finite(self, "model")
        value = self.ffn_hidden_dim
        require(value is None or value >= 1, f"model.ffn_hidden_dim must be >= 1, got {value}")


def options_of(model: ModelConfig) -> SASRecOptions:
    """`model.options`, which must be SASRec's (the torch module checks what it is given with this)."""
    if not isinstance(model.options, SASRecOptions):
        raise ValueError(f"SASRec needs model.family='sasrec', got {model.family!r}")
    return model.options


def ffn_dim(model: ModelConfig) -> int:
    """The FFN hidden width: ffn_hidden_dim, or embedding_dim when unset."""
    width = options_of(model).ffn_hidden_dim
    return width if width is not None else model.embedding_dim


def head_dims(model: ModelConfig) -> tuple[int, int]:
    width = model.embedding_dim // model.num_heads
    return width, width


def validate(model: ModelConfig) -> None:
    options_of(model)
    require(
        model.embedding_dim % model.num_heads == 0,
        f"model.embedding_dim={model.embedding_dim} is not divisible by model.num_heads={model.num_heads}; "
        "SASRec's heads are embedding_dim / num_heads wide",
    )


def block_params(model: ModelConfig) -> dict[str, int]:
    d, f = model.embedding_dim, ffn_dim(model)
    return {
        "qkv": (d * d + d) + (2 * d * d + 2 * d),  # q_proj, kv_proj
        "output": d * d + d,  # out_proj
        "ffn": (d * f + f) + (f * d + d),  # ffn_in, ffn_out
    }


def matmul_costs(model: ModelConfig) -> dict[str, Cost]:
    d, h, layers = model.embedding_dim, model.num_heads, model.num_blocks
    dqk, dv = head_dims(model)
    return {
        "qkv_projection": Cost(per_token=layers * 2.0 * d * 3 * d, label="QKV projection"),
        "attention": Cost(per_pair=layers * 2.0 * h * (dqk + dv), label="attention QK^T + AV"),
        "output_projection": Cost(per_token=layers * 2.0 * d * d, label="output projection"),
        "ffn": Cost(per_token=layers * 2.0 * 2 * d * ffn_dim(model), label="FFN"),
    }


def elementwise_costs(model: ModelConfig, training: bool) -> dict[str, Cost]:
    d, h, layers, f = model.embedding_dim, model.num_heads, model.num_blocks, ffn_dim(model)
    activation = GELU_PER_ELEMENT if options_of(model).ffn_activation == "gelu" else RELU_PER_ELEMENT
    dropout_on = training and model.dropout > 0
    return {
        "layernorm": Cost(per_token=layers * LAYERNORM_PER_ELEMENT * 2 * d),
        "attention_mask_norm": Cost(per_pair=layers * ATTENTION_SCALE_MASK_PER_PAIR_HEAD * h),
        "softmax": Cost(per_pair=layers * SOFTMAX_PER_PAIR_HEAD * h),
        "residual": Cost(per_token=layers * (2 * d + 5 * d + f)),
        "ffn_activation": Cost(per_token=layers * activation * f),
        "dropout": Cost(per_token=DROPOUT_PER_ELEMENT * layers * (f + d), per_pair=DROPOUT_PER_ELEMENT * layers * h)
        if dropout_on else Cost(),
    }


def describe(model: ModelConfig) -> str:
    return f"{model.num_heads} head(s), FFN {ffn_dim(model)}"


def build(model: ModelConfig, num_items: int) -> SequenceEncoder:
    from gr_core.sasrec import SASRec  # torch: loaded only when a model is built

    return SASRec(model, num_items)


FAMILY = Family(
    name="sasrec",
    label="SASRec",
    options=SASRecOptions,
    validate=validate,
    head_dims=head_dims,
    block_params=block_params,
    matmul_costs=matmul_costs,
    elementwise_costs=elementwise_costs,
    describe=describe,
    build=build,
)
