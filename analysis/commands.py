"""What `gr-scaling fit`, `report` and `forecast` do, apart from parsing: load runs, run, format.

Runs come from a sweep directory (`sweeps.status.completed_rows`) or from `--csv FILE` with column
options (`analysis.csv_input`); `--selection` picks each run's reported checkpoint and the compute
spent up to it (`analysis.dataset.select_runs`). The default output directory is per metric and
selection (SWEEP_DIR/report/<metric>/, <metric>-final/ for `final`), so reports of different
metrics never overwrite each other. The argument names used here are the CLI's (an argparse Namespace
from `gr_scaling.cli`); missing attributes take their defaults, so scripts can pass a
`types.SimpleNamespace` with only what they need.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from analysis.bounds import metric_bounds
from analysis.dataset import D_KEY, N_KEY, Selection, data_from_runs, select_runs
from analysis.inputs import validate_nd_points, validate_points
from analysis.report import ReportPaths, plain_json, split_rows, write_report
from analysis.study import Study, StudyOptions, run_study
from scaling.cost import CostInputs

# The fewest runs any curve in C is fitted on: the log-linear and pure power forms have 2
# parameters, plus one residual degree of freedom (`analysis.inputs.validate_points`).
MIN_RUNS = 3


def _get(args: Any, name: str, default: Any = None) -> Any:
    value = getattr(args, name, default)
    return default if value is None else value


def report_dir_name(metric: str, selection: str = "best_val") -> str:
    """The per-metric folder of a report: the metric as a file name, "-final" for that selection."""
    slug = re.sub(r"[^\w@.+-]+", "_", metric).strip("._") or "metric"
    return slug if selection == "best_val" else f"{slug}-{selection}"


def load_rows(args: Any) -> tuple[list[dict[str, Any]], str, bool, str, str, Path]:
    """-> (rows, metric, higher_is_better, FLOPs convention, title, default output directory)."""
    from sweeps.spec import METRICS

    selection = _get(args, "selection", "best_val")
    csv_path, sweep_dir = _get(args, "csv"), _get(args, "sweep_dir")
    hib_flag = getattr(args, "higher_is_better", None)
    if csv_path and sweep_dir:
        raise ValueError("give either a sweep directory or --csv FILE, not both")
    if csv_path:
        from analysis.csv_input import load_csv

        metric = _get(args, "y_col") or _get(args, "metric")
        if not metric:
            raise ValueError("--csv needs --y-col (the metric column), e.g. --y-col ndcg@10")
        k = _get(args, "flops_per_nd")
        if k == "auto":
            k = None  # "auto" needs FLOPs in the file; C = k N D cannot derive them
        rows, derived = load_csv(
            csv_path, y_col=metric, x_col=_get(args, "x_col", "flops"), n_col=_get(args, "n_col"),
            d_col=_get(args, "d_col"), id_col=_get(args, "id_col"), group_cols=_get(args, "group_col", []),
            flops_per_nd=k,
        )
        if hib_flag is None and metric not in METRICS:
            raise ValueError(f"is higher {metric!r} better? say --higher-is-better or --lower-is-better")
        hib = METRICS[metric] if hib_flag is None else bool(hib_flag)
        convention = _get(args, "flops_convention") or derived or (
            f"as given in column {_get(args, 'x_col', 'flops')!r} of {Path(csv_path).name}")
        p = Path(csv_path)
        return (rows, metric, hib, convention, f"{p.name}: {metric} vs training FLOPs",
                p.with_name(p.stem + "-report") / report_dir_name(metric, selection))
    if not sweep_dir:
        raise ValueError("give a sweep directory or --csv FILE")
    from scaling import FLOPS_CONVENTION
    from sweeps.status import completed_rows, load_sweep

    spec, runs = load_sweep(sweep_dir)
    metric = _get(args, "metric") or spec.sweep.metric
    if metric not in METRICS:
        raise ValueError(f"--metric must be one of {sorted(METRICS)}, got {metric!r}")
    hib = METRICS[metric] if hib_flag is None else bool(hib_flag)
    return (completed_rows(spec, runs), metric, hib, FLOPS_CONVENTION, f"{spec.sweep.name}: {metric} vs training FLOPs",
            Path(sweep_dir) / "report" / report_dir_name(metric, selection))


def _source(args: Any) -> str:
    return str(_get(args, "csv") or _get(args, "sweep_dir") or "the runs")


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


def require_fittable(rows: Sequence[Mapping[str, Any]], *, metric: str, selection: str, source: str) -> None:
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


def check_points(args: Any, metric: str) -> None:
    """--at must be FLOPs (finite, > 0) and --target a value the metric can take."""
    for value in _get(args, "at", ()):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"--at {value:g}: forecast FLOPs must be a finite number > 0, e.g. --at 1e18")
    bounds = metric_bounds(metric)
    for value in _get(args, "target", ()):
        if not math.isfinite(value) or not bool(bounds.contains(value)):
            raise ValueError(f"--target {value:g}: must be a finite value of {metric}, which lies in {bounds.text()}")


def study_options(args: Any) -> StudyOptions:
    cost = CostInputs(
        device=_get(args, "device", "h100-sxm"), mfu=float(_get(args, "mfu", 0.4)),
        price_per_device_hour=float(_get(args, "price", 0.0)), num_devices=int(_get(args, "num_devices", 1)),
    )
    return StudyOptions(
        form=_get(args, "form", "auto"), holdout=_get(args, "holdout", 0.2), n_bootstrap=int(_get(args, "bootstrap", 500)),
        seed=int(_get(args, "seed", 0)), flops_per_nd=_get(args, "flops_per_nd", "auto"),
        forecast_at=tuple(_get(args, "at", ())), targets=tuple(_get(args, "target", ())), cost=cost,
    )


def write_analysis_report(args: Any) -> ReportPaths:
    """`fit` and `report`: the full report (fit.json, figures, report.html) for a sweep or a CSV.

    Too few usable runs, or --at/--target out of range, raise ValueError before anything is written.
    """
    rows, metric, hib, convention, title, default_out = load_rows(args)
    check_points(args, metric)
    require_fittable(rows, metric=metric, selection=_get(args, "selection", "best_val"), source=_source(args))
    opts = study_options(args)
    return write_report(
        Path(_get(args, "out") or default_out), rows, metric=metric, higher_is_better=hib, flops_convention=convention,
        title=title, n_bootstrap=opts.n_bootstrap, seed=opts.seed, options=opts,
        selection=_get(args, "selection", "best_val"),
    )


def study_of_rows(
    rows: Sequence[Mapping[str, Any]], *, metric: str, higher_is_better: bool, selection: str = "best_val",
    options: StudyOptions | None = None,
) -> tuple[Study, Selection]:
    """The study of the selected checkpoint of each usable run (what `forecast` prints)."""
    selected, sel = select_runs(rows, metric=metric, selection=selection)
    runs, excluded = split_rows(selected, metric)
    if not runs:
        raise ValueError(f"no usable runs to forecast from ({len(excluded)} excluded)")
    return run_study(data_from_runs(runs, metric=metric, higher_is_better=higher_is_better), options), sel


def forecast_study(args: Any) -> tuple[Study, str, Selection]:
    """`forecast`: the study without figures or files -> (study, FLOPs convention, selection).

    ValueError (a user error) when the runs cannot be fitted or no form gives a forecast.
    """
    rows, metric, hib, convention, _, _ = load_rows(args)
    check_points(args, metric)
    selection = _get(args, "selection", "best_val")
    require_fittable(rows, metric=metric, selection=selection, source=_source(args))
    study, sel = study_of_rows(rows, metric=metric, higher_is_better=hib, selection=selection,
                               options=study_options(args))
    if study.forecast is None:
        raise ValueError(f"{_source(args)}: no forecast of {metric}: {study.forecast_error}")
    return study, convention, sel


def study_json(study: Study, convention: str, selection: Selection | None = None) -> str:
    """Strict JSON (NaN and inf as null) of the whole analysis, with the FLOPs convention and selection."""
    doc = {"flops_convention": convention, "selection": None if selection is None else selection.to_dict(),
           **study.to_dict()}
    return json.dumps(plain_json(doc), indent=2, allow_nan=False) + "\n"


def selection_line(sel: Mapping[str, Any]) -> str:
    """One line: the checkpoint each run reports and the x-axis (plus the fallback, if any)."""
    line = f"selection {sel['name']}: {sel['y_key']} at {sel['checkpoint']}; x = {sel['x_axis']}"
    return line + (f"\n  note: {sel['fallback']}" if sel.get("fallback") else "")


def _g(v: Any, fmt: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "unreachable"
    return format(v, fmt)


def _iv(pair: Any, fmt: str = ".4g") -> str:
    return "[no interval]" if not pair or any(v is None for v in pair) else f"[{_g(pair[0], fmt)}, {_g(pair[1], fmt)}]"


def format_fit(summary: dict[str, Any]) -> str:
    """The `fit` printout from fit.json: power law (as before), then forms, backtest, L(N, D), frontier."""
    lines = [f"{summary['metric']} vs training FLOPs ({len(summary['points'])} runs)"]
    if summary.get("selection"):
        lines.append(f"  {selection_line(summary['selection'])}")
    power_law = summary.get("power_law") or {}
    if power_law:
        lines.append(f"  {power_law['formula']}")
        lines += [f"  {k} = {v:.4g}  {_iv(power_law['param_intervals'][k])}" for k, v in power_law["params"].items()]
    else:
        lines.append(f"  no power-law fit: {summary.get('power_law_error')}")
    lines.append(summary["verdict"])
    a = summary.get("analysis")
    if not a:
        return "\n".join(lines)
    lines.append("forms (backtest on the largest runs; AIC/BIC in-sample):")
    for row in a["model_choice"]["table"]:
        err = row["backtest_mean_abs_rel_err"]
        bt = a["backtests"].get(row["form"]) or {}
        why = bt.get("error") or a.get("backtest_error") or "not run"
        score = f"{100 * err:.3g}%" if err is not None else f"n/a ({why.split(':')[0]})"
        lines.append(f"  {row['form']:<11} backtest |rel err| {score}  dAIC {_g(row['delta_aic'], '.1f')}  "
                     f"dBIC {_g(row['delta_bic'], '.1f')}{'' if row['converged'] else '  NOT CONVERGED'}")
    for form, why in a["fit_errors"].items():
        lines.append(f"  {form:<11} not fitted: {why}")
    lines.append(f"  forecast form: {a['forecast_form']} ({a['model_choice']['criterion']})")
    ch = (a["fits"].get("chinchilla") or {}).get("fit")
    if ch:
        lines.append(f"  {ch['formula']}{'' if ch['converged'] else '  (DID NOT CONVERGE: ' + ch['message'] + ')'}")
        lines += [f"    {k} = {v:.4g}  {_iv(ch['param_intervals'][k])}" for k, v in ch["params"].items()]
    fr = a.get("frontier")
    if fr:
        lines.append(f"  frontier ({fr['convention']}): N_opt ~ C^{fr['a']:.3f} {_iv(fr['intervals']['a'], '.3f')}, "
                     f"D_opt ~ C^{fr['b']:.3f} {_iv(fr['intervals']['b'], '.3f')}")
    lines += [f"  note: {n}" for n in a["notes"]]
    return "\n".join(lines)


def format_forecast(study: Study, convention: str, selection: Selection | None = None) -> str:
    fc = study.forecast
    if fc is None:
        return f"no forecast: {study.forecast_error}"
    metric = study.data.metric
    lines = [
        f"{metric}: forecast with {fc.form} ({study.choice.criterion}): {fc.description}",
        f"FLOPs convention: {convention}",
        *([selection_line(selection.to_dict())] if selection is not None else []),
        f"largest observed run {fc.max_observed_flops:.3g} FLOPs; run-to-run residual sd {_g(fc.residual_sd, '.3g')}",
    ]
    bt = study.backtests.get(fc.form)
    if bt is not None and bt.ok:
        lines.append(f"backtest: fitted on {bt.n_train} smaller runs, the {len(bt.run_ids)} largest predicted with mean "
                     f"|relative error| {100 * bt.mean_abs_rel_err:.2f}% (max {100 * float(abs(bt.rel_err).max()):.2f}%)")
    lines.append(f"{'FLOPs':>10}  {metric:>8}  {'curve 80%':>20}  {'curve 95%':>20}  {'new run 95%':>20}")
    for row in fc.at:
        lines.append(f"{row['flops']:>10.3g}  {row['value']:>8.4g}  {_iv(row['curve']['80%']):>20}  "
                     f"{_iv(row['curve']['95%']):>20}  {_iv(row['new_run']['95%']):>20}")
    for t in fc.targets:
        lines.append(f"reach {metric} = {t['target']:g}: {t['verdict']}")
    nx = fc.next_10x
    if nx is not None:
        c, unit = nx["cost"], nx["unit"]
        key = unit.replace("-", "_")
        per = "unit of money" if unit == "money" else unit
        lines.append(
            f"next 10x ({nx['from_flops']:.3g} -> {nx['to_flops']:.3g} FLOPs, {c['inputs']['device']} at MFU "
            f"{c['inputs']['mfu']:g}, {c['inputs']['num_devices']} device(s)): {c['device_hours']:.4g} device-hours, "
            f"{c['wall_clock_hours']:.4g} h wall clock, cost {c['cost']:.4g}")
        lines.append(f"  gain {_g(nx['gain'])} {_iv(nx['gain_intervals']['80%'])} (80%) {_iv(nx['gain_intervals']['95%'])} (95%); "
                     f"gain per {per} {_g(nx[f'gain_per_{key}'])}; marginal gain per {per} at 10x "
                     f"{_g(nx[f'marginal_gain_per_{key}_at_to'])}")
        if unit != "money":
            lines.append("  (no --price given: ROI per device-hour; pass --price PER_DEVICE_HOUR for money)")
    lines += [f"note: {n}" for n in (*fc.notes, *study.notes)]
    return "\n".join(lines)
