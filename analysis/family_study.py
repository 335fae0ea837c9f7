"""A scaling study across model families: per family, per metric, the fits, backtests and laws.

For each family and metric, over the family's runs placed at the compute spent up to their best
validation epoch (`analysis.dataset.select_runs`):

- the plain scaling laws in training FLOPs (`analysis.study.run_study`: the saturating power law
  and the HSTU paper's log-linear form, with intervals), backtested on the top decade of compute:
  fitted on the runs with C < max C / 10, predicting the rest (`top_decade_holdout`);
- the Performance Law in layers, width and data (`analysis.performance_law`), D' = the tokens
  trained up to the reported epoch x the ApEn of the run's data (`analysis.apen`), with R^2 on all
  runs and the same top-decade backtest;

and per family the two-variable law L(N, D) = E + A/N^alpha + B/D^beta (`analysis.chinchilla`)
on the validation loss (validation NE at the reported epoch; N non-embedding parameters, D the
tokens trained up to that epoch), with intervals, R^2, the same top-decade backtest and a
sentence saying whether it fits; and for each pair of families, the comparison of their
log-linear slopes with its verdict (`analysis.family_comparison`). Everything lands in one JSON-ready dict; the verdict sentences
are built from the intervals alone.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from analysis import performance_law
from analysis.apen import dataset_apen
from analysis.dataset import D_KEY, data_from_runs, select_runs
from analysis.report import split_rows
from analysis.family_comparison import compare_slopes, top_decade_holdout
from analysis.study import StudyOptions, run_study
from sweeps.ledger_records import RunRecord
from sweeps.rows import RunRow

log = logging.getLogger(__name__)
PLAIN_FORMS = ("power_law", "log_linear")
VALIDATION_LOSS = "val_ne"  # the validation log loss, normalised (NE), at the reported epoch
# The two-variable law "fits" when it explains this much of the validation loss's variance and
# every parameter is identified (an interval, not at a bound).
MIN_R2_TO_FIT = 0.8


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class FamilyRun:
    """One completed run of the study, with what the rows of `sweeps.rows` do not carry."""

    row: RunRow
    family: str
    apen: float  # of the run's training data (`analysis.apen.dataset_apen`)


def family_runs(records: Iterable[RunRecord]) -> list[FamilyRun]:
    """The completed runs among ledger `records`, each with its model family and the ApEn of its
    data (m = 2, r = 0.2 over each user's last max_seq_len items, computed once per data config)."""
    from gr_core.config import RunConfig
    from gr_core.loaders import load_sequence_data

    apen_by_data: dict[tuple[Any, int], float] = {}
    runs = []
    for record in records:
        if record.state != "complete":
            continue
        config = RunConfig.from_dict(record.config, where=f"run {record.run_id}")
        key = (config.data, config.model.max_seq_len)
        if key not in apen_by_data:
            try:
                apen_by_data[key] = dataset_apen(load_sequence_data(config.data), max_len=config.model.max_seq_len)
            except (OSError, ValueError) as exc:  # e.g. a relative data.path read from elsewhere
                log.warning("no ApEn for run %s's data (%s): the Performance Law is not fitted for it", record.run_id, exc)
                apen_by_data[key] = float("nan")
        runs.append(FamilyRun(row=RunRow.from_record(record), family=config.model.family, apen=apen_by_data[key]))
    return runs


def _higher_is_better(metric: str) -> bool:
    from gr_core.config import METRICS

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    return METRICS[metric]


def analyse_families(
    runs: Sequence[FamilyRun], *, metrics: Sequence[str], n_bootstrap: int = 500, seed: int = 0, level: float = 0.95,
    selection: str = "best_val",
) -> dict[str, Any]:
    """The study's analysis (see the module docstring) as a JSON-ready dict:
    {"families": [...], "metrics": {metric: {"per_family": {...}, "comparisons": [...]}}}."""
    families = sorted({run.family for run in runs})
    out: dict[str, Any] = {"families": families, "level": level, "metrics": {}}
    for metric in metrics:
        per_family: dict[str, Any] = {}
        points_by_family: dict[str, list[dict[str, Any]]] = {}
        for family in families:
            members = [run for run in runs if run.family == family]
            selected, chosen = select_runs([run.row for run in members], metric=metric, selection=selection)
            points, _ = split_rows(selected, metric)  # runs whose metric is not finite are left out
            apen = {run.row.run_id: run.apen for run in members}
            for point in points:
                point["apen"] = apen[point["run_id"]]
            points_by_family[family] = points
            per_family[family] = _one_family(points, metric, n_bootstrap=n_bootstrap, seed=seed, level=level)
            per_family[family]["selection"] = {"checkpoint": chosen.checkpoint, "x_axis": chosen.x_axis,
                                               "fallback": chosen.fallback}
        comparisons = []
        for a, b in itertools.combinations(families, 2):
            pa, pb = points_by_family[a], points_by_family[b]
            if len(pa) < 3 or len(pb) < 3:
                continue
            cmp = compare_slopes(
                a, np.array([p["flops"] for p in pa]), np.array([p[metric] for p in pa]),
                b, np.array([p["flops"] for p in pb]), np.array([p[metric] for p in pb]),
                metric=metric, higher_is_better=_higher_is_better(metric), level=level, seed=seed,
            )
            comparisons.append(cmp.to_dict())
        out["metrics"][metric] = {"per_family": per_family, "comparisons": comparisons}
    _holm(out, level)
    out["validation_loss_law"] = {
        family: two_variable_law([run.row for run in runs if run.family == family], n_bootstrap=n_bootstrap,
                                 level=level, seed=seed)
        for family in families}
    return out


def two_variable_law(rows: Sequence[RunRow], *, n_bootstrap: int, level: float, seed: int) -> dict[str, Any]:
    """L(N, D) on the validation loss of `rows` (one family): fit with bootstrap intervals, R^2 on
    every run, backtest on the top decade of compute, and whether it fits (`MIN_R2_TO_FIT`)."""
    from analysis.chinchilla import fit_chinchilla

    usable = [r for r in rows if r.params_non_embedding and r.at_best is not None and r.at_best.tokens
              and np.isfinite(r.metrics.get(VALIDATION_LOSS, np.nan))]
    n = np.array([r.params_non_embedding for r in usable], dtype=float)
    d = np.array([r.at_best.tokens for r in usable], dtype=float)  # type: ignore[union-attr]
    loss = np.array([r.metrics[VALIDATION_LOSS] for r in usable], dtype=float)
    flops = np.array([r.at_best.flops for r in usable], dtype=float)  # type: ignore[union-attr]
    out: dict[str, Any] = {"metric": VALIDATION_LOSS, "form": "L(N, D) = E + A / N^alpha + B / D^beta",
                           "n_runs": len(usable), "n_distinct_N": int(np.unique(n).size),
                           "n_distinct_D": int(np.unique(d).size)}
    try:
        fit = fit_chinchilla(n, d, loss, n_bootstrap=n_bootstrap, seed=seed, level=level, metric_name=VALIDATION_LOSS)
    except ValueError as exc:
        out["fit_error"] = str(exc)
        out["verdict"] = f"The two-variable law could not be fitted: {exc}"
        return out
    predicted = fit.predict(n, d)
    r2 = 1.0 - float(np.sum((loss - predicted) ** 2)) / float(np.sum((loss - loss.mean()) ** 2))
    out["fit"] = fit.to_dict()
    out["r2"] = r2
    holdout = top_decade_holdout(flops)
    train = np.argsort(flops, kind="stable")[: len(flops) - holdout]
    held = np.setdiff1d(np.arange(len(flops)), train)
    try:
        small = fit_chinchilla(n[train], d[train], loss[train], n_bootstrap=0, seed=seed, level=level,
                               metric_name=VALIDATION_LOSS)
        rel = np.abs(small.predict(n[held], d[held]) - loss[held]) / np.abs(loss[held])
        out["backtest"] = {"n_train": int(train.size), "n_holdout": int(held.size),
                           "mean_abs_rel_err": float(rel.mean()), "max_abs_rel_err": float(rel.max())}
    except ValueError as exc:
        out["backtest_error"] = str(exc)
    problems = sorted(set(fit.not_identified) | set(fit.params_at_bounds))
    if r2 >= MIN_R2_TO_FIT and not problems:
        out["fits"] = True
        out["verdict"] = (f"The two-variable law fits the validation loss (R^2 {r2:.2f}); alpha "
                          f"{fit.params['alpha']:.2f} (N), beta {fit.params['beta']:.2f} (D), with intervals.")
    else:
        out["fits"] = False
        why = [f"R^2 {r2:.2f}" + (f" < {MIN_R2_TO_FIT}" if r2 < MIN_R2_TO_FIT else "")]
        if problems:
            why.append("not identified or at a bound: " + ", ".join(problems))
        out["verdict"] = "The two-variable law does not fit the validation loss here (" + "; ".join(why) + ")."
    return out


def _holm(out: dict[str, Any], level: float) -> None:
    """Holm's step-down adjustment over every comparison of every metric (each verdict is a
    per-comparison test at `level`; several of them at once find "significant" ones by chance)."""
    from statsmodels.stats.multitest import multipletests

    every = [cmp for result in out["metrics"].values() for cmp in result["comparisons"]]
    if not every:
        out["multiplicity"] = "no comparisons"
        return
    reject, adjusted, _, _ = multipletests([cmp["p_value"] for cmp in every], alpha=1.0 - level, method="holm")
    for cmp, p_holm, significant in zip(every, adjusted, reject):
        cmp["p_holm"], cmp["significant_after_holm"] = float(p_holm), bool(significant)
    kept = [f"{c['metric']}: {c['family_a']} vs {c['family_b']}" for c in every if c["significant_after_holm"]]
    out["multiplicity"] = (
        f"{len(every)} comparisons, each tested at {level:.0%}: {sum(c['significant'] for c in every)} significant alone, "
        f"{len(kept)} after Holm's adjustment over all of them" + (f" ({'; '.join(kept)})" if kept else "") + "."
    )


def _one_family(points: list[dict[str, Any]], metric: str, *, n_bootstrap: int, seed: int, level: float) -> dict[str, Any]:
    flops = np.array([p["flops"] for p in points], dtype=float)
    y = np.array([p[metric] for p in points], dtype=float)
    result: dict[str, Any] = {"n_runs": len(points), "points": [
        {"run_id": p["run_id"], "flops": p["flops"], metric: p[metric], "train_tokens": p.get(D_KEY),
         "num_blocks": p.get("num_blocks"), "embedding_dim": p.get("embedding_dim"), "apen": p["apen"]}
        for p in points]}
    holdout = top_decade_holdout(flops)
    if holdout >= len(points):
        result["error"] = "every run lies in the top decade of compute: nothing to fit a backtest on"
        return result
    options = StudyOptions(holdout=holdout, n_bootstrap=n_bootstrap, backtest_bootstrap=min(200, n_bootstrap), seed=seed,
                           level=level, cost=None)
    study = run_study(data_from_runs(points, metric=metric, higher_is_better=_higher_is_better(metric)), options)
    result["plain"] = {}
    result["plain_backtest_error"] = study.backtest_error
    for form in PLAIN_FORMS:
        fit = study.fits.get(form)
        backtest = study.backtests.get(form)
        result["plain"][form] = {
            "fit": None if fit is None else fit.fit.to_dict(),
            "fit_error": study.errors.get(form),
            "backtest": None if backtest is None else _backtest_summary(backtest.to_dict()),
        }
    layers = np.array([p.get("num_blocks", np.nan) for p in points], dtype=float)
    width = np.array([p.get("embedding_dim", np.nan) for p in points], dtype=float)
    data = np.array([p.get(D_KEY, np.nan) for p in points], dtype=float) * np.array([p["apen"] for p in points])
    if not np.all(np.isfinite(data)):
        result["performance_law"] = {"fit_error": "no ApEn or token count for some runs (their data could not be read)"}
    else:
        result["performance_law"] = _performance_law(layers, width, data, y, flops, n_bootstrap=n_bootstrap,
                                                       level=level, seed=seed)
    return result


def _backtest_summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("threshold_flops", "n_train", "n_holdout", "error", "mean_abs_rel_err", "max_abs_rel_err",
            "interval_coverage", "level")
    return {k: doc.get(k) for k in keys}


def _performance_law(layers: np.ndarray, width: np.ndarray, data: np.ndarray, y: np.ndarray,
                     flops: np.ndarray, *, n_bootstrap: int, level: float, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        out["fit"] = performance_law.fit(layers, width, data, y, n_bootstrap=n_bootstrap, level=level,
                                         seed=seed).to_dict()
    except ValueError as exc:
        out["fit_error"] = str(exc)
    try:
        bt = performance_law.backtest(layers, width, data, y, flops)
        out["backtest"] = {"n_train": bt.n_fit, "n_holdout": bt.n_held_out, "mean_abs_rel_err": bt.mean_relative_error,
                           "max_abs_rel_err": bt.max_relative_error}
    except ValueError as exc:
        out["backtest_error"] = str(exc)
    return out


__all__ = ["FamilyRun", "PLAIN_FORMS", "VALIDATION_LOSS", "analyse_families", "family_runs", "two_variable_law"]
