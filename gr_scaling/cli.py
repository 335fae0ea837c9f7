"""`gr-scaling`: the command line. Parse, build, run, print; the work lives in the packages."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

DEMO_SPEC = "demo_spec.toml"


class CommandFailed(RuntimeError):
    """An external command the CLI ran (wandb sync, scancel) failed; its message says what to do."""


def _parse_value(text: str) -> Any:
    """`--set` values: TOML scalars (numbers, true/false, quoted strings); bare words are strings."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def cmd_train(args: argparse.Namespace) -> int:
    from scaling import run_flops, run_params
    from sweeps.worker import train_in_job

    config = _load_config(args)
    flops = run_flops(config.data, config.model, config.train)
    if args.checkpoint_every is not None and not args.checkpoint_dir:
        raise ValueError("--checkpoint-every needs --checkpoint-dir (where the checkpoints go)")
    # With --checkpoint-dir: resumes from it, checkpoints there every N steps and on SIGTERM/SIGUSR2.
    result = train_in_job(config, checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every)
    out = {
        "run_id": config.run_id,
        "metrics": result.metrics,
        "best_epoch": result.best_epoch,
        "params": run_params(config.data, config.model, config.train).to_dict(),
        "train_flops": flops.train,
        "wall_time_s": result.wall_time_s,
        "device": result.device,
        "threads": result.threads,
        "precision": config.train.precision,
        "resumed_from_step": result.resumed_from_step,
    }
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    return 0


def _load_config(args: argparse.Namespace) -> Any:
    """RunConfig from an optional TOML file (`FILE` or `--config FILE`) and `--set key=value` overrides.

    Every override is applied before the config is validated, once: fields that are only valid
    together (data.source and data.path) can then be set in either order.
    """
    from gr_core.config import RunConfig, replace_paths

    positional, option = getattr(args, "config_path", None), getattr(args, "config", None)
    if positional and option:
        raise ValueError(f"give the run config once: {positional} or --config {option}, not both")
    overrides: dict[str, Any] = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected key=value, e.g. --set model.num_blocks=4")
        overrides[key.strip()] = _parse_value(value.strip())
    path = option or positional
    if path:
        return RunConfig.from_toml(path, overrides)
    return replace_paths(RunConfig(), overrides) if overrides else RunConfig()


def cmd_flops(args: argparse.Namespace) -> int:
    from scaling.summary import flops_summary, format_flops_summary, format_measurement

    config = _load_config(args)
    summary = flops_summary(config)
    if args.measure:
        from scaling.measure import measure_training_step  # imports torch

        summary["measured_step"] = measure_training_step(config).to_dict()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_flops_summary(summary))
        if args.measure:
            print(format_measurement(summary["measured_step"]))
    return 0


def _max_runs(args: argparse.Namespace) -> int | None:
    """The run-count limit of `sweep plan/launch/resume`: none with --allow-large."""
    from sweeps.spec import MAX_RUNS

    return None if getattr(args, "allow_large", False) else MAX_RUNS


def cmd_sweep_plan(args: argparse.Namespace) -> int:
    from sweeps.plan import format_plan, summarize_plan
    from sweeps.spec import load_spec

    max_runs = _max_runs(args)  # counted before anything is expanded; the runs are streamed, not held
    print(format_plan(summarize_plan(load_spec(args.spec, max_runs=max_runs), max_runs=max_runs)))
    return 0


def cmd_sweep_launch(args: argparse.Namespace) -> int:
    from sweeps.launch import launch_sweep
    from sweeps.spec import load_spec
    from sweeps.status import format_status, load_sweep

    max_runs = _max_runs(args)
    spec = load_spec(args.spec, max_runs=max_runs)  # an oversized grid is refused here, before anything exists
    sweep_dir = Path(args.out) if args.out else Path("sweeps-out") / spec.sweep.name
    if args.detach:
        from sweeps.control import detach
        from sweeps.layout import SweepLayout

        pid = detach(args.spec, sweep_dir, max_runs=max_runs)
        print(f"launched in the background (driver pid {pid}); log: {SweepLayout(sweep_dir).driver_log}")
        print(f"follow with: gr-scaling sweep status {sweep_dir}")
        return 0
    summary = launch_sweep(args.spec, sweep_dir, max_runs=max_runs)
    print(format_status(*load_sweep(sweep_dir)))
    print(f"sweep directory: {sweep_dir}")
    return 1 if summary.failed else 0


def cmd_sweep_resume(args: argparse.Namespace) -> int:
    from sweeps.layout import SweepLayout

    args.spec, args.out = str(SweepLayout(Path(args.sweep_dir)).stored_spec()), args.sweep_dir
    return cmd_sweep_launch(args)


