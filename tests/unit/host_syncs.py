"""A dispatch mode that records the ops which make a CUDA host wait for the device."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class HostSyncs(TorchDispatchMode):
    """Records the ops that make a CUDA host wait for the device: reading a value (`item`,
    `bool`, `int`), a data-dependent output size (nonzero, boolean-mask indexing,
    repeat_interleave without output_size). Seen on the CPU through the dispatcher."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        aten = torch.ops.aten
        name = str(func)
        if func in (aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default):
            self.syncs.append(name)
        elif func is aten.repeat_interleave.Tensor and kwargs.get("output_size", args[1] if len(args) > 1 else None) is None:
            self.syncs.append(name + " without output_size")
        elif func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default):
            if any(i is not None and i.dtype == torch.bool for i in args[1]):
                self.syncs.append(name + " with a boolean mask")
        return func(*args, **kwargs)
