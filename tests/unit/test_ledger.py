from __future__ import annotations

import logging
import multiprocessing
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps.ledger import Ledger, PlannedRun, storage_url_for


def _planned(run_id: str, width: int = 8) -> PlannedRun:
    return PlannedRun(
        run_id=run_id,
        axis_values={"width": width},
        config={"model": {"embedding_dim": width}},
        flops={"train": 1e9 * width},
        params={"non_embedding": 10 * width, "embedding": 5},
    )


@pytest.fixture()
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(storage_url_for(tmp_path), "unit", higher_is_better=True)


def test_register_is_idempotent(ledger: Ledger) -> None:
    assert ledger.register([_planned("a"), _planned("b", 16)]) == 2
    assert ledger.register([_planned("a"), _planned("b", 16), _planned("c", 32)]) == 1
    runs = ledger.runs()
    assert sorted(runs) == ["a", "b", "c"]
    assert {r.state for r in runs.values()} == {"pending"}
    assert runs["b"].flops["train"] == 16e9 and runs["b"].axis_values == {"width": 16}


def test_claim_is_exclusive_and_complete_records_metrics(ledger: Ledger) -> None:
    ledger.register([_planned("a")])
    trial_id = ledger.runs()["a"].trial_id
    assert ledger.claim(trial_id) is True
    assert ledger.claim(trial_id) is False  # a second worker gets nothing
    ledger.complete(trial_id, value=0.25, results={"metrics": {"ndcg@10": 0.25}, "wall_time_s": 3.0})
    assert ledger.claim(trial_id) is False  # finished attempts are never run again
    run = ledger.runs()["a"]
    assert (run.state, run.value, run.metrics, run.wall_time_s) == ("complete", 0.25, {"ndcg@10": 0.25}, 3.0)
    assert ledger.recover(max_attempts=3) == []
    assert ledger.pending() == []


def test_failed_run_is_retried_until_max_attempts(ledger: Ledger) -> None:
    ledger.register([_planned("a")])
    for attempt in (1, 2):
        record = ledger.pending()[0]
        assert record.attempts == attempt
        assert ledger.claim(record.trial_id)
        ledger.fail(record.trial_id, f"RuntimeError: boom {attempt}")
        ledger.recover(max_attempts=2)
    run = ledger.runs()["a"]
    assert (run.state, run.attempts, run.error) == ("failed", 2, "RuntimeError: boom 2")
    assert [a.state for a in ledger.attempts("a")] == ["failed", "failed"]
    assert ledger.pending() == []


