"""Where a job's time goes: the process start read from /proc, the clock's marks, the status line."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from sweeps.job_timing import JobClock, process_started_at
from sweeps.ledger_records import RunRecord
from sweeps.progress import duration_text
from sweeps.status import time_in_jobs

READ_START = "import json, time; from sweeps.job_timing import process_started_at; " \
             "print(json.dumps([process_started_at(), time.time()]))"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_process_start_is_when_the_process_was_started() -> None:
    before = time.time()
    out = subprocess.run([sys.executable, "-c", READ_START], capture_output=True, text=True, check=True).stdout
    started, read_at = json.loads(out)
    # /proc counts in clock ticks (10 ms): allow two of them either side of the spawn.
    assert before - 0.02 <= started <= read_at
    assert started - before < 5.0  # the interpreter starts at once; the imports come after
    assert abs(process_started_at() - process_started_at()) < 0.2  # stable within the process


def test_clock_marks_add_up_and_the_document_names_every_phase() -> None:
    clock = JobClock()
    time.sleep(0.05)
    assert 0.05 <= clock.mark("claim") < 1.0
    time.sleep(0.02)
    clock.mark("tracker")
    clock.mark("claim")  # a second mark of a phase adds to it
    timings = clock.timings({"data": 0.5, "setup": 0.25, "train": 3.0, "eval": 1.0})
    assert timings["claim_s"] >= 0.05 and timings["tracker_s"] >= 0.02
    assert (timings["data_s"], timings["setup_s"], timings["train_s"], timings["eval_s"]) == (0.5, 0.25, 3.0, 1.0)
    assert timings["in_run_s"] == 4.0
    assert timings["startup_s"] is None or timings["startup_s"] >= 0


def _record(run_id: str, timings: dict) -> RunRecord:
    return RunRecord(run_id=run_id, trial_id=0, state="complete", attempts=1, axis_values={}, config={}, flops={},
                     params={}, metrics={}, value=None, error=None, job_id=None, log_path=None, wall_time_s=None,
                     timings=timings)


def test_status_says_where_the_time_in_jobs_went() -> None:
    one = {"startup_s": 6.0, "claim_s": 0.2, "tracker_s": 1.0, "train_call_s": 12.0, "data_s": 1.0,
           "setup_s": 1.0, "train_s": 6.0, "eval_s": 2.0, "record_s": 0.1}
    two = {**one, "startup_s": None}  # no /proc where it ran
    line = time_in_jobs([_record("a", one), _record("b", two), _record("c", {})])
    # Summed over the two timed runs: startup 6, tracker 2, data 2, setup 2, train 12, eval 4, and
    # the trainer's own imports 2 x (12 - 10) = 4; training and evaluation are 16 of 32.6 s.
    assert line is not None and line.startswith("  time in jobs (2 run(s)): startup 6 s, ")
    assert "train 12 s, eval 4 s" in line and "trainer other 4 s" in line
    assert "training and evaluation 49% of it (evaluation 25% of those)" in line
    assert time_in_jobs([_record("c", {})]) is None


@pytest.mark.parametrize("seconds, text", [(0.4, "0s"), (59.4, "59s"), (59.6, "1m00s"), (599.6, "10m00s"),
                                           (605.0, "10m05s"), (3599.6, "1h00m"), (3725.0, "1h02m"), (-3.0, "0s")])
def test_durations_round_before_they_split(seconds: float, text: str) -> None:
    # The driver's estimate once read "~9m60s left".
    assert duration_text(seconds) == text
