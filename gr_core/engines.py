"""What applies a training step: a plain AdamW loop, or a DeepSpeed engine (ZeRO stage 0-3).

Both take, for every micro-batch, a loss that is that micro-batch's summed per-position loss over
the global batch's position count, times `loss_multiplier`, which undoes what the engine does to
it (DeepSpeed divides by the accumulation steps and averages gradients over processes; the plain
loop does neither), so that either engine follows the same gradient: the mean over the global
batch. `step()` follows every micro-batch's `backward()` and updates the weights after the last
micro-batch of a global batch, after clipping the global gradient norm to `train.grad_clip`.

Checkpoints are directories `<dir>/<tag>/` (DeepSpeed's layout: the plain loop writes one file
in it) plus `<dir>/latest` naming the newest complete one, written after it, so a process killed
mid-save leaves the previous checkpoint in force. `client_state` is the trainer's own progress.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from gr_core.config import TrainConfig
from gr_core.devices import collective_backend
from gr_core.distributed import ProcessGroup

log = logging.getLogger(__name__)

LATEST = "latest"


class TrainingEngine(Protocol):
    module: nn.Module
    loss_multiplier: float

    def backward(self, loss: torch.Tensor) -> None: ...

    def step(self) -> None: ...

    def evaluation(self) -> contextlib.AbstractContextManager[nn.Module]:
        """The module with every weight in place, for an evaluation pass (no gradients)."""

    def save(self, directory: Path, tag: str, client_state: dict[str, Any]) -> None: ...

    def load(self, directory: Path) -> dict[str, Any] | None: ...


def latest_tag(directory: Path) -> str | None:
    """The tag of the newest complete checkpoint under `directory`, or None."""
    marker = Path(directory) / LATEST
    return marker.read_text().strip() if marker.exists() else None


def _write_latest(directory: Path, tag: str) -> None:
    tmp = directory / f".{LATEST}.tmp"
    tmp.write_text(tag)
    os.replace(tmp, directory / LATEST)


def adamw(model: nn.Module, train: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        model.parameters(), lr=train.lr, betas=(train.beta1, train.beta2), weight_decay=train.weight_decay
    )


class TorchEngine:
    """One process: AdamW over the model; micro-batch gradients accumulate until the last one."""

    def __init__(self, model: nn.Module, train: TrainConfig) -> None:
        self.module, self._train = model, train
        self.optimizer = adamw(model, train)
        self.loss_multiplier = 1.0
        self._micro = 0

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        self._micro += 1
        if self._micro < self._train.grad_accumulation:
            return
        self._micro = 0
        if self._train.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.module.parameters(), self._train.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[nn.Module]:
        yield self.module

    def save(self, directory: Path, tag: str, client_state: dict[str, Any]) -> None:
        target = Path(directory) / tag
        target.mkdir(parents=True, exist_ok=True)
        state = {"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(), "client": client_state}
        tmp = target / "state.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, target / "state.pt")
        _write_latest(Path(directory), tag)

    def load(self, directory: Path) -> dict[str, Any] | None:
        tag = latest_tag(directory)
        if tag is None:
            return None
        state = torch.load(Path(directory) / tag / "state.pt", map_location="cpu", weights_only=False)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        return state["client"]


class DeepSpeedEngine:
    """A DeepSpeed engine over the model: ZeRO stage `train.zero_stage`, on the process's device
    (DeepSpeed's CUDA accelerator and NCCL on a GPU; its CPU accelerator and gloo otherwise).

    The optimizer is torch's AdamW with the config's settings, handed to DeepSpeed (which
    partitions its state under ZeRO 1-3). Gradient accumulation and clipping are DeepSpeed's.
    Weights, gradients and optimizer state stay float32 (`train.precision` "bf16" is the
    trainer's autocast around the forward pass, not DeepSpeed's bf16 weights), so ZeRO reduces
    float32 gradients whatever the precision.
    """

    def __init__(self, model: nn.Module, train: TrainConfig, group: ProcessGroup) -> None:
        device = torch.device(group.device)
        # Read by DeepSpeed when it first resolves its accelerator: the one the trainer uses,
        # even on a machine with a GPU when the run trains on the CPU.
        os.environ["DS_ACCELERATOR"] = "cuda" if device.type == "cuda" else "cpu"
        import deepspeed

        _skip_shm_comm_build()

        if not torch.distributed.is_initialized():
            # One process: DeepSpeed still wants a process group; a private one on this host.
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
            os.environ.setdefault("RANK", "0")
            os.environ.setdefault("WORLD_SIZE", "1")
            os.environ.setdefault("LOCAL_RANK", "0")
            deepspeed.init_distributed(dist_backend=collective_backend(device))
        config = {
            "train_micro_batch_size_per_gpu": 1,  # bookkeeping only: a micro-batch is a jagged batch
            "gradient_accumulation_steps": train.grad_accumulation,
            "train_batch_size": train.grad_accumulation * group.world_size,
            "gradient_clipping": train.grad_clip if train.grad_clip is not None else 0.0,
            "zero_optimization": {"stage": train.zero_stage},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }
        self._stage = train.zero_stage
        self._eval_copy = copy.deepcopy(model) if train.zero_stage == 3 else None
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=adamw(model, train), config=config
        )
        if self._stage == 3:
            for parameter in getattr(model, "shared_parameters", list)():
                deepspeed.zero.register_external_parameter(model, parameter)
        self.module = self.engine.module
        # DeepSpeed divides each micro-batch loss by the accumulation steps and averages gradients
        # over the processes; the trainer's losses are sums over the global batch's positions.
        self.loss_multiplier = float(train.grad_accumulation * group.world_size)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss)

    def step(self) -> None:
        self.engine.step()

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[nn.Module]:
        if self._eval_copy is None:
            yield self.module
            return
        import deepspeed

        # ZeRO-3 keeps each process's slice of every weight, and its hooks give a submodule its
        # weights only while it runs: evaluate a plain copy, filled with the gathered weights.
        plain = dict(self._eval_copy.named_parameters())
        with deepspeed.zero.GatheredParameters(list(self.module.parameters())), torch.no_grad():
            for name, parameter in self.module.named_parameters():
                plain[name].copy_(parameter)
        yield self._eval_copy

    def save(self, directory: Path, tag: str, client_state: dict[str, Any]) -> None:
        # Collective: every process writes its partition; DeepSpeed writes `latest` after them.
        self.engine.save_checkpoint(str(directory), tag=tag, client_state=client_state)

    def load(self, directory: Path) -> dict[str, Any] | None:
        if latest_tag(directory) is None:
            return None
        path, client_state = self.engine.load_checkpoint(str(directory))
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load the checkpoint named in {Path(directory) / LATEST}")
        return client_state


def _skip_shm_comm_build() -> None:
    """Keep DeepSpeed from JIT-compiling its shared-memory comm op (a C++ build of minutes, and a
    compiler dependency) when it sets up communication: only `inference_all_reduce` uses it, and
    training never calls that. Looked up through sys.modules because `deepspeed.comm.torch` is
    shadowed by the `torch` name inside `deepspeed.comm`."""
    module = sys.modules.get("deepspeed.comm.torch")
    if module is not None and hasattr(module, "build_shm_op"):
        module.build_shm_op = lambda: None


def _free_port() -> int:
    import socket

    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_engine(model: nn.Module, train: TrainConfig, group: ProcessGroup) -> TrainingEngine:
    if train.engine == "deepspeed":
        return DeepSpeedEngine(model, train, group)
    if group.distributed:
        raise ValueError(
            f"train.engine='torch' trains in one process, but this run has {group.world_size}: "
            "set train.engine='deepspeed' for multi-process runs"
        )
    return TorchEngine(model, train)
