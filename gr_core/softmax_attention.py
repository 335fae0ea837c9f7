"""Causal softmax attention over jagged sequences (SASRec's), as a `torch.library` custom op.

out[i] = sum_{j <= i} Dropout(softmax_j(scale * q_i . k_j)) v_j within each sequence, computed
padded to the batch's longest sequence inside the op and returned jagged. Being one op per
direction, `FlopCounterMode` counts it by formula instead of seeing the padded matmuls: the
"dense-jagged" convention of `scaling.flops`, forward = sum_b n_b^2 * H * (Dqk + Dv) * 2 and
backward = 2x forward, exactly as for the HSTU attention op. Softmax, masking and dropout are
elementwise work and not counted.

Attention dropout (upstream SASRec: nn.MultiheadAttention's dropout) draws its mask from a
generator seeded by `seed`, so forward and backward see the same mask without storing it; the
caller draws `seed` from torch's global generator, so a seeded run is deterministic.

- ``gr_core::jagged_softmax_attention(q, k, v, seq_offsets, scale, dropout_p, seed) -> [T, H, Dv]``
- ``gr_core::jagged_softmax_attention_backward(grad_out, <same inputs>) -> [dq, dk, dv]``
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

from kernels.per_sequence import per_sequence_enabled


def _layout(seq_offsets: torch.Tensor, num_tokens: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(sequence of each token [T], position of each token [T], B, padded length N)."""
    offsets = seq_offsets.to(torch.int64)
    lengths = offsets[1:] - offsets[:-1]
    num_seqs = lengths.numel()
    padded = int(lengths.max()) if num_seqs else 0
    batch_idx = torch.repeat_interleave(torch.arange(num_seqs, device=offsets.device), lengths)
    pos = torch.arange(num_tokens, device=offsets.device) - offsets[:-1][batch_idx]
    return batch_idx, pos, num_seqs, padded


def _pad(x: torch.Tensor, batch_idx: torch.Tensor, pos: torch.Tensor, num_seqs: int, padded: int) -> torch.Tensor:
    out = x.new_zeros((num_seqs, padded, *x.shape[1:]))
    out[batch_idx, pos] = x
    return out


def _probs(
    q: torch.Tensor, k: torch.Tensor, seq_offsets: torch.Tensor, scale: float, dropout_p: float, seed: int
) -> tuple[tuple[torch.Tensor, torch.Tensor, int, int], torch.Tensor, torch.Tensor | None]:
    """Layout, softmax probabilities p [B, H, N, N] (0 outside the causal mask) and the kept mask / (1 - p)."""
    layout = _layout(seq_offsets, q.shape[0])
    batch_idx, pos, num_seqs, padded = layout
    lengths = torch.bincount(batch_idx, minlength=num_seqs) if num_seqs else batch_idx.new_zeros(0)
    s = scale * torch.einsum("bihd,bjhd->bhij", _pad(q, *layout), _pad(k, *layout))
    ar = torch.arange(padded, device=q.device)
    # Causal, and keys inside the sequence; the diagonal always, so that padded rows (and empty
    # sequences) never softmax over nothing. Padded rows are dropped when unpadding.
    causal = ar[:, None] >= ar[None, :]
    allowed = causal[None] & ((ar[None, None, :] < lengths[:, None, None]) | torch.eye(padded, dtype=torch.bool,
                                                                                      device=q.device)[None])
    p = torch.softmax(s.masked_fill(~allowed[:, None], float("-inf")), dim=-1)
    keep = None
    if dropout_p > 0.0:
        gen = torch.Generator(device=q.device).manual_seed(seed)
        keep = (torch.rand(p.shape, generator=gen, device=q.device) >= dropout_p).to(p.dtype) / (1.0 - dropout_p)
    return layout, p, keep


@torch.library.custom_op("gr_core::jagged_softmax_attention", mutates_args=())
def jagged_softmax_attention_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_offsets: torch.Tensor,
    scale: float, dropout_p: float, seed: int,
) -> torch.Tensor:
    """q, k: [T, H, Dqk]; v: [T, H, Dv]; seq_offsets [B+1] -> [T, H, Dv]."""
    layout, p, keep = _probs(q, k, seq_offsets, scale, dropout_p, seed)
    batch_idx, pos, _, _ = layout
    a = p if keep is None else p * keep
    out = torch.einsum("bhij,bjhd->bihd", a, _pad(v, *layout))
    return out[batch_idx, pos].contiguous()


@jagged_softmax_attention_op.register_fake
def _fake(q, k, v, seq_offsets, scale, dropout_p, seed):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]), dtype=v.dtype)


