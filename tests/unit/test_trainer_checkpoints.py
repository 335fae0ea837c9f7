"""Resumable training: checkpoints, interruption, resume-equals-uninterrupted, and micro-batching."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gr_core.data import train_batches
from gr_core.distributed import ProcessGroup, micro_batch_ranges
from gr_core.engines import latest_tag
from gr_core.synthetic import generate_synthetic
from gr_core.trainer import CheckpointPolicy, TrainingInterrupted, train_run
from scripted_evaluation import scripted

# Dropout on, Stochastic Length on and task "both": every random generator the trainer uses matters.
SMALL = RunConfig(
    data=DataConfig(
        num_users=300, num_items=80, num_clusters=4, max_events=30, stochastic_length_alpha=1.6
    ),
    model=ModelConfig(num_blocks=1, embedding_dim=16, max_seq_len=20, dropout=0.2),
    train=TrainConfig(task="both", epochs=3, batch_size=64, num_negatives=16, lr=3e-3, eval_every=1),
)


def _train(config: RunConfig, **kwargs):
    torch.set_num_threads(1)
    losses: list[float] = []
    result = train_run(config, on_step=lambda step, logged: losses.append(logged["train/loss"]), **kwargs)
    return result, losses


@pytest.fixture(scope="module")
def uninterrupted():
    return _train(SMALL)


def _interrupt_after(step: int):
    calls = [0]

    def interrupt() -> bool:
        calls[0] += 1
        return calls[0] >= step

    return interrupt


@pytest.mark.parametrize("stop_at", [3, 5, 10])  # mid-epoch, an epoch's last step (5 per epoch), later
def test_interrupted_run_resumes_to_the_same_result(tmp_path: Path, uninterrupted, stop_at: int) -> None:
    reference, reference_losses = uninterrupted
    policy = CheckpointPolicy(directory=tmp_path / "ckpt")
    with pytest.raises(TrainingInterrupted) as stopped:
        _train(SMALL, checkpoint=policy, interrupt=_interrupt_after(stop_at))
    assert stopped.value.step == stop_at
    assert latest_tag(policy.directory) == f"step-{stop_at:08d}"

    resumed, resumed_losses = _train(SMALL, checkpoint=policy)
    assert resumed.resumed_from_step == stop_at
    assert resumed_losses == reference_losses[stop_at:]  # bit for bit
    assert resumed.metrics == reference.metrics
    assert resumed.history == reference.history
    assert (resumed.steps, resumed.train_tokens) == (reference.steps, reference.train_tokens)


def test_crash_resumes_from_the_last_periodic_checkpoint(tmp_path: Path, uninterrupted) -> None:
    reference, reference_losses = uninterrupted
    policy = CheckpointPolicy(directory=tmp_path / "ckpt", every_steps=4, keep=2)

    def crash(step: int, logged: dict[str, float]) -> None:
        if step == 11:
            raise RuntimeError("node lost")

    with pytest.raises(RuntimeError, match="node lost"):
        train_run(SMALL, on_step=crash, checkpoint=policy)
    assert sorted(p.name for p in policy.directory.glob("step-*")) == ["step-00000004", "step-00000008"]

    resumed, resumed_losses = _train(SMALL, checkpoint=policy)
    assert resumed.resumed_from_step == 8  # steps 9-11 are trained again
    assert resumed_losses == reference_losses[8:]
    assert resumed.metrics == reference.metrics


def test_interrupt_needs_a_checkpoint_policy() -> None:
    with pytest.raises(ValueError, match="interrupt needs a checkpoint policy"):
        train_run(SMALL, interrupt=lambda: False)


def test_micro_batches_follow_the_same_gradient(uninterrupted) -> None:
    # Without dropout the split changes only float summation order.
    base = dataclasses.replace(SMALL, model=dataclasses.replace(SMALL.model, dropout=0.0))
    whole, whole_losses = _train(base)
    split, split_losses = _train(dataclasses.replace(base, train=dataclasses.replace(base.train, grad_accumulation=3)))
    assert split_losses == pytest.approx(whole_losses, rel=1e-4, abs=1e-5)
    for key, value in whole.metrics.items():
        assert split.metrics[key] == pytest.approx(value, abs=2e-3), key


def test_gradient_clipping_changes_training_only_when_it_binds() -> None:
    loose = dataclasses.replace(SMALL, train=dataclasses.replace(SMALL.train, epochs=1, grad_clip=1e6))
    tight = dataclasses.replace(SMALL, train=dataclasses.replace(SMALL.train, epochs=1, grad_clip=1e-3))
    plain = dataclasses.replace(SMALL, train=dataclasses.replace(SMALL.train, epochs=1))
    _, plain_losses = _train(plain)
    _, loose_losses = _train(loose)
    _, tight_losses = _train(tight)
    assert loose_losses == pytest.approx(plain_losses, rel=1e-6)
    assert tight_losses[0] == pytest.approx(plain_losses[0], rel=1e-6)  # same start
    assert abs(tight_losses[-1] - plain_losses[-1]) > 1e-3  # steps of norm 1e-3 barely move


def test_micro_batch_ranges_cover_the_batch_once() -> None:
    for num_seqs in (0, 1, 5, 64, 67):
        for world_size in (1, 2, 3):
            for micro in (1, 2, 4):
                pieces = [
                    piece
                    for rank in range(world_size)
                    for piece in micro_batch_ranges(num_seqs, ProcessGroup(rank=rank, world_size=world_size), micro)
                ]
                assert len(pieces) == world_size * micro
                assert pieces[0][0] == 0 and pieces[-1][1] == num_seqs
                assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
                sizes = [stop - start for start, stop in pieces]
                assert max(sizes) - min(sizes) <= 1


def test_select_sequences_slices_tokens_and_offsets() -> None:
    data = generate_synthetic(SMALL.data)
    batch = next(train_batches(data, max_seq_len=20, batch_size=8, rng=__import__("numpy").random.default_rng(0)))
    part = batch.select_sequences(2, 5)
    first, last = int(batch.seq_offsets[2]), int(batch.seq_offsets[5])
    assert part.num_seqs == 3 and part.num_tokens == last - first
    assert torch.equal(part.item_ids, batch.item_ids[first:last])
    assert torch.equal(part.target_ids, batch.target_ids[first:last])
    assert torch.equal(part.seq_offsets, batch.seq_offsets[2:6] - first)
    with pytest.raises(ValueError, match="out of range"):
        batch.select_sequences(3, 9)


def test_checkpoint_policy_validates() -> None:
    with pytest.raises(ValueError, match="every_steps must be >= 1"):
        CheckpointPolicy(directory=Path("x"), every_steps=0)


def test_train_config_names_engine_fields() -> None:
    with pytest.raises(ValueError, match="train.zero_stage=2 needs train.engine='deepspeed'"):
        TrainConfig(zero_stage=2)
    with pytest.raises(ValueError, match="train.grad_accumulation must be >= 1"):
        TrainConfig(grad_accumulation=0)
    with pytest.raises(ValueError, match="train.grad_clip must be > 0"):
        TrainConfig(grad_clip=0.0)


DEEPSPEED_CHECK = """
import dataclasses, json, sys
import pytest, torch
from gr_core.trainer import CheckpointPolicy, TrainingInterrupted, train_run
sys.path.insert(0, "tests/unit")
from test_trainer_checkpoints import SMALL, _interrupt_after

