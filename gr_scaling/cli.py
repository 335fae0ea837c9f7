"""`gr-scaling`: the command line. Parse, build, run, print; the work lives in the packages."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

DEMO_SPEC = "demo_spec.toml"


def _parse_value(text: str) -> Any:
    """`--set` values: TOML scalars (numbers, true/false, quoted strings); bare words are strings."""
    import tomllib

    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def cmd_train(args: argparse.Namespace) -> int:
    from gr_core.trainer import train_run
    from scaling import count_params, run_flops

    config = _load_config(args)
    flops = run_flops(config.data, config.model, config.train)
    result = train_run(config)
    out = {
        "run_id": config.run_id,
        "metrics": result.metrics,
        "best_epoch": result.best_epoch,
        "params": count_params(config.model, config.data.num_items).to_dict(),
        "train_flops": flops.train,
        "wall_time_s": result.wall_time_s,
    }
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(text)
    return 0


def _load_config(args: argparse.Namespace) -> Any:
    """RunConfig from an optional TOML path and `--set key=value` overrides."""
    from gr_core.config import RunConfig, replace_path

    config = RunConfig.from_toml(args.config) if args.config else RunConfig()
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected key=value, e.g. --set model.num_blocks=4")
        config = replace_path(config, key.strip(), _parse_value(value.strip()))
    return config


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


def cmd_sweep_plan(args: argparse.Namespace) -> int:
    from sweeps.plan import format_plan, plan_sweep
    from sweeps.spec import load_spec

    print(format_plan(plan_sweep(load_spec(args.spec))))
    return 0


def _default_sweep_dir(spec_path: str) -> Path:
    from sweeps.spec import load_spec

    return Path("sweeps-out") / load_spec(spec_path).sweep.name


def cmd_sweep_launch(args: argparse.Namespace) -> int:
    from sweeps.launch import launch_sweep
    from sweeps.status import format_status, load_sweep

    sweep_dir = Path(args.out) if args.out else _default_sweep_dir(args.spec)
    summary = launch_sweep(args.spec, sweep_dir)
    print(format_status(*load_sweep(sweep_dir)))
    print(f"sweep directory: {sweep_dir}")
    return 1 if summary.failed else 0


def cmd_sweep_status(args: argparse.Namespace) -> int:
    from sweeps.status import format_status, load_sweep

    print(format_status(*load_sweep(args.sweep_dir)))
    return 0


def _report(sweep_dir: Path, out_dir: Path, metric: str | None, n_bootstrap: int) -> Any:
    from analysis.report import write_report
    from scaling import FLOPS_CONVENTION
    from sweeps.spec import METRICS
    from sweeps.status import completed_rows, load_sweep

    spec, runs = load_sweep(sweep_dir)
    metric = metric or spec.sweep.metric
    if metric not in METRICS:
        raise ValueError(f"--metric must be one of {sorted(METRICS)}, got {metric!r}")
    return write_report(
        out_dir,
        completed_rows(spec, runs),
        metric=metric,
        higher_is_better=METRICS[metric],
        flops_convention=FLOPS_CONVENTION,
        title=f"{spec.sweep.name}: {metric} vs training FLOPs",
        n_bootstrap=n_bootstrap,
    )


def cmd_fit(args: argparse.Namespace) -> int:
    paths = _report(Path(args.sweep_dir), Path(args.out or Path(args.sweep_dir) / "report"), args.metric, args.bootstrap)
    fit = json.loads(Path(paths.fit_json).read_text())
    if args.json:
        Path(args.json).write_text(json.dumps(fit, indent=2))
    power_law = fit.get("power_law") or {}
    print(f"{fit['metric']} vs training FLOPs ({len(fit['points'])} runs)")
    if power_law:
        print(f"  {power_law['formula']}")
        for name, value in power_law["params"].items():
            lo, hi = power_law["param_intervals"][name]
            interval = f"[{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else "[no interval]"
            print(f"  {name} = {value:.4g}  {interval}")
    else:
        print(f"  no power-law fit: {fit.get('power_law_error')}")
    print(fit["verdict"])
    if args.json:
        print(f"wrote {args.json}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    paths = _report(Path(args.sweep_dir), Path(args.out or Path(args.sweep_dir) / "report"), args.metric, args.bootstrap)
    print(f"report: {paths.report_html}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
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
    paths = _report(sweep_dir, out / "report", None, args.bootstrap)
    print(json.loads(Path(paths.fit_json).read_text())["verdict"])
    print(f"demo finished in {time.perf_counter() - started:.0f} s ({summary.completed} runs trained now, "
          f"{summary.skipped_complete} already complete)")
    print(f"report: {paths.report_html}")
    return 1 if summary.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gr-scaling", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the built-in synthetic sweep, fit it and write the report")
    p.add_argument("--out", default="demo-out", help="output directory (default: demo-out)")
    p.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples for the intervals")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train one run from a run config TOML")
    p.add_argument("config", nargs="?", help="run config TOML with [data], [model], [train] tables")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. model.num_blocks=4")
    p.add_argument("--out", help="also write the result JSON here")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("flops", help="print a run config's parameters and FLOPs by component")
    p.add_argument("config", nargs="?", help="run config TOML (default: the built-in defaults)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. model.num_blocks=4")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--measure", action="store_true",
                   help="also count one real training step with torch's FlopCounterMode (needs torch)")
    p.set_defaults(func=cmd_flops)

    sweep = sub.add_parser("sweep", help="plan, launch and inspect sweeps").add_subparsers(dest="sweep_command", required=True)
    p = sweep.add_parser("plan", help="print the runs of a spec with params and FLOPs")
    p.add_argument("spec")
    p.set_defaults(func=cmd_sweep_plan)
    p = sweep.add_parser("launch", help="run every run of a spec not yet complete")
    p.add_argument("spec")
    p.add_argument("--out", help="sweep directory (default: sweeps-out/<sweep name>)")
    p.set_defaults(func=cmd_sweep_launch)
    p = sweep.add_parser("status", help="progress of a sweep directory")
    p.add_argument("sweep_dir")
    p.set_defaults(func=cmd_sweep_status)

    for name, func, text in (("fit", cmd_fit, "fit the metric against training FLOPs"),
                             ("report", cmd_report, "write the HTML report of a sweep")):
        p = sub.add_parser(name, help=text)
        p.add_argument("sweep_dir")
        p.add_argument("--metric", help="metric to fit (default: the spec's sweep.metric)")
        p.add_argument("--out", help="report directory (default: SWEEP_DIR/report)")
        p.add_argument("--bootstrap", type=int, default=500)
        if name == "fit":
            p.add_argument("--json", help="write the fit JSON here")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args)
    except (ValueError, TypeError) as exc:  # user errors: one clear line, no traceback
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
