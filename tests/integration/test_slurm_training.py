"""Training jobs on the real local Slurm: DeepSpeed over two tasks, preempted runs that resume, and
requeued sweep jobs that keep (or, once given up on, leave alone) their ledger attempt.

Jobs run `sweeps.worker.train_job` (wrapped by `slurm.jobs.Requeueable`, as sweeps wrap their
attempts). Every comparison is against the same config trained without interruption.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import submitit
import torch
from optuna.trial import TrialState

from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gr_core.trainer import train_run
from slurm.jobs import Requeueable
from slurm.liveness import parse_squeue_states, slurm_jobs_alive, squeue_command
from sweeps.layout import SweepLayout
from sweeps.ledger import Ledger, PlannedRun, storage_url_for
from sweeps.optuna_adapter import study_id_of
from sweeps.spec import TrackingConfig
from sweeps.storage import pid_alive, stale_heartbeats
from sweeps.worker import Attempt, AttemptResult, execute_attempt, train_job

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.usefixtures("slurm_cluster")]

# Dropout off: dropout masks depend on how a batch is split over processes; nothing else does.
PARITY = RunConfig(
    data=DataConfig(num_users=720, num_items=120, num_clusters=6, max_events=24),
    model=ModelConfig(num_blocks=2, embedding_dim=16, num_heads=2, max_seq_len=20, dropout=0.0),
    train=TrainConfig(
        epochs=1, batch_size=32, num_negatives=16, lr=3e-3, engine="deepspeed", zero_stage=2, grad_clip=1.0
    ),
)

# Long enough (about 40 s) to be interrupted mid-run; dropout and Stochastic Length on, so that
# every random generator has to come back right.
RESUMABLE = RunConfig(
    data=DataConfig(num_users=2400, num_items=200, num_clusters=8, max_events=40, stochastic_length_alpha=1.6),
    model=ModelConfig(num_blocks=2, embedding_dim=48, num_heads=2, max_seq_len=32, dropout=0.2),
    train=TrainConfig(epochs=8, batch_size=32, num_negatives=32, lr=2e-3, eval_every=2),
)


def _executor(tmp_path: Path, tasks: int) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=str(tmp_path / "jobs"), cluster="slurm")
    # timeout_min >= 20: submitit counts a signal that comes close to the time limit as a timeout.
    executor.update_parameters(timeout_min=20, tasks_per_node=tasks, cpus_per_task=1, slurm_partition="dev", mem_gb=2)
    return executor


def _result(job: submitit.Job, timeout_s: float = 420) -> Any:
    deadline = time.monotonic() + timeout_s
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel()
            pytest.fail(f"job {job.job_id} did not finish within {timeout_s} s; log: {job.paths.stderr}")
        time.sleep(1.0)
    return job.results()[0]  # task 0's (every task returns the same)


def test_two_task_deepspeed_zero2_follows_the_one_process_loss_curve(tmp_path: Path) -> None:
    config = PARITY.to_dict()
    one = _result(_executor(tmp_path / "one", 1).submit(Requeueable(train_job), config, None))
    job = _executor(tmp_path / "two", 2).submit(Requeueable(train_job), config, None)
    two = _result(job)
    assert len(one["losses"]) >= 20
    assert len(two["losses"]) == len(one["losses"])
    gaps = [abs(a - b) for a, b in zip(one["losses"][:20], two["losses"][:20])]
    assert max(gaps) < 1e-4, gaps
    assert two["metrics"]["ndcg@10"] == pytest.approx(one["metrics"]["ndcg@10"], abs=1e-3)
    log = Path(job.paths.stderr).read_text()
    assert "task 0 of 2" in log  # both tasks joined one process group (gloo)


@pytest.fixture(scope="module")
def uninterrupted() -> dict:
    torch.set_num_threads(1)
    losses: list[float] = []
    result = train_run(RESUMABLE, on_step=lambda step, logged: losses.append(logged["train/loss"]))
    return {"metrics": result.metrics, "history": result.history, "losses": losses}


def _wait_for_checkpoint(directory: Path, job: submitit.Job, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not (directory / "latest").exists():
        assert not job.done(), f"the job ended before its first checkpoint; log: {job.paths.stderr}"
        assert time.monotonic() < deadline, "no checkpoint within the time limit"
        time.sleep(0.3)


def _assert_same_as_uninterrupted(result: dict, reference: dict) -> None:
    resumed = result["resumed_from_step"]
    assert resumed is not None and 0 < resumed < len(reference["losses"])
    assert result["losses"] == reference["losses"][resumed:]
    assert result["metrics"] == reference["metrics"]
    assert result["history"] == reference["history"]


def test_job_signalled_at_its_time_limit_checkpoints_requeues_and_resumes(tmp_path: Path, uninterrupted) -> None:
    checkpoints = tmp_path / "checkpoints"
    job = _executor(tmp_path, 1).submit(Requeueable(train_job), RESUMABLE.to_dict(), str(checkpoints), 10)
    _wait_for_checkpoint(checkpoints, job)
    job._interrupt(timeout=True)  # what Slurm sends 90 s before the time limit: USR2
    result = _result(job)
    _assert_same_as_uninterrupted(result, uninterrupted)
    log = Path(job.paths.stderr).read_text()
    assert "checkpointing after the current step" in log and "resumed from step" in log


def test_job_requeued_by_scontrol_checkpoints_on_sigterm_and_resumes(tmp_path: Path, uninterrupted) -> None:
    checkpoints = tmp_path / "checkpoints"
    job = _executor(tmp_path, 1).submit(Requeueable(train_job), RESUMABLE.to_dict(), str(checkpoints), 10)
    _wait_for_checkpoint(checkpoints, job)
    subprocess.run(["scontrol", "requeue", job.job_id], check=True)  # SIGTERM, SIGKILL after KillWait
    result = _result(job)
    _assert_same_as_uninterrupted(result, uninterrupted)
    assert "received SIGTERM: checkpointing after the current step" in Path(job.paths.stderr).read_text()


SWEEP_SPEC = """
[sweep]
name = "requeued"
metric = "ndcg@10"
max_attempts = 1

