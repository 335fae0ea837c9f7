"""What the driver makes of a packed job's end: each run as the ledger has it, none lost or miscounted."""

from __future__ import annotations

from pathlib import Path

from ledger_backends import planned

import pytest

from slurm.dispatch import Task, TaskOutcome
from sweeps.launch import JobFollower, _report, _settle_dead_job
from sweeps.ledger import Ledger, storage_url_for
from sweeps.progress import SweepProgress
from sweeps.spec import spec_from_dict
from sweeps.worker import AttemptResult, WaveShare

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


def _follower(ledger: Ledger, records: dict) -> tuple[JobFollower, SweepProgress]:
    progress = SweepProgress(total=len(records), complete=0, to_run_flops=0.0, metric="ndcg@10", live=False)
    return JobFollower(spec_from_dict(SPEC, source="spec.toml"), ledger, progress, records, packed=True), progress


def test_a_wave_whose_jobs_reached_none_of_its_runs_fails_them_all(tmp_path: Path) -> None:
    ledger = Ledger(storage_url_for(tmp_path), "packed")
    ledger.register([planned("a", 8), planned("b", 16), planned("c", 32)])
    records = {r.trial_id: r for r in ledger.runs().values()}
    a, b, c = sorted(records)
    follower, _ = _follower(ledger, records)
    share = WaveShare(trial_ids=(c, b, a), until_s=60.0)
    for key, job_id in (((a, b), "42_0"), ((c,), "42_1")):
        follower.submitted(Task(key=key, args=((), share)), job_id, f"jobs/{job_id}_0_log.err")
    follower.done(TaskOutcome(key=(a, b), job_id="42_0", ok=False, error="ModuleNotFoundError: torch"))
    assert {ledger.attempt_state(t) for t in records} == {"pending"}  # the other job may still take them
    follower.done(TaskOutcome(key=(c,), job_id="42_1", ok=False, error="ModuleNotFoundError: torch"))
    follower.wave_ended()  # else a job that cannot start is sent out forever
    assert {ledger.attempt_state(t) for t in records} == {"failed"}
    assert ledger.trial_attrs(a)["error"] == "job 42_0 ended without a result: ModuleNotFoundError: torch"


def test_a_dead_job_fails_only_the_run_it_held_not_one_another_job_took_from_its_list(tmp_path: Path) -> None:
    ledger = Ledger(storage_url_for(tmp_path), "packed")
    ledger.register([planned("a", 8), planned("b", 16), planned("c", 32)])
    records = {r.trial_id: r for r in ledger.runs().values()}
    a, b, c = sorted(records)
    follower, progress = _follower(ledger, records)
    share = WaveShare(trial_ids=(c, b, a), until_s=60.0)
    follower.submitted(Task(key=(a, b), args=((), share)), "7_0", "jobs/7_0_log.err")
    follower.submitted(Task(key=(c,), args=((), share)), "7_1", "jobs/7_1_log.err")
    assert ledger.claim(a, job_id="7_0") and ledger.claim(c, job_id="7_1")
    ledger.complete(c, value=0.3, results={"wall_time_s": 1.0})
    assert ledger.claim(b, job_id="7_1", log_path="jobs/7_1_log.err")  # job 7_1 takes b from 7_0's list
    assert ledger.trial_attrs(b)["job_id"] == "7_1" and ledger.trial_attrs(b)["log_path"] == "jobs/7_1_log.err"
    follower.done(TaskOutcome(key=(a, b), job_id="7_0", ok=False, error="killed (OOM)"))
    assert ledger.attempt_state(a) == "failed" and ledger.attempt_state(b) == "running"
    assert (progress.done, progress.failed) == (0, 0)  # a fails into a retry, b still trains (c: its job's end)
    ledger.complete(b, value=0.2, results={"wall_time_s": 2.0})
    follower.done(TaskOutcome(key=(c,), job_id="7_1", ok=True, result=[
        AttemptResult(trial_id=c, run_id=records[c].run_id, value=0.3),
        AttemptResult(trial_id=b, run_id=records[b].run_id, value=0.2, wall_time_s=2.0)]))
    follower.wave_ended()
    assert (progress.done, progress.failed) == (2, 0)  # b once, from the job that trained it