def cmd_sweep_cancel(args: argparse.Namespace) -> int:
    from sweeps.control import cancel

    try:
        summary = cancel(args.sweep_dir)
    except RuntimeError as exc:  # scancel missing or failing
        raise CommandFailed(str(exc)) from exc
    print(f"driver stopped: {'yes' if summary.driver_stopped else 'none running'}; "
          f"{summary.cancelled} attempt(s) cancelled" + (f"; scancel {' '.join(summary.slurm_jobs)}" if summary.slurm_jobs else ""))
    print(f"run again with: gr-scaling sweep resume {args.sweep_dir}")
    return 0


def cmd_sweep_retry_failed(args: argparse.Namespace) -> int:
    from sweeps.control import retry_failed

    retried = retry_failed(args.sweep_dir)
    print(f"{len(retried)} failed run(s) queued for a fresh round of attempts" + (f": {', '.join(retried)}" if retried else ""))
    if retried:
        print(f"run them with: gr-scaling sweep resume {args.sweep_dir}")
    return 0


def cmd_sweep_export(args: argparse.Namespace) -> int:
    from sweeps.control import export

    print(f"wrote {export(args.sweep_dir, args.file)} runs to {args.file}")
    return 0


def cmd_sweep_sync(args: argparse.Namespace) -> int:
    from sweeps.control import sync_wandb

    try:
        synced = sync_wandb(args.sweep_dir)
    except RuntimeError as exc:
        raise CommandFailed(str(exc)) from exc
    print(f"synced {len(synced)} W&B run(s)")
    return 0


def cmd_sweep_status(args: argparse.Namespace) -> int:
    from sweeps.driver import read_driver
    from sweeps.status import format_status, load_sweep

    print(format_status(*load_sweep(args.sweep_dir), driver=read_driver(args.sweep_dir)))
    return 0


