"""Every user error of `gr-scaling` is one `error:` line naming the field or file and the fix, exit 2.

Issue 13, item 7: a missing config file, a non-finite float, a data set too large for memory, a
MovieLens file too short for leave-one-out, a non-numeric CSV cell, a fit on too few runs and a
forecast at negative FLOPs each end with that one line; `gr-scaling flops | head` ends quietly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig, config_from_dict
from gr_scaling.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY = ["--set", "data.num_users=24", "--set", "data.num_items=50", "--set", "data.num_clusters=5",
        "--set", "data.max_events=20", "--set", "model.embedding_dim=8", "--set", "model.max_seq_len=8",
        "--set", "train.epochs=1", "--set", "train.num_negatives=4"]


def user_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI; require exit 2 and exactly one `error:` line (no traceback) on stderr; return it."""
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2, f"exit {rc}, stderr:\n{err}"
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- config files and values -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "flops"])
def test_missing_config_file_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    missing = tmp_path / "missing.toml"
    line = user_error(capsys, [command, str(missing)])
    assert str(missing) in line and "does not exist" in line


def test_config_that_is_not_toml_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[train\nlr = 1\n")
    line = user_error(capsys, ["flops", str(path)])
    assert f"{path}: not valid TOML" in line


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_lr_is_rejected_from_set_and_toml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    line = user_error(capsys, ["flops", "--set", f"train.lr={value}"])
    assert "train.lr must be a finite number" in line
    path = tmp_path / "run.toml"
    path.write_text(f"[train]\nlr = {value}\n")
    line = user_error(capsys, ["flops", str(path)])
    assert str(path) in line and "train.lr must be a finite number" in line


FLOAT_FIELDS = [
    (section, name)
    for section, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))
    for name, annotation in cls.__annotations__.items()
    if "float" in str(annotation)
]


@pytest.mark.parametrize(("section", "name"), FLOAT_FIELDS)
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_every_float_field_rejects_non_finite_values(section: str, name: str, bad: float) -> None:
    assert len(FLOAT_FIELDS) >= 12  # the scan found the float fields (lr, dropout, dirichlet_alpha, ...)
    with pytest.raises(ValueError, match=rf"run.toml: {section}\.{name} must be a finite number, got {bad}"):
        config_from_dict(RunConfig, {section: {name: bad}}, where="run.toml")
    cls = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}[section]
    with pytest.raises(ValueError, match=rf"{section}\.{name} must be a finite number"):
        cls(**{name: bad})  # constructed in Python, without TOML


def test_checkpoint_every_without_dir_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    line = user_error(capsys, ["train", *TINY, "--checkpoint-every", "5"])
    assert "--checkpoint-every needs --checkpoint-dir" in line


# --- data that cannot be used -----------------------------------------------------------------


def test_synthetic_data_too_large_for_memory_names_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    # 1,000 users of up to 10^11 events: petabytes of event arrays, refused before any allocation.
    line = user_error(capsys, ["train", "--set", "data.num_users=1000", "--set", "data.max_events=100000000000"])
    assert "data.num_users" in line and "data.max_events" in line and "memory" in line
    # The planner's per-user event counts alone: 10^13 users.
    line = user_error(capsys, ["flops", "--set", "data.num_users=10000000000000"])
    assert "data.num_users=10000000000000" in line and "memory" in line


def test_synthetic_peak_estimate_bounds_the_real_allocation() -> None:
    """The estimate is an upper bound of what `generate_synthetic` allocates (tracemalloc sees numpy)."""
    import tracemalloc

    from gr_core.synthetic import event_counts, generate_synthetic, synthetic_peak_bytes

    cfg = DataConfig(num_users=3000, num_items=500, num_clusters=10, max_events=60)
    estimate = synthetic_peak_bytes(cfg, event_counts(cfg))
    tracemalloc.start()
    generate_synthetic(cfg)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak <= estimate <= 3 * peak, (peak, estimate)