def test_a_run_another_job_took_is_not_reported_as_untrained_by_the_job_it_was_dealt_to(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(storage_url_for(tmp_path), "packed")
    ledger.register([planned("a", 8), planned("b", 16)])
    records = {r.trial_id: r for r in ledger.runs().values()}
    a, b = sorted(records)
    follower, progress = _follower(ledger, records)
    share = WaveShare(trial_ids=(b, a), until_s=60.0)
    follower.submitted(Task(key=(a, b), args=((), share)), "8_0", "jobs/8_0_log.err")
    follower.submitted(Task(key=(), args=((), share)), "8_1", "jobs/8_1_log.err")
    assert ledger.claim(a, job_id="8_0") and ledger.claim(b, job_id="8_1")
    ledger.complete(a, value=0.1, results={"wall_time_s": 1.0})
    ledger.complete(b, value=0.2, results={"wall_time_s": 1.0})
    follower.done(TaskOutcome(key=(a, b), job_id="8_0", ok=True, result=[
        AttemptResult(trial_id=a, run_id="a", value=0.1), AttemptResult(trial_id=b, skipped=True)]))
    assert "did not train" not in caplog.text
    assert (progress.done, progress.failed) == (2, 0)


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
    monkeypatch.setattr(launch, "POLL_SHARE", 1.0)
    ledger = Ledger(storage_url_for(tmp_path), "packed")
    ledger.register([planned("a", 8), planned("b", 16), planned("c", 32)])
    records = {r.trial_id: r for r in ledger.runs().values()}
    a, b, c = sorted(records, key=lambda t: records[t].run_id)
    progress = SweepProgress(total=3, complete=0, to_run_flops=0.0, metric="ndcg@10", live=False)
    follower = launch.JobFollower(spec_from_dict(SPEC, source="spec.toml"), ledger, progress, records, packed=True)
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


def test_a_run_taken_from_a_job_not_yet_started_is_reported_once(tmp_path: Path) -> None:
    # More jobs than slots: the local executor starts job 10_1 only when a slot frees, but job
    # 10_0 may take the runs of 10_1's list meanwhile; the driver reports them as they finish.
    ledger = Ledger(storage_url_for(tmp_path), "packed")
    ledger.register([planned("a", 8), planned("b", 16)])
    records = {r.trial_id: r for r in ledger.runs().values()}
    a, b = sorted(records)
    follower, progress = _follower(ledger, records)
    share = WaveShare(trial_ids=(b, a), until_s=60.0)
    follower.submitted(Task(key=(a,), args=((), share)), "10_0", "jobs/10_0_log.err")
    assert ledger.claim(b, job_id="10_0", log_path="jobs/10_0_log.err")  # b was dealt to 10_1, not started
    ledger.complete(b, value=0.2, results={"wall_time_s": 1.0})
    follower.poll()
    assert progress.done == 1
    follower.submitted(Task(key=(b,), args=((), share)), "10_1", "jobs/10_1_log.err")  # starts late, finds b done
    assert ledger.trial_attrs(b)["job_id"] == "10_0"  # the job that trained it stays on record
    follower.done(TaskOutcome(key=(b,), job_id="10_1", ok=True, result=[AttemptResult(trial_id=b, skipped=True)]))
    assert ledger.claim(a, job_id="10_0")
    ledger.complete(a, value=0.1, results={"wall_time_s": 1.0})
    follower.done(TaskOutcome(key=(a,), job_id="10_0", ok=True, result=[
        AttemptResult(trial_id=a, run_id=records[a].run_id, value=0.1),
        AttemptResult(trial_id=b, run_id=records[b].run_id, value=0.2)]))
    follower.wave_ended()
    assert (progress.done, progress.failed) == (2, 0)