def cmd_sweep_rebuild_ledger(args: argparse.Namespace) -> int:
    from sweeps.rebuild import rebuild_ledger

    summary = rebuild_ledger(args.sweep_dir, force=args.force)
    if summary.moved_aside is not None:
        print(f"kept the previous ledger as {summary.moved_aside}")
    print(f"rebuilt {summary.ledger}: {summary.complete} complete, {summary.failed} failed, {summary.pending} pending"
          + (f" ({summary.unplanned} run directories not in the current plan, kept)" if summary.unplanned else ""))
    print(f"continue with: gr-scaling sweep resume {args.sweep_dir}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from gr_scaling.analysis_commands import cmd_fit as fit  # imports the analysis (numpy, scipy) only when used

    return fit(args)


def cmd_report(args: argparse.Namespace) -> int:
    from gr_scaling.analysis_commands import cmd_report as report

    return report(args)


def cmd_forecast(args: argparse.Namespace) -> int:
    from gr_scaling.analysis_commands import cmd_forecast as forecast

    return forecast(args)


def _holdout(text: str) -> float | int:
    """--holdout: a fraction in (0, 1) such as 0.2, or a run count such as 3."""
    value = float(text)
    return int(value) if value >= 1 and value.is_integer() else value


def _flops_per_nd(text: str) -> float | str:
    return "auto" if text == "auto" else float(text)


def _add_analysis_args(p: argparse.ArgumentParser) -> None:
    """Data source (sweep directory or CSV), fit forms, backtest, frontier and forecast/cost options."""
    p.add_argument("--csv", metavar="FILE", help="fit the runs of a CSV file instead of a sweep directory")
    p.add_argument("--x-col", default="flops", help="CSV column with training FLOPs (default: flops)")
    p.add_argument("--y-col", help="CSV column with the metric, e.g. ndcg@10")
    p.add_argument("--n-col", help="CSV column with N, the (non-embedding) parameter count")
    p.add_argument("--d-col", help="CSV column with D, the training tokens")
    p.add_argument("--id-col", help="CSV column with a run id")
    p.add_argument("--group-col", action="append", help="CSV column(s) that identify a config (seeds share them)")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--higher-is-better", dest="higher_is_better", action="store_true", default=None)
    direction.add_argument("--lower-is-better", dest="higher_is_better", action="store_false")
    p.add_argument("--flops-convention", help="how the CSV's FLOPs were counted (shown in the report)")
    p.add_argument("--flops-per-nd", type=_flops_per_nd, default="auto",
                   help="k in C = k N D for the frontier's N_opt and D_opt; default 'auto': the runs' own median "
                        "FLOPs / (N D) (HSTU's exact FLOPs are far from 6 N D at small widths); a number, e.g. 6, "
                        "for a convention (needed to derive C when a CSV has only N and D)")
    p.add_argument("--form", default="auto", choices=("auto", "power_law", "log_linear", "pure_power", "chinchilla"),
                   help="curve for the forecast (auto: the best backtest among the one-variable forms)")
    p.add_argument("--holdout", type=_holdout, default=0.2,
                   help="backtest: fraction (0.2) or number (3) of the largest-FLOPs runs held out")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--at", type=float, action="append", metavar="FLOPS", help="forecast the metric at these FLOPs")
    p.add_argument("--target", type=float, action="append", metavar="Y", help="FLOPs needed to reach this metric value")
    # Cost flags default to None ("not given"): a sweep is priced on its spec's [cost] table, as
    # `sweep plan` and `status` price it, a CSV on scaling.cost.CostInputs' defaults; a flag given
    # replaces that one field.
    cost = "(default: the sweep spec's [cost]; for a CSV, scaling.cost.CostInputs' default)"
    p.add_argument("--device", help=f"cost model device, a scaling.hardware.PEAKS key {cost}")
    p.add_argument("--mfu", type=float, help=f"model FLOPs utilisation for the cost model {cost}")
    p.add_argument("--price", type=float, help=f"price per device-hour, 0 for ROI per device-hour {cost}")
    p.add_argument("--num-devices", type=int, help=f"devices per run {cost}")
    p.add_argument("--selection", choices=("best_val", "final"), default="best_val",
                   help="each run's checkpoint: best_val (test metric at the best validation epoch, at the FLOPs "
                        "spent up to it; default) or final (the last epoch's metric, at all the FLOPs spent)")


def cmd_demo(args: argparse.Namespace) -> int:
    from gr_scaling.analysis_commands import write_analysis_report
    from sweeps.launch import launch_sweep
    from sweeps.status import format_status, load_sweep

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec_path = out / DEMO_SPEC
    if not spec_path.exists():
        spec_path.write_text(resources.files("gr_scaling").joinpath(DEMO_SPEC).read_text())
    started = time.perf_counter()
    sweep_dir = out / "sweep"
    summary = launch_sweep(spec_path, sweep_dir)
    print(format_status(*load_sweep(sweep_dir)))
    paths = write_analysis_report(  # what `gr-scaling report` does, into the demo's folder
        build_parser().parse_args(["report", str(sweep_dir), "--out", str(out / "report"),
                                   "--bootstrap", str(args.bootstrap)]))
    print(json.loads(Path(paths.fit_json).read_text())["verdict"])
    print(f"demo finished in {time.perf_counter() - started:.0f} s ({summary.completed} runs trained now, "
          f"{summary.skipped_complete} already complete)")
    print(f"report: {paths.report_html}")
    return 1 if summary.failed else 0


def cmd_slurm(args: argparse.Namespace) -> int:
    from slurm.devcluster import run_action

    return run_action(args.action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gr-scaling", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the built-in synthetic sweep, fit it and write the report")
    p.add_argument("--out", default="demo-out", help="output directory (default: demo-out)")
    p.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples for the intervals")
    p.set_defaults(func=cmd_demo)

    config_help = "run config TOML with [data], [model], [train] tables (default: the built-in defaults)"
    set_help = "override, e.g. model.num_blocks=4; all are applied, then the config is checked once"
    p = sub.add_parser("train", help="train one run from a run config TOML")
    p.add_argument("config_path", nargs="?", metavar="FILE", help=f"{config_help}; same as --config FILE")
    p.add_argument("--config", metavar="FILE", help=config_help)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
    p.add_argument("--out", help="also write the result JSON here")
    p.add_argument("--checkpoint-dir", help="resume from and save checkpoints here (also on SIGTERM/SIGUSR2)")
    p.add_argument("--checkpoint-every", type=int, metavar="STEPS", help="steps between checkpoints")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("flops", help="print a run config's parameters and FLOPs by component")
    p.add_argument("config_path", nargs="?", metavar="FILE", help=f"{config_help}; same as --config FILE")
    p.add_argument("--config", metavar="FILE", help=config_help)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--measure", action="store_true",
                   help="also count one real training step with torch's FlopCounterMode (needs torch)")
    p.set_defaults(func=cmd_flops)

    sweep = sub.add_parser("sweep", help="plan, launch and inspect sweeps").add_subparsers(dest="sweep_command", required=True)
    large_help = "plan or launch a spec of more than 100,000 runs (refused without it, as a likely typo)"
    p = sweep.add_parser("plan", help="print the runs of a spec with params and FLOPs")
    p.add_argument("spec")
    p.add_argument("--allow-large", action="store_true", help=large_help)
    p.set_defaults(func=cmd_sweep_plan)
    p = sweep.add_parser("launch", help="run every run of a spec not yet complete")
    p.add_argument("spec")
    p.add_argument("--out", help="sweep directory (default: sweeps-out/<sweep name>)")
    p.add_argument("--detach", action="store_true", help="submit from a background driver and return at once")
    p.add_argument("--allow-large", action="store_true", help=large_help)
    p.set_defaults(func=cmd_sweep_launch)
    for name, func, text in (
        ("resume", cmd_sweep_resume, "launch a sweep directory again with its stored spec"),
        ("cancel", cmd_sweep_cancel, "stop the driver and running workers; cancel pending runs"),
        ("retry-failed", cmd_sweep_retry_failed, "give runs that used up their attempts a fresh round"),
        ("sync", cmd_sweep_sync, "upload the sweep's offline W&B runs"),
        ("rebuild-ledger", cmd_sweep_rebuild_ledger,
         "rebuild a deleted or damaged ledger from the run directories (nothing finished is trained again)"),
    ):
        p = sweep.add_parser(name, help=text)
        p.add_argument("sweep_dir")
        if name == "resume":
            p.add_argument("--detach", action="store_true", help="run the driver in the background")
            p.add_argument("--allow-large", action="store_true", help=large_help)
        if name == "rebuild-ledger":
            p.add_argument("--force", action="store_true",
                           help="rebuild even a readable ledger (its file is kept beside the new one)")
        p.set_defaults(func=func)
    p = sweep.add_parser("export", help="write every run (config, FLOPs, metrics, timing) to CSV or Parquet")
    p.add_argument("sweep_dir")
    p.add_argument("file", help="output file ending in .csv or .parquet")
    p.set_defaults(func=cmd_sweep_export)
    p = sweep.add_parser("status", help="progress of a sweep directory")
    p.add_argument("sweep_dir")
    p.set_defaults(func=cmd_sweep_status)

    for name, func, text in (("fit", cmd_fit, "fit the metric against training FLOPs"),
                             ("report", cmd_report, "write the HTML report of a sweep")):
        p = sub.add_parser(name, help=text)
        p.add_argument("sweep_dir", nargs="?", help="sweep directory (or give --csv FILE)")
        p.add_argument("--metric", help="metric to fit (default: the spec's sweep.metric)")
        p.add_argument("--out", help="report directory (default: SWEEP_DIR/report/METRIC, or METRIC-final with "
                                     "--selection final; CSV: FILE-report/METRIC)")
        p.add_argument("--bootstrap", type=int, default=500)
        if name == "fit":
            p.add_argument("--json", help="write the fit JSON here")
        else:
            p.add_argument("--by-family", action="store_true",
                           help="a sweep of several model families: one report per family, and the families' "
                                "scaling compared (families.json, families.png, a verdict per pair)")
        _add_analysis_args(p)
        p.set_defaults(func=func)

    p = sub.add_parser("forecast", help="metric at C FLOPs, FLOPs to reach a value, cost and gain of the next 10x")
    p.add_argument("sweep_dir", nargs="?", help="sweep directory (or give --csv FILE)")
    p.add_argument("--metric", help="metric (default: the spec's sweep.metric)")
    p.add_argument("--bootstrap", type=int, default=500)
    p.add_argument("--json", help="write the whole analysis (fits, backtests, forecast) as JSON here")
    _add_analysis_args(p)
    p.set_defaults(func=cmd_forecast)

    p = sub.add_parser("slurm", help="install, start, stop or inspect the single-node development Slurm cluster")
    p.add_argument("action", choices=("install", "up", "down", "status"))
    p.set_defaults(func=cmd_slurm)
    return parser


def _stdout_reader_gone() -> bool:
    """True when stdout is a pipe whose reading end has closed (poll reports POLLERR on it)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no real file descriptor (captured), or no poll()
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers, not at interpreter exit
        return code
    except BrokenPipeError:
        # `gr-scaling flops | head -1`: the reader is gone, so stop quietly, with the status of a
        # Unix tool killed by SIGPIPE (128 + 13; what `set -o pipefail` sees from `yes | head -1`).
        # SIGPIPE itself stays ignored (Python's default) rather than reset to kill: a sweep driver
        # writing to a closed socket must get an exception it can handle, not die; and a broken
        # pipe that is not stdout's is a real failure, so it keeps its traceback. stdout goes to
        # /dev/null so the interpreter's final flush does not raise again.
        if not _stdout_reader_gone():
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (ValueError, TypeError, CommandFailed) as exc:  # user errors: one clear line, no traceback
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave (--out, --json, a CSV) cannot be opened or written
        if args.verbose or exc.filename is None:
            raise  # not about a file: an internal failure, keep its traceback
        print(f"error: {exc.filename}: {exc.strerror}; check the path and its permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the sweep driver cancelled its attempts
        print(f"interrupted: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
