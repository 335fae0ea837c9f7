"""Where a run computes and in what precision: device choice, autocast, per-device collectives.

`train.device` "auto" takes the GPU when torch sees one; a process of a multi-process run takes
GPU LOCAL_RANK (Slurm's `--gpus-per-node` shows every GPU of the node to each task; a task that
sees exactly one GPU, as with `--gpus-per-task=1`, takes that one). `train.precision` "bf16" runs
the forward pass and the losses under `torch.autocast` (bfloat16 matmuls; float32 weights,
gradients and optimizer state, so no loss scaling is needed); "fp32" runs everything in float32
(on the GPU without TF32: the tolerance the float32 path promises is IEEE float32's).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def resolve_device(
    requested: str, *, local_rank: int | None = None, cuda_devices: int | None = None
) -> torch.device:
    """The torch device of `train.device` for this process.

    local_rank: this process's index on its node (LOCAL_RANK from the environment when None);
    cuda_devices: GPUs torch sees (torch.cuda.device_count() when None).
    """
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train.device must be 'auto', 'cpu' or 'cuda', got {requested!r}")
    if requested == "cpu":
        return torch.device("cpu")
    count = torch.cuda.device_count() if cuda_devices is None else cuda_devices
    if count == 0:
        if requested == "cuda":
            raise ValueError(
                "train.device='cuda' but torch sees no CUDA device on this machine "
                f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                "set train.device='cpu', or 'auto' to use a GPU only where there is one"
            )
        return torch.device("cpu")
    rank = int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank
    if count == 1:
        return torch.device("cuda", 0)
    if not 0 <= rank < count:
        raise ValueError(
            f"process LOCAL_RANK={rank} has no GPU of its own: this node shows {count} GPUs; "
            "request as many GPUs as tasks per node (dispatch.gpus_per_node = dispatch.tasks_per_node)"
        )
    return torch.device("cuda", rank)


def use_device(device: torch.device) -> None:
    """Make `device` this process's current GPU (NCCL and Triton launch on the current device)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # The float32 path is IEEE float32 on the GPU too (torch's default; set in case a caller changed it).
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def collective_backend(device: torch.device) -> str:
    """torch.distributed backend for processes computing on `device`: NCCL on GPUs, gloo on CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[None]:
    """The context the forward pass and the losses run in: bf16 autocast, or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"train.precision must be 'fp32' or 'bf16', got {precision!r}")


@contextlib.contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """Turn an enclosing autocast off (evaluation scores over the whole item table)."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def describe(device: torch.device) -> str:
    """"cpu", or e.g. "cuda:0 (NVIDIA H100 80GB HBM3)": recorded with a run's results."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def rng_states(device: torch.device) -> dict[str, object]:
    """The device's own generator state (a GPU's dropout draws from it), for checkpoints."""
    return {"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}


def restore_rng_states(states: dict[str, object], device: torch.device) -> None:
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)  # type: ignore[arg-type]