def _ml100k(path: Path, events_per_user: int, users: int = 6) -> Path:
    path.write_text("".join(f"{u}\t{10 + (u + k) % 7}\t4\t{1000 * u + k}\n"
                            for u in range(1, users + 1) for k in range(events_per_user)))
    return path


@pytest.mark.parametrize("events_per_user", [2, 3])
def test_movielens_file_too_short_for_leave_one_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, events_per_user: int
) -> None:
    monkeypatch.setenv("GR_SCALING_CACHE", str(tmp_path / "cache"))
    data = _ml100k(tmp_path / "u.data", events_per_user)
    config = tmp_path / "run.toml"
    config.write_text(f'[data]\nsource = "ml-100k"\npath = "{data}"\n[model]\nembedding_dim = 8\nmax_seq_len = 8\n'
                      "[train]\nepochs = 1\nnum_negatives = 3\n")
    line = user_error(capsys, ["train", str(config)])
    assert str(data) in line and "leave-one-out" in line
    assert "0 of 6 users" in line  # how many users qualify


# --- analysis inputs ---------------------------------------------------------------------------


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("flops,ndcg@10\n" + "".join(f"{x},{y}\n" for x, y in rows))
    return path


GOOD_ROWS = [(f"{10.0 ** (9 + i):g}", f"{0.05 + 0.02 * i + 0.003 * (i % 2):.4f}") for i in range(6)]


def test_non_numeric_csv_cell_names_file_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _csv(tmp_path / "runs.csv", [*GOOD_ROWS[:2], ("lots", "0.2"), *GOOD_ROWS[3:]])
    line = user_error(capsys, ["fit", "--csv", str(path), "--y-col", "ndcg@10", "--bootstrap", "10"])
    assert str(path) in line and "line 4" in line and "column 'flops'" in line and "'lots' is not a number" in line


@pytest.mark.parametrize("command", ["fit", "report", "forecast"])
@pytest.mark.parametrize("n_rows", [1, 2])
def test_fit_report_forecast_need_three_usable_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, n_rows: int
) -> None:
    path = _csv(tmp_path / "few.csv", [*GOOD_ROWS[:n_rows], ("1e15", "nan")])
    out = tmp_path / "report"
    argv = [command, "--csv", str(path), "--y-col", "ndcg@10", "--bootstrap", "10"]
    line = user_error(capsys, argv + (["--out", str(out)] if command != "forecast" else []))
    assert f"{n_rows} usable run" in line and "at least 3" in line and "1 excluded" in line
    assert not out.exists()  # nothing half-written


def test_fit_with_no_fittable_form_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Three runs at one compute budget: no curve in C can be fitted.
    path = _csv(tmp_path / "flat.csv", [("1e10", "0.1"), ("1e10", "0.2"), ("1e10", "0.15")])
    line = user_error(capsys, ["fit", "--csv", str(path), "--y-col", "ndcg@10", "--bootstrap", "10"])
    assert "distinct flops" in line and str(path) in line


@pytest.mark.parametrize(("option", "value"), [("--at", "-5"), ("--at", "0"), ("--at", "inf"), ("--target", "nan")])
def test_forecast_rejects_impossible_points(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    path = _csv(tmp_path / "runs.csv", GOOD_ROWS)
    line = user_error(capsys, ["forecast", "--csv", str(path), "--y-col", "ndcg@10", "--bootstrap", "10",
                               option, value])
    assert f"{option} {value}" in line


# --- stdout closed early -----------------------------------------------------------------------


def test_flops_into_a_closed_pipe_exits_quietly() -> None:
    """`gr-scaling flops | head -1`: the reader is gone before we write; no traceback, exit 141."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "gr_scaling.cli", "flops"], cwd=REPO, stdout=write_end,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    os.close(write_end)
    os.close(read_end)  # before the child has imported anything: its first write meets no reader
    _, err = proc.communicate(timeout=120)
    assert err.decode() == "" and proc.returncode == 141
