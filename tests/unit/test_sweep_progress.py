"""The driver's plain progress lines (sweeps.progress): what each count means."""

from __future__ import annotations

import logging

import pytest

from sweeps.progress import SweepProgress


def test_a_finished_run_line_counts_the_jobs_in_flight(caplog: pytest.LogCaptureFixture) -> None:
    progress = SweepProgress(total=2, complete=0, to_run_flops=2.0, metric="ndcg@10", live=False)
    progress.started(2)  # two jobs
    with caplog.at_level(logging.INFO, logger="sweeps.progress"):
        progress.finished(run_id="a", axis_values={"width": 8}, flops=1.0, value=0.25, seconds=3.0, ok=True)
        progress.job_ended()
        # The last run is done while its job has yet to exit: a job in flight, no run left.
        progress.finished(run_id="b", axis_values={"width": 16}, flops=1.0, value=0.5, seconds=4.0, ok=True)
    first, last = caplog.messages
    assert first.startswith("run a (width=8): ndcg@10 0.2500 in 3s [1/2 done, 2 jobs running, 0 failed, ")
    assert last.startswith("run b (width=16): ndcg@10 0.5000 in 4s [2/2 done, 1 job running, 0 failed, ")
