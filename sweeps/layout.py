"""One sweep directory and where everything in it lives; the only module that names its files.

    spec.toml        the spec the sweep was launched with (earlier ones kept as spec.<time>.toml)
    ledger.db        the Optuna storage (the durable record), unless [ledger] url puts it elsewhere
    runs/<id>/       each run's resolved config.json, then result.json or error.txt; checkpoints/
                     while it trains
    jobs/            submitit's pickles and logs
    wandb/           offline W&B runs (W&B makes this folder itself in the directory it is given)
    driver.lock      held by the one live driver (`sweeps.driver`)
    driver.log       the output of a `--detach`ed driver
    report/<metric>/ the analysis reports (`gr-scaling report`)

Launching, the worker, status, control, rebuild and the driver lock all take their paths from
here, so a file can be moved or renamed in one place. Opening the sweep's stored spec and its
ledger lives here too: every command that reads a sweep starts with those two.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from sweeps.ledger import Ledger
from sweeps.spec import SweepSpec, load_spec
from sweeps.storage import storage_url_for

SPEC_FILE = "spec.toml"
LEDGER_FILE = "ledger.db"


@dataclasses.dataclass(frozen=True, slots=True)
class RunDir:
    """One run's folder: the files the worker writes and `sweeps.rebuild` reads back."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.json"  # the resolved config, written when an attempt starts

    @property
    def result(self) -> Path:
        return self.path / "result.json"  # the complete results, written before the ledger is told

    @property
    def error(self) -> Path:
        return self.path / "error.txt"  # the traceback of the last failed attempt

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"  # removed once the run completes


@dataclasses.dataclass(frozen=True, slots=True)
class SweepLayout:
    """The files of the sweep in `root` (nothing is created until a caller writes)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))  # accept a str; frozen, so set it once here

    @property
    def spec(self) -> Path:
        return self.root / SPEC_FILE

    def earlier_spec(self, modified: float) -> Path:
        """Where a replaced spec is kept, named by its modification time."""
        return self.root / f"spec.{time.strftime('%Y%m%d-%H%M%S', time.localtime(modified))}.toml"

    def ledger_url(self, configured: str | None) -> str:
        """The sweep's ledger: [ledger] url (a relative journal path is made absolute against the
        directory, so jobs started elsewhere find it) or the SQLite file in the directory."""
        if configured is None:
            return f"sqlite:///{self.root.resolve() / LEDGER_FILE}"
        return storage_url_for(self.root, configured)

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.runs / run_id)

    def finished_results(self) -> list[Path]:
        """result.json of every run that finished (whatever the ledger says)."""
        return sorted(self.runs.glob("*/result.json"))

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def wandb(self) -> Path:
        return self.root / "wandb"  # W&B's own name under the directory the tracker is given (root)

    @property
    def driver_lock(self) -> Path:
        return self.root / "driver.lock"

    @property
    def driver_log(self) -> Path:
        return self.root / "driver.log"

    def report(self, folder: str) -> Path:
        return self.root / "report" / folder

    # ---- the two things every reader of a sweep opens ------------------------------------
    def stored_spec(self) -> Path:
        """The stored spec, or ValueError naming the directory (a user error: wrong path)."""
        if not self.spec.is_file():
            raise ValueError(f"{self.root} is not a sweep directory (no {SPEC_FILE}); launch a sweep into it first")
        return self.spec

    def load_spec(self) -> SweepSpec:
        return load_spec(self.stored_spec())

    def open_ledger(self, spec: SweepSpec, *, create: bool = False) -> Ledger:
        """The sweep's ledger; create=True (launching, rebuilding) makes it when missing, else it
        must exist (`sweeps.storage.LedgerUnavailable` names the file and the way out)."""
        return Ledger(
            self.ledger_url(spec.ledger.url), spec.sweep.name, higher_is_better=spec.sweep.higher_is_better,
            create=create,
        )


__all__ = ["LEDGER_FILE", "SPEC_FILE", "RunDir", "SweepLayout"]
