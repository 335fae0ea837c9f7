"""`gr-scaling flops`: text, JSON equal to `run_flops`, and `--measure` against FlopCounterMode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gr_core.families import FAMILIES
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
    assert list(breakdown) == [
        "uvqk_projection", "attention", "output_projection", "head", "total", "attention_causal", "total_causal"
    ]
    parts = sum(breakdown[k]["per_run"] for k in ("uvqk_projection", "attention", "output_projection", "head"))
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
    for needle in ("non-embedding", "total (the x-axis)", "causal-exact", "rab", "layernorm", "uvqk projection",
                   "attention QK^T + AV (dense-jagged)", "HSTU 2 blocks x D 24, 3 head(s) (dqk 8, dv 8), rab on",
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
    # Attention is counted from the matmuls that ran (per-sequence matmuls), never from the
    # formula the attention op registers: a circular check would always give 1.000000.
    assert set(measured["by_op"]) >= {"aten.mm", "aten.bmm"}
    assert not {op for op in measured["by_op"] if op.startswith("gr_")}
    assert 0 < measured["mfu"] < 1
    assert measured["achieved_flops_per_s"] == pytest.approx(measured["mfu"] * measured["cpu_peak_flops_per_s"])
    assert main(["flops", "--measure", *TINY]) == 0
    assert "ratio                   1.000000" in capsys.readouterr().out



SASREC = ["--set", "model.family=sasrec", *TINY[:-2], "--set", "train.epochs=2"]


def _config_from(args: list[str]) -> RunConfig:
    config = RunConfig()
    for item in args[1::2]:
        key, _, value = item.partition("=")
        config = replace_path(config, key, int(value) if value.isdigit() else value)
    return config


def test_flops_summarises_a_sasrec_model(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run_json(capsys, *SASREC)
    config = _config_from(SASREC)
    assert config.model.family == "sasrec" and out["run_id"] == config.run_id
    expected = run_flops(config.data, config.model, config.train)
    assert out["flops"] == json.loads(json.dumps(expected.to_dict()))
    d = f = 24  # the FFN is embedding_dim wide by default
    assert out["params"]["per_block_groups"] == {"qkv": 3 * d * d + 3 * d, "output": d * d + d, "ffn": 2 * d * f + f + d}
    assert out["params"]["per_block"] == 4 * d * d + 5 * d + 2 * d * f + f
    assert out["params"]["non_embedding"] == 2 * out["params"]["per_block"]
    breakdown = out["train_breakdown"]
    assert breakdown["ffn"]["per_run"] == 3 * 2 * expected.forward_per_epoch.encoder["ffn"] > 0
    parts = sum(breakdown[k]["per_run"] for k in ("qkv_projection", "attention", "output_projection", "ffn", "head"))
    assert parts == pytest.approx(expected.train)
    assert main(["flops", *SASREC]) == 0
    text = capsys.readouterr().out
    for needle in ("SASRec 2 blocks x D 24, 3 head(s), FFN 24, max_seq_len 12", "QKV projection", "FFN",
                   f"qkv {3 * d * d + 3 * d:,}, output {d * d + d:,}, ffn {2 * d * f + f + d:,}",
                   f"{expected.train:.3e}", "softmax", "ffn_activation"):
        assert needle in text, needle
    rows = {line.split()[0] for line in text.splitlines() if line.startswith("  ") and line.split()}
    assert "silu_uvqk" not in rows and "rab" not in rows  # HSTU's elementwise kinds are not SASRec's


def _real_data_toml(tmp_path: Path, data_file: Path, *, family: str = "hstu", task: str = "both") -> Path:
    path = tmp_path / "real.toml"
    path.write_text(
        f'[data]\nsource = "ml-100k"\npath = "{data_file}"\n\n'
        f'[model]\nfamily = "{family}"\nnum_blocks = 2\nembedding_dim = 12\nnum_heads = 2\nmax_seq_len = 6\n\n'
        f'[train]\ntask = "{task}"\nbatch_size = 8\nnum_negatives = 4\nepochs = 1\n'
    )
    return path


def test_flops_on_real_data_counts_the_files_items(
    tmp_path: Path, tiny_ml100k: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # data.num_items keeps its synthetic default (1000) for a real source; the file has 5 users, 7 items.
    out = _run_json(capsys, str(_real_data_toml(tmp_path, tiny_ml100k)))
    d = 12
    assert out["params"]["item_embedding"] == (7 + 1) * d
    assert out["params"]["ranking_head"] == 3 * d * d + 2 * d + 1
    assert out["dataset"] == {"source": "ml-100k", "num_users": 5, "num_items": 7}
    assert set(out["train_breakdown"]) >= {"head", "ranking_head"}
    assert main(["flops", str(_real_data_toml(tmp_path, tiny_ml100k))]) == 0
    text = capsys.readouterr().out
    assert "data: ml-100k, 5 users, 7 items; train: task both" in text
    assert f"+ ranking head {3 * d * d + 2 * d + 1:,}" in text


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_flops_measure_runs_the_configured_family_and_data(
    tmp_path: Path, tiny_ml100k: Path, capsys: pytest.CaptureFixture[str], family: str
) -> None:
    out = _run_json(capsys, "--measure", str(_real_data_toml(tmp_path, tiny_ml100k, family=family)))
    measured = out["measured_step"]
    assert measured["num_sequences"] == 5  # every user of the file fits in one batch of 8
    assert measured["num_tokens"] == 2 + 3 + 4 + 5 + 6  # 5..9 events, minus the 3 held back
    assert measured["measured_matmul_flops"] == pytest.approx(measured["analytic_matmul_flops"], rel=1e-9)
    assert (measured["family"], measured["data_source"], measured["num_items"]) == (family, "ml-100k", 7)
    assert not {op for op in measured["by_op"] if op.startswith("gr_")}  # counted, not the op's formula


def test_train_reports_params_over_the_real_items(
    tmp_path: Path, tiny_ml100k: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(_real_data_toml(tmp_path, tiny_ml100k, task="ranking"))]) == 0
    out = json.loads(capsys.readouterr().out)
    d = 12
    assert out["params"]["item_embedding"] == (7 + 1) * d
    assert out["params"]["ranking_head"] == 3 * d * d + 2 * d + 1
    assert "ne" in out["metrics"]


@pytest.mark.slow
def test_train_stopped_by_sigterm_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    overrides = [
        "--set", "data.num_users=1500", "--set", "model.embedding_dim=32", "--set", "train.epochs=4",
        "--set", "train.batch_size=32", "--set", "train.num_negatives=32", "--set", "train.eval_every=2",
    ]
    command = [sys.executable, "-m", "gr_scaling", "train", *overrides]
    reference = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)

    checkpoints = tmp_path / "ckpt"
    resumable = [*command, "--checkpoint-dir", str(checkpoints), "--checkpoint-every", "25"]
    first = subprocess.Popen(resumable, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (checkpoints / "latest").exists():
        assert first.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.1)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=120)
    assert first.returncode != 0 and "stopped by SIGTERM after a checkpoint" in err

    resumed = json.loads(subprocess.run(resumable, capture_output=True, text=True, check=True).stdout)
    assert resumed["resumed_from_step"] > 0
    assert resumed["metrics"] == reference["metrics"]
