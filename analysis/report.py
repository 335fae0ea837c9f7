"""Write a scaling report for one metric: fit.json, figures (PNG) and a self-contained report.html.

Each completed run is one point. Seed replicates of a config stay separate points in the fit, but
the bootstrap resamples whole configs (replicate groups), so two seeds of one config never count
as independent evidence; seed means are drawn on the plot. Runs whose metric or FLOPs is NaN, inf
or non-positive are excluded with a logged warning and listed in both outputs. When no fit is
possible (too few runs, a constant metric) the report is still written and says why, and makes no
claim about improvement.

Beyond the saturating power law and the improvement verdict, `analysis.study` adds every form,
backtests on the largest runs, the model choice, the two-variable law with its compute-optimal
frontier and IsoFLOP profiles (when runs carry N and D), and a forecast table; fit.json holds all
of it under "analysis" (`Study.to_dict`), each result once: the top level is the summary (metric,
selection, verdict, the improvement evidence, the runs) and names where the headline fits are
("power_law": "#/analysis/fits/power_law", a JSON pointer; None when the form was not fitted).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analysis.dataset import D_KEY, GROUP_KEY, X_AXIS_SPENT, Selection, config_key, data_from_runs, select_runs
from analysis.evidence import ImprovementEvidence, assess_improvement
from analysis.loglinear import LogLinearFit
from analysis.plots import plot_isoflop_frontier, plot_metric_vs_flops, plot_residuals
from analysis.powerlaw import PowerLawFit
from analysis.report_html import ReportContent, render_html
from analysis.study import Study, StudyOptions, run_study
from sweeps.rows import RunRow

log = logging.getLogger(__name__)

OPTIONAL_KEYS = (
    "params_non_embedding", "num_blocks", "embedding_dim", "num_users", "seed", "wall_time_s", D_KEY, GROUP_KEY,
    "flops_planned", "tokens_planned", "reported_epoch", "epochs_run",
)
# The x-axis label of each figure: spent compute, or the rows' "flops" when none carry it.
X_LABELS = {X_AXIS_SPENT: "training FLOPs spent (to the reported checkpoint)"}
X_LABEL_AS_GIVEN = "training FLOPs (as recorded: planned for all epochs, not spent)"


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ReportPaths:
    out_dir: Path
    fit_json: Path
    report_html: Path
    plot_png: Path | None  # None only when there is no usable run to plot
    residuals_png: Path | None = None
    frontier_png: Path | None = None


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars unwrapped, tuples as lists, NaN/inf as None (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


plain_json = _plain  # public name for the CLI


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def split_rows(points: Sequence[Mapping[str, Any]], metric: str) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Check the points of `analysis.dataset.select_runs`; return (usable runs sorted by FLOPs,
    excluded (run_id, why))."""
    seen: set[str] = set()
    usable, excluded = [], []
    for row in points:
        run_id = str(row["run_id"])
        if run_id in seen:
            raise ValueError(f"run_id {run_id!r} appears twice in rows; each completed run must appear once")
        seen.add(run_id)
        flops, value = _to_float(row["flops"]), _to_float(row[metric])
        if not math.isfinite(value):
            excluded.append((run_id, f"{metric} is {row[metric]!r} (diverged or unfinished run?)"))
        elif not (math.isfinite(flops) and flops > 0):
            excluded.append((run_id, f"flops is {row['flops']!r}; must be finite and > 0"))
        else:
            run = {"run_id": run_id, "flops": flops, metric: value}
            run.update({k: _plain(row[k]) for k in OPTIONAL_KEYS if k in row})
            usable.append(run)
    for run_id, why in excluded:
        log.warning("excluding run %s from the %s report: %s", run_id, metric, why)
    usable.sort(key=lambda r: (r["flops"], r["run_id"]))
    return usable, excluded


def _replicate_means(runs: list[dict[str, Any]], metric: str) -> tuple[list[float], list[float], int]:
    groups: dict[Any, list[tuple[float, float]]] = defaultdict(list)
    for r in runs:
        key = r[GROUP_KEY] if GROUP_KEY in r else config_key(r)
        groups[key].append((r["flops"], r[metric]))
    replicated = [v for v in groups.values() if len(v) > 1]
    flops = [float(np.exp(np.mean(np.log([c for c, _ in v])))) for v in replicated]
    means = [float(np.mean([m for _, m in v])) for v in replicated]
    return flops, means, len(replicated)


