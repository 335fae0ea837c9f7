"""The sweep worker records achieved FLOP/s and MFU (against the measured CPU peak) per run, and the
threads a run computed with (train.num_threads, "auto" from the CPUs its job gives each run)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gr_core.threads import CPUS_PER_RUN_ENV, intra_op_threads
from slurm.config import DispatchConfig
from slurm.dispatch import cpus_per_run
from sweeps.layout import SweepLayout
from sweeps.ledger import Ledger, storage_url_for
from sweeps.plan import plan_run
from sweeps.spec import TrackingConfig
from sweeps.worker import Attempt, AttemptResult, execute_attempt


def test_worker_records_achieved_flops_and_mfu(tmp_path: Path) -> None:
    config = RunConfig(
        data=DataConfig(num_users=30, num_items=40, num_clusters=4, max_events=15),
        model=ModelConfig(num_blocks=1, embedding_dim=8, max_seq_len=10),
        train=TrainConfig(epochs=1, batch_size=16, num_negatives=4),
    )
    planned = plan_run(config, {"width": 8})
    ledger = Ledger(storage_url_for(tmp_path), "mfu", higher_is_better=True)
    ledger.register([planned])
    trial_id = ledger.runs()[config.run_id].trial_id
    layout = SweepLayout(tmp_path)
    told = execute_attempt(Attempt(ledger_url=storage_url_for(tmp_path), sweep_name="mfu", trial_id=trial_id,
                                   layout=layout, metric="ndcg@10", tracking=TrackingConfig(mode="disabled")))
    run_dir = layout.run(config.run_id)
    results = json.loads(run_dir.result.read_text())
    assert json.loads(run_dir.config.read_text()) == planned.config  # the config as the ledger holds it
    assert told == AttemptResult(trial_id=trial_id, run_id=config.run_id, value=results["metrics"]["ndcg@10"],
                                 wall_time_s=results["wall_time_s"])
    executed = planned.flops["train"] + planned.flops["eval_total"]  # the timed span trains and evaluates
    assert results["achieved_flops_per_s"] == pytest.approx(executed / results["train_time_s"])
    assert results["mfu"] == pytest.approx(results["achieved_flops_per_s"] / results["peak_flops_per_s"])
    assert 0 < results["mfu"] < 1
    assert results["peak_source"] == "cpu float32 matmul, measured at 1 thread(s), x 1 process(es)"
    assert (results["device"], results["precision"]) == ("cpu", "fp32")
    assert ledger.runs()[config.run_id].state == "complete"
    stored = ledger.trial_attrs(trial_id)  # the ledger carries the same figures as result.json
    assert stored["mfu"] == results["mfu"] and stored["flops"]["train"] == planned.flops["train"]


def test_auto_threads_take_the_cpus_the_job_gives_each_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CPUS_PER_RUN_ENV, "7")  # whatever the job process had is replaced, and restored after
    config = RunConfig(
        data=DataConfig(num_users=30, num_items=40, num_clusters=4, max_events=15),
        model=ModelConfig(num_blocks=1, embedding_dim=8, max_seq_len=10),
        train=TrainConfig(epochs=1, batch_size=16, num_negatives=4, num_threads="auto"),
    )
    assert config.run_id != dataclasses.replace(config, train=dataclasses.replace(config.train, num_threads=2)).run_id
    ledger = Ledger(storage_url_for(tmp_path), "auto", higher_is_better=True)
    ledger.register([plan_run(config, {})])
    layout = SweepLayout(tmp_path)
    threads_before = torch.get_num_threads()
    try:
        execute_attempt(Attempt(ledger_url=storage_url_for(tmp_path), sweep_name="auto",
                                trial_id=ledger.runs()[config.run_id].trial_id, layout=layout, metric="ndcg@10",
                                tracking=TrackingConfig(mode="disabled"), cpus_per_run=2))
    finally:
        torch.set_num_threads(threads_before)
    results = json.loads(layout.run(config.run_id).result.read_text())
    assert results["threads"] == 2
    assert results["peak_source"] == "cpu float32 matmul, measured at 2 thread(s), x 1 process(es)"


def test_intra_op_threads_as_given_or_from_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CPUS_PER_RUN_ENV, raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert intra_op_threads(3) == 3
    assert intra_op_threads("auto") == len(os.sched_getaffinity(0))  # no job said: the affinity mask
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert intra_op_threads("auto") == 6
    monkeypatch.setenv(CPUS_PER_RUN_ENV, "4")  # the sweep's own figure comes first
    assert intra_op_threads("auto") == 4
    monkeypatch.setenv(CPUS_PER_RUN_ENV, "")
    assert intra_op_threads("auto") == 6


def test_cpus_per_run_share_the_machine_locally_and_leave_slurm_to_its_allocation() -> None:
    cpus = len(os.sched_getaffinity(0))  # what this process may use, not every CPU of the machine
    assert cpus_per_run(DispatchConfig(max_parallel=1), "local") == cpus
    assert cpus_per_run(DispatchConfig(max_parallel=cpus * 4), "local") == 1
    assert cpus_per_run(DispatchConfig(max_parallel=1, cpus_per_task=8), "slurm") is None
