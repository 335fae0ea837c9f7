"""What the driver makes of a packed job's end: each run as the ledger has it, none lost or miscounted."""

from __future__ import annotations

from pathlib import Path

from ledger_backends import planned

from slurm.dispatch import TaskOutcome
from sweeps.launch import _report, _settle_dead_job
from sweeps.ledger import Ledger, storage_url_for
from sweeps.progress import SweepProgress
from sweeps.spec import spec_from_dict
from sweeps.worker import AttemptResult

SPEC = {"sweep": {"name": "packed", "max_attempts": 2}, "axes": {"width": [8]}}


def _packed_job(tmp_path: Path) -> tuple[Ledger, dict, list[int]]:
    ledger = Ledger(storage_url_for(tmp_path), "packed")
    ledger.register([planned("done", 8), planned("died-in", 16), planned("unreached", 32)])
    records = {r.trial_id: r for r in ledger.runs().values()}
    ids = {r.run_id: r.trial_id for r in records.values()}
    for trial_id in ids.values():
        ledger.set_job(trial_id, "41_0", "jobs/41_0_log.err")
    assert ledger.claim(ids["done"]) and ledger.claim(ids["died-in"])
    ledger.complete(ids["done"], value=0.25, results={"wall_time_s": 3.0})
    return ledger, records, [ids["done"], ids["died-in"], ids["unreached"]]


def test_a_killed_packed_job_reports_its_finished_run_fails_the_one_it_was_in_and_requeues_the_rest(
    tmp_path: Path,
) -> None:
    ledger, records, (done, died_in, unreached) = _packed_job(tmp_path)
    spec = spec_from_dict(SPEC, source="spec.toml")
    outcome = TaskOutcome(key=(done, died_in, unreached), job_id="41_0", ok=False, error="killed (OOM)")
    progress = SweepProgress(total=3, complete=0, to_run_flops=0.0, metric="ndcg@10", live=False)
    _settle_dead_job(ledger, outcome, records)
    for trial_id in outcome.key:
        _report(spec, ledger, progress, records[trial_id], outcome, None)
    assert (progress.done, progress.failed) == (1, 0)  # the completed run counts; the failed one will retry
    assert ledger.attempt_state(done) == "complete"
    assert ledger.attempt_state(died_in) == "failed"
    assert "job 41_0 ended without a result: killed (OOM)" in ledger.trial_attrs(died_in)["error"]
    assert ledger.attempt_state(unreached) == "pending"  # not an attempt spent: dispatched again


def test_a_packed_job_that_reached_none_of_its_runs_fails_them_all(tmp_path: Path) -> None:
    ledger = Ledger(storage_url_for(tmp_path), "packed")
    ledger.register([planned("a", 8), planned("b", 16)])
    records = {r.trial_id: r for r in ledger.runs().values()}
    outcome = TaskOutcome(key=tuple(records), job_id="42_0", ok=False, error="ModuleNotFoundError: torch")
    _settle_dead_job(ledger, outcome, records)  # else a job that cannot start is sent out forever
    assert {ledger.attempt_state(t) for t in records} == {"failed"}


def test_a_run_the_job_reported_failed_is_never_left_pending(tmp_path: Path) -> None:
    ledger, records, (done, died_in, unreached) = _packed_job(tmp_path)
    spec = spec_from_dict(SPEC, source="spec.toml")
    progress = SweepProgress(total=3, complete=0, to_run_flops=0.0, metric="ndcg@10", live=False)
    outcome = TaskOutcome(key=(unreached,), job_id="41_0", ok=True, result=[])
    told = AttemptResult(trial_id=unreached, error="ValueError: bad config")
    _report(spec, ledger, progress, records[unreached], outcome, told)
    assert ledger.attempt_state(unreached) == "failed" and ledger.trial_attrs(unreached)["error"] == "ValueError: bad config"


def test_the_driver_reports_a_packed_jobs_runs_as_they_finish_not_when_the_job_ends(tmp_path: Path, monkeypatch) -> None:
    import sweeps.launch as launch

    monkeypatch.setattr(launch, "POLL_PACKED_S", 0.0)
    ledger = Ledger(storage_url_for(tmp_path), "packed")
    ledger.register([planned("a", 8), planned("b", 16), planned("c", 32)])
    records = {r.trial_id: r for r in ledger.runs().values()}
    a, b, c = sorted(records, key=lambda t: records[t].run_id)
    progress = SweepProgress(total=3, complete=0, to_run_flops=0.0, metric="ndcg@10", live=False)
    follower = launch.JobFollower(spec_from_dict(SPEC, source="spec.toml"), ledger, progress, records)
    key = (a, b, c)
    follower.submitted(launch.Task(key=key, args=()), "43_0", "jobs/43_0_log.err")
    assert ledger.claim(a)
    follower.poll()
    assert progress.done == 0  # a is training
    ledger.complete(a, value=0.1, results={"wall_time_s": 1.0})
    assert ledger.claim(b)
    follower.poll()
    assert (progress.done, progress.running) == (1, 1)  # a is on the console while the job trains b
    ledger.complete(b, value=0.2, results={"wall_time_s": 1.0})
    assert ledger.claim(c)
    ledger.complete(c, value=0.3, results={"wall_time_s": 1.0})
    follower.done(TaskOutcome(key=key, job_id="43_0", ok=True,
                              result=[AttemptResult(trial_id=t, run_id=records[t].run_id) for t in key]))
    assert (progress.done, progress.failed, progress.running) == (3, 0, 0)  # b and c once each
