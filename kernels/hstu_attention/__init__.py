"""Jagged HSTU attention: public entry point choosing an implementation.

`hstu_attention(..., impl=...)` dispatches through the `gr_scaling::hstu_attention` custom op
(see `op.py`), so autograd, `FlopCounterMode` and `torch.compile` see a single op.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Literal

import torch

from kernels.hstu_attention.batch_memo import TIME_TABLES
from kernels.hstu_attention.op import hstu_attention_op
from kernels.hstu_attention.per_sequence import hstu_attention_per_sequence
from kernels.per_sequence import per_sequence_enabled
from kernels.hstu_attention.reference import (
    Norm,
    dense_attention_flops,
    hstu_attention_reference,
    hstu_attention_reference_backward,
    time_buckets,
)

logger = logging.getLogger(__name__)

Impl = Literal["auto", "reference", "padded", "triton"]
# Concrete implementations of the one custom op; "auto" picks Triton on CUDA and the padded PyTorch
# form elsewhere (on the CPU Triton only runs under its slow numpy interpreter, for tests).
_IMPLS = ("reference", "padded", "triton")
VALID_IMPLS: tuple[str, ...] = ("auto", *_IMPLS)
_logged_impls: set[str] = set()


def _resolve(impl: str, q: torch.Tensor) -> str:
    if impl not in VALID_IMPLS:
        raise ValueError(f"unknown hstu_attention impl {impl!r}; valid ones are {list(VALID_IMPLS)}")
    if impl == "auto":
        return "triton" if q.is_cuda else "padded"
    return impl


def hstu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seq_offsets: torch.Tensor,
    max_seq_len: int,
    *,
    alpha: float = 1.0,
    norm: Norm = "max_len",
    timestamps: torch.Tensor | None = None,
    pos_weights: torch.Tensor | None = None,
    ts_weights: torch.Tensor | None = None,
    request_timestamps: torch.Tensor | None = None,
    impl: Impl = "auto",
) -> torch.Tensor:
    """Causal jagged HSTU attention. q, k: [T, H, Dqk]; v: [T, H, Dv]; seq_offsets: [B+1] -> [T, H, Dv].

    Optional relative attention bias: pos_weights [2*max_seq_len-1] and ts_weights
    [num_buckets+1] with timestamps [T] (seconds) and request_timestamps [B] (the time each
    sequence's last query is scored at). Semantics: `reference.hstu_attention_reference`.
    Under `kernels.per_sequence.per_sequence_attention()` it runs as per-sequence matmuls (FLOP
    counting), whatever `impl` says.
    """
    if per_sequence_enabled():
        return hstu_attention_per_sequence(
            q, k, v, seq_offsets, max_seq_len, alpha=alpha, norm=norm, timestamps=timestamps,
            pos_weights=pos_weights, ts_weights=ts_weights, request_timestamps=request_timestamps,
        )
    name = _resolve(impl, q)
    if name not in _logged_impls:
        logger.info("hstu_attention: using the %r implementation (impl=%r, device %s)", name, impl, q.device)
        _logged_impls.add(name)
    return hstu_attention_op(
        q, k, v, seq_offsets, max_seq_len, alpha, norm, timestamps, pos_weights, ts_weights, request_timestamps, name
    )


@contextlib.contextmanager
def batch_scope() -> Iterator[None]:
    """Around the attention layers of one forward, or a forward and its backward (given the same
    timestamps, request times and offsets): the Triton path builds the batch's time tables, and
    waits for the device, once for all of them rather than once per layer and direction
    (`batch_memo`). Dropped when the last open scope closes."""
    with TIME_TABLES.scope():
        yield


__all__ = [
    "VALID_IMPLS",
    "batch_scope",
    "dense_attention_flops",
    "hstu_attention",
    "hstu_attention_reference",
    "hstu_attention_reference_backward",
    "time_buckets",
]
