"""Turning Slurm's "time is up" signal into a checkpoint at a step boundary, then a requeue.

Slurm sends SIGUSR2 shortly before a job's time limit (submitit asks for it with
`--signal=USR2@90`) and on preemption, to every task of the job. submitit's own handler
checkpoints the job's callable and requeues the job the moment the signal lands, which is
mid-step and, for a multi-process run, on rank 0 alone, while the other ranks are inside a
collective. `PreemptionWatch` takes the signal instead and only raises a flag; the trainer polls
it after each step, every process agrees, all save their part of the checkpoint together, and
then `hand_over()` gives the signal to submitit's handler, which requeues the job (rank 0) and
exits. The requeued job calls the same callable again, which resumes from that checkpoint.

A job killed without warning (`scontrol requeue`, a node failure) gets no signal: it resumes
from the last periodic checkpoint instead.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

REQUEUE_SIGNAL = signal.SIGUSR2  # submitit's SlurmJobEnvironment.USR_SIG
NON_MAIN_EXIT_WAIT_S = 120.0


class PreemptionWatch:
    """Context manager: while active, SIGUSR2 sets `requested` instead of stopping the job."""

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._previous: Any = None
        self._installed = False

    def requested(self) -> bool:
        return self._requested.is_set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.warning("received %s: checkpointing after the current step", signal.Signals(signum).name)
        self._requested.set()

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(REQUEUE_SIGNAL, self._on_signal)
            self._installed = True
        else:  # signal handlers can only be set from the main thread; then nothing is watched
            log.warning("not on the main thread: preemption signals are not watched")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(REQUEUE_SIGNAL, self._previous)
            self._installed = False

    def hand_over(self, *, is_main: bool) -> None:
        """After the checkpoint: let submitit requeue the job (rank 0) and end this process.

        submitit's handler requeues and exits on rank 0. The other ranks wait for the requeue to
        stop them (ending first could fail the job before rank 0 has requeued it), and exit
        after NON_MAIN_EXIT_WAIT_S at the latest.
        """
        previous = self._previous
        self.__exit__()
        if callable(previous):
            previous(REQUEUE_SIGNAL, None)  # rank 0: requeues and raises SystemExit
        if is_main:
            raise SystemExit("preempted: checkpoint saved, but there was no submitit handler to requeue the job")
        time.sleep(NON_MAIN_EXIT_WAIT_S)
        raise SystemExit("preempted: checkpoint saved; waiting for the requeue timed out")
