"""Measurements that need torch: matmul peaks (CPU, GPU) and the FLOPs of one real training step.

The only module of `scaling` that imports torch (and gr_core's model); `scaling/__init__.py` does
not import it, so planning stays torch-free. Used by `gr-scaling flops --measure`, by the sweep
worker (the peak of a run's MFU: `run_peak_flops`) and by tests.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from gr_core.config import RunConfig
from scaling.flops import forward_flops
from scaling.hardware import PEAKS, device_from_name, peak_flops

logger = logging.getLogger(__name__)

CPU_PEAK_MATMUL_SIZE = 1024
_cpu_peaks: dict[tuple[int, int], float] = {}
_gpu_peaks: dict[tuple[str, str, int], float] = {}


def cpu_peak_flops(size: int = CPU_PEAK_MATMUL_SIZE, repeats: int = 5) -> float:
    """Measured float32 matmul FLOP/s of this CPU at torch's current intra-op thread count.

    Best of `repeats` timings of a [size, size] @ [size, size] matmul (2 size^3 FLOPs) after one
    warm-up: the attainable dense peak, the CPU counterpart of a datasheet peak. Cached per
    process for each (size, thread count), since it costs ~0.1-1 s.
    """
    key = (size, torch.get_num_threads())
    if key not in _cpu_peaks:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=gen)
        b = torch.randn(size, size, generator=gen)
        torch.mm(a, b)  # warm-up: thread pool, allocator
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        _cpu_peaks[key] = 2.0 * size**3 / best
        logger.info("measured CPU float32 matmul peak: %.3g FLOP/s at %d thread(s)", _cpu_peaks[key], key[1])
    return _cpu_peaks[key]


def gpu_peak_flops(device: torch.device, dtype: torch.dtype, size: int = 8192, repeats: int = 10) -> float:
    """Measured matmul FLOP/s of a GPU in `dtype` (best of `repeats` after a warm-up): the peak of
    a GPU `scaling.hardware` has no datasheet figure for. Cached per (device, dtype, size)."""
    key = (str(device), str(dtype), size)
    if key not in _gpu_peaks:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        torch.mm(a, b)
        torch.cuda.synchronize(device)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
        _gpu_peaks[key] = 2.0 * size**3 / best
    return _gpu_peaks[key]


def run_peak_flops(device: str, precision: str, *, threads: int, processes: int = 1) -> tuple[float, str]:
    """The peak FLOP/s a run's MFU is measured against (all its processes), and its source.

    device: where the run trained, as `TrainResult.device` writes it ("cpu" or "cuda:N (<name>)").
    A GPU that `scaling.hardware` knows gets its datasheet dense peak at the run's precision
    (bf16: tensor cores; fp32: CUDA cores, as the trainer keeps TF32 off); another GPU, its
    measured matmul peak in that dtype; the CPU, its measured float32 matmul peak at `threads`.
    """
    if device.startswith("cuda"):
        name = device.partition("(")[2].rstrip(")")
        precision_key = "bf16" if precision == "bf16" else "fp32"
        known = device_from_name(name)
        if known is not None:
            peak, source = peak_flops(known, precision_key), f"{PEAKS[known].name} datasheet dense {precision_key}"
        else:
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            peak = gpu_peak_flops(torch.device(device.partition(" ")[0]), dtype)
            source = f"{name or device} measured {precision_key} matmul"
    else:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            peak = cpu_peak_flops()
        finally:
            torch.set_num_threads(previous)
        source = f"cpu float32 matmul, measured at {threads} thread(s)"
    return peak * processes, f"{source}, x {processes} process(es)"


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class StepMeasurement:
    """One real training step (forward + backward) counted by `FlopCounterMode` and analytically."""

    measured_matmul_flops: float
    analytic_matmul_flops: float  # 3 x forward_flops(batch lengths).total_dense
    family: str  # model.family of the encoder that ran
    data_source: str  # data.source the batch came from
    num_items: int  # items of that data set (the item table has num_items + 1 rows)
    num_sequences: int
    num_tokens: int
    sum_squared_lengths: int
    by_op: dict[str, float]  # FlopCounterMode's per-op counts
    step_seconds: float  # wall time of a second, uncounted step (forward, backward, optimizer)
    cpu_peak_flops_per_s: float

    @property
    def ratio(self) -> float:
        return self.measured_matmul_flops / self.analytic_matmul_flops if self.analytic_matmul_flops else float("nan")

    @property
    def achieved_flops_per_s(self) -> float:
        return self.analytic_matmul_flops / self.step_seconds

    @property
    def mfu(self) -> float:
        return self.achieved_flops_per_s / self.cpu_peak_flops_per_s

    def to_dict(self) -> dict[str, object]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(ratio=self.ratio, achieved_flops_per_s=self.achieved_flops_per_s, mfu=self.mfu)
        return out


def measure_training_step(config: RunConfig) -> StepMeasurement:
    """Run the config's first training batch through the real model and loss under FlopCounterMode.

    As the trainer (`gr_core.trainer.train_run`) builds them: the data of `data.source`
    (`gr_core.loaders.load_sequence_data`: generated or loaded), the encoder of `model.family`
    (`gr_core.encoder.build_model`, with the ranking head when train.task ranks), and the first
    batch of `gr_core.data.train_batches` shuffled by train.seed, with Stochastic Length. The step
    is the forward pass, the task's losses as the trainer computes them
    (`gr_core.objective.TrainingObjective`: sampled softmax with R negatives and/or the ranking
    loss) and backward. The counted step runs attention as plain per-sequence matmuls
    (`gr_core.encoder.per_sequence_attention`, from `kernels.per_sequence`): the attention ops register the analytic formula as their FLOP
    count, so counting them would check the formula against itself; and it scores the sampled
    softmax's candidates by gathering them (the model's FLOPs; the trainer may score them densely).
    A second step on the same batch (not counted, the model's own attention and scoring) is timed with the optimizer for achieved
    FLOP/s and MFU against the measured CPU peak.
    Side effects: sets torch's thread count to train.num_threads (resolved) and seeds torch's generator.
    """
    # gr_core's torch modules load only when measuring.
    from gr_core.data import train_batches
    from gr_core.threads import intra_op_threads
    from gr_core.encoder import build_model
    from gr_core.lengths import stochastic_length_plan
    from gr_core.loaders import load_sequence_data
    from gr_core.losses import sample_negatives
    from gr_core.objective import TrainingObjective
    from gr_core.encoder import per_sequence_attention

    data_cfg, model_cfg, train_cfg = config.data, config.model, config.train
    torch.set_num_threads(intra_op_threads(train_cfg.num_threads))
    torch.manual_seed(train_cfg.seed)
    data = load_sequence_data(data_cfg)
    model = build_model(model_cfg, data.num_items, ranking_head=train_cfg.ranking)
    # The counted step scores the sampled softmax's candidates in the literal form, so the counter
    # sees the model's FLOPs; the timed step as the trainer does (possibly densely: `gr_core.losses`).
    counted, timed = TrainingObjective(model, config, candidate_scoring="gather"), TrainingObjective(model, config)
    model.train()
    max_len = model_cfg.max_seq_len
    subsampled, subsample_length = stochastic_length_plan(data.lengths, data_cfg, max_len)
    batches = train_batches(
        data, max_seq_len=max_len, batch_size=train_cfg.batch_size, rng=np.random.default_rng(train_cfg.seed),
        subsampled=subsampled, subsample_length=subsample_length,
    )
    batch = next(iter(batches), None)
    if batch is None:
        raise ValueError("the data set has no training input (every user has < 4 events); raise data.min_events")
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, betas=(train_cfg.beta1, train_cfg.beta2))
    negatives_gen = torch.Generator().manual_seed(train_cfg.seed)

    def step(objective: TrainingObjective) -> None:
        negatives = (
            sample_negatives(batch.num_tokens, data.num_items, train_cfg.num_negatives, negatives_gen)
            if train_cfg.retrieval
            else None
        )
        parts = objective(batch, negatives)  # the trainer's losses, summed over positions
        loss = (parts.get("retrieval", 0.0) + train_cfg.ranking_weight * parts.get("ranking", 0.0)) / batch.num_tokens
        optimizer.zero_grad(set_to_none=True)
        loss.backward()

    with per_sequence_attention(), FlopCounterMode(display=False) as counter:
        step(counted)
    optimizer.step()
    started = time.perf_counter()
    step(timed)
    optimizer.step()
    seconds = time.perf_counter() - started

    lengths = (batch.seq_offsets[1:] - batch.seq_offsets[:-1]).numpy()
    candidates = train_cfg.num_negatives + 1 if train_cfg.retrieval else 0
    analytic = 3.0 * forward_flops(lengths, model_cfg, head_candidates=candidates, ranking=train_cfg.ranking).total_dense
    by_op = {str(op): float(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return StepMeasurement(
        measured_matmul_flops=float(counter.get_total_flops()),
        analytic_matmul_flops=analytic,
        family=model_cfg.family,
        data_source=data_cfg.source,
        num_items=data.num_items,
        num_sequences=int(lengths.size),
        num_tokens=int(lengths.sum()),
        sum_squared_lengths=int((lengths.astype(np.int64) ** 2).sum()),
        by_op=by_op,
        step_seconds=seconds,
        cpu_peak_flops_per_s=cpu_peak_flops(),
    )
