"""Sweeps through the real single-node Slurm from slurm/devcluster.py (marker `slurm`).

The session fixture `slurm_cluster` starts the cluster when it is not up (and skips these tests
outside CI when it cannot). Jobs run this interpreter's `python` (submitit uses sys.executable),
which works because the "cluster" is this machine.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import pytest
import submitit

from gr_scaling.cli import main
from slurm import devcluster
from slurm.config import DispatchConfig
from slurm.countdown import Countdown
from slurm.dispatch import Task, cluster_max_array_size, run_tasks
from slurm.liveness import is_alive
from sweeps.ledger import Ledger, storage_url_for

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

SPEC = """
[sweep]
name = "{name}"
metric = "ndcg@10"
max_attempts = 1

[axes]
{axes}

[base.data]
num_users = 40
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
executor = "slurm"
max_parallel = 2
poll_interval_s = 0.5
timeout_min = 10
partition = "dev"
mem_gb = 1
"""


def _spec(tmp_path: Path, name: str, axes: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(SPEC.format(name=name, axes=axes))
    return path


def _sacct_states(array_job_id: str, expected: int, timeout_s: float = 20.0) -> dict[str, str]:
    """Task id -> final state of an array, as the accounting database has it.

    The database lags the controller: a task that has already failed can still read PENDING (its
    start record not yet stored), so wait until every task's state is a final one.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        out = subprocess.run(
            ["sacct", "-j", array_job_id, "-X", "-n", "-P", "-o", "JobID,State"],
            capture_output=True, text=True, check=True,
        ).stdout
        states = dict(line.split("|", 1) for line in out.splitlines() if line)
        settled = len(states) == expected and not any(is_alive(state) for state in states.values())
        if settled or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


@pytest.mark.parametrize("runs_per_job", [1, 2])
def test_sweep_goes_through_one_job_array_into_the_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture, runs_per_job: int
) -> None:
    spec = _spec(tmp_path, "slurm-e2e", "depth = [1, 2]\nwidth = [8, 16]")
    spec.write_text(spec.read_text().replace("mem_gb = 1", f"mem_gb = 1\nruns_per_job = {runs_per_job}"))
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", "launch", str(spec), "--out", str(sweep_dir)]) == 0

    runs = Ledger(storage_url_for(sweep_dir), "slurm-e2e").runs()
    assert len(runs) == 4 and {r.state for r in runs.values()} == {"complete"}
    # One `sbatch --array`: every run's job id is "<array job id>_<task index>" of the same array,
    # with `runs_per_job` runs in each task.
    array_ids = {r.job_id.split("_")[0] for r in runs.values() if r.job_id}
    assert len(array_ids) == 1, [r.job_id for r in runs.values()]
    [array_id] = array_ids
    tasks = 4 // runs_per_job
    trained_by = sorted(int(r.job_id.split("_")[1]) for r in runs.values())
    if runs_per_job == 1:
        assert trained_by == list(range(tasks))
    else:  # a packed task whose runs are done takes those of its wave that no task has started
        assert set(trained_by) <= set(range(tasks)), trained_by
    assert _sacct_states(array_id, tasks) == {f"{array_id}_{i}": "COMPLETED" for i in range(tasks)}
    for run in runs.values():
        assert 0.0 <= run.metrics["ndcg@10"] <= run.metrics["hr@10"] <= 1.0
        assert run.value == run.metrics["ndcg@10"]
        result = json.loads((sweep_dir / "runs" / run.run_id / "result.json").read_text())
        assert result["metrics"] == run.metrics
        assert run.log_path == str(sweep_dir / "jobs" / f"{run.job_id}_0_log.err")
        assert Path(run.log_path).exists()

    capsys.readouterr()
    assert main(["sweep", "status", str(sweep_dir)]) == 0
    assert "complete 4, running 0, pending 0, failed 0" in capsys.readouterr().out


