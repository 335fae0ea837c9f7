"""A one-entry memo of what is computed from a batch's input tensors, within a forward or a step.

Every attention layer of a model gets the same timestamps, request times and sequence offsets,
and the time tables built from them (`rab_tables._edge_table`: one host sync and a
`searchsorted`) do not depend on the layer. Inside `scope()`, which a model opens around its
layers (`gr_core.hstu.HSTU.encode`) and the trainer around a forward and its backward, a
training step of L layers builds them once instead of 2L times, and the host waits for the
device once instead of 2L times (on an H200 each such wait left the GPU
idle while Python caught up: `benchmarks/results/attention-nvidia-h200.json`).

A value is reused only while a scope is open, and only for the very same tensor objects, unmodified:
the memo holds a weak reference to each (a freed tensor never matches, whatever new tensor
reuses its memory) and its version counter, which every in-place write through PyTorch bumps.
Writes that bypass it (`.data`, `.numpy()`, a numpy buffer behind `torch.from_numpy` refilled
by a data loader) do not happen within one training step (they would corrupt autograd's saved
tensors too), but can between batches: so nothing outlives the scope. The trainer opens one around a micro-batch's
forward and backward (`Trainer.step`), where the backward's layers reuse the forward's tables
too; the memo is cleared when the last open scope closes, and calls while none is open (a
direct call) compute. A scope serves every thread (autograd runs a CUDA backward on a thread of
its own). Inference-mode tensors have no version counter; their calls are not memoized.

`padded.batch_maps` (the CPU path) matches its inputs by value instead, which also reuses maps
for equal copies; on a GPU that comparison would itself be a host sync, the cost this memo saves.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

import torch

Value = TypeVar("Value")
_Stamp = tuple["weakref.ReferenceType[torch.Tensor]", int] | None


def _stamps(tensors: Sequence[torch.Tensor | None]) -> tuple[_Stamp, ...] | None:
    """(weak reference, version) per tensor (None for an absent one), or None when a tensor
    cannot be tracked (an inference-mode tensor has no version counter)."""
    stamps: list[_Stamp] = []
    for tensor in tensors:
        if tensor is None:
            stamps.append(None)
        elif tensor.is_inference():
            return None
        else:
            stamps.append((weakref.ref(tensor), tensor._version))
    return tuple(stamps)


def _same(stamps: tuple[_Stamp, ...], tensors: Sequence[torch.Tensor | None]) -> bool:
    if len(stamps) != len(tensors):
        return False
    for stamp, tensor in zip(stamps, tensors):
        if stamp is None or tensor is None:
            if stamp is not None or tensor is not None:
                return False
        elif stamp[0]() is not tensor or stamp[1] != tensor._version:
            return False
    return True


class BatchMemo(Generic[Value]):
    """`get(tensors, params, compute)`: compute(), or while a `scope()` is open the value it gave
    for the same tensor objects (unmodified since) and equal params. `computed` counts the calls of
    compute."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open_scopes = 0
        self._stamps: tuple[_Stamp, ...] | None = None
        self._params: tuple[object, ...] | None = None
        self._value: Value | None = None
        self.computed = 0

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Memoize while this block runs, for every thread: autograd runs a CUDA backward on a
        thread of its own. The last scope to close drops the value."""
        with self._lock:
            self._open_scopes += 1
        try:
            yield
        finally:
            with self._lock:
                self._open_scopes -= 1
                if self._open_scopes == 0:
                    self._stamps = self._params = self._value = None

    def get(self, tensors: Sequence[torch.Tensor | None], params: tuple[object, ...],
            compute: Callable[[], Value]) -> Value:
        with self._lock:
            active = self._open_scopes > 0
            if active and self._stamps is not None and self._params == params and _same(self._stamps, tensors):
                return self._value  # type: ignore[return-value]
        stamps = _stamps(tensors) if active else None
        value = compute()
        with self._lock:
            self.computed += 1
            if stamps is not None and self._open_scopes > 0:
                self._stamps, self._params, self._value = stamps, params, value
        return value


# The attention's time tables (`rab_tables.rab_tables(batch=...)`), shared within an open scope.
TIME_TABLES: BatchMemo = BatchMemo()

__all__ = ["TIME_TABLES", "BatchMemo"]
