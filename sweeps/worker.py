"""What one dispatched job does: claim a ledger attempt, train, and write the result itself.

The job, not the driver, records its result, so a driver killed mid-sweep loses nothing that
finished. The claim (pending -> running) is atomic in the ledger, so an attempt runs at most once
even if two drivers dispatch it. The ledger is written before W&B is closed: W&B failing never
loses a result.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from gr_core.config import RunConfig
from sweeps.ledger import Ledger
from sweeps.spec import METRICS, TrackingConfig, TuneConfig
from sweeps.tracking import RunTracker
from sweeps.tuning import TrialReporter

log = logging.getLogger(__name__)


def run_dir_for(sweep_dir: str | Path, run_id: str) -> Path:
    return Path(sweep_dir) / "runs" / run_id


def execute_attempt(
    storage_url: str,
    sweep_name: str,
    trial_id: int,
    sweep_dir: str,
    metric: str,
    tracking: TrackingConfig,
    tune: TuneConfig | None = None,
) -> dict[str, Any]:
    """Train the run behind ledger attempt `trial_id`; returns a short summary.

    A tuned run (user attr "tune") also reports each validation value to its Optuna tuning trial,
    whose pruner may stop it early: the attempt then ends "pruned", not failed.
    """
    from gr_core.trainer import train_run  # torch is imported in the job, not by the driver

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ledger = Ledger(storage_url, sweep_name)
    if not ledger.claim(trial_id):
        log.info("attempt %d is already taken or finished; nothing to do", trial_id)
        return {"trial_id": trial_id, "skipped": True}
    attrs = ledger.trial_attrs(trial_id)
    run_id = attrs["run_id"]
    config = RunConfig.from_dict(attrs["config"], where=f"ledger trial {trial_id}")
    run_dir = run_dir_for(sweep_dir, run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))

    tracker = RunTracker(
        tracking,
        directory=Path(sweep_dir),
        group=sweep_name,
        name=run_id,
        run_key=f"{run_id}-a{attrs.get('attempt', 1)}",
        config={**config.to_dict(), "flops": attrs.get("flops", {}), "params": attrs.get("params", {})},
    )

    maximize = METRICS[metric]
    links = attrs.get("tune")
    reporter = (
        TrialReporter(ledger.storage, links["study"], links["trial_id"], tune, maximize)
        if links is not None and tune is not None
        else None
    )
    last: dict[str, Any] = {"epoch": 0, "value": None}

    def on_eval(epoch: int, metrics: dict[str, float]) -> None:
        tracker.log(metrics, step=epoch)
        value = metrics.get(f"val/{metric}")
        if value is None:
            return
        ledger.report_intermediate(trial_id, epoch, float(value))
        last.update(epoch=epoch, value=float(value))
        if reporter is not None and reporter.report(epoch, float(value)):
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({metric} {value:.4f} behind the median)")

    started = time.perf_counter()
    try:
        with ledger.heartbeat(trial_id):
            result = train_run(config, on_step=None, on_eval=on_eval)
    except optuna.TrialPruned as exc:
        ledger.prune(trial_id, last_value=last["value"], epoch=last["epoch"])
        if reporter is not None:
            reporter.finish(TrialState.PRUNED)
        tracker.finish()
        log.info("run %s %s", run_id, exc)
        return {"trial_id": trial_id, "run_id": run_id, "pruned": True}
    except BaseException as exc:
        detail = traceback.format_exc()
        (run_dir / "error.txt").write_text(detail)
        ledger.fail(trial_id, f"{type(exc).__name__}: {exc}")
        if reporter is not None:
            reporter.finish(TrialState.FAIL)
        tracker.finish(exit_code=1)
        raise
    wall = time.perf_counter() - started
    flops = attrs.get("flops", {})
    # The trainer's wall time covers training and its evaluation passes (and data generation), so
    # achieved FLOP/s counts the analytic matmul FLOPs of both; ledgers planned before evaluation
    # was counted (no "eval_total") fall back to training FLOPs alone. The trainer runs on CPU:
    # MFU is against this CPU's measured float32 matmul peak at the run's thread count.
    from scaling.hardware import mfu as model_flops_utilisation
    from scaling.measure import cpu_peak_flops

    executed = flops.get("train", 0.0) + flops.get("eval_total", 0.0)
    achieved = executed / result.wall_time_s if result.wall_time_s > 0 else 0.0
    peak = cpu_peak_flops()
    utilisation = model_flops_utilisation(executed, result.wall_time_s, peak) if result.wall_time_s > 0 else 0.0
    history = [h[f"val/{metric}"] for h in result.history if f"val/{metric}" in h]
    best_val = (max if maximize else min)(history) if history else None
    results = {
        # Test metrics at the best validation epoch, and the sweep metric's best validation value
        # (what tuning selects on; test never steers a choice).
        "metrics": {**result.metrics, f"val_{metric}": best_val},
        "best_epoch": result.best_epoch,
        "steps": result.steps,
        "train_tokens": result.train_tokens,
        "wall_time_s": wall,
        "train_time_s": result.wall_time_s,
        "achieved_flops_per_s": achieved,
        "mfu": utilisation,
        "peak_flops_per_s": peak,
        "peak_source": f"cpu float32 matmul, measured at {config.train.num_threads} thread(s)",
        "history": result.history,
    }
    (run_dir / "result.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    ledger.complete(trial_id, value=float(result.metrics[metric]), results=results)
    if reporter is not None:
        reporter.finish(TrialState.COMPLETE, best_val)
    tracker.summary(
        {**result.metrics, "flops/train": flops.get("train"), "achieved_flops_per_s": achieved, "mfu": utilisation}
    )
    tracker.finish()
    log.info("run %s complete: %s=%.4f in %.1f s", run_id, metric, result.metrics[metric], wall)
    return {"trial_id": trial_id, "run_id": run_id, metric: result.metrics[metric]}