[axes]
width = [16]

[base.data]
num_users = 1500
num_items = 120
num_clusters = 6
max_events = 24

[base.model]
max_seq_len = 20
dropout = 0.0

[base.train]
epochs = 2
batch_size = 32
num_negatives = 16
engine = "deepspeed"
zero_stage = 2

[tracking]
mode = "disabled"

[dispatch]
executor = "slurm"
partition = "dev"
tasks_per_node = 2
cpus_per_task = 1
mem_gb = 2
timeout_min = 20
poll_interval_s = 0.5
checkpoint_every_steps = 5
"""


def test_two_task_sweep_run_survives_scontrol_requeue(tmp_path: Path) -> None:
    spec, sweep_dir = tmp_path / "spec.toml", tmp_path / "sweep"
    spec.write_text(SWEEP_SPEC)
    driver = subprocess.Popen(
        [sys.executable, "-m", "gr_scaling", "sweep", "launch", str(spec), "--out", str(sweep_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not list(sweep_dir.glob("runs/*/checkpoints/latest")):
            assert driver.poll() is None, "the sweep ended before its run checkpointed"
            assert time.monotonic() < deadline, "no checkpoint within the time limit"
            time.sleep(0.3)
        (run,) = Ledger(storage_url_for(sweep_dir), "requeued").runs().values()
        assert run.state == "running" and run.job_id
        subprocess.run(["scontrol", "requeue", run.job_id], check=True)
        assert driver.wait(timeout=420) == 0
    finally:
        driver.kill()
    (run,) = Ledger(storage_url_for(sweep_dir), "requeued").runs().values()
    assert run.state == "complete", run.error
    attrs = Ledger(storage_url_for(sweep_dir), "requeued").trial_attrs(run.trial_id)
    assert attrs["requeued"] == 1  # the same attempt, taken back by the requeued job
    assert attrs["resumed_from_step"] > 0
    assert not (sweep_dir / "runs" / run.run_id / "checkpoints").exists()  # removed once complete
    status = subprocess.run(
        [sys.executable, "-m", "gr_scaling", "sweep", "status", str(sweep_dir)], capture_output=True, text=True, check=True
    ).stdout
    assert "complete 1" in status and "requeued and resumed from a checkpoint: 1 run(s), 1 requeue(s)" in status


PACKED_SPEC = """
[sweep]
name = "packed"
metric = "ndcg@10"
max_attempts = 1

