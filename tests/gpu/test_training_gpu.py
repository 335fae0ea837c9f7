"""A run trained on the GPU (Triton attention, fp32 and bf16, plain and DeepSpeed engines) lands
where the same run lands on the CPU (the PyTorch reference attention, fp32).

Not bitwise: the GPU's float32 matmuls and the kernels' atomics sum in other orders, and dropout
draws from the GPU's generator; the tolerances are those of two equally good runs of a tiny model.
"""

from __future__ import annotations

import math

import pytest
import torch

from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gr_core.trainer import train_run
from kernels.hstu_attention import triton_common

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(triton_common.INTERPRET, reason="TRITON_INTERPRET=1 is set: kernels are not compiled"),
]


def _config(device: str, precision: str = "fp32", engine: str = "torch", zero_stage: int = 0) -> RunConfig:
    return RunConfig(
        data=DataConfig(num_users=400, num_items=200, max_events=60),
        model=ModelConfig(max_seq_len=48, embedding_dim=32, num_heads=2, dropout=0.0),
        train=TrainConfig(epochs=3, batch_size=64, num_negatives=32, task="both", device=device,
                          precision=precision, engine=engine, zero_stage=zero_stage),
    )


@pytest.fixture(scope="module")
def cpu_result():
    return train_run(_config("cpu"))


@pytest.mark.parametrize(("precision", "engine", "zero_stage"),
                         [("fp32", "torch", 0), ("bf16", "torch", 0), ("bf16", "deepspeed", 2)])
def test_gpu_run_matches_the_cpu_run(cpu_result, precision: str, engine: str, zero_stage: int) -> None:
    gpu = train_run(_config("cuda", precision, engine, zero_stage))
    assert gpu.device.startswith("cuda:0 (")
    assert gpu.steps == cpu_result.steps and gpu.train_tokens == cpu_result.train_tokens
    tolerance = 1e-3 if precision == "fp32" else 1e-2
    assert math.isclose(gpu.metrics["final_train_loss"], cpu_result.metrics["final_train_loss"], rel_tol=tolerance)
    for name in ("ndcg@10", "hr@50", "ne"):
        assert abs(gpu.metrics[name] - cpu_result.metrics[name]) < 0.03, name
