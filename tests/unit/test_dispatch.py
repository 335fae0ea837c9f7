from __future__ import annotations

import math
import operator
import time
from pathlib import Path

from slurm.config import DispatchConfig
from slurm.dispatch import Task, resolve_executor, run_tasks


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


def test_auto_executor_is_local_without_srun(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert resolve_executor(DispatchConfig(executor="auto")) == "local"
    assert resolve_executor(DispatchConfig(executor="slurm")) == "slurm"


def test_zero_division_error_text(tmp_path: Path) -> None:
    [outcome] = run_tasks(
        operator.truediv, [Task(key="x", args=(1, 0))], config=DispatchConfig(poll_interval_s=0.1), folder=tmp_path
    )
    assert not outcome.ok and "division by zero" in (outcome.error or "")
