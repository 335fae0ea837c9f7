"""Device choice and bf16 autocast (`gr_core.devices`), and a run trained under each precision."""

from __future__ import annotations

import math

import pytest
import torch

from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gr_core.data import JaggedBatch
from gr_core.devices import autocast, full_precision, resolve_device
from gr_core.trainer import train_run


@pytest.mark.parametrize(
    ("requested", "local_rank", "gpus", "expected"),
    [
        ("cpu", 0, 8, "cpu"),
        ("auto", 0, 0, "cpu"),
        ("auto", 0, 1, "cuda:0"),
        ("cuda", 3, 1, "cuda:0"),  # a task shown exactly one GPU (--gpus-per-task=1) takes it
        ("auto", 3, 4, "cuda:3"),
        ("cuda", 0, 2, "cuda:0"),
    ],
)
def test_resolve_device(requested: str, local_rank: int, gpus: int, expected: str) -> None:
    assert resolve_device(requested, local_rank=local_rank, cuda_devices=gpus) == torch.device(expected)


def test_cuda_without_a_gpu_names_the_field_and_the_fix() -> None:
    with pytest.raises(ValueError, match=r"train\.device='cuda'.*no CUDA device.*train\.device='cpu'"):
        resolve_device("cuda", local_rank=0, cuda_devices=0)


def test_a_process_without_a_gpu_of_its_own_is_refused() -> None:
    with pytest.raises(ValueError, match=r"LOCAL_RANK=2.*2 GPUs.*gpus_per_node"):
        resolve_device("auto", local_rank=2, cuda_devices=2)


def test_bad_device_and_precision_values_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"train\.precision must be one of \['fp32', 'bf16'\], got 'fp16'"):
        RunConfig.from_dict({"train": {"precision": "fp16"}})
    with pytest.raises(ValueError, match=r"train\.device must be one of \['auto', 'cpu', 'cuda'\], got 'tpu'"):
        RunConfig.from_dict({"train": {"device": "tpu"}})
    with pytest.raises(ValueError, match=r"train\.precision must be 'fp32' or 'bf16'"):
        TrainConfig(precision="fp8")  # type: ignore[arg-type]


def test_bf16_autocast_runs_matmuls_in_bf16_and_full_precision_turns_it_off() -> None:
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    cpu = torch.device("cpu")
    with autocast(cpu, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
        with full_precision(cpu):
            assert (a @ b).dtype == torch.float32
    with autocast(cpu, "fp32"):
        assert (a @ b).dtype == torch.float32


def test_jagged_batch_moves_every_tensor_and_keeps_the_rest() -> None:
    batch = JaggedBatch(
        item_ids=torch.tensor([3, 4, 5]), timestamps=torch.tensor([1, 2, 3]), seq_offsets=torch.tensor([0, 1, 3]),
        target_ids=torch.tensor([4, 5, 6]), max_seq_len=7, user_ids=torch.tensor([0, 1]),
        request_timestamps=torch.tensor([2, 4]),
        actions=torch.tensor([1, 0, 1]),
    )
    assert batch.to(torch.device("cpu")) is batch
    moved = batch.to(torch.device("meta"))
    for name in ("item_ids", "timestamps", "seq_offsets", "target_ids", "user_ids", "request_timestamps", "actions"):
        assert getattr(moved, name).is_meta, name
        assert getattr(moved, name).shape == getattr(batch, name).shape
    assert moved.max_seq_len == 7 and moved.history_ids is None


def _tiny(precision: str, task: str = "both", device: str = "auto") -> RunConfig:
    return RunConfig(
        data=DataConfig(num_users=120, num_items=80, max_events=30),
        model=ModelConfig(max_seq_len=24, embedding_dim=16, num_heads=2),
        train=TrainConfig(epochs=2, batch_size=32, num_negatives=16, task=task, precision=precision, device=device),
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_training_on_cuda_without_a_gpu_fails_before_any_work() -> None:
    with pytest.raises(ValueError, match=r"train\.device='cuda'"):
        train_run(_tiny("fp32", device="cuda"))


def test_bf16_training_computes_in_bf16_and_lands_near_fp32() -> None:
    """Under bf16 the blocks' projections run in bfloat16 (seen by a forward hook) while the
    weights stay float32; the run's metrics are those of fp32 to within bf16's noise, not equal."""
    seen: dict[str, set[torch.dtype]] = {"uvqk": set(), "weights": set()}

    def record(module: torch.nn.Module, inputs: object, output: object) -> None:
        if isinstance(module, torch.nn.Linear) and module.out_features == 4 * 8 * 2 and torch.is_grad_enabled():
            seen["uvqk"].add(output.dtype)  # type: ignore[union-attr]
            seen["weights"].add(module.weight.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        bf16 = train_run(_tiny("bf16"))
    finally:
        handle.remove()
    fp32 = train_run(_tiny("fp32"))
    assert seen == {"uvqk": {torch.bfloat16}, "weights": {torch.float32}}
    assert bf16.device == fp32.device == "cpu"
    assert bf16.metrics["final_train_loss"] != fp32.metrics["final_train_loss"]
    assert math.isclose(bf16.metrics["final_train_loss"], fp32.metrics["final_train_loss"], rel_tol=1e-2)
    for name in ("ndcg@10", "hr@50", "mrr"):
        assert abs(bf16.metrics[name] - fp32.metrics[name]) < 0.03, name
    assert abs(bf16.metrics["ne"] - fp32.metrics["ne"]) < 0.03

