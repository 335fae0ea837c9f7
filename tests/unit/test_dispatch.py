from __future__ import annotations

import logging
import math
import operator
import re
import time
import types
from pathlib import Path

import pytest
import submitit

from slurm import dispatch
from slurm.config import DispatchConfig
from slurm.dispatch import Task, array_chunks, parse_max_array_size, resolve_executor, run_tasks, slurm_parameters
from sweeps.spec import load_spec


def test_local_tasks_return_results_and_remote_errors(tmp_path: Path) -> None:
    config = DispatchConfig(executor="local", max_parallel=2, poll_interval_s=0.1)
    tasks = [Task(key=i, args=(float(x),)) for i, x in enumerate([4, 9, -1])]
    outcomes = {o.key: o for o in run_tasks(math.sqrt, tasks, config=config, folder=tmp_path)}
    assert outcomes[0].ok and outcomes[0].result == 2.0
    assert outcomes[1].ok and outcomes[1].result == 3.0
    assert not outcomes[2].ok
    assert outcomes[2].error is not None and "math domain error" in outcomes[2].error
    assert outcomes[2].log_path and Path(outcomes[2].log_path).exists()
    assert "ValueError" in Path(outcomes[2].log_path).read_text()


def test_local_pool_never_exceeds_max_parallel(tmp_path: Path) -> None:
    config = DispatchConfig(executor="local", max_parallel=2, poll_interval_s=0.05)
    in_flight, peak = set(), 0

    def on_submit(task: Task, job_id: str, log_path: str) -> None:
        nonlocal peak
        in_flight.add(task.key)
        peak = max(peak, len(in_flight))

    started = time.perf_counter()
    outcomes = run_tasks(
        time.sleep,
        [Task(key=i, args=(0.6,)) for i in range(4)],
        config=config,
        folder=tmp_path,
        on_submit=on_submit,
        on_done=lambda o: in_flight.discard(o.key),
    )
    assert peak == 2
    assert all(o.ok for o in outcomes) and len(outcomes) == 4
    assert time.perf_counter() - started >= 1.2  # two waves of two


def test_a_local_jobs_end_is_seen_without_waiting_for_the_poll_interval(tmp_path: Path) -> None:
    # poll_interval_s spares Slurm's squeue; a local job's end is a waitpid, seen within
    # LOCAL_CHECK_S, so its slot goes to the next task at once (the demo's tail waited up to 1 s).
    config = DispatchConfig(executor="local", max_parallel=1, poll_interval_s=60.0)
    polls = []
    started = time.perf_counter()
    outcomes = run_tasks(math.sqrt, [Task(key=i, args=(float(i * i),)) for i in range(3)], config=config,
                         folder=tmp_path, on_poll=lambda: polls.append(time.perf_counter()))
    assert [o.result for o in outcomes] == [0.0, 1.0, 2.0]
    assert time.perf_counter() - started < 30.0  # three 60 s polls before this change
    assert len(polls) == 3  # on_poll still runs after each local job's end


def test_auto_executor_is_local_without_srun(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert resolve_executor(DispatchConfig(executor="auto")) == "local"
    assert resolve_executor(DispatchConfig(executor="slurm")) == "slurm"


def test_zero_division_error_text(tmp_path: Path) -> None:
    [outcome] = run_tasks(
        operator.truediv, [Task(key="x", args=(1, 0))], config=DispatchConfig(poll_interval_s=0.1), folder=tmp_path
    )
    assert not outcome.ok and "division by zero" in (outcome.error or "")


# ---- Slurm: resources, MaxArraySize splitting (no cluster needed) ------------------------------
class _FakeJob:
    def __init__(self, job_id: str, value: object) -> None:
        self.job_id, self._value = job_id, value
        self.paths = types.SimpleNamespace(stderr=Path(f"/logs/{job_id}_0_log.err"))
        self.polled = False

    def done(self) -> bool:  # done from the second poll on
        was, self.polled = self.polled, True
        return was

    def results(self) -> list[object]:  # one per task of the job
        return [self._value]


class _FakeArrayExecutor:
    """Stands in for submitit's Slurm executor: one "sbatch --array" per map_array call."""

    def __init__(self) -> None:
        self.arrays: list[list[_FakeJob]] = []

    def map_array(self, fn, *iterables):
        # Arrays go out one after another: everything submitted before must be finished.
        assert all(job.polled and job.done() for array in self.arrays for job in array)
        array_id = 100 + len(self.arrays)
        jobs = [_FakeJob(f"{array_id}_{i}", fn(*args)) for i, args in enumerate(zip(*iterables))]
        self.arrays.append(jobs)
        return jobs


def test_tasks_beyond_max_array_size_are_split_into_arrays(tmp_path: Path, monkeypatch) -> None:
    fake = _FakeArrayExecutor()
    monkeypatch.setattr(dispatch, "_make_executor", lambda config, folder, job_name=None: fake)
    monkeypatch.setattr(dispatch, "cluster_max_array_size", lambda: 3)  # a small fake cluster limit
    recorded: dict[int, str] = {}
    outcomes = run_tasks(
        operator.neg,
        [Task(key=i, args=(i,)) for i in range(7)],
        config=DispatchConfig(executor="slurm", poll_interval_s=0.001),
        folder=tmp_path,
        on_submit=lambda task, job_id, log_path: recorded.__setitem__(task.key, job_id),
    )
    assert [len(array) for array in fake.arrays] == [3, 3, 1]
    assert recorded == {0: "100_0", 1: "100_1", 2: "100_2", 3: "101_0", 4: "101_1", 5: "101_2", 6: "102_0"}
    assert sorted((o.key, o.result, o.job_id) for o in outcomes) == [(i, -i, recorded[i]) for i in range(7)]
    assert all(o.ok and o.log_path == f"/logs/{o.job_id}_0_log.err" for o in outcomes)


def test_array_chunks_and_max_array_size_parsing() -> None:
    tasks = [Task(key=i, args=()) for i in range(5)]
    assert [len(c) for c in array_chunks(tasks, 2)] == [2, 2, 1]
    assert [len(c) for c in array_chunks(tasks, 1001)] == [5]
    assert [len(c) for c in array_chunks(tasks, 0)] == [1] * 5  # MaxArraySize=0: no arrays
    text = "MailProg                = /bin/true\nMaxArraySize            = 77\nMaxJobCount             = 10000\n"
    assert parse_max_array_size(text) == 77
    assert parse_max_array_size("MaxJobCount = 10000\n") is None


def test_max_array_size_falls_back_to_slurms_default_without_scontrol(monkeypatch, caplog) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    dispatch.cluster_max_array_size.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="slurm.dispatch"):
            assert dispatch.cluster_max_array_size() == dispatch.DEFAULT_MAX_ARRAY_SIZE == 1001
        assert "could not read MaxArraySize" in caplog.text
    finally:
        dispatch.cluster_max_array_size.cache_clear()