[axes]
seed = [0, 1]

[base.data]
num_users = 2400
num_items = 200
num_clusters = 8
max_events = 40

[base.model]
embedding_dim = 48
num_blocks = 2
num_heads = 2
max_seq_len = 32

[base.train]
epochs = 4
batch_size = 32
num_negatives = 32

[tracking]
mode = "disabled"

[dispatch]
executor = "slurm"
partition = "dev"
max_parallel = 1
runs_per_job = 2
mem_gb = 2
timeout_min = 20
poll_interval_s = 0.5
checkpoint_every_steps = 10
"""


def test_a_requeued_packed_job_skips_the_run_it_recorded_and_resumes_the_one_it_was_in(tmp_path: Path) -> None:
    spec, sweep_dir = tmp_path / "spec.toml", tmp_path / "sweep"
    spec.write_text(PACKED_SPEC)
    driver = subprocess.Popen(
        [sys.executable, "-m", "gr_scaling", "sweep", "launch", str(spec), "--out", str(sweep_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 400
        while True:  # the job's first run recorded, its second checkpointed
            assert driver.poll() is None, "the sweep ended before its second run checkpointed"
            assert time.monotonic() < deadline, "the packed job's second run never checkpointed"
            time.sleep(0.3)
            if not (sweep_dir / "ledger.db").exists():
                continue
            runs = Ledger(storage_url_for(sweep_dir), "packed").runs()
            states = sorted(r.state for r in runs.values())
            second = [r for r in runs.values() if r.state == "running"]
            if states == ["complete", "running"] and list(sweep_dir.glob(f"runs/{second[0].run_id}/checkpoints/latest")):
                break
        subprocess.run(["scontrol", "requeue", second[0].job_id], check=True)
        assert driver.wait(timeout=420) == 0
    finally:
        driver.kill()
    ledger = Ledger(storage_url_for(sweep_dir), "packed")
    runs = ledger.runs()
    assert {r.state for r in runs.values()} == {"complete"} and {r.attempts for r in runs.values()} == {1}
    assert len({r.job_id for r in runs.values()}) == 1  # one array task trained both
    first = next(r for r in runs.values() if r.run_id != second[0].run_id)
    assert "requeued" not in ledger.trial_attrs(first.trial_id)  # recorded before the requeue: not trained again
    attrs = ledger.trial_attrs(second[0].trial_id)
    assert attrs["requeued"] == 1 and attrs["resumed_from_step"] > 0
    log = Path(second[0].log_path).read_text()
    assert f"attempt {first.trial_id} of run {first.run_id} was recorded by this job before its requeue" in log


# ---- a requeued sweep job waiting in the queue, while the ledger looks for dead workers ----------


def _sweep_attempt_job(tmp_path: Path, sweep_name: str) -> tuple[Ledger, int, submitit.Job, Path]:
    """A ledger with one run and the sweep's job for it (one array task, as sweeps submit them)."""
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()  # a launch creates it before its ledger; the ledger never creates directories
    ledger = Ledger(storage_url_for(sweep_dir), sweep_name)
    ledger.register([PlannedRun(run_id="r", axis_values={}, config=RESUMABLE.to_dict(), flops={}, params={})])
    trial_id = ledger.runs()["r"].trial_id
    attempt = Attempt(ledger_url=ledger.url, sweep_name=sweep_name, trial_id=trial_id, layout=SweepLayout(sweep_dir),
                      metric="ndcg@10", tracking=TrackingConfig(mode="disabled"), tune=None, checkpoint_every=10)
    (job,) = _executor(tmp_path, 1).map_array(Requeueable(execute_attempt), [attempt])
    ledger.set_job(trial_id, job.job_id, str(job.paths.stderr))
    return ledger, trial_id, job, sweep_dir / "runs" / "r" / "checkpoints"


