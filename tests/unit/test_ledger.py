"""The ledger's behaviour, on every storage it runs on (`ledger_backends`: SQLite, the journal,
PostgreSQL): the same tests, unchanged, over one parametrised fixture. A test about one kind of
storage only says so in its name."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import subprocess
import sys
import socket
import sqlite3
import threading
import time
from pathlib import Path

import optuna
import pytest
from ledger_backends import (  # noqa: F401 - `backend` and `ledger` are fixtures
    Backend,
    backdate_heartbeat,
    backend,
    backend_url,
    empty_database,
    ledger,
    planned,
    table_names,
)

from sweeps.ledger import Ledger
from sweeps import storage
from sweeps.storage import LedgerUnavailable, ledger_file



def test_register_is_idempotent(ledger: Ledger) -> None:
    assert ledger.register([planned("a"), planned("b", 16)]) == 2
    assert ledger.register([planned("a"), planned("b", 16), planned("c", 32)]) == 1
    runs = ledger.runs()
    assert sorted(runs) == ["a", "b", "c"]
    assert {r.state for r in runs.values()} == {"pending"}
    assert runs["b"].flops["train"] == 16e9 and runs["b"].axis_values == {"width": 16}


def test_claim_is_exclusive_and_complete_records_metrics(ledger: Ledger) -> None:
    ledger.register([planned("a")])
    trial_id = ledger.runs()["a"].trial_id
    assert ledger.claim(trial_id) is True
    assert ledger.claim(trial_id) is False  # a second worker gets nothing
    ledger.complete(trial_id, value=0.25, results={"metrics": {"ndcg@10": 0.25}, "wall_time_s": 3.0})
    assert ledger.claim(trial_id) is False  # finished attempts are never run again
    run = ledger.runs()["a"]
    assert (run.state, run.value, run.metrics, run.wall_time_s) == ("complete", 0.25, {"ndcg@10": 0.25}, 3.0)
    assert ledger.recover(max_attempts=3) == []
    assert ledger.pending() == []


def test_a_claim_records_the_job_that_takes_the_attempt_and_loses_to_a_cancel(ledger: Ledger, monkeypatch) -> None:
    ledger.register([planned("a"), planned("b", 16)])
    a, b = ledger.runs()["a"].trial_id, ledger.runs()["b"].trial_id
    ledger.set_job(a, "9_0", "jobs/9_0_log.err")  # dispatched in job 9_0, taken by 9_1 of its wave
    assert ledger.claim(a, job_id="9_1", log_path="jobs/9_1_log.err")
    assert (ledger.trial_attrs(a)["job_id"], ledger.trial_attrs(a)["log_path"]) == ("9_1", "jobs/9_1_log.err")
    # A cancel that lands between the claim's state change and its bookkeeping: not taken.
    original = ledger.storage.set_trial_system_attr

    def cancelled_meanwhile(trial_id: int, key: str, value: object) -> None:
        ledger.cancel(trial_id)
        original(trial_id, key, value)

    # A submission that read the attempt pending and writes its job after the claim: the training
    # job records itself again before it trains.
    ledger.storage.set_trial_user_attr(a, "job_id", "9_0")
    ledger.confirm_job(a, "9_1", "jobs/9_1_log.err")
    assert ledger.trial_attrs(a)["job_id"] == "9_1"
    monkeypatch.setattr(ledger.storage, "set_trial_system_attr", cancelled_meanwhile)
    assert ledger.claim(b, job_id="9_1") is False
    assert ledger.runs()["b"].state == "cancelled"


def test_attempt_states_read_one_by_one_or_the_whole_study_say_the_same(backend: Backend, monkeypatch) -> None:
    ledger = backend.open()
    ledger.register([planned(name) for name in "abcd"])
    ids = {name: record.trial_id for name, record in ledger.runs().items()}
    ledger.claim(ids["a"])
    ledger.complete(ids["a"], value=0.1, results={"metrics": {"ndcg@10": 0.1}})
    ledger.claim(ids["b"])
    ledger.fail(ids["b"], "boom")
    ledger.claim(ids["c"])
    want = {ids["a"]: "complete", ids["b"]: "failed", ids["c"]: "running", ids["d"]: "pending"}
    cold = backend.open()  # no whole-study read yet: one by one
    reads = []
    read_one = cold.storage.get_trial
    monkeypatch.setattr(cold.storage, "get_trial", lambda trial_id: reads.append(trial_id) or read_one(trial_id))
    assert cold.attempt_states(ids.values()) == want and sorted(reads) == sorted(ids.values())
    # After a whole-study read saw two unfinished attempts, following a few is one more such read.
    cold.pending()
    reads.clear()
    assert cold.attempt_states([ids["c"], ids["d"]]) == {ids["c"]: "running", ids["d"]: "pending"}
    assert reads == []


def test_failed_run_is_retried_until_max_attempts(ledger: Ledger) -> None:
    ledger.register([planned("a")])
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


def _claim_in_a_child_process(backend: Backend, trial_id: int, *, killed_before_recording_its_worker: bool = False
                              ) -> None:
    """Claim from a child process that then exits: its attempt is left "running" with a dead pid.
    Or, killed_before_recording_its_worker, it dies (os._exit) between the claim's two writes:
    taking the attempt and recording itself as its worker."""
    code = f"import os\nfrom sweeps.ledger import Ledger\nledger = Ledger({backend.url!r}, {backend.name!r})\n"
    if killed_before_recording_its_worker:
        code += ("write = ledger.storage.set_trial_system_attr\n"
                 "def dying(trial_id, key, value):\n"
                 "    if key == 'worker':\n        os._exit(9)\n"
                 "    write(trial_id, key, value)\n"
                 "ledger.storage.set_trial_system_attr = dying\n")
    code += f"assert ledger.claim({trial_id})\n"
    done = subprocess.run([sys.executable, "-c", code])
    assert done.returncode == (9 if killed_before_recording_its_worker else 0)


def test_attempt_of_a_dead_worker_is_failed_and_requeued(backend: Backend) -> None:
    ledger = backend.open()
    ledger.register([planned("a")])
    trial_id = ledger.runs()["a"].trial_id
    _claim_in_a_child_process(backend, trial_id)
    assert ledger.runs()["a"].state == "running"
    assert ledger.recover(max_attempts=3) == ["a"]
    attempts = ledger.attempts("a")
    assert [a.state for a in attempts] == ["failed", "pending"]
    assert "died" in (attempts[0].error or "")


def test_a_worker_killed_while_claiming_does_not_leave_its_attempt_running(backend: Backend) -> None:
    """A sweep killed with SIGKILL resumed 11 of its 12 runs (CI, two test workers): one worker had
    died between taking its attempt and recording itself as the worker, which left the attempt
    running with no pid to check and no heartbeat to go stale, so no recover ever retried it."""
    ledger = backend.open()
    ledger.register([planned("a")])
    trial_id = ledger.runs()["a"].trial_id
    _claim_in_a_child_process(backend, trial_id, killed_before_recording_its_worker=True)
    assert ledger.runs()["a"].state == "running"
    assert ledger.recover(max_attempts=3) == ["a"]
    attempts = ledger.attempts("a")
    assert [a.state for a in attempts] == ["failed", "pending"]
    assert "died before recording itself as its worker" in (attempts[0].error or "")


def test_an_attempt_being_claimed_by_a_live_process_is_left_running(ledger: Ledger) -> None:
    ledger.register([planned("a")])
    trial_id = ledger.runs()["a"].trial_id
    claimant = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # Between the claim's two writes: taken, its worker not recorded yet.
        ledger.storage.set_trial_system_attr(trial_id, f"claimant:{socket.gethostname()}:{claimant.pid}",
                                             {"host": socket.gethostname(), "pid": claimant.pid})
        assert ledger.storage.set_trial_state_values(trial_id, optuna.trial.TrialState.RUNNING)
        assert ledger.recover(max_attempts=3) == []
        assert ledger.runs()["a"].state == "running"
    finally:
        claimant.kill()
        claimant.wait()
    assert ledger.recover(max_attempts=3) == ["a"]


def test_an_attempt_taken_without_a_recorded_claimant_is_failed_once_a_heartbeat_would_be_late(
    ledger: Ledger, monkeypatch
) -> None:
    # As a ledger written before claimants were recorded has it, or a claimant on another host.
    ledger.register([planned("a")])
    trial_id = ledger.runs()["a"].trial_id
    assert ledger.storage.set_trial_state_values(trial_id, optuna.trial.TrialState.RUNNING)
    assert ledger.recover(max_attempts=3) == []
    now = time.time()
    monkeypatch.setattr("sweeps.ledger.time.time", lambda: now + storage.HEARTBEAT_GRACE_S + 5)
    assert ledger.recover(max_attempts=3) == ["a"]
    assert "no worker recorded itself within" in (ledger.attempts("a")[0].error or "")


def test_a_requeued_job_takes_its_running_attempt_back(ledger: Ledger) -> None:
    ledger.register([planned("a")])
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
    ledger.register([planned("a")])
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
    ledger.register([planned("a")])
    trial_id = ledger.runs()["a"].trial_id
    assert ledger.claim(trial_id)
    assert ledger.fail_unfinished(trial_id, "job 5 ended without a result: CANCELLED")
    run = ledger.runs()["a"]
    assert (run.state, run.error) == ("failed", "job 5 ended without a result: CANCELLED")


def test_a_second_ledger_sees_the_same_runs(backend: Backend) -> None:
    backend.open().register([planned("a")])
    assert list(backend.open().runs()) == ["a"]


def _open_new_ledger(url: str, start_at: float) -> int:
    from sweeps.storage import open_storage

    time.sleep(max(0.0, start_at - time.time()))
    return len(open_storage(url).get_all_studies())


def test_processes_opening_a_new_sqlite_ledger_at_once_all_succeed(tmp_path: Path) -> None:
    # SQLite only: the race is on creating a new file's schema (the journal has no schema, and a
    # server's database is created before any sweep opens it). A driver creating the ledger while
    # `sweep status` opens it raced on Optuna's schema version.
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    context = multiprocessing.get_context("spawn")
    with context.Pool(6) as pool:
        start_at = time.time() + 3.0  # after every spawned process has imported optuna
        counts = pool.starmap(_open_new_ledger, [(url, start_at)] * 6)
    assert counts == [0] * 6


def test_a_read_only_open_waits_for_a_ledger_being_created_and_adds_nothing(tmp_path: Path) -> None:
    # `sweep status` (or a test polling the ledger) opening the file while the driver is still
    # creating its schema wrote Optuna's version bookkeeping too, and the driver then failed on the
    # duplicate ("table alembic_version already exists") and called its new ledger damaged.
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    opened: dict[str, object] = {}

    def read_only_open() -> None:
        try:
            opened["runs"] = Ledger(url, "sweep", create=False).runs()
        except Exception as exc:  # reported through `opened`, asserted below
            opened["error"] = exc

    with open(path.with_name("ledger.db.open-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what the creating driver holds meanwhile
        with contextlib.closing(sqlite3.connect(path)) as partial:  # its first table exists, no more
            partial.execute("CREATE TABLE studies (study_id INTEGER PRIMARY KEY, study_name VARCHAR(512))")
        reader = threading.Thread(target=read_only_open)
        reader.start()
        reader.join(1.5)
        assert reader.is_alive() and not opened  # waiting, not reading a half-made ledger
        with contextlib.closing(sqlite3.connect(path)) as partial:
            partial.execute("DROP TABLE studies")
            tables_while_waiting = partial.execute("SELECT name FROM sqlite_master").fetchall()
        assert tables_while_waiting == []  # and it wrote nothing meanwhile
        optuna.create_study(study_name="sweep", storage=url)  # the driver's creation, done
        fcntl.flock(lock, fcntl.LOCK_UN)
    reader.join(60)
    assert opened == {"runs": {}}


def test_a_ledger_whose_creation_was_interrupted_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    optuna.create_study(study_name="sweep", storage=url)
    with contextlib.closing(sqlite3.connect(path)) as db, db:  # stopped before its version bookkeeping
        db.execute("DELETE FROM version_info")
        db.execute("DROP TABLE alembic_version")
    with pytest.raises(LedgerUnavailable, match="holds no ledger schema, or an incomplete one"):
        Ledger(url, "sweep", create=False)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT COUNT(*) FROM version_info").fetchone() == (0,)
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'alembic_version'").fetchall() == []


def test_a_read_only_open_gives_up_on_a_creation_that_never_ends(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(storage, "CREATION_WAIT_S", 0.3)
    path = tmp_path / "ledger.db"
    with open(path.with_name("ledger.db.open-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a creator stopped with Ctrl-Z
        with pytest.raises(LedgerUnavailable, match=r"being created by another process for over 0 s"):
            Ledger(f"sqlite:///{path}", "sweep", create=False)
    assert not path.exists()


# ---- attempts that look dead, whose scheduler job may still be alive --------------------------


class FakeScheduler:
    """Answers `job_alive` from a fixed table and records every question."""

    def __init__(self, alive: dict[str, bool]) -> None:
        self.alive, self.asked = alive, []

    def __call__(self, job_ids: list[str]) -> dict[str, bool]:
        self.asked.append(list(job_ids))
        return {job_id: self.alive[job_id] for job_id in job_ids if job_id in self.alive}


def _running_with_job(ledger: Ledger, run_id: str, job_id: str) -> int:
    ledger.register([planned(run_id)])
    trial_id = ledger.runs()[run_id].trial_id
    ledger.set_job(trial_id, job_id, f"/logs/{job_id}.err")
    assert ledger.claim(trial_id)  # by this (live) process: only the heartbeat makes it look dead
    return trial_id


def test_a_quiet_attempt_whose_job_is_queued_stays_running_and_is_failed_once_the_job_ended(
    ledger: Ledger,
) -> None:
    trial_id = _running_with_job(ledger, "a", "81_2")
    backdate_heartbeat(ledger.storage, trial_id)
    scheduler = FakeScheduler({"81_2": True})  # requeued, waiting in the queue
    assert ledger.recover(max_attempts=3, job_alive=scheduler) == []
    assert scheduler.asked == [["81_2"]]
    assert [a.state for a in ledger.attempts("a")] == ["running"]
    assert ledger.reclaim(trial_id, "81_2")  # the job starts again and takes its attempt back
    backdate_heartbeat(ledger.storage, trial_id)
    scheduler.alive["81_2"] = False  # then it is killed for good
    assert ledger.recover(max_attempts=3, job_alive=scheduler) == ["a"]
    attempts = ledger.attempts("a")
    assert [a.state for a in attempts] == ["failed", "pending"]
    assert "no heartbeat" in (attempts[0].error or "") and "job 81_2 has ended" in (attempts[0].error or "")
    assert attempts[1].attempts == 2
    assert not ledger.reclaim(trial_id, "81_2")  # a later life of the job gets nothing


def test_a_quiet_attempt_without_a_scheduler_is_failed_as_before(ledger: Ledger) -> None:
    trial_id = _running_with_job(ledger, "a", "4242")  # a local job id: no scheduler to ask
    assert ledger.recover(max_attempts=3) == []  # heartbeat fresh: nothing to do
    backdate_heartbeat(ledger.storage, trial_id)
    assert ledger.recover(max_attempts=3) == ["a"]
    assert [a.state for a in ledger.attempts("a")] == ["failed", "pending"]


def test_quiet_attempts_are_asked_about_in_one_call_and_unknown_jobs_keep_their_attempt(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    quiet = {run: _running_with_job(ledger, run, job) for run, job in (("a", "90_0"), ("b", "90_1"), ("c", "91"))}
    fresh = _running_with_job(ledger, "d", "92")
    for trial_id in quiet.values():
        backdate_heartbeat(ledger.storage, trial_id)
    scheduler = FakeScheduler({"90_0": False, "90_1": True})  # 91: the scheduler could not say
    with caplog.at_level(logging.WARNING, logger="sweeps.ledger"):
        assert ledger.recover(max_attempts=3, job_alive=scheduler) == ["a"]
    assert scheduler.asked == [["90_0", "90_1", "91"]]  # the fresh attempt's job is not asked about
    states = {run: [a.state for a in ledger.attempts(run)] for run in "abcd"}
    assert states == {"a": ["failed", "pending"], "b": ["running"], "c": ["running"], "d": ["running"]}
    assert ledger.runs()["d"].trial_id == fresh
    warned = [r.getMessage() for r in caplog.records if "could not say whether its job 91 is alive" in r.getMessage()]
    assert len(warned) == 1 and f"attempt {quiet['c']} (run c)" in warned[0]


def test_a_dead_local_worker_of_a_queued_job_keeps_its_attempt(backend: Backend) -> None:
    # A single-node cluster runs jobs on the driver's host: a requeued job's old pid is gone.
    ledger = backend.open()
    ledger.register([planned("a")])
    trial_id = ledger.runs()["a"].trial_id
    ledger.set_job(trial_id, "93_0", "/logs/93_0.err")
    _claim_in_a_child_process(backend, trial_id)
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


def test_cancelled_attempts_do_not_count_and_retry_failed_gives_a_fresh_round(ledger: Ledger) -> None:
    ledger.register([planned("a"), planned("b", 16), planned("c", 32)])
    ids = {run_id: record.trial_id for run_id, record in ledger.runs().items()}
    assert ledger.claim(ids["b"])
    assert sorted((t.user_attrs["run_id"], t.state.name) for t in ledger.active_attempts()) == [
        ("a", "WAITING"), ("b", "RUNNING"), ("c", "WAITING")]
    assert ledger.cancel(ids["a"]) and ledger.cancel(ids["b"])  # pending and running
    assert ledger.claim(ids["c"])
    ledger.fail(ids["c"], "RuntimeError: boom")
    assert not ledger.cancel(ids["c"])  # a finished attempt stays as it is
    runs = ledger.runs()
    assert {run_id: (r.state, r.error) for run_id, r in runs.items()} == {
        "a": ("cancelled", "cancelled by the user"), "b": ("cancelled", "cancelled by the user"),
        "c": ("failed", "RuntimeError: boom")}
    assert sorted(ledger.recover(max_attempts=1)) == ["a", "b"]  # c used its one attempt
    assert [(a.state, a.attempts) for a in ledger.attempts("a")] == [("cancelled", 1), ("pending", 1)]
    assert ledger.retry_failed() == ["c"]
    assert [(a.state, a.attempts) for a in ledger.attempts("c")] == [("failed", 1), ("pending", 1)]
    assert ledger.retry_failed() == []  # every run has a pending attempt now


def test_a_pruned_run_keeps_its_intermediate_values_and_is_not_retried(ledger: Ledger) -> None:
    ledger.register([planned("a")])
    trial_id = ledger.runs()["a"].trial_id
    assert ledger.claim(trial_id)
    ledger.report_intermediate(trial_id, 1, 0.125)
    ledger.report_intermediate(trial_id, 2, 0.25)
    ledger.prune(trial_id, last_value=0.25, epoch=2)
    assert ledger.storage.get_trial(trial_id).intermediate_values == {1: 0.125, 2: 0.25}
    assert ledger.trial_attrs(trial_id)["pruned_at_epoch"] == 2
    assert (ledger.runs()["a"].state, ledger.recover(max_attempts=3), ledger.retry_failed()) == ("pruned", [], [])


# ---- opening a ledger that must exist (create=False), and restoring finished attempts ----------


def test_an_existing_ledger_opens_without_create_and_is_the_same_ledger(backend: Backend) -> None:
    writer = backend.open()
    writer.register([planned("a"), planned("b", 16)])
    reader = backend.open(create=False)
    assert {run_id: (r.state, r.flops) for run_id, r in reader.runs().items()} == {
        "a": ("pending", {"train": 8e9}), "b": ("pending", {"train": 16e9})}
    assert reader.cancel(reader.runs()["a"].trial_id)  # `sweep cancel` writes through such an open
    assert writer.runs()["a"].state == "cancelled"


def test_opening_a_sweep_the_ledger_never_saw_without_create_creates_nothing(backend: Backend) -> None:
    backend.open().register([planned("a")])
    studies_before = optuna.get_all_study_names(backend.open(create=False).storage)
    with pytest.raises(LedgerUnavailable, match=r"has no study 'never-registered'"):
        backend.open(create=False, name="never-registered")
    assert optuna.get_all_study_names(backend.open(create=False).storage) == studies_before


@pytest.mark.parametrize("kind", ["sqlite", "journal"])  # ledger files only: a server has no file
def test_a_missing_or_empty_ledger_file_is_refused_and_nothing_is_created(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = backend_url(kind, tmp_path, request)
    path = ledger_file(url)
    assert path is not None
    with pytest.raises(LedgerUnavailable, match=r"does not exist; nothing was created.*rebuild-ledger"):
        Ledger(url, "unit", create=False)
    assert list(tmp_path.iterdir()) == []
    path.touch()
    with pytest.raises(LedgerUnavailable, match=r"is empty; nothing was created"):
        Ledger(url, "unit", create=False)
    assert [p.name for p in tmp_path.iterdir()] == [path.name] and path.stat().st_size == 0


@pytest.mark.parametrize("kind", ["sqlite", "journal"])  # ledger files only: a server's damage is its own
def test_a_damaged_ledger_file_is_refused_with_the_way_out(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = backend_url(kind, tmp_path, request)
    path = ledger_file(url)
    assert path is not None
    path.write_bytes(b"\x00\xffnot a ledger\n" * 64)
    with pytest.raises(LedgerUnavailable, match=r"is damaged .*rebuild-ledger"):
        Ledger(url, "unit", create=False)
    assert path.read_bytes() == b"\x00\xffnot a ledger\n" * 64


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])  # the SQL backends: the journal has no tables
def test_a_database_without_ledger_tables_is_refused_and_left_empty(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = empty_database(kind, tmp_path, request)
    with pytest.raises(LedgerUnavailable, match=r"holds no ledger"):
        Ledger(url, "unit", create=False)
    assert table_names(url) == []  # Optuna's RDBStorage would have created its schema


def test_restore_records_finished_attempts_as_the_runs_own(backend: Backend) -> None:
    ledger = backend.open()
    results = {"metrics": {"ndcg@10": 0.3, "hr@10": 0.5}, "wall_time_s": 2.5, "spent": {"flops": 7.0e9}}
    ledger.restore(planned("a"), results=results, value=0.3, source="runs/a/result.json")
    ledger.restore(planned("b", 16), error="RuntimeError: boom", source="runs/b/error.txt")
    with pytest.raises(ValueError, match=r"runs/c/result.json: no value of the sweep's metric"):
        ledger.restore(planned("c", 32), results=results, value=None, source="runs/c/result.json")

    runs = backend.open(create=False).runs()  # as `sweep status` reads it back
    assert sorted(runs) == ["a", "b"]
    a, b = runs["a"], runs["b"]
    assert (a.state, a.value, a.metrics, a.wall_time_s, a.spent, a.attempts) == (
        "complete", 0.3, results["metrics"], 2.5, {"flops": 7.0e9}, 1)
    assert (a.axis_values, a.flops, a.params) == ({"width": 8}, {"train": 8e9}, {"non_embedding": 80, "embedding": 5})
    assert (b.state, b.error, b.value, b.spent, b.attempts) == ("failed", "RuntimeError: boom", None, {}, 1)
    assert ledger.trial_attrs(a.trial_id)["restored_from"] == "runs/a/result.json"
    assert ledger.trial_attrs(b.trial_id)["restored_from"] == "runs/b/error.txt"
    # The plan registered after a rebuild adds only what was never restored.
    assert ledger.register([planned("a"), planned("b", 16), planned("c", 32)]) == 1
    assert ledger.recover(max_attempts=1) == []  # b's restored failure used its one attempt
    assert ledger.recover(max_attempts=2) == ["b"]
    assert [(r.state, r.attempts) for r in ledger.attempts("b")] == [("failed", 1), ("pending", 2)]