def test_spec_resources_become_sbatch_options(tmp_path: Path) -> None:
    config = DispatchConfig(
        executor="slurm", max_parallel=3, timeout_min=90, partition="gpu", account="proj", qos="high",
        nodes=2, tasks_per_node=4, gpus_per_node=4, cpus_per_task=8, mem_gb=64,
        slurm_additional_parameters={"constraint": "a100", "exclusive": True, "mail-type": "END"},
    )
    executor = submitit.AutoExecutor(folder=str(tmp_path), cluster="slurm")
    executor.update_parameters(**slurm_parameters(config))
    slurm_executor = executor._executor
    slurm_executor.parameters["map_count"] = 5  # as map_array sets it for an array of 5
    lines = set(slurm_executor._make_submission_file_text("python -u job.py", "uid").splitlines())
    expected = {
        "--partition=gpu", "--account=proj", "--qos=high", "--time=90", "--nodes=2", "--ntasks-per-node=4",
        "--gpus-per-node=4", "--cpus-per-task=8", "--mem=64GB", "--constraint=a100", "--exclusive",
        "--mail-type=END", "--array=0-4%3",
    }
    assert {f"#SBATCH {flag}" for flag in expected} <= lines


def test_defaults_add_no_gpu_memory_or_account_options() -> None:
    params = slurm_parameters(DispatchConfig(executor="slurm"))
    assert params == {
        "timeout_min": 120, "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 1, "slurm_array_parallelism": 2
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"time": "10"}, "set by dispatch.timeout_min"),
        ({"array": "0-3"}, "set by dispatch.max_parallel"),
        ({"output": "x.log"}, "set by submitit"),
        ({"--constraint": "a100"}, "write 'constraint'"),
        ({"exclusive": False}, "leave the option out"),
        ({"constraint": ["a", "b"]}, "must be a string, number or true"),
    ],
)
def test_additional_parameters_are_checked(extra: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        DispatchConfig(executor="slurm", slurm_additional_parameters=extra)


def test_resource_fields_are_checked() -> None:
    for kwargs, message in (
        ({"nodes": 0}, "dispatch.nodes must be >= 1"),
        ({"tasks_per_node": 0}, "dispatch.tasks_per_node must be >= 1"),
        ({"gpus_per_node": -1}, "dispatch.gpus_per_node must be >= 0"),
        ({"mem_gb": 0.0}, "dispatch.mem_gb must be > 0"),
        ({"partition": "a b"}, "dispatch.partition must be a non-empty name"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            DispatchConfig(**kwargs)


def test_spec_dispatch_table_reads_slurm_resources(tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    body = '[sweep]\nname = "s"\n\n[axes]\nwidth = [8]\n\n'
    spec.write_text(
        body + '[dispatch]\nexecutor = "slurm"\npartition = "gpu"\nmem_gb = 8\ngpus_per_node = 1\n'
        '[dispatch.slurm_additional_parameters]\nconstraint = "a100"\nexclusive = true\n'
    )
    dispatch_config = load_spec(spec).dispatch
    assert (dispatch_config.partition, dispatch_config.mem_gb, dispatch_config.gpus_per_node) == ("gpu", 8.0, 1)
    assert dispatch_config.slurm_additional_parameters == {"constraint": "a100", "exclusive": True}
    spec.write_text(body + '[dispatch.slurm_additional_parameters]\ntime = "10"\n')
    with pytest.raises(ValueError, match=r"s\.toml: .*--time is set by dispatch\.timeout_min"):
        load_spec(spec)


def test_local_executor_warns_about_slurm_only_settings(tmp_path: Path, caplog) -> None:
    config = DispatchConfig(executor="local", partition="gpu", gpus_per_node=1, poll_interval_s=0.05)
    with caplog.at_level(logging.WARNING, logger="slurm.dispatch"):
        [outcome] = run_tasks(abs, [Task(key=0, args=(-2,))], config=config, folder=tmp_path)
    assert outcome.result == 2
    assert "local executor ignores dispatch.partition, dispatch.gpus_per_node" in caplog.text
