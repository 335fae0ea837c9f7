"""Operating sweeps: budget, failures and retries, cancel/resume of a detached driver, export, journal ledger."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from gr_scaling.cli import main
from sweeps.launch import launch_sweep
from sweeps.ledger import Ledger, storage_url_for

BASE = """
[base.data]
num_items = 60
num_clusters = 6
min_events = 6
max_events = 20

[base.model]
max_seq_len = 16

[base.train]
epochs = 2
batch_size = 32
num_negatives = 16

[dispatch]
executor = "local"
max_parallel = 2
poll_interval_s = 0.2

[tracking]
mode = "{tracking}"
"""


def _spec(tmp_path: Path, name: str, body: str, tracking: str = "disabled") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[sweep]\nname = "{name}"\nmax_attempts = 2\n' + body + BASE.format(tracking=tracking))
    return path


@pytest.mark.slow
def test_diverging_run_is_retried_then_failed_and_the_rest_completes(tmp_path: Path, capsys) -> None:
    # lr = 1e9 makes the loss non-finite: the trainer raises FloatingPointError in the job.
    spec = _spec(tmp_path, "fail", "[axes]\nwidth = [8, 16]\nlr = [0.001, 1e9]\n")
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", "launch", str(spec), "--out", str(sweep_dir)]) == 1
    runs = Ledger(storage_url_for(sweep_dir), "fail").runs()
    states = {(r.axis_values["width"], r.axis_values["lr"]): r for r in runs.values()}
    for width in (8, 16):
        assert states[(width, 0.001)].state == "complete"
        bad = states[(width, 1e9)]
        assert (bad.state, bad.attempts) == ("failed", 2)
        assert bad.error is not None and bad.error.startswith("FloatingPointError: training loss became")
        assert bad.log_path and "FloatingPointError" in Path(bad.log_path).read_text()
    capsys.readouterr()
    main(["sweep", "status", str(sweep_dir)])
    status = capsys.readouterr().out
    assert "complete 2, running 0, pending 0, failed 2" in status
    assert "FAILED" in status and "FloatingPointError: training loss became" in status

    # retry-failed gives them a fresh round; they fail again, twice each, and nothing else reruns.
    assert main(["sweep", "retry-failed", str(sweep_dir)]) == 0
    assert main(["sweep", "resume", str(sweep_dir)]) == 1
    ledger = Ledger(storage_url_for(sweep_dir), "fail")
    for run in ledger.runs().values():
        expected = 1 if run.state == "complete" else 4
        assert len(ledger.attempts(run.run_id)) == expected

    out = tmp_path / "runs.parquet"
    assert main(["sweep", "export", str(sweep_dir), str(out)]) == 0
    frame = pd.read_parquet(out)
    assert len(frame) == 4
    assert set(frame["state"]) == {"complete", "failed"}
    assert {"config.model.embedding_dim", "planned.train", "spent.flops", "spent.flops_at_best", "metrics.ndcg@10",
            "params.non_embedding"} <= set(frame.columns)
    complete = frame[frame["state"] == "complete"]
    assert complete["metrics.ndcg@10"].between(0, 1).all() and (complete["planned.train"] > 0).all()
    assert (complete["spent.flops_at_best"] <= complete["spent.flops"]).all()
    assert (complete["spent.flops"] <= complete["planned.train"] * (1 + 1e-12)).all()


@pytest.mark.slow
def test_a_packed_job_trains_its_runs_in_one_process_and_a_failure_stays_its_own(tmp_path: Path) -> None:
    # One slot, four runs per job: the first wave is one job of 4 runs, two of which diverge; they
    # are retried (one job of 2), the others complete once, and no run is lost or trained twice.
    body = "[axes]\nwidth = [8, 16]\nlr = [0.001, 1e9]\n"
    text = (f'[sweep]\nname = "packed"\nmax_attempts = 2\n' + body + BASE.format(tracking="offline"))
    spec = tmp_path / "packed.toml"
    spec.write_text(text.replace("max_parallel = 2", "max_parallel = 1\nruns_per_job = 4"))
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", "launch", str(spec), "--out", str(sweep_dir)]) == 1
    assert len(list((sweep_dir / "jobs").glob("*_submitted.pkl"))) == 2
    ledger = Ledger(storage_url_for(sweep_dir), "packed")
    runs = ledger.runs()
    for run in runs.values():
        if run.axis_values["lr"] == 0.001:
            assert (run.state, run.attempts) == ("complete", 1)
        else:
            assert (run.state, run.attempts) == ("failed", 2)
            assert run.error is not None and run.error.startswith("FloatingPointError: training loss became")
    first_job = {run.job_id for run in runs.values() if run.state == "complete"}
    assert len(first_job) == 1  # both good runs trained in the first job, beside the failing ones
    timings = sorted((r.timings for r in runs.values() if r.state == "complete"), key=lambda t: t["startup_s"])
    assert timings[0]["startup_s"] == 0.0  # a later run of the job: no process of its own ...
    assert timings[0]["imports_s"] < 0.5 < timings[1]["imports_s"]  # ... and torch already imported


@pytest.mark.slow
def test_budget_stops_launching_and_status_shows_spent(tmp_path: Path, capsys) -> None:
    spec = _spec(tmp_path, "budget", "[axes]\nwidth = [8, 16, 32]\n")
    from sweeps.plan import plan_sweep
    from sweeps.spec import load_spec

    flops = sorted(r.flops["train"] for r in plan_sweep(load_spec(spec)).runs)
    spec.write_text(spec.read_text() + f"\n[budget]\nmax_flops = {flops[0] + flops[1] * 1.01}\n")
    sweep_dir = tmp_path / "sweep"
    summary = launch_sweep(spec, sweep_dir)
    assert (summary.planned, summary.completed) == (2, 2)
    runs = Ledger(storage_url_for(sweep_dir), "budget").runs()
    assert sorted(r.flops["train"] for r in runs.values()) == flops[:2]
    capsys.readouterr()
    main(["sweep", "status", str(sweep_dir)])
    assert "budget:" in capsys.readouterr().out


@pytest.mark.slow
def test_cancel_a_detached_sweep_then_resume_completes_each_run_once(tmp_path: Path, capsys) -> None:
    spec = _spec(tmp_path, "detached", "[axes]\nwidth = [8, 16]\nusers = [40, 60, 80]\n")
    # Runs of a few seconds each: the cancel must land while one is running and another is done
    # (2-epoch runs take ~0.3 s, and a packed job that takes over the queued runs of its wave can
    # finish them all between two polls of a loaded machine).
    spec.write_text(spec.read_text().replace("epochs = 2", "epochs = 40"))
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", "launch", str(spec), "--out", str(sweep_dir), "--detach"]) == 0
    deadline = time.time() + 120
    while True:
        assert time.time() < deadline, "the detached driver never started a run"
        if (sweep_dir / "ledger.db").exists():
            runs = Ledger(storage_url_for(sweep_dir), "detached").runs()
            if any(r.state == "complete" for r in runs.values()) and any(r.state == "running" for r in runs.values()):
                break
        time.sleep(0.2)
    capsys.readouterr()
    assert main(["sweep", "cancel", str(sweep_dir)]) == 0
    printed = capsys.readouterr().out
    assert "driver stopped: yes" in printed
    time.sleep(1.0)
    runs = Ledger(storage_url_for(sweep_dir), "detached").runs()
    assert "running" not in {r.state for r in runs.values()} and "pending" not in {r.state for r in runs.values()}
    cancelled = [r for r in runs.values() if r.state == "cancelled"]
    # The driver cancels its attempts on the SIGTERM; the command reports those it stopped that way.
    assert cancelled and f"{len(cancelled)} attempt(s) cancelled" in printed
    done_before = {r.run_id for r in runs.values() if r.state == "complete"}

    summary = launch_sweep(sweep_dir / "spec.toml", sweep_dir)
    assert summary.failed == [] and summary.skipped_complete == len(done_before)
    ledger = Ledger(storage_url_for(sweep_dir), "detached")
    final = ledger.runs()
    assert len(final) == 6 and {r.state for r in final.values()} == {"complete"}
    for run_id in final:
        completes = [a for a in ledger.attempts(run_id) if a.state == "complete"]
        assert len(completes) == 1
        assert all(a.attempts == 1 for a in ledger.attempts(run_id))  # cancelled attempts do not count


def test_journal_ledger_records_a_sweep(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "journal", '[axes]\nwidth = [8]\n\n[ledger]\nurl = "journal:ledger.journal"\n')
    sweep_dir = tmp_path / "sweep"
    summary = launch_sweep(spec, sweep_dir)
    assert summary.completed == 1
    assert (sweep_dir / "ledger.journal").exists() and not (sweep_dir / "ledger.db").exists()
    url = storage_url_for(sweep_dir, "journal:ledger.journal")
    [run] = Ledger(url, "journal").runs().values()
    assert run.state == "complete" and 0 <= run.metrics["hr@10"] <= 1
