"""A packed job whose own runs are done takes the runs of its wave that no job has started."""

from __future__ import annotations

import time
from pathlib import Path

from sweeps.layout import SweepLayout
from sweeps.ledger import Ledger
from sweeps.plan import plan_sweep
from sweeps.spec import spec_from_dict
from sweeps.worker import Attempt, WaveShare, execute_attempts

SPEC = {
    "sweep": {"name": "share", "metric": "ndcg@10"},
    "axes": {"width": [8, 12, 16]},
    "base": {
        "data": {"num_users": 60, "num_items": 40, "num_clusters": 4, "min_events": 6, "max_events": 12},
        "model": {"max_seq_len": 12, "num_blocks": 1},
        "train": {"epochs": 1, "batch_size": 32, "num_negatives": 8},
    },
    "tracking": {"mode": "disabled"},
}


def _wave(tmp_path: Path) -> tuple[Ledger, list[Attempt]]:
    spec = spec_from_dict(SPEC, source="spec.toml")
    layout = SweepLayout(tmp_path / "sweep")
    layout.root.mkdir()
    ledger = layout.open_ledger(spec, create=True)
    ledger.register(plan_sweep(spec).runs)
    by_width = sorted(ledger.runs().values(), key=lambda r: r.axis_values["width"])
    attempts = [
        Attempt(ledger_url=ledger.url, sweep_name="share", trial_id=r.trial_id, layout=layout, metric="ndcg@10",
                tracking=spec.tracking)
        for r in by_width
    ]
    return ledger, attempts


def test_a_job_trains_its_own_runs_then_the_waves_runs_still_pending_longest_first(tmp_path: Path) -> None:
    ledger, (small, middle, large) = _wave(tmp_path)
    share = WaveShare(trial_ids=(large.trial_id, middle.trial_id, small.trial_id), until_s=600.0)
    assert ledger.claim(middle.trial_id, job_id="other")  # another job of the wave is training it
    began = time.time()
    results = execute_attempts((small,), share)
    assert [r.trial_id for r in results] == [small.trial_id, large.trial_id]  # its own, then the one left
    assert all(r.error is None and not r.skipped and r.value is not None for r in results)
    assert ledger.attempt_state(large.trial_id) == "complete" and ledger.attempt_state(middle.trial_id) == "running"
    claimed_at = ledger.storage.get_trial(large.trial_id).datetime_start.timestamp()
    own_done = ledger.storage.get_trial(small.trial_id).datetime_complete.timestamp()
    assert began <= own_done <= claimed_at  # taken only once its own run was done


def test_a_job_past_its_share_budget_takes_no_more_runs(tmp_path: Path) -> None:
    ledger, (small, middle, large) = _wave(tmp_path)
    share = WaveShare(trial_ids=(large.trial_id, middle.trial_id, small.trial_id), until_s=0.0)
    results = execute_attempts((small,), share)
    assert [r.trial_id for r in results] == [small.trial_id]
    assert ledger.attempt_state(middle.trial_id) == ledger.attempt_state(large.trial_id) == "pending"


def test_a_failing_run_taken_from_the_wave_is_recorded_and_the_job_goes_on(tmp_path: Path) -> None:
    ledger, (small, middle, large) = _wave(tmp_path)
    config = ledger.trial_attrs(middle.trial_id)["config"]
    config["train"]["batch_size"] = 0  # refused when the job reads it, before it is claimed
    ledger.storage.set_trial_user_attr(middle.trial_id, "config", config)
    share = WaveShare(trial_ids=(middle.trial_id, large.trial_id), until_s=600.0)
    results = execute_attempts((small,), share)
    assert [r.trial_id for r in results] == [small.trial_id, middle.trial_id, large.trial_id]
    assert results[1].error is not None and "batch_size" in results[1].error
    assert [ledger.attempt_state(a.trial_id) for a in (small, middle, large)] == ["complete", "failed", "complete"]


def test_more_jobs_than_slots_the_first_job_takes_the_waiting_jobs_runs_and_each_is_reported_once(
    tmp_path: Path, caplog
) -> None:
    import logging

    from gr_scaling.cli import main

    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[sweep]\nname = "share"\nmetric = "ndcg@10"\n\n[axes]\nwidth = [8, 12, 16]\nseed = [0, 1]\n\n'
        "[base.data]\nnum_users = 60\nnum_items = 40\nnum_clusters = 4\nmin_events = 6\nmax_events = 12\n\n"
        "[base.model]\nmax_seq_len = 12\nnum_blocks = 1\n\n[base.train]\nepochs = 1\nbatch_size = 32\nnum_negatives = 8\n\n"
        '[dispatch]\nexecutor = "local"\nmax_parallel = 1\nruns_per_job = 2\npoll_interval_s = 0.2\n\n'
        '[tracking]\nmode = "disabled"\n'
    )
    sweep_dir = tmp_path / "sweep"
    with caplog.at_level(logging.INFO, logger="sweeps"):
        assert main(["sweep", "launch", str(spec), "--out", str(sweep_dir)]) == 0
    runs = Ledger(f"sqlite:///{sweep_dir / 'ledger.db'}", "share").runs()
    assert len(runs) == 6 and {r.state for r in runs.values()} == {"complete"}
    assert {r.attempts for r in runs.values()} == {1}
    reported = [line for line in caplog.text.splitlines() if "sweeps.progress" in line or "ndcg@10 0." in line]
    for run_id in runs:
        assert sum(f"run {run_id} " in line for line in reported) == 1, run_id


def test_a_requeued_job_takes_back_the_run_it_had_taken_from_another_job(tmp_path: Path, monkeypatch) -> None:
    import slurm.jobs
    import sweeps.worker
    from slurm.jobs import JobPlace

    ledger, (small, middle, large) = _wave(tmp_path)
    place = JobPlace(job_id="5_0")
    monkeypatch.setattr(sweeps.worker, "current_job", lambda: place)
    monkeypatch.setattr(slurm.jobs, "current_job", lambda: place)
    assert ledger.claim(large.trial_id, job_id="5_0")  # its life before the requeue took `large` from the wave
    share = WaveShare(trial_ids=(large.trial_id, middle.trial_id, small.trial_id), until_s=0.0)  # no new runs
    results = execute_attempts((small,), share)
    assert [r.trial_id for r in results] == [small.trial_id, large.trial_id]
    assert ledger.attempt_state(large.trial_id) == "complete" and ledger.trial_attrs(large.trial_id)["requeued"] == 1
    assert ledger.attempt_state(middle.trial_id) == "pending"


def test_a_run_that_fails_before_its_claim_does_not_fail_another_jobs_attempt(tmp_path: Path) -> None:
    ledger, (small, middle, large) = _wave(tmp_path)
    config = ledger.trial_attrs(middle.trial_id)["config"]
    config["train"]["batch_size"] = 0  # this job cannot even read it ...
    ledger.storage.set_trial_user_attr(middle.trial_id, "config", config)
    assert ledger.claim(middle.trial_id, job_id="other")  # ... while another job trains it
    results = execute_attempts((small, middle), None)
    assert results[1].error is not None and "batch_size" in results[1].error
    assert ledger.attempt_state(middle.trial_id) == "running"
