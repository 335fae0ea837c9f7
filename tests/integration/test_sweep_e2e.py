"""One small sweep end to end through the local submitit executor, and crash-resume."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from gr_scaling.cli import main
from sweeps.launch import launch_sweep
from sweeps.ledger import Ledger, storage_url_for
from sweeps.storage import pid_alive

SPEC = """
[sweep]
name = "{name}"
metric = "ndcg@10"

[axes]
depth = [1, 2]
width = [8, 16]
users = {users}

[base.data]
num_items = 60
num_clusters = 6
min_events = 6
max_events = 20

[base.model]
max_seq_len = 16

[base.train]
epochs = {epochs}
batch_size = 32
num_negatives = 16

[dispatch]
executor = "local"
max_parallel = {parallel}
poll_interval_s = 0.2
"""


def _spec(tmp_path: Path, name: str, users: list[int], parallel: int, epochs: int = 2) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(SPEC.format(name=name, users=users, parallel=parallel, epochs=epochs))
    return path


def _complete_attempts(sweep_dir: Path, name: str) -> dict[str, list[int]]:
    ledger = Ledger(storage_url_for(sweep_dir), name)
    done: dict[str, list[int]] = {}
    for trial in ledger.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        done.setdefault(trial.user_attrs["run_id"], []).append(trial.number)
    return done


@pytest.mark.slow
def test_sweep_runs_records_tracks_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = _spec(tmp_path, "e2e", [40], parallel=2)
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", "launch", str(spec), "--out", str(sweep_dir)]) == 0
    runs = Ledger(storage_url_for(sweep_dir), "e2e").runs()
    assert len(runs) == 4 and {r.state for r in runs.values()} == {"complete"}
    for run in runs.values():
        assert 0.0 <= run.metrics["ndcg@10"] <= run.metrics["hr@10"] <= 1.0
        assert run.value == run.metrics["ndcg@10"]
        assert run.flops["train"] > 0 and run.params["non_embedding"] > 0
        result = json.loads((sweep_dir / "runs" / run.run_id / "result.json").read_text())
        assert result["metrics"] == run.metrics
        # Where the job's time went (sweeps.job_timing), in result.json and in the ledger alike.
        timings = result["timings"]
        assert timings == run.timings
        if timings["startup_s"] is not None:  # None where /proc is missing
            assert 0 <= timings["startup_s"] < 120 and timings["process_started_at"] < time.time()
        for phase in ("imports", "claim", "tracker", "train_call", "data", "setup", "train", "eval", "record"):
            assert timings[f"{phase}_s"] >= 0, phase
        assert timings["in_run_s"] == timings["train_s"] + timings["eval_s"] > 0
        trainer_phases = sum(timings[f"{p}_s"] for p in ("data", "setup", "train", "eval"))
        assert trainer_phases <= timings["train_call_s"]
        assert timings["train_call_s"] == pytest.approx(result["wall_time_s"], abs=0.5)  # the same span
        config = json.loads((sweep_dir / "runs" / run.run_id / "config.json").read_text())
        assert config == run.config
    offline_runs = list((sweep_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 4

    # Launching the same spec again trains nothing.
    summary = launch_sweep(spec, sweep_dir)
    assert (summary.skipped_complete, summary.completed, summary.failed) == (4, 0, [])
    assert all(len(ids) == 1 for ids in _complete_attempts(sweep_dir, "e2e").values())

    capsys.readouterr()
    assert main(["sweep", "status", str(sweep_dir)]) == 0
    status = capsys.readouterr().out
    assert "complete 4, running 0, pending 0, failed 0" in status
    assert "time in jobs (4 run(s)): " in status and "training and evaluation " in status
    assert main(["report", str(sweep_dir), "--bootstrap", "50"]) == 0
    assert (sweep_dir / "report" / "ndcg@10" / "report.html").exists()


def _driver(spec: Path, sweep_dir: Path) -> subprocess.Popen:
    """`sweep launch` in a process group of its own (it and its workers can be killed together)."""
    return subprocess.Popen(
        [sys.executable, "-m", "gr_scaling", "sweep", "launch", str(spec), "--out", str(sweep_dir)],
        start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _wait_until(driver: subprocess.Popen, sweep_dir: Path, ready, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll the sweep's ledger until `ready()`, failing if the driver ends first or 240 s pass."""
    deadline = time.time() + 240
    while time.time() < deadline:
        if (sweep_dir / "ledger.db").exists() and ready():
            return
        assert driver.poll() is None, f"the sweep ended before {what}"
        time.sleep(0.1)
    pytest.fail(f"no {what} within the time limit")


@pytest.mark.slow
def test_killed_sweep_resumes_without_rerunning_finished_runs(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "crash", [40, 60, 80], parallel=2)  # 12 runs
    sweep_dir = tmp_path / "sweep"
    driver = _driver(spec, sweep_dir)
    try:
        _wait_until(driver, sweep_dir, lambda: len(_complete_attempts(sweep_dir, "crash")) >= 2, "two runs to complete")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # driver and workers: one process group
        driver.wait()
    before = _complete_attempts(sweep_dir, "crash")
    assert 2 <= len(before) < 12

    summary = launch_sweep(spec, sweep_dir)
    after = _complete_attempts(sweep_dir, "crash")
    assert len(after) == 12 and summary.failed == []
    assert all(len(numbers) == 1 for numbers in after.values())  # each run completed exactly once
    for run_id, numbers in before.items():
        assert after[run_id] == numbers  # finished runs were not run again
    assert summary.skipped_complete == len(before)


