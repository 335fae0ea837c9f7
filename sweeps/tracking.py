"""Weights & Biases logging of one run: offline by default, and never the only copy of a result.

Every W&B call is guarded: if W&B cannot start or log (no network, no account, a broken
install), the run carries on, a warning is logged once, and the ledger still gets the results.

With `mode = "online"` an unreachable host used to cost each run W&B's default 90 s init wait
and leave nothing behind. The wait is now bounded by `tracking.init_timeout_s` (W&B's own
`init_timeout` setting, enforced by its service process), and a run that cannot start online
logs offline under the same directory instead, so `gr-scaling sweep sync DIR` uploads it later.
Why it fell back is kept in `RunTracker.fallback` for the worker to record in the ledger, so
the driver can say it once rather than every worker printing it to a log nobody reads.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from sweeps.spec import TrackingConfig

log = logging.getLogger(__name__)


class RunTracker:
    """One W&B run per ledger attempt; group = sweep name, name = run id.

    `mode` is the mode in use ("online", "offline", or "disabled" when W&B is off or could not
    start). `fallback` is None when the run logs in the configured mode, else one line saying
    why it logs offline instead (the online start failed or timed out) or not at all (W&B could
    not start in any mode): the worker records it, the driver prints it once.
    """

    def __init__(
        self,
        tracking: TrackingConfig,
        *,
        directory: str | Path,
        group: str,
        name: str,
        run_key: str,
        config: dict[str, Any],
    ) -> None:
        self._run: Any = None
        self.fallback: str | None = None
        self.mode: str = tracking.mode
        if tracking.mode == "disabled":
            return
        try:
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb  # imported here: a slow import only runs that log pay for
        except Exception as exc:  # a broken install must not stop training either
            self._give_up(f"W&B could not be imported ({exc})")
            return

        def start(mode: str) -> Any:
            Path(directory).mkdir(parents=True, exist_ok=True)
            return wandb.init(
                project=tracking.project,
                entity=tracking.entity,
                group=group,
                name=name,
                id=run_key,
                dir=str(directory),
                mode=mode,
                config=config,
                reinit="finish_previous",
                resume="allow",  # a requeued job continues its attempt's run
                # W&B's service gives up on the server after this long (its default is 90 s).
                settings=wandb.Settings(init_timeout=tracking.init_timeout_s),
            )

        started = time.perf_counter()
        try:
            self._run = start(tracking.mode)
            return
        except Exception as exc:  # W&B is a dashboard, not the record: keep training
            first = f"{type(exc).__name__}: {_one_line(exc)}"
        waited = time.perf_counter() - started
        if tracking.mode != "online":
            self._give_up(f"W&B {tracking.mode} could not start ({first})")
            return
        try:
            # The W&B service still holds the run id of the failed start ("run ID ... is in use");
            # shutting it down lets the offline run keep the same id, so a later sync lands on
            # the attempt's run rather than a new one.
            wandb.teardown()
            self._run = start("offline")
        except Exception as exc:
            self._give_up(f"W&B could not start online ({first}) nor offline ({_one_line(exc)})")
            return
        self.mode = "offline"
        self.fallback = (
            f"W&B online start failed after {waited:.0f} s (limit tracking.init_timeout_s = "
            f"{tracking.init_timeout_s:g} s): {first}; logging offline under {Path(directory) / 'wandb'}, "
            "upload later with `gr-scaling sweep sync`"
        )
        log.warning("%s", self.fallback)

    def _give_up(self, reason: str) -> None:
        self._run = None
        self.mode = "disabled"
        self.fallback = f"{reason}; the run continues without W&B (the ledger has its results)"
        log.warning("%s", self.fallback)

    @property
    def active(self) -> bool:
        return self._run is not None

    @property
    def run_dir(self) -> str | None:
        return getattr(self._run, "dir", None) if self._run is not None else None

    def _guard(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        if self._run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            log.warning("W&B %s failed (%s); disabling W&B for this run", what, exc)
            self._run = None

    def log(self, metrics: dict[str, float], *, step: int) -> None:
        if self._run is not None:
            self._guard("log", self._run.log, metrics, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self._run is not None:
            self._guard("summary", self._run.summary.update, values)

    def finish(self, *, exit_code: int = 0) -> None:
        if self._run is None:
            return
        self._guard("finish", self._run.finish, exit_code=exit_code)
        self._run = None
        # W&B 0.31's run.finish returns before its service process has written the run's records
        # (measured: the offline .wandb file is still its 7-byte header right after finish, and
        # complete after teardown, which takes ~10 ms). Shutting the service down here makes the
        # copy durable before the worker reports the attempt done; a job killed afterwards loses nothing.
        try:
            import wandb

            wandb.teardown()
        except Exception as exc:
            log.warning("W&B teardown failed (%s); the offline copy of this run may be incomplete", exc)


def _one_line(exc: BaseException) -> str:
    """W&B's errors carry Go's multi-line retry traces; the ledger and console want one line."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
