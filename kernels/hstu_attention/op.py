"""`torch.library` registration of jagged HSTU attention: ops, fake impls, autograd, FLOP formulas.

Two custom ops, so that `FlopCounterMode` sees each direction as one op and never the padded
matmuls inside it (a dispatch mode is not re-entered while it runs an op it counts):

- ``gr_scaling::hstu_attention(q, k, v, seq_offsets, max_seq_len, alpha, norm, timestamps,
  pos_weights, ts_weights, request_timestamps) -> out [T, H, Dv]``
- ``gr_scaling::hstu_attention_backward(grad_out, <same inputs>) -> [dq, dk, dv, d_pos, d_ts]``;
  an absent bias weight gets an empty gradient tensor here and None in autograd.

FLOPs use the "dense jagged" convention (`reference.dense_attention_flops`): forward =
sum_b n_b^2 * H * (Dqk + Dv) * 2, backward = 2x forward, as for any matmul. Each op takes an
`impl` argument: the PyTorch reference (`reference.py`, the readable ground truth), its fast padded
form for the CPU (`padded.py`), or the Triton kernels of `triton_fwd.py`/`triton_bwd.py`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.flop_counter import register_flop_formula

from kernels.hstu_attention.padded import hstu_attention_padded, hstu_attention_padded_backward
from kernels.hstu_attention.reference import (
    dense_attention_flops,
    hstu_attention_reference,
    hstu_attention_reference_backward,
)

logger = logging.getLogger(__name__)
_warned_fake_flops = False


@torch.library.custom_op("gr_scaling::hstu_attention", mutates_args=())
def hstu_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    norm: str,
    timestamps: torch.Tensor | None,
    pos_weights: torch.Tensor | None,
    ts_weights: torch.Tensor | None,
    request_timestamps: torch.Tensor | None = None,
    impl: str = "reference",
) -> torch.Tensor:
    """Jagged HSTU attention forward; see `reference.hstu_attention_reference`.

    impl: "reference" (PyTorch, any device), "padded" (the same computation without its waste:
    `padded.py`) or "triton" (the tiled kernel; CUDA, or CPU under TRITON_INTERPRET=1). All are
    this one op, so FLOP counting and autograd see the same thing.
    """
    if impl == "triton":
        from kernels.hstu_attention.triton_fwd import hstu_attention_fwd_triton

        return hstu_attention_fwd_triton(
            q, k, v, seq_offsets, max_seq_len, alpha, norm, timestamps, pos_weights, ts_weights,
            request_timestamps=request_timestamps,
        )
    if impl == "padded":
        return hstu_attention_padded(
            q, k, v, seq_offsets, max_seq_len, alpha=alpha, norm=norm,  # type: ignore[arg-type]
            timestamps=timestamps, pos_weights=pos_weights, ts_weights=ts_weights,
            request_timestamps=request_timestamps,
        )
    return hstu_attention_reference(
        q, k, v, seq_offsets, max_seq_len, alpha=alpha, norm=norm,  # type: ignore[arg-type]
        timestamps=timestamps, pos_weights=pos_weights, ts_weights=ts_weights, request_timestamps=request_timestamps,
    )


@hstu_attention_op.register_fake
def _hstu_attention_fake(
    q, k, v, seq_offsets, max_seq_len, alpha, norm, timestamps, pos_weights, ts_weights, request_timestamps=None,
    impl="reference",
):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]), dtype=v.dtype)


@torch.library.custom_op("gr_scaling::hstu_attention_backward", mutates_args=())
def hstu_attention_backward_op(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    alpha: float,
    norm: str,
    timestamps: torch.Tensor | None,
    pos_weights: torch.Tensor | None,
    ts_weights: torch.Tensor | None,
    request_timestamps: torch.Tensor | None = None,
    impl: str = "reference",
) -> list[torch.Tensor]:
    """[dq, dk, dv, d_pos_weights, d_ts_weights]; an absent bias weight gets an empty tensor."""
    if impl == "triton":
        from kernels.hstu_attention.triton_bwd import hstu_attention_bwd_triton

        grads = hstu_attention_bwd_triton(
            grad_out, q, k, v, seq_offsets, max_seq_len, alpha, norm, timestamps, pos_weights, ts_weights,
            request_timestamps=request_timestamps,
        )
    else:
        backward = hstu_attention_padded_backward if impl == "padded" else hstu_attention_reference_backward
        grads = backward(
            grad_out, q, k, v, seq_offsets, max_seq_len, alpha=alpha, norm=norm,  # type: ignore[arg-type]
            timestamps=timestamps, pos_weights=pos_weights, ts_weights=ts_weights,
            request_timestamps=request_timestamps,
        )
    # custom ops cannot return None; the autograd wrapper maps empty back to None.
    return [g if g is not None else q.new_empty(0) for g in grads]


@hstu_attention_backward_op.register_fake
def _hstu_attention_backward_fake(
    grad_out, q, k, v, seq_offsets, max_seq_len, alpha, norm, timestamps, pos_weights, ts_weights,
    request_timestamps=None, impl="reference",
):
    def like(w: torch.Tensor | None) -> torch.Tensor:
        return torch.empty_like(w) if w is not None else q.new_empty(0)

    return [torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), like(pos_weights), like(ts_weights)]


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    q, k, v, seq_offsets, max_seq_len, alpha, norm, timestamps, pos_weights, ts_weights, request_timestamps, impl = inputs
    ctx.save_for_backward(q, k, v, seq_offsets, timestamps, pos_weights, ts_weights, request_timestamps)
    ctx.max_seq_len, ctx.alpha, ctx.norm, ctx.impl = max_seq_len, alpha, norm, impl


def _backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    q, k, v, seq_offsets, timestamps, pos_weights, ts_weights, request_timestamps = ctx.saved_tensors
    dq, dk, dv, d_pos, d_ts = torch.ops.gr_scaling.hstu_attention_backward(
        grad_out.contiguous(), q, k, v, seq_offsets, ctx.max_seq_len, ctx.alpha, ctx.norm,
        timestamps, pos_weights, ts_weights, request_timestamps, ctx.impl,
    )
    return (
        dq, dk, dv, None, None, None, None, None,
        d_pos if pos_weights is not None else None,
        d_ts if ts_weights is not None else None,
        None, None,
    )


hstu_attention_op.register_autograd(_backward, setup_context=_setup_context)


def _forward_flops(q: torch.Tensor, v: torch.Tensor, seq_offsets: torch.Tensor, max_seq_len: int) -> int:
    global _warned_fake_flops
    _, num_heads, dqk = q.shape
    dv = v.shape[2]
    if isinstance(seq_offsets, torch._subclasses.FakeTensor) or seq_offsets.is_meta:
        # Without the offsets' values only a bound is known: sum n_b^2 <= T * max_seq_len.
        if not _warned_fake_flops:
            logger.warning("hstu_attention FLOPs under fake/meta tensors: counting the bound T * max_seq_len")
            _warned_fake_flops = True
        return q.shape[0] * max_seq_len * num_heads * (dqk + dv) * 2
    return dense_attention_flops(seq_offsets, num_heads, dqk, dv)


# get_raw=True: the formula needs seq_offsets' values, not only the shapes.
@register_flop_formula(torch.ops.gr_scaling.hstu_attention, get_raw=True)
def _hstu_attention_flop(q, k, v, seq_offsets, max_seq_len, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return _forward_flops(q, v, seq_offsets, max_seq_len)


@register_flop_formula(torch.ops.gr_scaling.hstu_attention_backward, get_raw=True)
def _hstu_attention_backward_flop(
    grad_out, q, k, v, seq_offsets, max_seq_len, *args: Any, out_val: Any = None, **kwargs: Any
) -> int:
    return 2 * _forward_flops(q, v, seq_offsets, max_seq_len)