def _running_attempts(sweep_dir: Path, name: str) -> list[dict]:
    """The worker records (host, pid, ...) of the attempts running now."""
    ledger = Ledger(storage_url_for(sweep_dir), name)
    return [t.system_attrs["worker"] for t in ledger.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if "worker" in t.system_attrs]


class _KillWhenLogged(logging.Handler):
    """Kills a process (SIGKILL) the first time a log message contains `text`."""

    def __init__(self, text: str, pid: int) -> None:
        super().__init__(level=logging.INFO)
        self.text, self.pid, self.fired = text, pid, False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.fired and self.text in record.getMessage():
            self.fired = True
            os.kill(self.pid, signal.SIGKILL)


@pytest.mark.slow
def test_resume_waits_for_the_runs_an_earlier_drivers_jobs_still_train(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The driver dies alone (its terminal closed; on Slurm its jobs run on) once every run has
    # started: its jobs go on training them. A resume must wait for those runs, not end while they
    # run (nothing is pending), and not train them twice; one whose job dies during the wait is
    # retried, once. The runs train long enough (100 epochs) to outlast the resume's start, and the
    # job dies when the resume says it waits: a timer from the test's side raced the resume's start
    # on a loaded machine (the job died first, and the resume retried it before waiting).
    spec = _spec(tmp_path, "orphans", [40], parallel=4, epochs=100)  # 4 runs, one job each
    sweep_dir = tmp_path / "sweep"
    driver = _driver(spec, sweep_dir)
    try:
        _wait_until(driver, sweep_dir, lambda: len(_running_attempts(sweep_dir, "orphans")) == 4, "all runs to start")
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone: its jobs live on
        driver.wait()
        orphaned = [w for w in _running_attempts(sweep_dir, "orphans") if pid_alive(w["pid"])]
        assert len(orphaned) == 4, "the killed driver's jobs stopped with it, or ended before the resume"
        killer = _KillWhenLogged("still held by jobs this driver did not send", orphaned[0]["pid"])
        launch_log = logging.getLogger("sweeps.launch")
        launch_log.addHandler(killer)
        try:
            with caplog.at_level(logging.INFO, logger="sweeps.launch"):
                summary = launch_sweep(spec, sweep_dir)
        finally:
            launch_log.removeHandler(killer)
        assert killer.fired, caplog.text  # the resume waited for the held runs
        runs = Ledger(storage_url_for(sweep_dir), "orphans").runs()
        assert {r.run_id: r.state for r in runs.values()} == {run_id: "complete" for run_id in runs}
        assert summary.failed == [] and summary.skipped_complete + summary.completed == 4
        done = _complete_attempts(sweep_dir, "orphans")
        assert len(done) == 4 and all(len(numbers) == 1 for numbers in done.values())  # none trained twice
        assert sorted(r.attempts for r in runs.values()) == [1, 1, 1, 2]  # the killed one, retried once
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # whatever of its process group is left


EARLY_STOP_SPEC = """
[sweep]
name = "early"
metric = "ndcg@10"

[axes]
width = [8, 16]
seed = [0, 1, 2]

[base.data]
num_users = 60
num_items = 40
num_clusters = 4
min_events = 6
max_events = 16

[base.model]
num_blocks = 1
max_seq_len = 12

[base.train]
epochs = 12
patience = 1
lr = 0.03
batch_size = 16
num_negatives = 8

[dispatch]
executor = "local"
max_parallel = 2
poll_interval_s = 0.2
"""


@pytest.mark.slow
def test_early_stopped_runs_are_fitted_at_the_flops_they_spent(tmp_path: Path) -> None:
    """Runs that stop at different epochs record the compute they spent, planned stays apart, and
    the report places each run at the FLOPs up to its reported (best validation) epoch."""
    spec = tmp_path / "early.toml"
    spec.write_text(EARLY_STOP_SPEC)
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", "launch", str(spec), "--out", str(sweep_dir)]) == 0
    runs = Ledger(storage_url_for(sweep_dir), "early").runs()
    assert {r.state for r in runs.values()} == {"complete"}
    epochs_run = set()
    for run in runs.values():
        spent, planned, epochs = run.spent, run.flops["train"], run.config["train"]["epochs"]
        assert spent["flops"] == pytest.approx(planned * spent["epochs_run"] / epochs, rel=1e-12)
        assert spent["flops_at_best"] == pytest.approx(planned * spent["best_epoch"] / epochs, rel=1e-12)
        assert spent["tokens"] == run.flops["train_tokens"] * spent["epochs_run"] // epochs
        assert spent["tokens_at_best"] == run.flops["train_tokens"] * spent["best_epoch"] // epochs
        result = json.loads((sweep_dir / "runs" / run.run_id / "result.json").read_text())
        assert [h["train_flops"] for h in result["history"]] == pytest.approx(
            [planned * h["epoch"] / epochs for h in result["history"]])
        epochs_run.add(spent["epochs_run"])
    assert len(epochs_run) >= 2 and min(epochs_run) < 12, f"runs should stop at different epochs: {epochs_run}"

    assert main(["report", str(sweep_dir), "--bootstrap", "50"]) == 0
    fit = json.loads((sweep_dir / "report" / "ndcg@10" / "fit.json").read_text())
    assert fit["selection"]["name"] == "best_val"
    at_best = {run.run_id: run.spent["flops_at_best"] for run in runs.values()}
    points = {p["run_id"]: p["flops"] for p in fit["points"]}
    assert points == pytest.approx(at_best)
    assert any(points[r] < runs[r].flops["train"] for r in points)  # not at the planned FLOPs
