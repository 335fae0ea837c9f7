"""Turning Slurm's "time is up" signal into a checkpoint at a step boundary, then a requeue.

Slurm sends SIGUSR2 shortly before a job's time limit (submitit asks for it with
`--signal=USR2@90`) and on preemption, to every task of the job. submitit's own handler
checkpoints the job's callable and requeues the job the moment the signal lands, which is
mid-step and, for a multi-process run, on rank 0 alone, while the other ranks are inside a
collective. `PreemptionWatch` takes the signal instead and only raises a flag; the trainer polls
it after each step, every process agrees, all save their part of the checkpoint together, and
then `hand_over()` gives the signal to submitit's handler, which requeues the job (rank 0) and
exits. The requeued job calls the same callable again, which resumes from that checkpoint.

Slurm also stops jobs with SIGTERM, KillWait seconds (30 by default) before SIGKILL: when it
requeues them itself (`scontrol requeue`, preemption with PreemptMode=REQUEUE) and when they
are cancelled. submitit ignores SIGTERM; the watch treats it like SIGUSR2 (checkpoint at the
next step), then simply exits, since Slurm is already requeueing or ending the job. A job killed
with no signal at all (a node failure) resumes from the last periodic checkpoint.
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
WATCHED = (REQUEUE_SIGNAL, signal.SIGTERM)
NON_MAIN_EXIT_WAIT_S = 120.0


class PreemptionWatch:
    """Context manager: while active, SIGUSR2 and SIGTERM set `requested` instead of stopping the job."""

    def __init__(self) -> None:
        self._received: set[int] = set()
        self._previous: dict[int, Any] = {}

    def requested(self) -> bool:
        return bool(self._received)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.warning("received %s: checkpointing after the current step", signal.Signals(signum).name)
        self._received.add(signum)

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            for signum in WATCHED:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        else:  # signal handlers can only be set from the main thread; then nothing is watched
            log.warning("not on the main thread: preemption signals are not watched")
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
            enclosing = getattr(previous, "__self__", None)
            if signum in self._received and isinstance(enclosing, PreemptionWatch):
                # A watch inside another (one run of a job that trains several): a signal that
                # came after the run's last step stays known to the job.
                enclosing._received.add(signum)
        self._previous = {}

    def hand_over(self, *, is_main: bool) -> None:
        """After the checkpoint: end this process, having submitit requeue the job if it should.

        After SIGUSR2, submitit's handler requeues the job and exits on rank 0; the other ranks
        wait for the requeue to stop them (ending first could fail the job before rank 0 has
        requeued it), NON_MAIN_EXIT_WAIT_S at most. After SIGTERM alone, Slurm is requeueing
        or cancelling the job already: every rank exits.
        """
        submitit_handler = self._previous.get(REQUEUE_SIGNAL)
        enclosing = getattr(submitit_handler, "__self__", None)
        self.__exit__()
        if isinstance(enclosing, PreemptionWatch):  # the job's own watch holds submitit's handler
            enclosing.hand_over(is_main=is_main)
        if REQUEUE_SIGNAL not in self._received:
            raise SystemExit("stopped by SIGTERM after a checkpoint")
        if callable(submitit_handler):
            submitit_handler(REQUEUE_SIGNAL, None)  # rank 0: requeues and raises SystemExit
        if is_main:
            raise SystemExit("preempted: checkpoint saved, but there was no submitit handler to requeue the job")
        time.sleep(NON_MAIN_EXIT_WAIT_S)
        raise SystemExit("preempted: checkpoint saved; waiting for the requeue timed out")
