"""Job packing: how many runs a job trains ("auto" and explicit) and how runs are dealt to jobs."""

from __future__ import annotations

import dataclasses

import pytest

from scaling.cost import CostInputs
from slurm.config import DispatchConfig
from sweeps.packing import JOB_FIXED_COST_S, OVERHEAD_SHARE, estimated_seconds, pack, runs_per_job
from sweeps.spec import _dispatch_from_table


def test_auto_packs_small_runs_but_keeps_every_slot_busy() -> None:
    dispatch = DispatchConfig(max_parallel=2)
    assert runs_per_job([0.5] * 12, dispatch) == 6  # tiny runs: as many as keep both slots busy
    assert runs_per_job([0.5] * 13, dispatch) == 7
    assert runs_per_job([0.5] * 3, DispatchConfig(max_parallel=8)) == 1  # fewer runs than slots


def test_auto_packs_until_the_fixed_cost_is_a_small_share() -> None:
    dispatch = DispatchConfig(max_parallel=1, timeout_min=10_000)
    typical = 20.0  # seconds per run: 10 s / (0.05 x 20 s) = 10 runs per job
    assert runs_per_job([typical] * 1000, dispatch) == round(JOB_FIXED_COST_S / (OVERHEAD_SHARE * typical))
    assert runs_per_job([3600.0] * 1000, dispatch) == 1  # hour-long runs: one each


def test_auto_keeps_a_job_within_half_its_time_limit() -> None:
    dispatch = DispatchConfig(max_parallel=1, timeout_min=60)  # 30 min of estimated work per job at most
    assert runs_per_job([1.0] * 999 + [600.0], dispatch) == 3


def test_explicit_runs_per_job_and_runs_of_several_processes() -> None:
    assert runs_per_job([0.1] * 100, DispatchConfig(runs_per_job=4)) == 4
    assert runs_per_job([0.1] * 100, DispatchConfig(tasks_per_node=2)) == 1  # "auto" never packs them
    assert runs_per_job([], DispatchConfig()) == 1


def test_a_10000_run_ladder_becomes_a_few_hundred_array_tasks() -> None:
    cost = CostInputs(device="h100-sxm", mfu=0.4)
    seconds = [estimated_seconds(3e13, cost)] * 10_000  # ~0.08 s of H100 time each
    per_job = runs_per_job(seconds, DispatchConfig(executor="slurm", max_parallel=64))
    jobs = pack(list(range(10_000)), lambda i: seconds[i], per_job)
    assert per_job == 157 and len(jobs) == 64 and sum(len(job) for job in jobs) == 10_000


def test_pack_balances_estimated_time_and_keeps_every_run_once() -> None:
    seconds = {name: s for name, s in zip("abcdefgh", (8, 7, 6, 5, 4, 3, 2, 1))}
    jobs = pack(list(seconds), seconds.__getitem__, 4)
    assert sorted(run for job in jobs for run in job) == sorted(seconds)
    assert [sum(seconds[r] for r in job) for job in jobs] == [18, 18]  # 8+5+4+1, 7+6+3+2
    assert all(job == sorted(job, key=seconds.__getitem__, reverse=True) for job in jobs)  # longest first within a job
    assert pack(["x", "y", "z"], lambda r: 1.0, 1) == [["x"], ["y"], ["z"]]
    # 100 runs, 64 slots, 2 per job: 64 jobs (none of the slots idle), not 50.
    wide = pack(list(range(100)), lambda r: 1.0, 2, min_jobs=64)
    assert len(wide) == 64 and sorted(len(job) for job in wide) == [1] * 28 + [2] * 36
    assert len(pack(["x", "y"], lambda r: 1.0, 2, min_jobs=64)) == 2
    with pytest.raises(ValueError, match="runs per job must be >= 1"):
        pack(["x"], lambda r: 1.0, 0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("many", "dispatch.runs_per_job must be an integer or one of ['auto'], got 'many'"),
        (0, 'dispatch.runs_per_job must be an integer >= 1 or "auto"'),
        (2.5, "must be an integer or one of ['auto'], got 2.5"),
        (True, "must be an integer or one of ['auto'], got True"),
    ],
)
def test_bad_runs_per_job_names_the_field(value: object, message: str) -> None:
    with pytest.raises((TypeError, ValueError)) as raised:
        _dispatch_from_table({"runs_per_job": value}, "spec.toml")
    assert message in str(raised.value) and str(raised.value).startswith("spec.toml: ")


def test_packing_runs_of_several_processes_is_refused() -> None:
    with pytest.raises(ValueError, match="needs runs of one process"):
        dataclasses.replace(DispatchConfig(nodes=2), runs_per_job=3)
    assert DispatchConfig(nodes=2, runs_per_job=1).runs_per_job == 1
