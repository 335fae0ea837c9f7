"""`gr-scaling fit`, `report` and `forecast`: where their runs come from, what they price compute on,
and the checks before anything is written. Takes the parsed arguments of `gr_scaling.cli`.

Runs come from a sweep directory (`sweeps.status.completed_rows`) or from `--csv FILE` with column
options (`analysis.csv_input`), both as `sweeps.rows.RunRow`s; `--selection` picks each run's
reported checkpoint and the compute spent up to it (`analysis.dataset.select_runs`). The default
output directory is per metric and selection (SWEEP_DIR/report/<metric>/, <metric>-final/ for
`final`), so reports of different metrics never overwrite each other.

Compute is priced on the sweep spec's [cost] table, as `sweep plan` and `sweep status` price it
(a CSV has none: `scaling.cost.CostInputs`' defaults); --device, --mfu, --price and --num-devices
replace single fields of it when given (their argparse defaults are None: "not given").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from analysis.bounds import metric_bounds
from analysis.dataset import D_KEY, N_KEY, Selection, data_from_runs, select_runs
from analysis.inputs import validate_nd_points, validate_points
from analysis.report import ReportPaths, split_rows, write_report
from analysis.study import Study, StudyOptions, run_study
from gr_scaling.analysis_format import format_fit, format_forecast, study_json
from scaling.cost import CostInputs
from sweeps.layout import SweepLayout
from sweeps.rows import RunRow
from sweeps.spec import METRICS

# The fewest runs any curve in C is fitted on: the log-linear and pure power forms have 2
# parameters, plus one residual degree of freedom (`analysis.inputs.validate_points`).
MIN_RUNS = 3


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Runs:
    """The runs to analyse and what the analysis needs to know about them."""

    rows: list[RunRow]
    metric: str
    higher_is_better: bool
    convention: str  # how the FLOPs were counted
    title: str
    default_out: Path  # the report folder when --out is not given
    source: str  # the sweep directory or CSV file, for messages
    cost: CostInputs  # what compute is priced on: the spec's [cost], or the defaults for a CSV


def report_dir_name(metric: str, selection: str = "best_val") -> str:
    """The per-metric folder of a report: the metric as a file name, "-final" for that selection."""
    slug = re.sub(r"[^\w@.+-]+", "_", metric).strip("._") or "metric"
    return slug if selection == "best_val" else f"{slug}-{selection}"


def load_runs(args: argparse.Namespace) -> Runs:
    """The completed runs of a sweep directory (args.sweep_dir) or of a CSV file (args.csv)."""
    if args.csv and args.sweep_dir:
        raise ValueError("give either a sweep directory or --csv FILE, not both")
    if args.csv:
        return _csv_runs(args)
    if not args.sweep_dir:
        raise ValueError("give a sweep directory or --csv FILE")
    from scaling import FLOPS_CONVENTION
    from sweeps.status import completed_rows

    layout = SweepLayout(Path(args.sweep_dir))
    spec = layout.load_spec()
    records = layout.open_ledger(spec).runs()
    metric = args.metric or spec.sweep.metric
    if metric not in METRICS:
        raise ValueError(f"--metric must be one of {sorted(METRICS)}, got {metric!r}")
    return Runs(
        rows=completed_rows(spec, records), metric=metric,
        higher_is_better=METRICS[metric] if args.higher_is_better is None else bool(args.higher_is_better),
        convention=FLOPS_CONVENTION, title=f"{spec.sweep.name}: {metric} vs training FLOPs",
        default_out=layout.report(report_dir_name(metric, args.selection)), source=str(args.sweep_dir), cost=spec.cost,
    )


def _csv_runs(args: argparse.Namespace) -> Runs:
    from analysis.csv_input import load_csv

    metric = args.y_col or args.metric
    if not metric:
        raise ValueError("--csv needs --y-col (the metric column), e.g. --y-col ndcg@10")
    k = None if args.flops_per_nd == "auto" else args.flops_per_nd  # "auto" needs FLOPs in the file
    rows, derived = load_csv(args.csv, y_col=metric, x_col=args.x_col, n_col=args.n_col, d_col=args.d_col,
                             id_col=args.id_col, group_cols=args.group_col or [], flops_per_nd=k)
    if args.higher_is_better is None and metric not in METRICS:
        raise ValueError(f"is higher {metric!r} better? say --higher-is-better or --lower-is-better")
    path = Path(args.csv)
    return Runs(
        rows=rows, metric=metric,
        higher_is_better=METRICS[metric] if args.higher_is_better is None else bool(args.higher_is_better),
        convention=args.flops_convention or derived or f"as given in column {args.x_col!r} of {path.name}",
        title=f"{path.name}: {metric} vs training FLOPs",
        default_out=path.with_name(path.stem + "-report") / report_dir_name(metric, args.selection),
        source=str(args.csv), cost=CostInputs(),
    )


def cost_inputs(args: argparse.Namespace, base: CostInputs) -> CostInputs:
    """`base` with the cost flags that were given. A --device names a `scaling.hardware.PEAKS`
    entry, so it also drops a peak the spec measured for its own device."""
    given = {field: value for field, value in (("device", args.device), ("mfu", args.mfu),
                                                ("price_per_device_hour", args.price),
                                                ("num_devices", args.num_devices)) if value is not None}
    if "device" in given:
        given["peak_flops_per_s"] = None
    return dataclasses.replace(base, **given) if given else base


def study_options(args: argparse.Namespace, cost: CostInputs) -> StudyOptions:
    return StudyOptions(
        form=args.form, holdout=args.holdout, n_bootstrap=args.bootstrap, seed=args.seed,
        flops_per_nd=args.flops_per_nd, forecast_at=tuple(args.at or ()), targets=tuple(args.target or ()),
        cost=cost_inputs(args, cost),
    )


@contextlib.contextmanager
def _quiet(name: str = "analysis") -> Iterator[None]:
    """Silence the analysis warnings of a dry pass: the real pass logs them once."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def require_fittable(rows: Sequence[RunRow], *, metric: str, selection: str, source: str) -> None:
    """ValueError naming `source` unless some form can be fitted to the usable runs.

    `fit`, `report` and `forecast` on one or two runs used to exit 0 with every form "not fitted";
    that is a user error (run more, or fix the excluded runs), refused before anything is written.
    """
    with _quiet():
        selected, _ = select_runs(rows, metric=metric, selection=selection)
        runs, excluded = split_rows(selected, metric)
    if len(runs) < MIN_RUNS:
        shown = "; ".join(f"{run_id}: {why}" for run_id, why in excluded[:3]) + ("; ..." if len(excluded) > 3 else "")
        detail = f" ({len(excluded)} excluded: {shown})" if excluded else ""
        raise ValueError(
            f"{source}: {len(runs)} usable run(s) of {metric}{detail}; a fit needs at least {MIN_RUNS} runs at 2 or "
            "more compute budgets: finish more runs (or fix the excluded ones) and run it again"
        )
    try:  # the least demanding curve in C; if it cannot be fitted, none of them can
        validate_points([r["flops"] for r in runs], [r[metric] for r in runs], min_points=MIN_RUNS,
                        min_distinct_flops=2, model="log-linear fit (the least demanding form)")
    except ValueError as exc:
        try:  # the two-variable law may still fit runs that share one C
            validate_nd_points([r.get(N_KEY, math.nan) for r in runs], [r.get(D_KEY, math.nan) for r in runs],
                               [r[metric] for r in runs], min_points=6, min_distinct=3, model="L(N, D)")
        except ValueError:
            raise ValueError(f"{source}: no form can be fitted to {len(runs)} run(s) of {metric}: {exc}") from None