@torch.library.custom_op("gr_core::jagged_softmax_attention_backward", mutates_args=())
def jagged_softmax_attention_backward_op(
    grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_offsets: torch.Tensor,
    scale: float, dropout_p: float, seed: int,
) -> list[torch.Tensor]:
    """[dq, dk, dv]. With a = p * keep: dv = a^T dout, dp = (dout v^T) * keep,
    ds = p * (dp - sum_j p dp) * scale, dq = ds k, dk = ds^T q."""
    layout, p, keep = _probs(q, k, seq_offsets, scale, dropout_p, seed)
    batch_idx, pos, _, _ = layout
    a = p if keep is None else p * keep
    dout = _pad(grad_out, *layout)
    dv = torch.einsum("bhij,bihd->bjhd", a, dout)
    dp = torch.einsum("bihd,bjhd->bhij", dout, _pad(v, *layout))
    if keep is not None:
        dp = dp * keep
    ds = p * (dp - (dp * p).sum(dim=-1, keepdim=True)) * scale
    dq = torch.einsum("bhij,bjhd->bihd", ds, _pad(k, *layout))
    dk = torch.einsum("bhij,bihd->bjhd", ds, _pad(q, *layout))
    return [dq[batch_idx, pos].contiguous(), dk[batch_idx, pos].contiguous(), dv[batch_idx, pos].contiguous()]


@jagged_softmax_attention_backward_op.register_fake
def _fake_backward(grad_out, q, k, v, seq_offsets, scale, dropout_p, seed):
    return [torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)]


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    q, k, v, seq_offsets, scale, dropout_p, seed = inputs
    ctx.save_for_backward(q, k, v, seq_offsets)
    ctx.scale, ctx.dropout_p, ctx.seed = scale, dropout_p, seed


def _backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    q, k, v, seq_offsets = ctx.saved_tensors
    dq, dk, dv = torch.ops.gr_core.jagged_softmax_attention_backward(
        grad_out.contiguous(), q, k, v, seq_offsets, ctx.scale, ctx.dropout_p, ctx.seed
    )
    return dq, dk, dv, None, None, None, None


jagged_softmax_attention_op.register_autograd(_backward, setup_context=_setup_context)


def _attention_flops(q: torch.Tensor, v: torch.Tensor, seq_offsets: torch.Tensor) -> int:
    lengths = (seq_offsets[1:] - seq_offsets[:-1]).to(torch.int64)
    return int((lengths * lengths).sum()) * q.shape[1] * (q.shape[2] + v.shape[2]) * 2


@register_flop_formula(torch.ops.gr_core.jagged_softmax_attention, get_raw=True)
def _forward_flop(q, k, v, seq_offsets, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return _attention_flops(q, v, seq_offsets)


@register_flop_formula(torch.ops.gr_core.jagged_softmax_attention_backward, get_raw=True)
def _backward_flop(grad_out, q, k, v, seq_offsets, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return 2 * _attention_flops(q, v, seq_offsets)


def jagged_softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_offsets: torch.Tensor, *, dropout_p: float = 0.0
) -> torch.Tensor:
    """Causal softmax attention scaled by 1/sqrt(Dqk); dropout on the probabilities when dropout_p > 0."""
    if q.dim() != 3 or k.shape != q.shape or v.dim() != 3 or v.shape[:2] != q.shape[:2]:
        raise ValueError(f"expected q, k: [T, H, Dqk], v: [T, H, Dv]; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if per_sequence_enabled():
        return jagged_softmax_attention_per_sequence(q, k, v, seq_offsets, dropout_p=dropout_p)
    seed = int(torch.randint(0, 2**62, (1,)).item()) if dropout_p > 0.0 else 0
    return jagged_softmax_attention_op(q, k, v, seq_offsets, q.shape[-1] ** -0.5, float(dropout_p), seed)


def jagged_softmax_attention_per_sequence(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_offsets: torch.Tensor, *, dropout_p: float = 0.0
) -> torch.Tensor:
    """The same attention as per-sequence batched matmuls with autograd (`kernels.per_sequence`): what
    `FlopCounterMode` counts under `per_sequence_attention()`, independently of the op's formula.
    Its dropout mask comes from torch's generator, not the op's seed."""
    outs = []
    bounds = seq_offsets.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        n = end - start
        if n == 0:
            continue
        # torch.bmm, not einsum: einsum turns a length-1 contraction into an uncounted multiply.
        s_HNN = torch.bmm(q[start:end].transpose(0, 1), k[start:end].permute(1, 2, 0)) * q.shape[-1] ** -0.5
        causal = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        p_HNN = F.dropout(torch.softmax(s_HNN.masked_fill(~causal, float("-inf")), dim=-1), dropout_p)
        outs.append(torch.bmm(p_HNN, v[start:end].transpose(0, 1)).transpose(0, 1))
    return torch.cat(outs) if outs else v.new_zeros((q.shape[0], q.shape[1], v.shape[2]))
