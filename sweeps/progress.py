"""The driver's console while a sweep runs: done/total, jobs running, failed, each finished run, time left.

On a terminal a tqdm bar stays at the bottom and each finished run is printed above it; anywhere
else (a log file, CI, `--detach`'s driver.log) every event is one plain log line with the same
numbers. The estimate of the time left scales the time spent so far by the training FLOPs still
to run over the FLOPs finished in this launch (runs go smallest first, so a count-based estimate
would be far too short).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)


def duration_text(seconds: float) -> str:
    """"42s", "9m05s", "1h02m": rounded to the second first, so 599.6 s reads 10m00s, not 9m60s."""
    whole = round(max(0.0, seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class SweepProgress:
    """Counts runs as the dispatcher reports them; `close()` when the launch ends (or stops)."""

    def __init__(self, *, total: int, complete: int, to_run_flops: float, metric: str,
                 live: bool | None = None) -> None:
        self.total, self.done, self.failed, self.running = total, complete, 0, 0
        self.metric = metric
        self.wandb_told = False  # the driver reports a W&B offline fallback once per launch
        self._flops_left = to_run_flops
        self._flops_done = 0.0
        self._started = time.monotonic()
        self._live = sys.stderr.isatty() if live is None else live
        self._bar = (
            tqdm(total=total, initial=complete, desc="runs", unit="run", file=sys.stderr, dynamic_ncols=True,
                 bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {postfix}")
            if self._live else None
        )
        self._refresh()

    def _eta(self) -> str:
        if self._flops_done <= 0 or self._flops_left <= 0:
            return "?" if self._flops_left > 0 else "0s"
        elapsed = time.monotonic() - self._started
        return duration_text(elapsed * self._flops_left / self._flops_done)

    def _jobs_running(self) -> str:
        # Jobs, not runs: a packed job trains one run at a time, and is in flight from its
        # submission until it exits (after its last run, and before its first).
        return f"{self.running} job{'' if self.running == 1 else 's'} running"

    def _status(self) -> str:
        return (f"{self.done}/{self.total} done, {self._jobs_running()}, {self.failed} failed, "
                f"{duration_text(time.monotonic() - self._started)} elapsed, ~{self._eta()} left")

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"{self._jobs_running()}, {self.failed} failed, "
                                      f"{duration_text(time.monotonic() - self._started)} elapsed, ~{self._eta()} left")

    def _say(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            log.info("%s [%s]", line, self._status())

    def note(self, line: str) -> None:
        """A warning for the console that keeps a live bar intact."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            log.warning("%s", line)

    def started(self, count: int = 1) -> None:
        """Jobs submitted: each trains one run at a time, so "running" counts jobs in flight."""
        self.running += count
        self._refresh()

    def job_ended(self) -> None:
        self.running = max(0, self.running - 1)
        self._refresh()

    def finished(self, *, run_id: str, axis_values: dict[str, Any], flops: float, value: float | None,
                 seconds: float | None, ok: bool, error: str | None = None, retrying: bool = False) -> None:
        """A run ended: it completed (ok), or failed (`retrying`: it has attempts left)."""
        self._flops_left = max(0.0, self._flops_left - flops)
        self._flops_done += flops
        axes = ", ".join(f"{k}={v}" for k, v in axis_values.items())
        if ok:
            self.done += 1
            shown = f"{self.metric} {value:.4f}" if isinstance(value, (int, float)) else "no metric"
            took = f" in {duration_text(seconds)}" if seconds is not None else ""
            self._say(f"run {run_id} ({axes}): {shown}{took}")
        elif retrying:
            self._say(f"run {run_id} ({axes}) failed, will retry: {error}")
        else:
            self.failed += 1
            self._say(f"run {run_id} ({axes}) FAILED: {error}")
        if self._bar is not None:
            self._bar.n = self.done
        self._refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


__all__ = ["SweepProgress"]