def _fit_all(
    runs: list[dict[str, Any]], metric: str, higher_is_better: bool, options: StudyOptions
) -> tuple[Study | None, PowerLawFit | None, str | None, LogLinearFit | None, str | None, ImprovementEvidence | None]:
    if not runs:
        return None, None, "no usable runs", None, "no usable runs", None
    study = run_study(data_from_runs(runs, metric=metric, higher_is_better=higher_is_better), options)
    fit = study.fits["power_law"].fit if "power_law" in study.fits else None
    ll = study.fits["log_linear"].fit if "log_linear" in study.fits else None
    evidence = None
    if fit is not None:
        data = study.data
        evidence = assess_improvement(fit, data.flops, data.y, metric_name=metric)
    return study, fit, study.errors.get("power_law"), ll, study.errors.get("log_linear"), evidence  # type: ignore[return-value]


GROUP_NAMES = {"num_blocks": "blocks", "embedding_dim": "width", "num_users": "users"}


def _grouping_column(runs: Sequence[Mapping[str, Any]]) -> str | None:
    """The first of depth, width, data volume that varies across the runs: the plot colours by it."""
    for key in GROUP_NAMES:
        values = [r.get(key) for r in runs]
        if all(v is not None for v in values) and len(set(values)) > 1:
            return key
    return None


def write_report(
    out_dir: str | Path,
    rows: Sequence[RunRow | Mapping[str, Any]],
    *,
    metric: str,
    higher_is_better: bool,
    flops_convention: str,
    title: str,
    n_bootstrap: int = 500,
    seed: int = 0,
    options: StudyOptions | None = None,
    selection: str = "best_val",
) -> ReportPaths:
    """Fit `metric` against training FLOPs over the completed runs in `rows` and write the report.

    Rows are `sweeps.rows.RunRow`s (a sweep's `completed_rows`, a CSV's `load_csv`) or dicts with
    "run_id", "flops" and `metric` (`analysis.dataset.row_from_mapping`); N (non-embedding
    parameters), D (training tokens), depth, width, data volume, seed and wall time are shown when
    known (N and D enable the two-variable law). `selection` ("best_val" or "final") picks each
    run's checkpoint and places it at the compute spent up to it (`analysis.dataset.select_runs`;
    the recorded FLOPs where a row has no such checkpoint). `options` sets the backtest, forecast
    and cost (its n_bootstrap and seed are replaced by the arguments here). Bad arguments raise ValueError; an impossible fit does not (the
    report says why).
    """
    if not isinstance(metric, str) or not metric:
        raise ValueError("metric must name the row key to fit, e.g. metric='ndcg@10'")
    if not flops_convention:
        raise ValueError("flops_convention must state how FLOPs were counted, e.g. 'exact HSTU, causal, 3x fwd'")
    if not isinstance(higher_is_better, (bool, np.bool_)):
        raise TypeError(f"higher_is_better must be a bool, got {higher_is_better!r}")
    higher_is_better = bool(higher_is_better)
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        raise ValueError(f"rows must be a list of RunRows or dicts (one per completed run), got {type(rows).__name__}")
    selected, sel = select_runs(rows, metric=metric, selection=selection)
    runs, excluded = split_rows(selected, metric)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    opts = dataclasses.replace(options or StudyOptions(), n_bootstrap=n_bootstrap, seed=seed)
    study, fit, fit_err, ll, ll_err, evidence = _fit_all(runs, metric, higher_is_better, opts)
    if evidence is not None:
        verdict = evidence.verdict
    else:
        verdict = (
            f"No fit is possible: {fit_err or 'no usable runs'}. "
            "No claim is made about whether quality improves with compute."
        )

    mean_flops, means, n_replicated = _replicate_means(runs, metric)
    png_path: Path | None = None
    stale = out / "metric_vs_flops.png"
    if not runs and stale.exists():
        stale.unlink()  # a figure from an earlier report in this folder would contradict this one
    if runs:
        group_key = _grouping_column(runs)
        png_path = plot_metric_vs_flops(
            [r["flops"] for r in runs],
            [r[metric] for r in runs],
            fit=fit,
            metric_name=metric,
            flops_convention=flops_convention,
            path=out / "metric_vs_flops.png",
            groups=[r[group_key] for r in runs] if group_key else None,
            group_name=GROUP_NAMES.get(group_key or "", "group"),
            log_linear=ll,
            replicate_means=(mean_flops, means) if n_replicated else None,
            title=title,
            backtest=None if study is None else study.backtests.get(study.forecast_form or ""),
            x_label=x_label(sel),
            x_note=f"Selection {sel.name}: each run's {metric} at {sel.checkpoint}, at the FLOPs spent up to it"
            if sel.x_axis == X_AXIS_SPENT else f"Selection {sel.name}; x as recorded, not the FLOPs spent",
        )
    residuals_png, frontier_png = _extra_figures(study, out, flops_convention, x_label(sel))

    summary = {
        "title": title,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "flops_convention": flops_convention,
        "selection": sel.to_dict(),
        "verdict": verdict,
        "improves": None if evidence is None else evidence.improves,
        "power_law": _pointer(study, "power_law"),
        "log_linear": _pointer(study, "log_linear"),
        # The evidence's verdict is the summary's; its FLOPs range is the power-law fit's.
        "evidence": None if evidence is None else _without(evidence.to_dict(), "verdict", "improves", "metric_name",
                                                           "flops_min", "flops_max"),
        "analysis": None if study is None else _without(study.to_dict(), "metric", "higher_is_better"),
        "points": runs,
        "excluded": [{"run_id": r, "reason": why} for r, why in excluded],
    }
    fit_json = out / "fit.json"
    fit_json.write_text(json.dumps(_plain(summary), indent=2, allow_nan=False) + "\n")

    content = ReportContent(
        title=title,
        metric=metric,
        higher_is_better=higher_is_better,
        flops_convention=flops_convention,
        runs=runs,
        excluded=excluded,
        power_law=fit,
        power_law_error=fit_err,
        log_linear=ll,
        log_linear_error=ll_err,
        evidence=evidence,
        verdict=verdict,
        n_replicated_configs=n_replicated,
        png=None if png_path is None else png_path.read_bytes(),
        study=study,
        residuals_png=None if residuals_png is None else residuals_png.read_bytes(),
        frontier_png=None if frontier_png is None else frontier_png.read_bytes(),
        selection=sel,
    )
    report_html = out / "report.html"
    report_html.write_text(render_html(content), encoding="utf-8")
    log.info("wrote %s report to %s", metric, out)
    return ReportPaths(out_dir=out, fit_json=fit_json, report_html=report_html, plot_png=png_path,
                       residuals_png=residuals_png, frontier_png=frontier_png)


