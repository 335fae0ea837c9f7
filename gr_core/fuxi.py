"""FuXi-alpha encoder (arXiv 2502.03036) over jagged batches.

The torch module of the FuXi-alpha family; its options and its parameter and FLOP formulas (with
the block written out) are in `gr_core.families.fuxi`, which builds it. Parameter names (stable:
the family module counts them analytically; D = embedding_dim, H = num_heads, N = max_seq_len,
F = the MFFN width, B_t = num_time_buckets):

embedding (counted as "embedding" by `count_parameters`), as every family:
  item_embedding.weight, position_embedding.weight
per block i (non-embedding), D (4H dv + 2H dqk) + 3H dv D + D + 3 D F + (2N - 1) + (B_t + 1):
  blocks.{i}.uvqk.weight       [4H dv + 2H dqk, D]   no bias; output split as U (3H dv), V, Q, K
  blocks.{i}.pos_weights       [2N-1]      positional channel, shared over heads
  blocks.{i}.ts_weights        [B_t+1]     temporal channel, shared over heads
  blocks.{i}.output.weight     [D, 3H dv]  MFFN stage 1 (upstream's Linear_0)
  blocks.{i}.output.bias       [D]
  blocks.{i}.ffn_w1.weight     [F, D]      MFFN stage 2, SiLU branch (Linear_1); absent single-stage
  blocks.{i}.ffn_w3.weight     [F, D]      MFFN stage 2, linear branch (Linear_3)
  blocks.{i}.ffn_w2.weight     [D, F]      MFFN stage 2, down projection (Linear_2)

Initialisation as the public code: uvqk and the channel weights ~ N(0, 0.02), the MFFN weights
Xavier-uniform with nn.Linear's default bias init for W_0; RMSNorm eps 1e-6 without weights;
dropout on the AMS output before W_0 and on RMSNorm(h1) before the SwiGLU, none in attention.

The semantic channel is `kernels.hstu_attention` without rab (alpha 1, the attn_norm divisor), so
it has HSTU's Triton kernels and FLOP-counting switch. The positional and temporal channels are
one weighted sum over keys, `keyed_sum`, whose [B, N, N] weights are gathered from the block's
w_p and w_t at indices computed once per batch (`ChannelIndex`). Like the other attention ops it
is a `torch.library` custom op (`gr_core::fuxi_keyed_sum`, one padded batched matmul, and its
backward) that `FlopCounterMode` counts by the dense-jagged formula, 2 n^2 H dv per sequence
forward and twice that backward, never the padding. Under
`kernels.per_sequence.per_sequence_attention()` it runs one torch.mm per sequence over the full
n x n square instead, so `FlopCounterMode` counts the matmuls that run, independently of the
family's formula (`scaling.measure`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import register_flop_formula

import kernels
from gr_core.config import ModelConfig
from gr_core.encoder import SequenceEncoder
from gr_core.families.fuxi import ffn_dim, head_dims, options_of
from kernels.hstu_attention import time_buckets
from kernels.per_sequence import per_sequence_enabled

_NORM_EPS = 1e-6
_UVQK_STD = 0.02
_CHANNEL_STD = 0.02

__all__ = ["ChannelIndex", "FuXiAlpha", "FuXiBlock", "channel_index", "keyed_sum", "keyed_sum_op"]


@dataclasses.dataclass(frozen=True, slots=True)
class _Slots:
    """Maps between jagged [T, ...] tokens and padded [B, N', ...] slots (N' the longest sequence)."""

    batch_idx: torch.Tensor  # [T] sequence of each token
    pos: torch.Tensor  # [T] position of each token in its sequence
    lengths: torch.Tensor  # [B]
    padded_len: int

    def pad(self, x_T: torch.Tensor) -> torch.Tensor:
        out = x_T.new_zeros((self.lengths.numel(), self.padded_len, *x_T.shape[1:]))
        out[self.batch_idx, self.pos] = x_T
        return out


def _slots(seq_offsets: torch.Tensor, num_tokens: int) -> _Slots:
    offsets = seq_offsets.to(torch.int64)
    lengths = offsets[1:] - offsets[:-1]
    batch_idx = torch.repeat_interleave(torch.arange(lengths.numel(), device=offsets.device), lengths)
    pos = torch.arange(num_tokens, device=offsets.device) - offsets[:-1][batch_idx]
    return _Slots(batch_idx, pos, lengths, int(lengths.max()) if lengths.numel() else 0)


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelIndex:
    """Where the positional and temporal channel weights of a batch come from, shared by the blocks.

    Padded to [B, N', N'] with N' the batch's longest sequence: pos_idx [N', N'] = j - i + N - 1,
    ts_idx [B, N', N'] = b(ts[i+1] - ts[j]) with ts[n_b] the request time, and mask [B, N', N']
    (j <= i, both inside the sequence).
    """

    pos_idx: torch.Tensor
    ts_idx: torch.Tensor
    mask: torch.Tensor


def channel_index(
    seq_offsets: torch.Tensor, timestamps_T: torch.Tensor, request_timestamps_B: torch.Tensor | None,
    max_seq_len: int, num_time_buckets: int,
) -> ChannelIndex:
    """The batch's `ChannelIndex`. Query i is scored at the next event's time ts[i+1], the last
    query at request_timestamps_B[b] (its own time when None), exactly as HSTU's rab
    (`kernels.hstu_attention.reference`)."""
    slots = _slots(seq_offsets, timestamps_T.numel())
    lengths, padded_len = slots.lengths, slots.padded_len
    if padded_len > max_seq_len:
        raise ValueError(f"a sequence has length {padded_len} > max_seq_len={max_seq_len}; truncate the inputs")
    ar = torch.arange(padded_len, device=lengths.device)
    valid_BN = ar[None, :] < lengths[:, None]
    mask = (ar[:, None] >= ar[None, :])[None] & valid_BN[:, :, None] & valid_BN[:, None, :]
    ts_BN = slots.pad(timestamps_T.to(torch.int64))
    next_ts = torch.cat([ts_BN[:, 1:], ts_BN[:, -1:]], dim=1)
    rows = torch.nonzero(lengths > 0).flatten()
    last = lengths[rows] - 1
    if request_timestamps_B is None:
        next_ts[rows, last] = ts_BN[rows, last]
    else:
        next_ts[rows, last] = request_timestamps_B.to(device=lengths.device, dtype=torch.int64)[rows]
    ts_idx = time_buckets(next_ts[:, :, None] - ts_BN[:, None, :], num_time_buckets)
    pos_idx = ar[None, :] - ar[:, None] + max_seq_len - 1
    return ChannelIndex(pos_idx, ts_idx, mask)


@torch.library.custom_op("gr_core::fuxi_keyed_sum", mutates_args=())
def keyed_sum_op(weights_BNN: torch.Tensor, v_TE: torch.Tensor, seq_offsets: torch.Tensor) -> torch.Tensor:
    """out [T, E] = W v per sequence: weights_BNN [B, N', N'] @ padded v [B, N', E], unpadded."""
    slots = _slots(seq_offsets, v_TE.shape[0])
    return torch.bmm(weights_BNN, slots.pad(v_TE))[slots.batch_idx, slots.pos].contiguous()


@keyed_sum_op.register_fake
def _fake(weights_BNN, v_TE, seq_offsets):
    return torch.empty_like(v_TE)


@torch.library.custom_op("gr_core::fuxi_keyed_sum_backward", mutates_args=())
def keyed_sum_backward_op(
    grad_out_TE: torch.Tensor, weights_BNN: torch.Tensor, v_TE: torch.Tensor, seq_offsets: torch.Tensor
) -> list[torch.Tensor]:
    """[d_weights, dv]: dW = dout v^T [B, N', N'], dv = W^T dout (unpadded)."""
    slots = _slots(seq_offsets, v_TE.shape[0])
    dout_BNE = slots.pad(grad_out_TE)
    d_weights = torch.bmm(dout_BNE, slots.pad(v_TE).transpose(1, 2))
    dv = torch.bmm(weights_BNN.transpose(1, 2), dout_BNE)[slots.batch_idx, slots.pos].contiguous()
    return [d_weights, dv]


@keyed_sum_backward_op.register_fake
def _fake_backward(grad_out_TE, weights_BNN, v_TE, seq_offsets):
    return [torch.empty_like(weights_BNN), torch.empty_like(v_TE)]


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx: Any, grad_out_TE: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    weights_BNN, v_TE, seq_offsets = ctx.saved_tensors
    d_weights, dv = torch.ops.gr_core.fuxi_keyed_sum_backward(grad_out_TE.contiguous(), weights_BNN, v_TE, seq_offsets)
    return d_weights, dv, None


keyed_sum_op.register_autograd(_backward, setup_context=_setup_context)


def _keyed_sum_flops(v_TE: torch.Tensor, seq_offsets: torch.Tensor) -> int:
    """Dense-jagged forward FLOPs: sum_b n_b^2 * E * 2 (E = H dv), as `scaling` counts the channel."""
    lengths = (seq_offsets[1:] - seq_offsets[:-1]).to(torch.int64)
    return int((lengths * lengths).sum()) * v_TE.shape[1] * 2


@register_flop_formula(torch.ops.gr_core.fuxi_keyed_sum, get_raw=True)
def _forward_flop(weights_BNN, v_TE, seq_offsets, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return _keyed_sum_flops(v_TE, seq_offsets)


@register_flop_formula(torch.ops.gr_core.fuxi_keyed_sum_backward, get_raw=True)
def _backward_flop(grad_out_TE, weights_BNN, v_TE, seq_offsets, *args: Any, out_val: Any = None,
                   **kwargs: Any) -> int:
    return 2 * _keyed_sum_flops(v_TE, seq_offsets)


def keyed_sum(weights_BNN: torch.Tensor, v_THD: torch.Tensor, seq_offsets: torch.Tensor) -> torch.Tensor:
    """out[i] = sum_{j} W[b, i, j] v[j] within each sequence b; W is zero outside the causal mask.

    weights_BNN: [B, N', N'] shared over heads; v_THD: [T, H, dv] jagged by seq_offsets -> [T, H, dv].
    Under `per_sequence_attention()` one torch.mm per sequence over its full n x n square with
    autograd (not einsum, which turns a length-1 contraction into an uncounted multiply), so
    FlopCounterMode counts 2 n^2 H dv forward and twice that backward from the matmuls that run.
    Otherwise the custom op `gr_core::fuxi_keyed_sum` (one padded batched matmul), which
    FlopCounterMode counts by the same dense-jagged formula, as the other attention ops.
    """
    num_tokens, h, dv = v_THD.shape
    w = weights_BNN.to(v_THD.dtype)  # under autocast v is bf16; the op is not autocast itself
    v_TE = v_THD.reshape(num_tokens, h * dv)
    if not per_sequence_enabled():
        return keyed_sum_op(w, v_TE, seq_offsets).reshape(num_tokens, h, dv)
    bounds = seq_offsets.tolist()
    outs = [
        torch.mm(w[b, : end - start, : end - start], v_TE[start:end])
        for b, (start, end) in enumerate(zip(bounds[:-1], bounds[1:]))
        if end > start
    ]
    return (torch.cat(outs) if outs else v_TE.new_zeros(v_TE.shape)).reshape(num_tokens, h, dv)


class FuXiBlock(nn.Module):
    """x -> MFFN(x, U * RMSNorm([pos, ts, semantic] channels applied to V)) on jagged [T, D]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.opts = options_of(cfg)
        self.dqk, self.dv = head_dims(cfg)
        d, h, f = cfg.embedding_dim, cfg.num_heads, ffn_dim(cfg)
        self.uvqk = nn.Linear(d, 4 * h * self.dv + 2 * h * self.dqk, bias=False)
        self.pos_weights = nn.Parameter(torch.empty(2 * cfg.max_seq_len - 1).normal_(0.0, _CHANNEL_STD))
        self.ts_weights = nn.Parameter(torch.empty(self.opts.num_time_buckets + 1).normal_(0.0, _CHANNEL_STD))
        self.output = nn.Linear(3 * h * self.dv, d)
        self.ffn_w1: nn.Linear | None = None
        self.ffn_w3: nn.Linear | None = None
        self.ffn_w2: nn.Linear | None = None
        if f > 0:
            self.ffn_w1 = nn.Linear(d, f, bias=False)
            self.ffn_w3 = nn.Linear(d, f, bias=False)
            self.ffn_w2 = nn.Linear(f, d, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.uvqk.weight, 0.0, _UVQK_STD)
        for linear in (self.output, self.ffn_w1, self.ffn_w2, self.ffn_w3):
            if linear is not None:
                nn.init.xavier_uniform_(linear.weight)

    def forward(self, x_TD: torch.Tensor, seq_offsets: torch.Tensor, index: ChannelIndex) -> torch.Tensor:
        cfg, dqk, dv = self.cfg, self.dqk, self.dv
        num_tokens, h, d = x_TD.shape[0], cfg.num_heads, cfg.embedding_dim
        x_hat = F.rms_norm(x_TD, (d,), eps=_NORM_EPS)
        u, v, q, k = torch.split(F.silu(self.uvqk(x_hat)), [3 * h * dv, h * dv, h * dqk, h * dqk], dim=-1)
        v_THD = v.reshape(num_tokens, h, dv)
        semantic = kernels.hstu_attention(
            q.reshape(num_tokens, h, dqk), k.reshape(num_tokens, h, dqk), v_THD, seq_offsets, cfg.max_seq_len,
            alpha=1.0,  # SiLU(q . k) / n: no 1/sqrt(d), no rab (the bias channels are separate)
            norm=self.opts.attn_norm,
            impl=self.opts.attention_impl,
        )
        # The bias channels are neither SiLU'd nor divided by n; masked causally in the index.
        zero = torch.zeros((), dtype=self.pos_weights.dtype, device=x_TD.device)
        pos_BNN = torch.where(index.mask, self.pos_weights[index.pos_idx][None], zero)
        ts_BNN = torch.where(index.mask, self.ts_weights[index.ts_idx], zero)
        channels = torch.cat([
            keyed_sum(pos_BNN, v_THD, seq_offsets).reshape(num_tokens, h * dv),
            keyed_sum(ts_BNN, v_THD, seq_offsets).reshape(num_tokens, h * dv),
            semantic.reshape(num_tokens, h * dv),
        ], dim=-1)
        ams = u * F.rms_norm(channels, (3 * h * dv,), eps=_NORM_EPS)
        h1 = self.output(self.dropout(ams)) + x_TD  # MFFN stage 1
        if self.ffn_w1 is None or self.ffn_w2 is None or self.ffn_w3 is None:
            return h1
        z = self.dropout(F.rms_norm(h1, (d,), eps=_NORM_EPS))
        return self.ffn_w2(F.silu(self.ffn_w1(z)) * self.ffn_w3(z)) + h1  # stage 2: SwiGLU + residual


class FuXiAlpha(SequenceEncoder):
    """Item-id sequences -> L2-normalised embeddings at every position ([T] ids -> [T, D])."""

    def __init__(self, cfg: ModelConfig, num_items: int) -> None:
        options_of(cfg)  # a ValueError unless cfg is a FuXi-alpha config
        super().__init__(cfg, num_items)
        self.blocks = nn.ModuleList(FuXiBlock(cfg) for _ in range(cfg.num_blocks))

    def encode(
        self, x_TD: torch.Tensor, seq_offsets: torch.Tensor, timestamps_T: torch.Tensor,
        request_timestamps_B: torch.Tensor | None,
    ) -> torch.Tensor:
        index = channel_index(seq_offsets, timestamps_T, request_timestamps_B, self.cfg.max_seq_len,
                              options_of(self.cfg).num_time_buckets)
        for block in self.blocks:
            x_TD = block(x_TD, seq_offsets, index)
        return x_TD