def check_points(args: argparse.Namespace, metric: str) -> None:
    """--at must be FLOPs (finite, > 0) and --target a value the metric can take."""
    for value in args.at or ():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"--at {value:g}: forecast FLOPs must be a finite number > 0, e.g. --at 1e18")
    bounds = metric_bounds(metric)
    for value in args.target or ():
        if not math.isfinite(value) or not bool(bounds.contains(value)):
            raise ValueError(f"--target {value:g}: must be a finite value of {metric}, which lies in {bounds.text()}")


def write_analysis_report(args: argparse.Namespace) -> ReportPaths:
    """`fit`, `report` (and `demo`): the full report (fit.json, figures, report.html).

    Too few usable runs, or --at/--target out of range, raise ValueError before anything is written.
    """
    runs = load_runs(args)
    check_points(args, runs.metric)
    require_fittable(runs.rows, metric=runs.metric, selection=args.selection, source=runs.source)
    opts = study_options(args, runs.cost)
    return write_report(
        Path(args.out or runs.default_out), runs.rows, metric=runs.metric, higher_is_better=runs.higher_is_better,
        flops_convention=runs.convention, title=runs.title, n_bootstrap=opts.n_bootstrap, seed=opts.seed,
        options=opts, selection=args.selection,
    )


def study_of_rows(
    rows: Sequence[RunRow], *, metric: str, higher_is_better: bool, selection: str = "best_val",
    options: StudyOptions | None = None,
) -> tuple[Study, Selection]:
    """The study of the selected checkpoint of each usable run (what `forecast` prints)."""
    selected, sel = select_runs(rows, metric=metric, selection=selection)
    runs, excluded = split_rows(selected, metric)
    if not runs:
        raise ValueError(f"no usable runs to forecast from ({len(excluded)} excluded)")
    return run_study(data_from_runs(runs, metric=metric, higher_is_better=higher_is_better), options), sel


