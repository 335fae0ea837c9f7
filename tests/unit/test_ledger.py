from __future__ import annotations

import multiprocessing
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
