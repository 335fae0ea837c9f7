"""A one-entry memo of what is computed from a batch's input tensors.

Every attention layer of a model gets the same timestamps, request times and sequence offsets,
in its forward and again in its backward, and the time tables built from them
(`rab_tables._edge_table`: one host sync and a `searchsorted`; `first_query_table`: another
`searchsorted`) do not depend on the layer. With this memo a training step of an L-layer model
builds them once instead of 2L times, and the host waits for the device once instead of 2L
times (on an H200 each such wait left the GPU idle while Python caught up:
`benchmarks/results/attention-nvidia-h200.json`).

A value is reused only for the very same tensor objects, unmodified: the memo holds a weak
reference to each (a freed tensor never matches, whatever new tensor reuses its memory) and its
version counter, which every in-place write bumps. Inference-mode tensors have no version
counter; their calls are not memoized. One entry: a new batch replaces the last one, so the memo
keeps at most one batch's tables alive.

`padded.batch_maps` (the CPU path) matches its inputs by value instead, which also reuses maps
for equal copies; on a GPU that comparison would itself be a host sync, the cost this memo saves.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
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
    """`get(tensors, params, compute)`: compute(), or the value it gave for the same tensor
    objects (unmodified since) and equal params. `computed` counts the calls of compute."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamps: tuple[_Stamp, ...] | None = None
        self._params: tuple[object, ...] | None = None
        self._value: Value | None = None
        self.computed = 0

    def get(self, tensors: Sequence[torch.Tensor | None], params: tuple[object, ...],
            compute: Callable[[], Value]) -> Value:
        with self._lock:
            if self._stamps is not None and self._params == params and _same(self._stamps, tensors):
                return self._value  # type: ignore[return-value]
        stamps = _stamps(tensors)
        value = compute()
        with self._lock:
            self.computed += 1
            if stamps is not None:
                self._stamps, self._params, self._value = stamps, params, value
        return value

    def clear(self) -> None:
        with self._lock:
            self._stamps = self._params = self._value = None


__all__ = ["BatchMemo"]