def test_cancel_scancels_the_running_and_the_queued_jobs_of_a_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`sweep cancel` on Slurm hands every active attempt's job to scancel, the running one too
    (not a kill of its process, which Slurm records as a failed task and would not stop a job
    that is queued again)."""
    spec = _spec(tmp_path, "slurm-cancel", "epochs = [400]\nwidth = [8, 16, 32]")
    text = spec.read_text().replace("max_parallel = 2", "max_parallel = 1")
    spec.write_text(text)
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", "launch", str(spec), "--out", str(sweep_dir), "--detach"]) == 0
    deadline = time.monotonic() + 120
    running: list[str] = []
    while not running:
        assert time.monotonic() < deadline, "no run of the detached sweep started"
        time.sleep(0.2)
        if (sweep_dir / "ledger.db").exists():
            runs = Ledger(storage_url_for(sweep_dir), "slurm-cancel").runs()
            running = [r.job_id for r in runs.values() if r.state == "running"]
    capsys.readouterr()
    assert main(["sweep", "cancel", str(sweep_dir)]) == 0
    printed = capsys.readouterr().out
    runs = Ledger(storage_url_for(sweep_dir), "slurm-cancel").runs()
    assert {r.state for r in runs.values()} == {"cancelled"}
    array_id = next(iter(runs.values())).job_id.split("_")[0]
    assert f"scancel {' '.join(sorted({r.job_id for r in runs.values()}))}" in printed  # one job: runs packed
    deadline = time.monotonic() + 30
    while subprocess.run(["squeue", "-h", "-j", array_id], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, f"array {array_id} still queued or running after sweep cancel"
        time.sleep(0.5)
    [running_task] = running
    state = _sacct_states(array_id, 1).get(running_task, "")
    assert state.startswith("CANCELLED"), (running_task, _sacct_states(array_id, 1))


def test_failing_run_shows_its_exception_in_status_and_in_its_job_log(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # lr = 1e10 makes the loss NaN at step 2, and the trainer raises FloatingPointError.
    spec = _spec(tmp_path, "slurm-fail", "lr = [1e10]")
    sweep_dir = tmp_path / "sweep"
    main(["sweep", "launch", str(spec), "--out", str(sweep_dir)])
    [run] = Ledger(storage_url_for(sweep_dir), "slurm-fail").runs().values()
    assert (run.state, run.attempts) == ("failed", 1)
    expected = "FloatingPointError: training loss became nan at step 2 (epoch 1); lower train.lr"

    capsys.readouterr()
    main(["sweep", "status", str(sweep_dir)])
    status = capsys.readouterr().out
    assert f"FAILED {run.run_id} after 1 attempt(s): {expected}" in status
    assert f"log: {run.log_path}" in status
    job_log = Path(run.log_path).read_text()
    assert expected in job_log and "Traceback" in job_log
    assert _sacct_states(run.job_id.split("_")[0], 1) == {run.job_id: "FAILED"}


def test_arrays_larger_than_max_array_size_are_split(tmp_path: Path) -> None:
    assert cluster_max_array_size() == 1001  # Slurm's default, read from `scontrol show config`
    submitted: list[str] = []
    config = DispatchConfig(executor="slurm", max_parallel=2, poll_interval_s=0.2, timeout_min=5)
    tasks = [Task(key=i, args=(float(x),)) for i, x in enumerate([4, 9, -1, 16, 25])]
    outcomes = run_tasks(
        math.sqrt, tasks, config=config, folder=tmp_path, max_array_size=2,
        on_submit=lambda task, job_id, log_path: submitted.append(job_id),
    )
    # Arrays of 2, 2 and 1 (a lone task is a plain job): three job ids, tasks indexed from 0 in each.
    arrays = [job_id.split("_")[0] for job_id in submitted]
    assert len(set(arrays)) == 3 and arrays[0] == arrays[1] != arrays[2] == arrays[3] != arrays[4]
    assert [job_id.partition("_")[2] for job_id in submitted] == ["0", "1", "0", "1", ""]
    by_key = {o.key: o for o in outcomes}
    assert [by_key[i].result for i in (0, 1, 3, 4)] == [2.0, 3.0, 4.0, 5.0]
    failed = by_key[2]
    assert not failed.ok and failed.error == "ValueError: math domain error"
    assert failed.log_path and "ValueError: math domain error" in Path(failed.log_path).read_text()


def test_preempted_checkpointable_job_is_requeued_and_resumes(tmp_path: Path) -> None:
    state_file = tmp_path / "countdown.json"
    executor = submitit.AutoExecutor(folder=str(tmp_path / "jobs"), cluster="slurm")
    # timeout_min >= 20: submitit counts a signal that comes close to the time limit as a timeout.
    executor.update_parameters(timeout_min=20, cpus_per_task=1)
    job = executor.submit(Countdown(str(state_file), steps=12, step_s=0.5))
    deadline = time.monotonic() + 60
    while not (state_file.exists() and json.loads(state_file.read_text())["remaining"] < 12):
        assert time.monotonic() < deadline, "the countdown job did not start within 60 s"
        time.sleep(0.2)
    job._interrupt()  # as on preemption: SIGTERM, then USR2 -> checkpoint() and `scontrol requeue`
    result = job.result()
    assert result == {"remaining": 0, "starts": 2}  # resumed from its saved position, not restarted
    assert "this job is preempted" in Path(job.paths.stderr).read_text()


def test_up_is_a_no_op_when_running_and_down_stops_every_daemon() -> None:
    started = time.monotonic()
    assert devcluster.up() == []
    assert time.monotonic() - started < 5
    assert all(devcluster.status().values())
    try:
        assert devcluster.down() == list(reversed(devcluster.ORDER))
        assert devcluster.down() == []  # stopping a stopped cluster does nothing
        assert devcluster.status() == {name: None for name in devcluster.ORDER}
        assert devcluster.stray_job_steps() == []
    finally:
        devcluster.up()  # the fixture stops what it started at the end of the session
