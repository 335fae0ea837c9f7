"""`gr-scaling sweep rebuild-ledger DIR`: a new ledger from the run directories, nothing retrained.

Each run directory holds what the ledger would: `config.json` (written when an attempt starts),
`result.json` (the complete results, written before the ledger is updated) or `error.txt`. A
deleted, emptied or damaged ledger file is moved aside (`<name>.damaged-<time>`, never deleted),
and a new one is built: every finished run as a completed attempt with its recorded results,
every failed run as one failed attempt, and the plan's other runs pending. The planned FLOPs,
parameter counts and axis values come from planning the stored spec again; a run directory the
plan does not name (the spec's grid changed, or a tuned run) is kept with FLOPs and parameters
computed from its own config. A tuned sweep keeps its runs, but its tuning studies start afresh.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from gr_core.config import RunConfig
from sweeps.driver import DriverLock
from sweeps.layout import RunDir, SweepLayout
from sweeps.ledger import PlannedRun
from sweeps.plan import plan_run, plan_sweep
from sweeps.spec import SweepSpec
from sweeps.storage import LedgerUnavailable, ledger_file, open_existing_storage

log = logging.getLogger(__name__)
# SQLite's companions of a ledger file, moved aside with it. (Not the ".open-lock" beside it: it
# holds no data, and a reader waiting on it must exclude the rebuild's creation of the new file.)
SIDE_FILES = ("-wal", "-shm")


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class RebuildSummary:
    ledger: Path
    moved_aside: Path | None
    complete: int
    failed: int
    pending: int
    unplanned: int  # run directories the plan does not name, kept as they are


def _shape_of(config: dict[str, Any], spec: SweepSpec, shapes: list[PlannedRun]) -> dict[str, Any] | None:
    """The tuned shape a run belongs to: equal configs but for the tuned parameter."""
    section, _, key = spec.tune.param.partition(".")
    for shape in shapes:
        a = {s: dict(v) for s, v in shape.config.items()}
        b = {s: dict(v) for s, v in config.items()}
        a[section].pop(key, None)
        b[section].pop(key, None)
        if a == b:
            return {"shape": shape.run_id}
    return None


def _read_run(run_dir: RunDir) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str | None]:
    """(config, results, error line) of one run directory; unreadable files are reported, not fatal."""
    def load(path: Path) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("%s is unreadable (%s); treating the run as unfinished", path, exc)
            return None

    error = None
    if run_dir.error.is_file():
        lines = [line for line in run_dir.error.read_text(errors="replace").splitlines() if line.strip()]
        error = lines[-1].strip() if lines else f"failed (empty {run_dir.error.name})"
    return load(run_dir.config), load(run_dir.result), error


def _move_aside(path: Path) -> Path | None:
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    path.replace(target)
    for suffix in SIDE_FILES:
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.replace(target.with_name(target.name + suffix))
    return target


def rebuild_ledger(sweep_dir: str | Path, *, force: bool = False) -> RebuildSummary:
    """Rebuild the sweep's ledger from its run directories (see the module docstring).

    A readable ledger is left alone unless `force` (its attempt history would be replaced; the
    file is still kept aside). Holds the driver lock: no driver may run meanwhile.
    """
    layout = SweepLayout(Path(sweep_dir))
    spec = layout.load_spec()
    url = layout.ledger_url(spec.ledger.url)
    path = ledger_file(url)
    if path is None:
        raise ValueError(f"[ledger] url = {spec.ledger.url!r} is a database server: rebuild-ledger rebuilds ledger files "
                         "(SQLite, journal); drop the sweep's study there and run it against an empty database instead")
    plan = plan_sweep(spec, max_runs=None)  # the sweep exists: its size was accepted at launch
    with DriverLock(layout.root):
        if not force:
            try:
                open_existing_storage(url, spec.sweep.name)
            except LedgerUnavailable as exc:
                log.info("rebuilding: %s", str(exc).split(";")[0])
            else:
                raise ValueError(f"the ledger {path} is readable; rebuilding would replace its attempt history. "
                                 f"Pass --force to rebuild it anyway (the current file is kept beside it)")
        moved = _move_aside(path)
        ledger = layout.open_ledger(spec, create=True)
        by_id = {run.run_id: run for run in plan.runs}
        counts = {"complete": 0, "failed": 0, "unplanned": 0}
        restored: set[str] = set()
        for folder in sorted(layout.runs.glob("*")):
            run_dir = RunDir(folder)
            config, results, error = _read_run(run_dir)
            if config is None or (results is None and error is None):
                continue  # never started, or nothing to keep: the plan queues it again
            run_id = folder.name
            run = by_id.get(run_id)
            if run is None:
                counts["unplanned"] += 1
                # FLOPs and parameters are computed from the config: the one dict -> RunConfig needed here
                planned = plan_run(RunConfig.from_dict(config, where=str(run_dir.config)), {})
                tune = _shape_of(config, spec, plan.runs) if spec.tune.enabled else None
                run = dataclasses.replace(planned, run_id=run_id, tune=tune)
            if results is not None:
                value = results.get("metrics", {}).get(spec.sweep.metric)
                ledger.restore(run, results=results, value=value, source=str(run_dir.result))
                counts["complete"] += 1
            else:
                ledger.restore(run, error=error, source=str(run_dir.error))
                counts["failed"] += 1
            restored.add(run_id)
        pending = ledger.register(r for r in plan.runs if r.run_id not in restored) if not spec.tune.enabled else 0
    return RebuildSummary(ledger=path, moved_aside=moved, complete=counts["complete"], failed=counts["failed"],
                          pending=pending, unplanned=counts["unplanned"])


__all__ = ["RebuildSummary", "rebuild_ledger"]
