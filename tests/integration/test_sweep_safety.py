"""What researchers do by accident: two drivers, a bad relaunch, Ctrl-C, a damaged ledger.

Each test reproduces a reported failure on a real sweep (local submitit executor, SQLite ledger).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from gr_scaling.cli import main
from sweeps.driver import read_driver
from sweeps.launch import launch_sweep
from sweeps.ledger import Ledger, storage_url_for

SPEC = """
[sweep]
name = "safe"
metric = "ndcg@10"
max_attempts = {attempts}

[axes]
width = [8, 16]
users = {users}

[base.data]
num_items = 40
num_clusters = 4
min_events = 6
max_events = 14

[base.model]
num_blocks = 1
max_seq_len = 12

[base.train]
epochs = {epochs}
batch_size = 16
num_negatives = 8
{extra}
[dispatch]
executor = "local"
max_parallel = 2
poll_interval_s = 0.2
"""

pytestmark = pytest.mark.slow


def _spec(tmp_path: Path, *, users=(40,), epochs=1, attempts=2, extra="", name="spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(SPEC.format(users=list(users), epochs=epochs, attempts=attempts, extra=extra))
    return path


def _trials(sweep_dir: Path) -> list:
    return Ledger(storage_url_for(sweep_dir), "safe", create=False).study.get_trials(deepcopy=False)


def _ledger_contents(sweep_dir: Path) -> tuple:
    """Everything the ledger records, comparable. (The SQLite file's size is not: a WAL checkpoint
    by any reader folds the -wal file into it without changing a record.)"""
    ledger = Ledger(storage_url_for(sweep_dir), "safe", create=False)
    trials = tuple(
        (t.number, t.state, t.params, t.values, t.user_attrs, t.system_attrs,
         t.datetime_start, t.datetime_complete, t.intermediate_values)
        for t in ledger.study.get_trials(deepcopy=False)
    )
    return trials, ledger.study.user_attrs


def _driver(spec: Path, sweep_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gr_scaling", "sweep", "launch", str(spec), "--out", str(sweep_dir), *extra],
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for(predicate, timeout: float, what: str, driver: subprocess.Popen | None = None) -> None:
    """Poll `predicate`; fail with what the driver said if it exits first or time runs out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if driver is not None and driver.poll() is not None:
            _, err = driver.communicate()
            pytest.fail(f"the driver exited ({driver.returncode}) before {what}:\n{err}")
        time.sleep(0.2)
    if driver is None:
        pytest.fail(f"timed out waiting for {what}")
    os.killpg(driver.pid, signal.SIGKILL)
    _, err = driver.communicate()
    pytest.fail(f"timed out waiting for {what}; the driver said:\n{err}")


def _wait_for_running(sweep_dir: Path, driver: subprocess.Popen) -> None:
    seen: list[list[str]] = []

    def running() -> bool:
        try:
            states = [t.state.name for t in _trials(sweep_dir)]
        except ValueError:  # the ledger is still being created
            return False
        if not seen or seen[-1] != states:
            seen.append(states)
        return "RUNNING" in states

    try:
        _wait_for(running, 120, "a running attempt", driver)
    except pytest.fail.Exception as failure:
        pytest.fail(f"{failure}\nattempt states seen, in order: {seen}")