def _squeue_state(job_id: str) -> str | None:
    out = subprocess.run(squeue_command([job_id]), capture_output=True, text=True, check=True).stdout
    return parse_squeue_states(out).get(job_id)


def _requeue_and_hold(ledger: Ledger, trial_id: int, job: submitit.Job, timeout_s: float = 60) -> None:
    """`scontrol requeuehold`: the job goes back to the queue and stays there until released.
    Returns once its worker process is gone and Slurm shows it pending."""
    pid = ledger.storage.get_trial(trial_id).system_attrs["worker"]["pid"]
    subprocess.run(["scontrol", "requeuehold", job.job_id], check=True)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) or _squeue_state(job.job_id) != "PENDING":
        assert time.monotonic() < deadline, f"job {job.job_id} is {_squeue_state(job.job_id)} after requeuehold"
        time.sleep(0.5)


def _silence_heartbeat(ledger: Ledger, trial_id: int, seconds: int = 3600) -> None:
    """Backdate the attempt's Optuna heartbeat, as if the job had waited in the queue an hour."""
    with sqlite3.connect(ledger.url.removeprefix("sqlite:///")) as db:
        db.execute(
            "UPDATE trial_heartbeats SET heartbeat = datetime('now', ?) WHERE trial_id = ?", (f"-{seconds} seconds", trial_id)
        )


def test_requeued_job_waiting_in_the_queue_keeps_its_attempt_through_recover_and_resumes_it(tmp_path: Path) -> None:
    ledger, trial_id, job, checkpoints = _sweep_attempt_job(tmp_path, "held")
    _wait_for_checkpoint(checkpoints, job)
    _requeue_and_hold(ledger, trial_id, job)
    _silence_heartbeat(ledger, trial_id)
    # Both signs of a dead worker are there: what recover failed the attempt on before.
    running = ledger.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert trial_id in stale_heartbeats(ledger.storage, study_id_of(ledger.study), running)
    assert slurm_jobs_alive([job.job_id]) == {job.job_id: True}

    assert ledger.recover(max_attempts=2, job_alive=slurm_jobs_alive) == []
    assert [a.state for a in ledger.attempts("r")] == ["running"]

    subprocess.run(["scontrol", "release", job.job_id], check=True)
    result = _result(job)
    assert not result.skipped and result.run_id == "r"
    (attempt,) = ledger.attempts("r")  # no second attempt was ever queued
    assert attempt.state == "complete" and attempt.value == pytest.approx(result.value)
    attrs = ledger.trial_attrs(trial_id)
    assert attrs["requeued"] == 1 and attrs["resumed_from_step"] > 0
    deadline = time.monotonic() + 60  # the result is written a moment before the job ends
    while _squeue_state(job.job_id) in ("RUNNING", "COMPLETING") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _squeue_state(job.job_id) == "COMPLETED" and slurm_jobs_alive([job.job_id]) == {job.job_id: False}


def test_requeued_job_whose_attempt_was_failed_meanwhile_does_not_train(tmp_path: Path) -> None:
    ledger, trial_id, job, _ = _sweep_attempt_job(tmp_path, "given-up")
    deadline = time.monotonic() + 120
    while ledger.runs()["r"].state != "running":
        assert not job.done() and time.monotonic() < deadline, f"the job never claimed its attempt; log: {job.paths.stderr}"
        time.sleep(0.3)
    _requeue_and_hold(ledger, trial_id, job)
    # A driver without the scheduler check gives up on the quiet attempt and queues a new one.
    _silence_heartbeat(ledger, trial_id)
    assert ledger.recover(max_attempts=2) == ["r"]
    newer = ledger.pending()[0].trial_id
    assert ledger.claim(newer)  # the newer attempt is training now

    subprocess.run(["scontrol", "release", job.job_id], check=True)
    assert _result(job) == AttemptResult(trial_id=trial_id, skipped=True)
    assert [a.state for a in ledger.attempts("r")] == ["failed", "running"]
    assert ledger.trial_attrs(trial_id).get("requeued") is None  # never taken back
    log = Path(job.paths.stderr).read_text()
    assert f"job {job.job_id} was requeued, but its attempt {trial_id} of run r is fail now" in log
