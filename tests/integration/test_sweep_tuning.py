"""Per-size tuning with an Optuna sampler and pruner: each scaling point is its size's best run."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.launch import launch_sweep
from sweeps.ledger import Ledger, storage_url_for
from sweeps.optuna_adapter import trial_id_of
from sweeps.spec import load_spec
from sweeps.status import completed_rows
from sweeps.tuning import study_name

SPEC = """
[sweep]
name = "tuned"
metric = "ndcg@10"

[axes]
width = [8, 16]

[tune]
param = "train.lr"
low = 1e-4
high = 3e-2
trials = 3
sampler = "tpe"
pruner = "median"
startup_trials = 1

[base.data]
num_items = 60
num_clusters = 6
min_events = 6
max_events = 20

[base.model]
max_seq_len = 16

[base.train]
epochs = 3
batch_size = 32
num_negatives = 16

[dispatch]
executor = "local"
max_parallel = 2
poll_interval_s = 0.2

[tracking]
mode = "disabled"
"""


@pytest.mark.slow
def test_each_shape_gets_its_trials_and_the_analysis_keeps_the_best(tmp_path: Path) -> None:
    spec_path = tmp_path / "tuned.toml"
    spec_path.write_text(SPEC)
    sweep_dir = tmp_path / "sweep"
    summary = launch_sweep(spec_path, sweep_dir)
    assert summary.failed == []
    ledger = Ledger(storage_url_for(sweep_dir), "tuned")
    runs = ledger.runs()
    assert len(runs) == 6
    assert {r.state for r in runs.values()} <= {"complete", "pruned"}
    shapes = {r.tune["shape"] for r in runs.values()}
    assert len(shapes) == 2
    for shape in shapes:
        study = optuna.load_study(study_name=study_name("tuned", shape), storage=ledger.storage)
        trials = study.get_trials(deepcopy=False)
        assert len(trials) == 3 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        lrs = sorted(t.params["train.lr"] for t in trials)
        assert len(set(lrs)) == 3 and 1e-4 <= lrs[0] and lrs[-1] <= 3e-2
        mine = [r for r in runs.values() if r.tune["shape"] == shape]
        assert sorted(r.config["train"]["lr"] for r in mine) == lrs
        for trial in trials:  # each tuning trial is linked to exactly one ledger run, with its lr
            [run] = [r for r in mine if r.tune["trial_id"] == trial_id_of(trial)]
            assert run.config["train"]["lr"] == trial.params["train.lr"]
            if trial.state == TrialState.COMPLETE:
                assert trial.value == run.metrics["val_ndcg@10"]  # tuned on validation, not test

    spec = load_spec(spec_path)
    best = completed_rows(spec, runs)
    assert len(best) == 2 and {row.shape for row in best} == shapes
    for row in best:
        same_shape = [r for r in completed_rows(spec, runs, best_tuned_only=False) if r.shape == row.shape]
        assert row.metrics["val_ndcg@10"] == max(r.metrics["val_ndcg@10"] for r in same_shape)

    # Launching again asks for nothing new.
    again = launch_sweep(spec_path, sweep_dir)
    assert again.completed == 0 and len(Ledger(storage_url_for(sweep_dir), "tuned").runs()) == 6