def test_a_second_driver_is_refused_and_every_run_trains_once(tmp_path: Path, capsys) -> None:
    spec, sweep_dir = _spec(tmp_path, users=(40, 60), epochs=3), tmp_path / "sweep"
    first = _driver(spec, sweep_dir)
    try:
        _wait_for(lambda: (info := read_driver(sweep_dir)) is not None and info.alive, 60, "the first driver")
        assert main(["sweep", "launch", str(spec), "--out", str(sweep_dir)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ")
        assert f"already being driven by pid {first.pid} on {socket.gethostname()}" in err
        assert main(["sweep", "resume", str(sweep_dir), "--detach"]) == 2  # a background one too
        assert first.wait(timeout=300) == 0
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    trials = _trials(sweep_dir)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4  # one attempt per run, none taken twice
    assert all(not (sweep_dir / "runs" / t.user_attrs["run_id"] / "error.txt").exists() for t in trials)
    assert read_driver(sweep_dir) is None  # a driver that finished leaves no record behind


def test_a_bad_relaunch_changes_nothing(tmp_path: Path, capsys) -> None:
    spec, sweep_dir = _spec(tmp_path), tmp_path / "sweep"
    assert main(["sweep", "launch", str(spec), "--out", str(sweep_dir)]) == 0
    stored = (sweep_dir / "spec.toml").read_bytes()
    recorded = _ledger_contents(sweep_dir)

    cases = {
        "bad-url.toml": ('[ledger]\nurl = "postgresql://nobody@127.0.0.1:1/none"\n', "changes [ledger] url"),
        "grid.toml": ("", "changes [axes]"),
    }
    for name, (extra, message) in cases.items():
        text = SPEC.format(users=[40, 60] if name == "grid.toml" else [40], epochs=1, attempts=2, extra="")
        bad = tmp_path / name
        bad.write_text(text + extra)
        capsys.readouterr()
        assert main(["sweep", "launch", str(bad), "--out", str(sweep_dir)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (name, err)
        assert (sweep_dir / "spec.toml").read_bytes() == stored, name
    assert "-users = [40]\n+users = [40, 60]" in err  # the refusal shows the difference

    # A new sweep whose SQLite ledger would live in a missing directory: an error, no mkdir.
    missing = tmp_path / "missing-dir.toml"
    missing.write_text(spec.read_text() + f'[ledger]\nurl = "sqlite:///{tmp_path}/no/such/dir/ledger.db"\n')
    assert main(["sweep", "launch", str(missing), "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: [ledger] url: the directory") and "does not exist" in err
    assert not (tmp_path / "no").exists() and not (tmp_path / "other" / "spec.toml").exists()

    assert main(["sweep", "status", str(sweep_dir)]) == 0  # still a working sweep
    assert _ledger_contents(sweep_dir) == recorded  # not one trial, attribute or value changed

    # A relaunch that changes only how runs are dispatched is accepted; the earlier spec is kept.
    tweaked = tmp_path / "tweaked.toml"
    tweaked.write_text(spec.read_text().replace("max_parallel = 2", "max_parallel = 1"))
    assert main(["sweep", "launch", str(tweaked), "--out", str(sweep_dir)]) == 0
    assert (sweep_dir / "spec.toml").read_bytes() == tweaked.read_bytes()
    assert [p.read_bytes() for p in sweep_dir.glob("spec.*.toml")] == [stored]


def test_ctrl_c_cancels_instead_of_failing_and_resume_completes(tmp_path: Path) -> None:
    spec, sweep_dir = _spec(tmp_path, users=(200,), epochs=30, attempts=1), tmp_path / "sweep"
    driver = _driver(spec, sweep_dir)
    try:
        _wait_for_running(sweep_dir, driver)
        time.sleep(2)  # into training
        os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C does: the driver and its workers
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line[:2].isdigit()]  # log lines start with a time
    assert len(lines) == 1 and lines[0].startswith("interrupted: SIGINT: stopped;"), err
    trials = _trials(sweep_dir)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert all(t.user_attrs.get("cancelled") for t in trials if t.state == TrialState.FAIL)
    assert any(t.user_attrs.get("cancelled") for t in trials)

    summary = launch_sweep(spec, sweep_dir)  # max_attempts = 1: cancelled attempts do not count
    assert summary.failed == [] and summary.planned == 2
    assert {r.state for r in Ledger(storage_url_for(sweep_dir), "safe", create=False).runs().values()} == {"complete"}


def test_sigterm_to_the_driver_stops_its_workers(tmp_path: Path) -> None:
    spec, sweep_dir = _spec(tmp_path, users=(200,), epochs=30), tmp_path / "sweep"
    driver = _driver(spec, sweep_dir)
    try:
        _wait_for_running(sweep_dir, driver)
        workers = [t.system_attrs["worker"]["pid"] for t in _trials(sweep_dir) if t.state == TrialState.RUNNING]
        driver.send_signal(signal.SIGTERM)  # the driver only, as `kill PID` or a batch system would
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130 and "interrupted: SIGTERM" in err
    _wait_for(lambda: not any(_alive(pid) for pid in workers), 30, "the workers to stop")
    assert not [t for t in _trials(sweep_dir) if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("finished")
    sweep_dir = tmp / "sweep"
    summary = launch_sweep(_spec(tmp, users=(40, 60)), sweep_dir)
    assert summary.completed == 4
    return sweep_dir


def _damage(path: Path, how: str) -> None:
    for side in path.parent.glob(path.name + "-*"):  # WAL files would repair a truncation
        side.unlink()
    if how == "deleted":
        path.unlink()
    elif how == "zero-byte":
        path.write_bytes(b"")
    else:
        path.write_bytes(path.read_bytes()[:3000])


@pytest.mark.parametrize("how", ["deleted", "zero-byte", "truncated"])
def test_a_damaged_ledger_is_rebuilt_from_the_run_directories(finished_sweep: Path, tmp_path: Path, capsys, how) -> None:
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(finished_sweep, sweep_dir)
    before = {t.user_attrs["run_id"]: t.user_attrs["metrics"] for t in _trials(sweep_dir)}
    _damage(sweep_dir / "ledger.db", how)
    capsys.readouterr()
    for command in (["sweep", "status"], ["sweep", "export"], ["sweep", "resume"], ["report"]):
        args = [*command, str(sweep_dir)] + ([str(tmp_path / "x.csv")] if command[-1] == "export" else [])
        assert main(args) == 2, command
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "rebuild-ledger" in err and str(sweep_dir) in err, (command, err)
    if how == "deleted":
        assert not (sweep_dir / "ledger.db").exists()  # read-only commands never create a ledger

    assert main(["sweep", "rebuild-ledger", str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "4 complete, 0 failed, 0 pending" in out
    assert bool(list(sweep_dir.glob("ledger.db.damaged-*"))) == (how != "deleted")
    after = {t.user_attrs["run_id"]: t.user_attrs["metrics"] for t in _trials(sweep_dir)}
    assert after == before
    summary = launch_sweep(sweep_dir / "spec.toml", sweep_dir)
    assert (summary.skipped_complete, summary.completed) == (4, 0)  # nothing trained again
    assert main(["sweep", "rebuild-ledger", str(sweep_dir)]) == 2  # a readable ledger needs --force
