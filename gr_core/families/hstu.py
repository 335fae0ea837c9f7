"""HSTU as a model family (DESIGN.md section 2): its [model] options, parameters and FLOPs.

The one place that knows HSTU's shape: `gr_core.config` validates its options here,
`scaling` counts its parameters and FLOPs from here, and `build` makes the torch module
(`gr_core.hstu.HSTU`, imported only then). D = embedding_dim, H = num_heads, L = num_blocks,
N = max_seq_len, dqk / dv = per-head query-key / value widths.

Parameters per block (`gr_core.hstu` names them): the bias-free uvqk projection
D (2 H dv + 2 H dqk), the output projection H dv D + D and, with rab, the positional (2N - 1) and
time-bucket (num_time_buckets + 1) bias weights. LayerNorms carry no affine weights.

Forward matmul FLOPs per token and block: uvqk 2 D (2 H dv + 2 H dqk), output 2 H dv D; per
(query, key) pair and block: attention QK^T and AV, 2 H (dqk + dv).

Elementwise FLOPs per block (per-element costs in `gr_core.families.contract`): LayerNorm of x
over D and of AV over H dv; SiLU of the uvqk output and of every attention logit; the scale and
mask / n normalisation per pair and head; with rab, the positional and time bias adds per pair
and head plus the time bucket b(ts[i+1] - ts[j]) once per pair (shared over heads); the gate
U * LN(AV) over H dv; the output bias and residual adds over D; dropout on U * LN(AV) (training).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

from gr_core.config_io import require, require_finite
from gr_core.families.contract import (
    ATTENTION_SCALE_MASK_PER_PAIR_HEAD,
    DROPOUT_PER_ELEMENT,
    LAYERNORM_PER_ELEMENT,
    RAB_ADDS_PER_PAIR_HEAD,
    RAB_TIME_BUCKET_PER_PAIR,
    SILU_PER_ELEMENT,
    Cost,
    Family,
)

if TYPE_CHECKING:
    from gr_core.config import ModelConfig
    from gr_core.encoder import SequenceEncoder


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class HSTUOptions:
    """The [model] keys only HSTU reads (`ModelConfig.options` when model.family = "hstu")."""

    attention_dim: int | None = None  # dqk per head; None = embedding_dim // num_heads
    linear_dim: int | None = None  # dv per head; None = embedding_dim // num_heads
    attn_norm: Literal["max_len", "seq_len"] = "max_len"  # divide SiLU attention by N or by n_b
    use_rab: bool = True  # relative attention bias (positional + time buckets)
    num_time_buckets: int = 128
    # HSTU attention kernel (kernels.hstu_attention): "auto" = Triton on CUDA, the padded PyTorch form on CPU.
    attention_impl: Literal["auto", "reference", "padded", "triton"] = "auto"

    def __post_init__(self) -> None:
        require_finite(self, "model")
        for name in ("attention_dim", "linear_dim"):
            value = getattr(self, name)
            require(value is None or value >= 1, f"model.{name} must be >= 1, got {value}")
        require(self.num_time_buckets >= 1, f"model.num_time_buckets must be >= 1, got {self.num_time_buckets}")


def options_of(model: ModelConfig) -> HSTUOptions:
    """`model.options`, which must be HSTU's (the torch module checks what it is given with this)."""
    if not isinstance(model.options, HSTUOptions):
        raise ValueError(f"HSTU needs model.family='hstu', got {model.family!r}")
    return model.options


def head_dims(model: ModelConfig) -> tuple[int, int]:
    opts = options_of(model)
    default = model.embedding_dim // model.num_heads
    dqk = opts.attention_dim if opts.attention_dim is not None else default
    dv = opts.linear_dim if opts.linear_dim is not None else default
    return dqk, dv


def validate(model: ModelConfig) -> None:
    opts = options_of(model)
    if opts.attention_dim is None or opts.linear_dim is None:
        require(
            model.embedding_dim % model.num_heads == 0,
            f"model.embedding_dim={model.embedding_dim} is not divisible by "
            f"model.num_heads={model.num_heads}; set attention_dim and linear_dim explicitly",
        )


def block_params(model: ModelConfig) -> dict[str, int]:
    opts = options_of(model)
    d, h = model.embedding_dim, model.num_heads
    dqk, dv = head_dims(model)
    return {
        "uvqk": d * (2 * h * dv + 2 * h * dqk),
        "output": h * dv * d + d,
        "rab": (2 * model.max_seq_len - 1) + (opts.num_time_buckets + 1) if opts.use_rab else 0,
    }


def matmul_costs(model: ModelConfig) -> dict[str, Cost]:
    d, h, layers = model.embedding_dim, model.num_heads, model.num_blocks
    dqk, dv = head_dims(model)
    return {
        "uvqk_projection": Cost(per_token=layers * 2.0 * d * (2 * h * dv + 2 * h * dqk), label="uvqk projection"),
        "attention": Cost(per_pair=layers * 2.0 * h * (dqk + dv), label="attention QK^T + AV"),
        "output_projection": Cost(per_token=layers * 2.0 * h * dv * d, label="output projection"),
    }


def elementwise_costs(model: ModelConfig, training: bool) -> dict[str, Cost]:
    opts = options_of(model)
    d, h, layers = model.embedding_dim, model.num_heads, model.num_blocks
    dqk, dv = head_dims(model)
    hdv = h * dv
    rab_per_pair = RAB_ADDS_PER_PAIR_HEAD * h + RAB_TIME_BUCKET_PER_PAIR if opts.use_rab else 0
    dropout_on = training and model.dropout > 0
    return {
        "layernorm": Cost(per_token=layers * LAYERNORM_PER_ELEMENT * (d + hdv)),
        "silu_uvqk": Cost(per_token=layers * SILU_PER_ELEMENT * (2 * hdv + 2 * h * dqk)),
        "silu_attention": Cost(per_pair=layers * SILU_PER_ELEMENT * h),
        "attention_mask_norm": Cost(per_pair=layers * ATTENTION_SCALE_MASK_PER_PAIR_HEAD * h),
        "rab": Cost(per_pair=layers * rab_per_pair),
        "gate": Cost(per_token=layers * hdv),
        "residual": Cost(per_token=layers * 2.0 * d),
        "dropout": Cost(per_token=DROPOUT_PER_ELEMENT * layers * hdv if dropout_on else 0.0),
    }


def describe(model: ModelConfig) -> str:
    dqk, dv = head_dims(model)
    return f"{model.num_heads} head(s) (dqk {dqk}, dv {dv}), rab {'on' if options_of(model).use_rab else 'off'}"


def build(model: ModelConfig, num_items: int) -> SequenceEncoder:
    from gr_core.hstu import HSTU  # torch: loaded only when a model is built

    return HSTU(model, num_items)


FAMILY = Family(
    name="hstu",
    label="HSTU",
    options=HSTUOptions,
    validate=validate,
    head_dims=head_dims,
    block_params=block_params,
    matmul_costs=matmul_costs,
    elementwise_costs=elementwise_costs,
    describe=describe,
    build=build,
)
