"""`gr-scaling flops`: text, JSON equal to `run_flops`, and `--measure` against FlopCounterMode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gr_core.config import RunConfig, replace_path
from gr_scaling.cli import main
from scaling import FLOPS_CONVENTION, count_params, run_flops

TINY = [
    "--set", "data.num_users=24", "--set", "data.num_items=50", "--set", "data.num_clusters=5",
    "--set", "data.max_events=20", "--set", "model.num_blocks=2", "--set", "model.embedding_dim=24",
    "--set", "model.num_heads=3", "--set", "model.max_seq_len=12", "--set", "train.batch_size=8",
    "--set", "train.num_negatives=5", "--set", "train.epochs=3",
]
CONFIG_TOML = """
[data]
num_users = 24
num_items = 50
num_clusters = 5
max_events = 20

[model]
num_blocks = 2
embedding_dim = 24
num_heads = 3
max_seq_len = 12

[train]
batch_size = 8
num_negatives = 5
epochs = 2
"""


def _run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["flops", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_flops_json_equals_run_flops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.toml"
    path.write_text(CONFIG_TOML)
    out = _run_json(capsys, str(path), "--set", "train.epochs=3", "--set", "model.use_rab=false")
    config = replace_path(replace_path(RunConfig.from_toml(path), "train.epochs", 3), "model.use_rab", False)
    expected = run_flops(config.data, config.model, config.train)
    assert out["run_id"] == config.run_id
    assert out["flops"] == json.loads(json.dumps(expected.to_dict()))
    assert out["flops"]["train"] == expected.train and out["flops"]["convention"] == FLOPS_CONVENTION
    params = count_params(config.model, config.data.num_items)
    assert {k: out["params"][k] for k in params.to_dict()} == params.to_dict()
    assert out["params"]["per_block_groups"] == {"uvqk": 24 * 96, "output": 24 * 24 + 24, "rab": 0}
    breakdown = out["train_breakdown"]
    assert breakdown["total"]["per_run"] == expected.train
    parts = sum(breakdown[k]["per_run"] for k in ("uvqk", "attention", "output_projection", "head"))
    assert parts == pytest.approx(expected.train)
    assert breakdown["total"]["per_token"] == pytest.approx(expected.train_per_token)
    assert breakdown["total"]["per_step"] == pytest.approx(expected.train_per_step)
    assert sum(out["elementwise_train_breakdown"].values()) == pytest.approx(expected.elementwise_train)
    assert "measured_step" not in out


def test_flops_text_lists_params_components_and_convention(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", *TINY]) == 0
    text = capsys.readouterr().out
    config = RunConfig()
    for item in TINY[1::2]:
        key, _, value = item.partition("=")
        config = replace_path(config, key, int(value))
    flops = run_flops(config.data, config.model, config.train)
    for needle in ("non-embedding", "total (the x-axis)", "causal-exact", "rab", "layernorm",
                   f"{flops.train:.3e}", "6 passes (3 evaluations", f"convention: {FLOPS_CONVENTION}"):
        assert needle in text, needle


def test_flops_rejects_bad_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flops", "--set", "model.num_blocks"]) == 2
    assert "expected key=value" in capsys.readouterr().err
    assert main(["flops", "--set", "model.widht=3"]) == 2
    assert "unknown key(s) ['widht']" in capsys.readouterr().err


def test_flops_measure_matches_the_flop_counter(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run_json(capsys, "--measure", *TINY)
    measured = out["measured_step"]
    assert measured["ratio"] == pytest.approx(1.0, abs=0.01)
    assert measured["measured_matmul_flops"] == pytest.approx(measured["analytic_matmul_flops"], rel=1e-9)
    assert measured["num_sequences"] == 8  # one full batch
    assert set(measured["by_op"]) >= {"aten.mm", "aten.bmm", "gr_scaling.hstu_attention"}
    assert 0 < measured["mfu"] < 1
    assert measured["achieved_flops_per_s"] == pytest.approx(measured["mfu"] * measured["cpu_peak_flops_per_s"])
    assert main(["flops", "--measure", *TINY]) == 0
    assert "ratio                   1.000000" in capsys.readouterr().out