def test_attempt_of_a_dead_worker_is_failed_and_requeued(ledger: Ledger, tmp_path: Path) -> None:
    ledger.register([_planned("a")])
    trial_id = ledger.runs()["a"].trial_id
    # Claim from a child process that then exits: its attempt is left "running" with a dead pid.
    code = (
        "from sweeps.ledger import Ledger, storage_url_for;"
        f"assert Ledger(storage_url_for({str(tmp_path)!r}), 'unit').claim({trial_id})"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert ledger.runs()["a"].state == "running"
    assert ledger.recover(max_attempts=3) == ["a"]
    attempts = ledger.attempts("a")
    assert [a.state for a in attempts] == ["failed", "pending"]
    assert "died" in (attempts[0].error or "")


def test_a_requeued_job_takes_its_running_attempt_back(ledger: Ledger) -> None:
    ledger.register([_planned("a")])
    trial_id = ledger.runs()["a"].trial_id
    ledger.set_job(trial_id, "77_3", "/logs/77_3.err")
    assert not ledger.reclaim(trial_id, "77_3")  # pending: a requeue needs a running attempt
    assert ledger.claim(trial_id)
    assert not ledger.reclaim(trial_id, "78_3")  # another job: never
    assert ledger.reclaim(trial_id, "77_3") and ledger.reclaim(trial_id, "77_3")
    assert ledger.trial_attrs(trial_id)["requeued"] == 2
    ledger.complete(trial_id, value=0.5, results={})
    assert not ledger.reclaim(trial_id, "77_3")
    assert not ledger.fail_unfinished(trial_id, "job ended")  # a settled attempt keeps its state
    assert ledger.runs()["a"].state == "complete"


def test_a_second_dispatch_never_takes_over_a_live_attempt(ledger: Ledger) -> None:
    """Two drivers once dispatched the same attempt: the second job's id overwrote the first's and
    its worker 'reclaimed' the live attempt as if it were a requeue, so the run trained twice."""
    ledger.register([_planned("a")])
    trial_id = ledger.runs()["a"].trial_id
    ledger.set_job(trial_id, "4001", "/logs/4001.err")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert ledger.claim(trial_id)
        ledger.storage.set_trial_system_attr(trial_id, "worker", {"host": socket.gethostname(), "pid": holder.pid})
        ledger.set_job(trial_id, "4002", "/logs/4002.err")  # a second driver's job for the same attempt
        assert ledger.trial_attrs(trial_id)["job_id"] == "4001"
        assert not ledger.reclaim(trial_id, "4002")
        assert not ledger.reclaim(trial_id, "4001")  # even its own job id, while the holder lives
    finally:
        holder.kill()
        holder.wait()
    assert ledger.reclaim(trial_id, "4001")  # the holder is gone: the same job back from a requeue


def test_a_job_that_ended_without_settling_its_attempt_fails_it(ledger: Ledger) -> None:
    ledger.register([_planned("a")])
    trial_id = ledger.runs()["a"].trial_id
    assert ledger.claim(trial_id)
    assert ledger.fail_unfinished(trial_id, "job 5 ended without a result: CANCELLED")
    run = ledger.runs()["a"]
    assert (run.state, run.error) == ("failed", "job 5 ended without a result: CANCELLED")


def test_a_second_ledger_sees_the_same_runs(ledger: Ledger, tmp_path: Path) -> None:
    ledger.register([_planned("a")])
    other = Ledger(storage_url_for(tmp_path), "unit")
    assert list(other.runs()) == ["a"]


def _open_new_ledger(url: str, start_at: float) -> int:
    from sweeps.storage import open_storage

    time.sleep(max(0.0, start_at - time.time()))
    return len(open_storage(url).get_all_studies())


def test_processes_opening_a_new_sqlite_ledger_at_once_all_succeed(tmp_path: Path) -> None:
    # A driver creating the ledger while `sweep status` opens it raced on Optuna's schema version.
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    context = multiprocessing.get_context("spawn")
    with context.Pool(6) as pool:
        start_at = time.time() + 3.0  # after every spawned process has imported optuna
        counts = pool.starmap(_open_new_ledger, [(url, start_at)] * 6)
    assert counts == [0] * 6


# ---- attempts that look dead, whose scheduler job may still be alive --------------------------


@pytest.fixture(params=["sqlite", "journal"])
def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    """A ledger on Optuna's own heartbeat (SQLite) and on the timestamp attr (journal)."""
    configured = None if request.param == "sqlite" else "journal:ledger.log"
    return Ledger(storage_url_for(tmp_path, configured), "unit")


def _silence_heartbeat(ledger: Ledger, trial_id: int, seconds: float = 600.0) -> None:
    """Make the attempt's last heartbeat `seconds` old, as if its worker went quiet then."""
    if ledger.url.startswith("sqlite:///"):
        with sqlite3.connect(ledger.url.removeprefix("sqlite:///")) as db:
            db.execute(
                "UPDATE trial_heartbeats SET heartbeat = datetime('now', ?) WHERE trial_id = ?",
                (f"-{int(seconds)} seconds", trial_id),
            )
    else:
        ledger.storage.set_trial_system_attr(trial_id, "heartbeat_at", time.time() - seconds)


class FakeScheduler:
    """Answers `job_alive` from a fixed table and records every question."""

    def __init__(self, alive: dict[str, bool]) -> None:
        self.alive, self.asked = alive, []

    def __call__(self, job_ids: list[str]) -> dict[str, bool]:
        self.asked.append(list(job_ids))
        return {job_id: self.alive[job_id] for job_id in job_ids if job_id in self.alive}


def _running_with_job(ledger: Ledger, run_id: str, job_id: str) -> int:
    ledger.register([_planned(run_id)])
    trial_id = ledger.runs()[run_id].trial_id
    ledger.set_job(trial_id, job_id, f"/logs/{job_id}.err")
    assert ledger.claim(trial_id)  # by this (live) process: only the heartbeat makes it look dead
    return trial_id


def test_a_quiet_attempt_whose_job_is_queued_stays_running_and_is_failed_once_the_job_ended(
    any_ledger: Ledger,
) -> None:
    trial_id = _running_with_job(any_ledger, "a", "81_2")
    _silence_heartbeat(any_ledger, trial_id)
    scheduler = FakeScheduler({"81_2": True})  # requeued, waiting in the queue
    assert any_ledger.recover(max_attempts=3, job_alive=scheduler) == []
    assert scheduler.asked == [["81_2"]]
    assert [a.state for a in any_ledger.attempts("a")] == ["running"]
    assert any_ledger.reclaim(trial_id, "81_2")  # the job starts again and takes its attempt back
    _silence_heartbeat(any_ledger, trial_id)
    scheduler.alive["81_2"] = False  # then it is killed for good
    assert any_ledger.recover(max_attempts=3, job_alive=scheduler) == ["a"]
    attempts = any_ledger.attempts("a")
    assert [a.state for a in attempts] == ["failed", "pending"]
    assert "no heartbeat" in (attempts[0].error or "") and "job 81_2 has ended" in (attempts[0].error or "")
    assert attempts[1].attempts == 2
    assert not any_ledger.reclaim(trial_id, "81_2")  # a later life of the job gets nothing


def test_a_quiet_attempt_without_a_scheduler_is_failed_as_before(any_ledger: Ledger) -> None:
    trial_id = _running_with_job(any_ledger, "a", "4242")  # a local job id: no scheduler to ask
    assert any_ledger.recover(max_attempts=3) == []  # heartbeat fresh: nothing to do
    _silence_heartbeat(any_ledger, trial_id)
    assert any_ledger.recover(max_attempts=3) == ["a"]
    assert [a.state for a in any_ledger.attempts("a")] == ["failed", "pending"]


def test_quiet_attempts_are_asked_about_in_one_call_and_unknown_jobs_keep_their_attempt(
    any_ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    quiet = {run: _running_with_job(any_ledger, run, job) for run, job in (("a", "90_0"), ("b", "90_1"), ("c", "91"))}
    fresh = _running_with_job(any_ledger, "d", "92")
    for trial_id in quiet.values():
        _silence_heartbeat(any_ledger, trial_id)
    scheduler = FakeScheduler({"90_0": False, "90_1": True})  # 91: the scheduler could not say
    with caplog.at_level(logging.WARNING, logger="sweeps.ledger"):
        assert any_ledger.recover(max_attempts=3, job_alive=scheduler) == ["a"]
    assert scheduler.asked == [["90_0", "90_1", "91"]]  # the fresh attempt's job is not asked about
    states = {run: [a.state for a in any_ledger.attempts(run)] for run in "abcd"}
    assert states == {"a": ["failed", "pending"], "b": ["running"], "c": ["running"], "d": ["running"]}
    assert any_ledger.runs()["d"].trial_id == fresh
    warned = [r.getMessage() for r in caplog.records if "could not say whether its job 91 is alive" in r.getMessage()]
    assert len(warned) == 1 and f"attempt {quiet['c']} (run c)" in warned[0]


def test_a_dead_local_worker_of_a_queued_job_keeps_its_attempt(ledger: Ledger, tmp_path: Path) -> None:
    # A single-node cluster runs jobs on the driver's host: a requeued job's old pid is gone.
    ledger.register([_planned("a")])
    trial_id = ledger.runs()["a"].trial_id
    ledger.set_job(trial_id, "93_0", "/logs/93_0.err")
    code = (
        "from sweeps.ledger import Ledger, storage_url_for;"
        f"assert Ledger(storage_url_for({str(tmp_path)!r}), 'unit').claim({trial_id})"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert ledger.recover(max_attempts=3, job_alive=FakeScheduler({"93_0": True})) == []
    assert ledger.runs()["a"].state == "running"
    assert ledger.recover(max_attempts=3, job_alive=FakeScheduler({"93_0": False})) == ["a"]
    error = ledger.attempts("a")[0].error or ""
    assert "died" in error and "job 93_0 has ended" in error


def test_recover_names_a_bad_argument(ledger: Ledger) -> None:
    with pytest.raises(TypeError, match=r"job_alive=.*slurm_jobs_alive.*got str"):
        ledger.recover(max_attempts=2, job_alive="slurm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"max_attempts.*>= 1.*got 0"):
        ledger.recover(max_attempts=0)