torch.set_num_threads(1)
base = dataclasses.replace(SMALL, model=dataclasses.replace(SMALL.model, dropout=0.0))
def train(stage, precision="fp32", **kwargs):
    train_cfg = dataclasses.replace(base.train, engine="deepspeed" if stage is not None else "torch",
                                    zero_stage=stage or 0, epochs=2, precision=precision)
    losses = []
    result = train_run(dataclasses.replace(base, train=train_cfg),
                       on_step=lambda s, logged: losses.append(logged["train/loss"]), **kwargs)
    return result, losses
out = {}
plain, plain_losses = train(None)
for stage in (1, 3):
    result, losses = train(stage)
    out[f"stage{stage}"] = {"gap": max(abs(a - b) for a, b in zip(losses, plain_losses)),
                            "same_metrics": result.metrics == plain.metrics, "steps": len(losses)}
policy = CheckpointPolicy(directory=__import__("pathlib").Path(sys.argv[1]))
try:
    train(2, checkpoint=policy, interrupt=_interrupt_after(4))
except TrainingInterrupted:
    pass
resumed, resumed_losses = train(2, checkpoint=policy)
out["resume"] = {"from": resumed.resumed_from_step, "losses_equal": resumed_losses == plain_losses[4:],
                 "same_metrics": resumed.metrics == plain.metrics}
# bf16 is the trainer's autocast around the forward pass: ZeRO-2 takes the plain loop's bf16 steps.
plain_bf16, plain_bf16_losses = train(None, "bf16")
zero_bf16, zero_bf16_losses = train(2, "bf16")
out["bf16"] = {"gap": max(abs(a - b) for a, b in zip(zero_bf16_losses, plain_bf16_losses)),
               "gap_to_fp32": max(abs(a - b) for a, b in zip(plain_bf16_losses, plain_losses)),
               "ndcg_gap": abs(zero_bf16.metrics["ndcg@10"] - plain_bf16.metrics["ndcg@10"])}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_deepspeed_engine_matches_the_plain_loop_and_resumes(tmp_path: Path) -> None:
    # In a subprocess: DeepSpeed initialises torch.distributed for the whole process.
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", DEEPSPEED_CHECK, str(tmp_path / "ckpt")],
        cwd=root, capture_output=True, text=True, timeout=900,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))
    for stage in ("stage1", "stage3"):  # one process: the same arithmetic as the plain loop
        assert out[stage]["steps"] == 10 and out[stage]["gap"] < 1e-6 and out[stage]["same_metrics"], out
    assert out["resume"] == {"from": 4, "losses_equal": True, "same_metrics": True}
    assert out["bf16"]["gap"] < 1e-5 and out["bf16"]["ndcg_gap"] < 1e-3, out
    assert out["bf16"]["gap_to_fp32"] > out["bf16"]["gap"], out  # bf16 did change the arithmetic


def test_the_best_epochs_weights_survive_a_resume(tmp_path: Path, monkeypatch) -> None:
    """Validation peaks at epoch 1 of 3; the run stops in epoch 2 and resumes: its test metrics are
    computed on epoch 1's weights, kept in the checkpoint (the scripted pass knows them by their sum)."""
    import gr_core.trainer as trainer

    monkeypatch.setattr(trainer, "evaluate", scripted({"ndcg@10": [0.5, 0.2, 0.1], "hr@10": [0.6, 0.3, 0.2]}))
    monkeypatch.setattr(trainer, "evaluate_ranking", scripted({"ne": [0.9, 0.8, 0.7]}))
    policy = CheckpointPolicy(directory=tmp_path / "ckpt")
    with pytest.raises(TrainingInterrupted):
        _train(SMALL, checkpoint=policy, interrupt=_interrupt_after(7))
    resumed, _ = _train(SMALL, checkpoint=policy)
    assert resumed.resumed_from_step == 7 and resumed.best_epoch == 1
    assert resumed.metrics["ndcg@10"] == pytest.approx(5.0) and resumed.metrics["hr@10"] == pytest.approx(6.0)
    assert resumed.metrics["final_ndcg@10"] == pytest.approx(1.0)  # the last weights'