def _pointer(study: Study | None, form: str) -> str | None:
    """Where fit.json holds a form's fit (a JSON pointer); None when it was not fitted (the reason is
    in analysis.fit_errors, or in the verdict when there is no analysis)."""
    return f"#/analysis/fits/{form}" if study is not None and form in study.fits else None


def _without(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    """`doc` less the keys the top level of fit.json already holds."""
    return {k: v for k, v in doc.items() if k not in keys}


def x_label(sel: Selection) -> str:
    return X_LABELS.get(sel.x_axis, X_LABEL_AS_GIVEN)


def _extra_figures(
    study: Study | None, out: Path, flops_convention: str, x_axis_label: str
) -> tuple[Path | None, Path | None]:
    """Residuals and IsoFLOP/frontier figures; stale copies from an earlier report are removed."""
    res_path, front_path = out / "residuals.png", out / "isoflop_frontier.png"
    for stale in (res_path, front_path):
        if stale.exists():
            stale.unlink()
    if study is None or not study.fits:
        return None, None
    held = study.backtests.get(study.forecast_form or "")
    residuals = plot_residuals(
        study.data.flops, {name: f.residuals for name, f in study.fits.items()}, metric_name=study.data.metric,
        path=res_path, backtest=held, x_label=x_axis_label,
    )
    frontier = None
    if study.frontier is not None and "chinchilla" in study.fits:
        n, d = study.data.require_nd("plot the frontier")
        frontier = plot_isoflop_frontier(
            study.fits["chinchilla"].fit, study.frontier, n_params=n, tokens=d, flops=study.data.flops,
            y=study.data.y, path=front_path, isoflop=study.isoflop, flops_convention=flops_convention,
        )
    return residuals, frontier
