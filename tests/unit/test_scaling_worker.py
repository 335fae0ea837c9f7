"""The sweep worker records achieved FLOP/s and MFU (against the measured CPU peak) per run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sweeps.ledger import Ledger, storage_url_for
from sweeps.plan import plan_run
from sweeps.spec import TrackingConfig
from sweeps.worker import execute_attempt, run_dir_for


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
    execute_attempt(storage_url_for(tmp_path), "mfu", trial_id, str(tmp_path), "ndcg@10",
                    TrackingConfig(mode="disabled"))
    results = json.loads((run_dir_for(tmp_path, config.run_id) / "result.json").read_text())
    executed = planned.flops["train"] + planned.flops["eval_total"]  # the timed span trains and evaluates
    assert results["achieved_flops_per_s"] == pytest.approx(executed / results["train_time_s"])
    assert results["mfu"] == pytest.approx(results["achieved_flops_per_s"] / results["peak_flops_per_s"])
    assert 0 < results["mfu"] < 1
    assert results["peak_source"] == "cpu float32 matmul, measured at 1 thread(s), x 1 process(es)"
    assert (results["device"], results["precision"]) == ("cpu", "fp32")
    assert ledger.runs()[config.run_id].state == "complete"
    stored = ledger.trial_attrs(trial_id)  # the ledger carries the same figures as result.json
    assert stored["mfu"] == results["mfu"] and stored["flops"]["train"] == planned.flops["train"]
