"""FuXi-alpha trains like the other families: a 3-run sweep through the local submitit executor
(planned, trained, recorded, skipped when launched again), and the trainer's checkpoint/resume
(plain AdamW loop and a DeepSpeed ZeRO-2 engine on CPU) reproduces the uninterrupted run bit for
bit. Only the family changed: nothing here is FuXi-specific beyond `model.family = "fuxi"` and
its [model] keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gr_core.config import RunConfig
from gr_scaling.cli import main
from scaling import count_params
from sweeps.launch import launch_sweep
from sweeps.ledger import Ledger, storage_url_for

ROOT = Path(__file__).resolve().parents[2]

SPEC = """
[sweep]
name = "fuxi"
metric = "ndcg@10"

[axes]
"model.ffn_multiply" = [0.5, 1.0, 2.0]

[base.data]
num_users = 40
num_items = 50
num_clusters = 5
min_events = 6
max_events = 16

[base.model]
family = "fuxi"
num_blocks = 2
embedding_dim = 8
num_heads = 2
max_seq_len = 12

[base.train]
epochs = 2
batch_size = 16
num_negatives = 8

[dispatch]
executor = "local"
max_parallel = 2
poll_interval_s = 0.2
checkpoint_every_steps = 2

[tracking]
mode = "disabled"
"""


@pytest.mark.slow
def test_a_fuxi_sweep_trains_records_and_is_not_rerun(tmp_path: Path) -> None:
    spec = tmp_path / "fuxi.toml"
    spec.write_text(SPEC)
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", "launch", str(spec), "--out", str(sweep_dir)]) == 0
    runs = Ledger(storage_url_for(sweep_dir), "fuxi").runs()
    assert len(runs) == 3 and {r.state for r in runs.values()} == {"complete"}
    widths = set()
    for run in runs.values():
        config = RunConfig.from_dict(run.config)
        assert config.model.family == "fuxi"
        widths.add(config.model.to_dict()["ffn_multiply"])
        assert 0.0 <= run.metrics["ndcg@10"] <= run.metrics["hr@10"] <= 1.0
        assert run.flops["forward_per_epoch_positional_channel"] > 0
        assert run.flops["forward_per_epoch_temporal_channel"] > 0
        counted = count_params(config.model, config.data.num_items, task=config.train.task)
        assert run.params["non_embedding"] == counted.non_embedding
        result = json.loads((sweep_dir / "runs" / run.run_id / "result.json").read_text())
        assert result["metrics"] == run.metrics
    assert widths == {0.5, 1.0, 2.0}
    assert len({run.params["non_embedding"] for run in runs.values()}) == 3  # the axis changed the MFFN

    summary = launch_sweep(spec, sweep_dir)  # launched again: every run is complete, none trains
    assert (summary.skipped_complete, summary.completed, summary.failed) == (3, 0, [])


RESUME_CHECK = """
import dataclasses, json, pathlib, sys
import torch
from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gr_core.families import FuXiOptions
from gr_core.trainer import CheckpointPolicy, TrainingInterrupted, train_run

torch.set_num_threads(1)
# Dropout, Stochastic Length and task "both": every generator the trainer keeps must be restored.
SMALL = RunConfig(
    data=DataConfig(num_users=200, num_items=60, num_clusters=4, max_events=24, stochastic_length_alpha=1.6),
    model=ModelConfig(family="fuxi", num_blocks=2, embedding_dim=16, num_heads=2, max_seq_len=16, dropout=0.2,
                      options=FuXiOptions(ffn_multiply=1.5)),
    train=TrainConfig(task="both", epochs=2, batch_size=64, num_negatives=16, lr=3e-3, eval_every=1),
)
root = pathlib.Path(sys.argv[1])

def train(config, **kwargs):
    losses = []
    result = train_run(config, on_step=lambda step, logged: losses.append(logged["train/loss"]), **kwargs)
    return result, losses

def stop_after(step):
    calls = [0]
    def interrupt():
        calls[0] += 1
        return calls[0] >= step
    return interrupt

def resumed(config, directory, stop_at):
    policy = CheckpointPolicy(directory=root / directory)
    try:
        train(config, checkpoint=policy, interrupt=stop_after(stop_at))
    except TrainingInterrupted:
        pass
    return train(config, checkpoint=policy)

out = {}
plain, plain_losses = train(SMALL)
again, again_losses = resumed(SMALL, "torch", 3)
out["torch"] = {"steps": len(plain_losses), "from": again.resumed_from_step,
                "losses_equal": again_losses == plain_losses[3:], "same_metrics": again.metrics == plain.metrics,
                "same_history": again.history == plain.history}
# DeepSpeed against the plain loop without dropout (the same arithmetic in one process), then resumed.
base = dataclasses.replace(SMALL, model=dataclasses.replace(SMALL.model, dropout=0.0))
zero2 = dataclasses.replace(base, train=dataclasses.replace(base.train, engine="deepspeed", zero_stage=2))
loop, loop_losses = train(base)
engine, engine_losses = train(zero2)
back, back_losses = resumed(zero2, "zero2", 4)
out["deepspeed"] = {"steps": len(engine_losses), "gap": max(abs(a - b) for a, b in zip(engine_losses, loop_losses)),
                    "ndcg_gap": abs(engine.metrics["ndcg@10"] - loop.metrics["ndcg@10"]),
                    "from": back.resumed_from_step, "losses_equal": back_losses == engine_losses[4:],
                    "same_metrics": back.metrics == engine.metrics}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_fuxi_checkpoints_resume_bit_for_bit_with_the_plain_loop_and_deepspeed(tmp_path: Path) -> None:
    # In a subprocess: DeepSpeed initialises torch.distributed for the whole process.
    proc = subprocess.run([sys.executable, "-c", RESUME_CHECK, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))
    assert out["torch"] == {"steps": 8, "from": 3, "losses_equal": True, "same_metrics": True,
                            "same_history": True}, out
    assert out["deepspeed"]["steps"] == 8 and out["deepspeed"]["gap"] < 1e-6, out
    assert out["deepspeed"]["ndcg_gap"] < 1e-6, out
    assert (out["deepspeed"]["from"], out["deepspeed"]["losses_equal"], out["deepspeed"]["same_metrics"]) == (
        4, True, True), out
