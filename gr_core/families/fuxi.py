"""FuXi-alpha (Ye et al., arXiv 2502.03036) as a model family: its [model] options, parameters, FLOPs.

As the public code trains it (USTC-StarTeam/FuXi-alpha, generative_recommenders/modeling/
sequential/fuxi.py); the torch module is `gr_core.fuxi.FuXiAlpha`, imported only by `build`.
D = embedding_dim, H = num_heads, L = num_blocks, N = max_seq_len, dqk / dv = per-head
query-key / value widths, B_t = num_time_buckets, F = int(D * ffn_multiply) the MFFN width.
The input, the L2-normalised output, the loss and the evaluation are shared with HSTU
(`gr_core.encoder`).

One block on jagged x [T, D]:

    x_hat        = RMSNorm(x)                                  (no affine, eps 1e-6)
    U, V, Q, K   = split(SiLU(x_hat W_uvqk), [3 H dv, H dv, H dqk, H dqk])     (no bias)
    Adaptive Multi-channel Self-attention (AMS), causal (j <= i), per head:
      semantic     A_sem[i, j] = SiLU(q_i . k_j) / n           (n as HSTU's attn_norm)
      positional   A_pos[i, j] = w_p[j - i + N - 1]            (2N - 1 weights, shared over heads)
      temporal     A_ts[i, j]  = w_t[b(ts[i+1] - ts[j])]       (B_t + 1 weights, shared over heads;
                                                                HSTU's bucketing and request time)
      out_c[i]   = sum_{j <= i} A_c[i, j] v_j;  concat [pos, ts, semantic] -> [T, 3 H dv]
    ams          = U * RMSNorm(concat)                         (over 3 H dv)
    Multi-stage FFN (MFFN):
      h1         = W_0 Dropout(ams) + b_0 + x                  (stage 1: projection and residual)
      z          = Dropout(RMSNorm(h1))
      h2         = W_2 (SiLU(W_1 z) * W_3 z) + h1              (stage 2: SwiGLU, no biases)
    block output = h2, or h1 with ffn_single_stage

Parameters per block (`gr_core.fuxi` names them): uvqk D (4 H dv + 2 H dqk), output (W_0, b_0)
3 H dv D + D, ffn (W_1, W_2, W_3) 3 D F (none single-stage), channel weights (2N - 1) + (B_t + 1).
RMSNorms carry no weights.

Forward matmul FLOPs per token and block: uvqk 2 D (4 H dv + 2 H dqk), output 2 (3 H dv) D, ffn
3 (2 D F) (0 single-stage); per (query, key) pair and block: semantic QK^T + AV 2 H (dqk + dv),
and one more AV product for each of the positional and temporal channels, 2 H dv each.

Elementwise FLOPs per block (per-element costs in `gr_core.families.contract`, RMSNorm below):
RMSNorm of x over D, of the concat over 3 H dv and (two stages) of h1 over D; SiLU of the uvqk
output and of every semantic logit; per pair the semantic channel's scale and mask / n per head
and the causal mask of each of the two bias channels (shared over heads); the time bucket per
pair; the gate U * RMSNorm over 3 H dv; the output bias and the residual adds over D; the SwiGLU
(SiLU and product) over F; dropout (training) on ams and, with two stages, on RMSNorm(h1).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

from gr_core.config_io import require, require_finite
from gr_core.families.contract import (
    ATTENTION_SCALE_MASK_PER_PAIR_HEAD,
    DROPOUT_PER_ELEMENT,
    RAB_TIME_BUCKET_PER_PAIR,
    SILU_PER_ELEMENT,
    Cost,
    Family,
)

if TYPE_CHECKING:
    from gr_core.config import ModelConfig
    from gr_core.encoder import SequenceEncoder

# RMSNorm (no affine): square, add (the mean), normalise (multiply by the row's rsqrt; the rsqrt
# and the divide by the width are per row and ignored), as LAYERNORM_PER_ELEMENT counts LayerNorm.
RMSNORM_PER_ELEMENT = 3
# The positional and temporal channels' causal mask: one multiply per pair, shared over heads.
CHANNEL_MASK_PER_PAIR = 1


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class FuXiOptions:
    """The [model] keys only FuXi-alpha reads (`ModelConfig.options` when model.family = "fuxi").

    attention_dim, linear_dim, attn_norm, num_time_buckets and attention_impl mean what they mean
    for HSTU (same names and defaults), so switching model.family keeps them.
    """

    attention_dim: int | None = None  # dqk per head; None = embedding_dim // num_heads
    linear_dim: int | None = None  # dv per head; None = embedding_dim // num_heads
    attn_norm: Literal["max_len", "seq_len"] = "max_len"  # semantic channel: divide by N or by n_b
    num_time_buckets: int = 128  # the temporal channel has num_time_buckets + 1 weights
    ffn_multiply: float = 1.0  # MFFN width F = int(embedding_dim * ffn_multiply), as upstream
    ffn_single_stage: bool = False  # True: the block ends after stage 1 (no SwiGLU)
    # Semantic channel kernel (kernels.hstu_attention): "auto" = Triton on CUDA, the padded PyTorch form on CPU.
    attention_impl: Literal["auto", "reference", "padded", "triton"] = "auto"

    def __post_init__(self) -> None:
        require_finite(self, "model")
        for name in ("attention_dim", "linear_dim"):
            value = getattr(self, name)
            require(value is None or value >= 1, f"model.{name} must be >= 1, got {value}")
        require(self.num_time_buckets >= 1, f"model.num_time_buckets must be >= 1, got {self.num_time_buckets}")
        require(self.ffn_multiply > 0, f"model.ffn_multiply must be > 0, got {self.ffn_multiply}")


def options_of(model: ModelConfig) -> FuXiOptions:
    """`model.options`, which must be FuXi-alpha's (the torch module checks what it is given with this)."""
    if not isinstance(model.options, FuXiOptions):
        raise ValueError(f"FuXi-alpha needs model.family='fuxi', got {model.family!r}")
    return model.options


