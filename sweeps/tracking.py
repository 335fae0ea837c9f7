"""Weights & Biases logging of one run: offline by default, and never the only copy of a result.

Every W&B call is guarded: if W&B cannot start or log (no network, no account, a broken
install), the run carries on, a warning is logged once, and the ledger still gets the results.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sweeps.spec import TrackingConfig

log = logging.getLogger(__name__)


class RunTracker:
    """One W&B run per ledger attempt; group = sweep name, name = run id."""

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
        if tracking.mode == "disabled":
            return
        try:
            os.environ.setdefault("WANDB_SILENT", "true")
            import wandb  # imported here: a slow import only runs that log pay for

            Path(directory).mkdir(parents=True, exist_ok=True)
            self._run = wandb.init(
                project=tracking.project,
                entity=tracking.entity,
                group=group,
                name=name,
                id=run_key,
                dir=str(directory),
                mode=tracking.mode,
                config=config,
                reinit="finish_previous",
                resume="allow",  # a requeued job continues its attempt's run
            )
        except Exception as exc:  # W&B is a dashboard, not the record: keep training
            log.warning("W&B could not start (%s); the run continues without it", exc)
            self._run = None

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
        if self._run is not None:
            self._guard("finish", self._run.finish, exit_code=exit_code)
            self._run = None
