"""The sweep worker records achieved FLOP/s and MFU (against the measured CPU peak) per run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
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
