"""A one-entry memo of what is computed from a batch's input tensors, within one model forward.

Every attention layer of a model gets the same timestamps, request times and sequence offsets,
and the time tables built from them (`rab_tables._edge_table`: one host sync and a
`searchsorted`) do not depend on the layer. Inside `scope()`, which a model opens around its
layers (`gr_core.hstu.HSTU.encode`), a forward of L layers builds them once instead of L times,
and the host waits for the device once instead of L times (on an H200 each such wait left the GPU
idle while Python caught up: `benchmarks/results/attention-nvidia-h200.json`).

A value is reused only inside the scope, and only for the very same tensor objects, unmodified:
the memo holds a weak reference to each (a freed tensor never matches, whatever new tensor
reuses its memory) and its version counter, which every in-place write through PyTorch bumps.
Writes that bypass it (`.data`, `.numpy()`, a numpy buffer behind `torch.from_numpy` refilled
by a data loader) cannot happen between the layers of one forward, but can between a forward
and its backward or the next batch: so nothing outlives the scope. The memo is cleared when the
outermost scope exits, and calls outside a scope (a backward, a direct call) compute. Scopes are
per thread. Inference-mode tensors have no version counter; their calls are not memoized.

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
    """`get(tensors, params, compute)`: compute(), or inside `scope()` the value it gave for the
    same tensor objects (unmodified since) and equal params. `computed` counts the calls of
    compute."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = threading.local()
        self._stamps: tuple[_Stamp, ...] | None = None
        self._params: tuple[object, ...] | None = None
        self._value: Value | None = None
        self._owner: int | None = None  # the thread whose scope holds the entry
        self.computed = 0

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Memoize within this block (this thread); the outermost exit drops the value."""
        depth = getattr(self._depth, "value", 0)
        self._depth.value = depth + 1
        try:
            yield
        finally:
            self._depth.value = depth
            if depth == 0:
                self._drop(threading.get_ident())

    def get(self, tensors: Sequence[torch.Tensor | None], params: tuple[object, ...],
            compute: Callable[[], Value]) -> Value:
        thread = threading.get_ident()
        active = getattr(self._depth, "value", 0) > 0
        if active:
            with self._lock:
                if (self._owner == thread and self._stamps is not None and self._params == params
                        and _same(self._stamps, tensors)):
                    return self._value  # type: ignore[return-value]
        stamps = _stamps(tensors) if active else None
        value = compute()
        with self._lock:
            self.computed += 1
            if stamps is not None:
                self._stamps, self._params, self._value, self._owner = stamps, params, value, thread
        return value

    def _drop(self, thread: int) -> None:
        with self._lock:
            if self._owner == thread:
                self._stamps = self._params = self._value = self._owner = None


# The attention's time tables (`rab_tables.rab_tables(batch=...)`), shared by one forward's layers.
TIME_TABLES: BatchMemo = BatchMemo()

__all__ = ["TIME_TABLES", "BatchMemo"]
