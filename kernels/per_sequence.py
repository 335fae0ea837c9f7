"""A switch that routes every attention op through plain per-sequence matmuls, for FLOP counting.

The attention custom ops (`gr_scaling::hstu_attention`, `gr_core::jagged_softmax_attention`)
register the analytic "dense-jagged" formula as their FLOP count, so `FlopCounterMode` on them
would only repeat the formula. Inside `per_sequence_attention()`, each attention entry point runs
its plain PyTorch form instead: one batched matmul (over heads) per sequence for QK^T and one
for AV (full n x n, masked afterwards), differentiated by ordinary autograd, so `FlopCounterMode` counts the matmuls
that actually run, independently of the formula (`scaling.measure.measure_training_step`). Slow:
for measuring, never for training. A ContextVar, so it is scoped to the calling thread.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_PER_SEQUENCE: contextvars.ContextVar[bool] = contextvars.ContextVar("per_sequence_attention", default=False)


@contextlib.contextmanager
def per_sequence_attention() -> Iterator[None]:
    """Within the block, attention runs as per-sequence matmuls (see the module docstring)."""
    token = _PER_SEQUENCE.set(True)
    try:
        yield
    finally:
        _PER_SEQUENCE.reset(token)


def per_sequence_enabled() -> bool:
    return _PER_SEQUENCE.get()


__all__ = ["per_sequence_attention", "per_sequence_enabled"]
