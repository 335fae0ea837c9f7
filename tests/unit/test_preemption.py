"""A job's preemption watch and the watch of each run inside it (a packed job's runs)."""

from __future__ import annotations

import os
import signal

import pytest

from slurm.preemption import REQUEUE_SIGNAL, PreemptionWatch


@pytest.fixture
def submitit_handler():
    """Stands in for submitit's SIGUSR2 handler (which requeues the job and exits)."""
    calls: list[int] = []

    def handler(signum, frame):
        calls.append(signum)
        raise SystemExit("requeued")

    previous = signal.signal(REQUEUE_SIGNAL, handler)
    yield calls
    signal.signal(REQUEUE_SIGNAL, previous)


def test_a_signal_after_a_runs_last_step_stays_known_to_the_job(submitit_handler) -> None:
    with PreemptionWatch() as job:
        with PreemptionWatch() as run:
            os.kill(os.getpid(), REQUEUE_SIGNAL)  # after the run's last step: its trainer never polls again
            assert run.requested() and not job.requested()
        assert job.requested()  # the job hands over before its next run
        with pytest.raises(SystemExit, match="requeued"):
            job.hand_over(is_main=True)
    assert submitit_handler == [REQUEUE_SIGNAL]
    assert signal.getsignal(REQUEUE_SIGNAL).__name__ == "handler"  # restored


def test_a_runs_hand_over_inside_a_job_reaches_submitit(submitit_handler) -> None:
    with PreemptionWatch() as job:
        with PreemptionWatch() as run:
            os.kill(os.getpid(), REQUEUE_SIGNAL)
            with pytest.raises(SystemExit, match="requeued"):  # not "no submitit handler to requeue the job"
                run.hand_over(is_main=True)
        assert job.requested()
    assert submitit_handler == [REQUEUE_SIGNAL]


def test_sigterm_alone_stops_without_a_requeue(submitit_handler) -> None:
    with PreemptionWatch() as job:
        with PreemptionWatch() as run:
            os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(SystemExit, match="stopped by SIGTERM"):
            job.hand_over(is_main=True)
        assert run.requested()
    assert submitit_handler == []