def head_dims(model: ModelConfig) -> tuple[int, int]:
    opts = options_of(model)
    default = model.embedding_dim // model.num_heads
    dqk = opts.attention_dim if opts.attention_dim is not None else default
    dv = opts.linear_dim if opts.linear_dim is not None else default
    return dqk, dv


def ffn_dim(model: ModelConfig) -> int:
    """The MFFN stage-2 width F = int(D * ffn_multiply) (upstream truncates); 0 single-stage."""
    opts = options_of(model)
    return 0 if opts.ffn_single_stage else int(model.embedding_dim * opts.ffn_multiply)


def validate(model: ModelConfig) -> None:
    opts = options_of(model)
    if opts.attention_dim is None or opts.linear_dim is None:
        require(
            model.embedding_dim % model.num_heads == 0,
            f"model.embedding_dim={model.embedding_dim} is not divisible by "
            f"model.num_heads={model.num_heads}; set attention_dim and linear_dim explicitly",
        )
    require(
        opts.ffn_single_stage or ffn_dim(model) >= 1,
        f"model.ffn_multiply={opts.ffn_multiply} gives an MFFN width int({model.embedding_dim} * "
        f"{opts.ffn_multiply}) = 0; raise it or set ffn_single_stage = true",
    )


def block_params(model: ModelConfig) -> dict[str, int]:
    opts = options_of(model)
    d, h = model.embedding_dim, model.num_heads
    dqk, dv = head_dims(model)
    return {
        "uvqk": d * (4 * h * dv + 2 * h * dqk),
        "output": 3 * h * dv * d + d,
        "ffn": 3 * d * ffn_dim(model),
        "channels": (2 * model.max_seq_len - 1) + (opts.num_time_buckets + 1),
    }


def matmul_costs(model: ModelConfig) -> dict[str, Cost]:
    d, h, layers = model.embedding_dim, model.num_heads, model.num_blocks
    dqk, dv = head_dims(model)
    return {
        "uvqk_projection": Cost(per_token=layers * 2.0 * d * (4 * h * dv + 2 * h * dqk), label="uvqk projection"),
        "attention": Cost(per_pair=layers * 2.0 * h * (dqk + dv), label="semantic QK^T + AV"),
        "positional_channel": Cost(per_pair=layers * 2.0 * h * dv, label="positional channel AV"),
        "temporal_channel": Cost(per_pair=layers * 2.0 * h * dv, label="temporal channel AV"),
        "output_projection": Cost(per_token=layers * 2.0 * 3 * h * dv * d, label="AMS output projection"),
        "ffn": Cost(per_token=layers * 3 * 2.0 * d * ffn_dim(model), label="MFFN SwiGLU"),
    }


def elementwise_costs(model: ModelConfig, training: bool) -> dict[str, Cost]:
    d, h, layers = model.embedding_dim, model.num_heads, model.num_blocks
    dqk, dv = head_dims(model)
    f = ffn_dim(model)
    two_stage = f > 0
    hdv3 = 3 * h * dv
    dropout_on = training and model.dropout > 0
    return {
        "rmsnorm": Cost(per_token=layers * RMSNORM_PER_ELEMENT * (d + hdv3 + (d if two_stage else 0))),
        "silu_uvqk": Cost(per_token=layers * SILU_PER_ELEMENT * (4 * h * dv + 2 * h * dqk)),
        "silu_attention": Cost(per_pair=layers * SILU_PER_ELEMENT * h),
        "attention_mask_norm": Cost(
            per_pair=layers * (ATTENTION_SCALE_MASK_PER_PAIR_HEAD * h + 2 * CHANNEL_MASK_PER_PAIR)
        ),
        "time_bucket": Cost(per_pair=layers * RAB_TIME_BUCKET_PER_PAIR),
        "gate": Cost(per_token=layers * hdv3),
        "residual": Cost(per_token=layers * (2.0 * d + (d if two_stage else 0))),
        "ffn_activation": Cost(per_token=layers * (SILU_PER_ELEMENT + 1) * f),
        "dropout": Cost(per_token=DROPOUT_PER_ELEMENT * layers * (hdv3 + (d if two_stage else 0)))
        if dropout_on else Cost(),
    }


def describe(model: ModelConfig) -> str:
    dqk, dv = head_dims(model)
    f = ffn_dim(model)
    return f"{model.num_heads} head(s) (dqk {dqk}, dv {dv}), MFFN {f if f else 'single stage'}"


def build(model: ModelConfig, num_items: int) -> SequenceEncoder:
    from gr_core.fuxi import FuXiAlpha  # torch: loaded only when a model is built

    return FuXiAlpha(model, num_items)


FAMILY = Family(
    name="fuxi",
    label="FuXi-alpha",
    options=FuXiOptions,
    validate=validate,
    head_dims=head_dims,
    block_params=block_params,
    matmul_costs=matmul_costs,
    elementwise_costs=elementwise_costs,
    describe=describe,
    build=build,
)