def forecast_study(args: argparse.Namespace) -> tuple[Study, str, Selection]:
    """`forecast`: the study without figures or files -> (study, FLOPs convention, selection).

    ValueError (a user error) when the runs cannot be fitted or no form gives a forecast.
    """
    runs = load_runs(args)
    check_points(args, runs.metric)
    require_fittable(runs.rows, metric=runs.metric, selection=args.selection, source=runs.source)
    study, sel = study_of_rows(runs.rows, metric=runs.metric, higher_is_better=runs.higher_is_better,
                               selection=args.selection, options=study_options(args, runs.cost))
    if study.forecast is None:
        raise ValueError(f"{runs.source}: no forecast of {runs.metric}: {study.forecast_error}")
    return study, runs.convention, sel


def cmd_fit(args: argparse.Namespace) -> int:
    paths = write_analysis_report(args)  # a sweep directory or --csv FILE
    fit = json.loads(Path(paths.fit_json).read_text())
    if args.json:
        Path(args.json).write_text(json.dumps(fit, indent=2))
    print(format_fit(fit))
    if args.json:
        print(f"wrote {args.json}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if getattr(args, "by_family", False):
        return write_family_reports(args)
    paths = write_analysis_report(args)
    print(f"report: {paths.report_html}")
    return 0


def write_family_reports(args: argparse.Namespace) -> int:
    """`report --by-family`: one report per model family of the sweep (OUT/<family>/), and beside
    them the families compared (`analysis.family_study`): families.json, families.png and the
    verdicts on stdout."""
    from analysis.family_study import analyse_families, family_runs
    from analysis.plots import family_scaling_figure

    if args.csv or not args.sweep_dir:
        raise ValueError("--by-family reads each run's model family from a sweep directory; give one (not --csv)")
    runs = load_runs(args)
    layout = SweepLayout(Path(args.sweep_dir))
    by_run = {run.row.run_id: run for run in family_runs(layout.open_ledger(layout.load_spec()).runs().values())}
    families = sorted({by_run[row.run_id].family for row in runs.rows})
    if len(families) < 2:
        raise ValueError(f"{args.sweep_dir}: its completed runs are of one model family ({', '.join(families) or 'none'}); "
                         "--by-family compares several (drop it for this sweep's report)")
    out = Path(args.out or runs.default_out)
    opts = study_options(args, runs.cost)
    for family in families:
        rows = [row for row in runs.rows if by_run[row.run_id].family == family]
        require_fittable(rows, metric=runs.metric, selection=args.selection, source=f"{runs.source} ({family})")
        paths = write_report(
            out / family, rows, metric=runs.metric, higher_is_better=runs.higher_is_better,
            flops_convention=runs.convention, title=f"{runs.title} ({family})", n_bootstrap=opts.n_bootstrap,
            seed=opts.seed, options=opts, selection=args.selection,
        )
        print(f"report ({family}): {paths.report_html}")
    analysis = analyse_families([by_run[row.run_id] for row in runs.rows], metrics=[runs.metric], n_bootstrap=opts.n_bootstrap,
                                seed=opts.seed, selection=args.selection)
    (out / "families.json").write_text(json.dumps(analysis, indent=2, default=float) + "\n")
    figure = family_scaling_figure(analysis["metrics"][runs.metric], metric=runs.metric, path=out / "families.png")
    print(f"families compared: {out / 'families.json'}, {figure}")
    for comparison in analysis["metrics"][runs.metric]["comparisons"]:
        print(comparison["verdict"])
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    study, convention, selection = forecast_study(args)
    print(format_forecast(study, convention, selection))
    if args.json:
        Path(args.json).write_text(study_json(study, convention, selection))
        print(f"wrote {args.json}")
    return 0
