"""Figures for scaling reports. The only module in `analysis` that imports matplotlib.

Figures are built with the object API on an explicit Agg canvas (no pyplot), so plotting holds
no global state, needs no display, and is safe in worker processes and threads.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.backtest import Backtest
from analysis.chinchilla import ChinchillaFit
from analysis.frontier import Frontier
from analysis.inputs import ArrayLike
from analysis.isoflop import IsoFlopResult
from analysis.loglinear import LogLinearFit
from analysis.powerlaw import PowerLawFit
from analysis.varpro import MIN_BOOTSTRAP_FOR_INTERVALS

log = logging.getLogger(__name__)

DPI = 130
MAX_POINT_LABELS = 40  # beyond this, per-point labels overlap into an unreadable blot


def _curve_range(c: np.ndarray) -> np.ndarray:
    """Log-spaced FLOPs a little beyond the data: 10% of the observed decades (>= 0.05) each side."""
    lo, hi = math.log10(float(c.min())), math.log10(float(c.max()))
    pad = max(0.1 * (hi - lo), 0.05)
    return np.logspace(lo - pad, hi + pad, 200)


def plot_metric_vs_flops(
    flops: ArrayLike,
    y: ArrayLike,
    *,
    path: str | Path,
    **kwargs: Any,
) -> Path:
    """`metric_vs_flops_figure` saved as a PNG at `path`; returns the path."""
    return _save(metric_vs_flops_figure(flops, y, **kwargs), path)


def metric_vs_flops_figure(
    flops: ArrayLike,
    y: ArrayLike,
    *,
    fit: PowerLawFit | None,
    metric_name: str,
    flops_convention: str,
    labels: Sequence[str] | None = None,
    groups: Sequence[Hashable] | None = None,
    group_name: str = "group",
    log_linear: LogLinearFit | None = None,
    replicate_means: tuple[ArrayLike, ArrayLike] | None = None,
    title: str | None = None,
    backtest: Backtest | None = None,
    x_label: str = "training FLOPs",
    x_note: str = "",
) -> Figure:
    """Scatter one point per run against training FLOPs (log x), with the fit and its band.

    `fit=None` draws the points only (used when no fit is possible). `groups` colours points by
    a per-run value such as model depth; `replicate_means` (flops, mean) marks seed-averaged
    configs; `backtest` rings the held-out runs and marks, at their FLOPs, what the fit on the
    smaller runs predicted for them, each a point with its prediction interval as an error bar.
    `x_note` (e.g. which checkpoint each run reports) follows the FLOPs convention under the axes.
    """
    c = np.asarray(flops, dtype=np.float64)
    v = np.asarray(y, dtype=np.float64)
    if c.ndim != 1 or c.shape != v.shape or c.size == 0:
        raise ValueError(f"flops and y must be 1-D, non-empty and the same length; got {c.shape} and {v.shape}")
    if np.any(~np.isfinite(c)) or np.any(c <= 0):
        raise ValueError("flops must be finite and positive to plot on a log axis; drop or fix those runs")
    for name, extra in (("labels", labels), ("groups", groups)):
        if extra is not None and len(extra) != c.size:
            raise ValueError(f"{name} has {len(extra)} entries for {c.size} points: give one per run")

    fig = Figure(figsize=(7.5, 5.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xscale("log")

    if groups is None:
        ax.scatter(c, v, s=28, color="tab:blue", alpha=0.8, label="runs", zorder=3)
    else:
        keys = sorted(set(groups), key=lambda g: (str(type(g)), g))
        colours = colormaps["viridis"](np.linspace(0.0, 0.9, len(keys)))
        for colour, key in zip(colours, keys):
            sel = np.array([g == key for g in groups])
            ax.scatter(c[sel], v[sel], s=28, color=colour, alpha=0.85, label=f"{group_name} = {key}", zorder=3)
    if replicate_means is not None:
        mc, mv = (np.asarray(a, dtype=np.float64) for a in replicate_means)
        ax.scatter(mc, mv, s=60, marker="D", facecolors="none", edgecolors="black", label="seed mean", zorder=2.5)
    if labels is not None:
        if c.size > MAX_POINT_LABELS:
            log.warning("not labelling %d points (more than %d would overlap)", c.size, MAX_POINT_LABELS)
        else:
            for xi, yi, text in zip(c, v, labels):
                ax.annotate(str(text), (xi, yi), xytext=(3, 3), textcoords="offset points", fontsize=7, alpha=0.7)

    if backtest is not None and backtest.ok:
        ax.scatter(backtest.flops, backtest.observed, s=110, facecolors="none", edgecolors="tab:red", lw=1.2,
                   label=f"held out ({len(backtest.run_ids)} largest runs)", zorder=4)
        at, predicted, err = _backtest_points(backtest)
        ax.errorbar(at, predicted, yerr=err, fmt="x", color="tab:purple", ms=7, capsize=3,
                    label=f"backtest: {backtest.form} fitted on smaller runs, {round(100 * backtest.level)}% interval",
                    zorder=4)

    grid = _curve_range(c)
    if fit is not None:
        alpha = fit.params["alpha"]
        ax.plot(grid, fit.predict(grid), color="tab:red", lw=1.8, label=f"power law fit (alpha = {alpha:.3g})", zorder=2)
        if fit.n_bootstrap_used >= MIN_BOOTSTRAP_FOR_INTERVALS:
            lo, hi = fit.band(grid)
            band_label = f"{round(100 * fit.level)}% bootstrap band ({fit.n_bootstrap_used} resamples)"
            ax.fill_between(grid, lo, hi, color="tab:red", alpha=0.18, lw=0, label=band_label, zorder=1)
    if log_linear is not None:
        ax.plot(grid, log_linear.predict(grid), color="grey", ls="--", lw=1.2, label="log-linear fit", zorder=2)

    # Scale the y-axis to the runs and the fitted curve, not to the band: bootstrap curves with an
    # unresolved asymptote can swing far outside the data when extrapolated, and would flatten
    # the points into a line. The band is clipped at the frame.
    shown = [v] + ([fit.predict(grid)] if fit is not None else [])
    y_lo, y_hi = min(float(np.min(a)) for a in shown), max(float(np.max(a)) for a in shown)
    pad = 0.15 * (y_hi - y_lo) if y_hi > y_lo else 0.05 * max(abs(y_hi), 1e-12)
    ax.set_ylim(y_lo - pad, y_hi + pad)

    if fit is not None:
        ax.set_ylabel(f"{metric_name} ({'higher' if fit.higher_is_better else 'lower'} is better)")
    else:
        ax.set_ylabel(metric_name)
    ax.set_xlabel(x_label)
    note = f"FLOPs convention: {flops_convention}" + (f". {x_note}" if x_note else "")
    fig.text(0.01, 0.0, textwrap.fill(note, 120), fontsize=7, va="bottom", alpha=0.8)
    fig.get_layout_engine().set(rect=(0, 0.06, 1, 0.94))
    ax.set_title(title or f"{metric_name} vs training compute")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    return fig


def _backtest_points(bt: Backtest) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(FLOPs, prediction, [2, n] error bar to the interval) of each held-out run; no bar without an interval."""
    lo, hi = bt.interval
    err = None
    if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)):
        err = np.vstack([bt.predicted - lo, hi - bt.predicted]).clip(min=0)
    return np.asarray(bt.flops, dtype=np.float64), np.asarray(bt.predicted, dtype=np.float64), err


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    return out


def plot_residuals(flops: ArrayLike, residuals: dict[str, ArrayLike], *, path: str | Path, **kwargs: Any) -> Path:
    """`residuals_figure` saved as a PNG at `path`; returns the path."""
    return _save(residuals_figure(flops, residuals, **kwargs), path)


def residuals_figure(
    flops: ArrayLike, residuals: dict[str, ArrayLike], *, metric_name: str, backtest: Backtest | None = None,
    x_label: str = "training FLOPs",
) -> Figure:
    """Residuals (observed - fitted, metric units) of each form against training FLOPs.

    With `backtest`, each held-out run is also a point at its FLOPs: observed minus what the fit on
    the smaller runs predicted, its bar the prediction interval seen from the observation (observed
    - interval), so the bar crosses 0 exactly when the run fell inside the interval.
    """
    c = np.asarray(flops, dtype=np.float64)
    if not residuals:
        raise ValueError("residuals is empty: pass at least one fitted form")
    fig = Figure(figsize=(7.5, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.axhline(0.0, color="black", lw=0.8)
    markers = "osD^v"
    for (name, r), marker in zip(residuals.items(), markers):
        r = np.asarray(r, dtype=np.float64)
        if r.shape != c.shape:
            raise ValueError(f"residuals[{name!r}] has shape {r.shape}; expected {c.shape}")
        ax.scatter(c, r, s=18, marker=marker, alpha=0.75, label=name)
    if backtest is not None and backtest.ok:
        at, predicted, err = _backtest_points(backtest)
        observed = np.asarray(backtest.observed, dtype=np.float64)
        ax.errorbar(at, observed - predicted, yerr=None if err is None else err[::-1], fmt="x", color="tab:purple",
                    ms=7, capsize=3, zorder=4,
                    label=f"backtest ({backtest.form}): observed - predicted from smaller runs, "
                          f"{round(100 * backtest.level)}% interval")
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"{metric_name}: observed - fitted")
    ax.set_title("Residuals of each form (fitted on all runs)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    return fig


def plot_isoflop_frontier(
    fit: ChinchillaFit, frontier: Frontier, *, n_params: ArrayLike, tokens: ArrayLike, flops: ArrayLike,
    y: ArrayLike, path: str | Path, isoflop: IsoFlopResult | None = None, flops_convention: str = "",
) -> Path:
    """Left: IsoFLOP curves of the fitted L(N, D) (D = C / (k N)) with the runs; right: N_opt, D_opt vs C."""
    n, d, c, v = (np.asarray(a, dtype=np.float64) for a in (n_params, tokens, flops, y))
    k = frontier.flops_per_nd
    fig = Figure(figsize=(11.0, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    budgets = np.geomspace(c.min(), c.max(), 4) if c.max() > c.min() else np.array([c.min()])
    colours = colormaps["viridis"](np.linspace(0.0, 0.85, budgets.size))
    n_grid = np.geomspace(n.min() / 3, n.max() * 3, 120)
    for budget, colour in zip(budgets, colours):
        ax.plot(n_grid, fit.predict(n_grid, budget / (k * n_grid)), color=colour, lw=1.5, label=f"C = {budget:.2g}")
        n_star = float(frontier.n_opt(budget))
        ax.scatter([n_star], fit.predict(n_star, budget / (k * n_star)), marker="*", s=120, color=colour, zorder=4,
                   edgecolors="black", lw=0.5)
    ax.scatter(n, v, s=14, color="grey", alpha=0.6, label="runs (any C)", zorder=3)
    if isoflop is not None:
        for b in isoflop.budgets:
            if b.n_opt is not None and b.metric_opt is not None:
                ax.scatter([b.n_opt], [b.metric_opt], marker="P", s=70, color="tab:red" if b.used else "pink",
                           zorder=5, label=None)
    ax.set_xscale("log")
    ax.set_xlabel("N (non-embedding parameters)")
    ax.set_ylabel(fit.metric_name)
    stars = [float(fit.predict(frontier.n_opt(b), b / (k * frontier.n_opt(b)))) for b in budgets]
    lo, hi = min(float(v.min()), *stars), float(v.max())
    pad = 0.1 * (hi - lo) if hi > lo else 0.05 * abs(hi)
    ax.set_ylim(lo - pad, hi + pad)  # curves far from the runs would flatten the plot
    ax.set_title(f"IsoFLOP curves of the fit, D = C / ({k:g} N); * = N_opt", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    ax.grid(True, which="both", alpha=0.25)

    c_grid = np.geomspace(c.min() / 3, c.max() * 100, 100)
    for label, line, colour in (("N_opt(C)", frontier.n_opt(c_grid), "tab:blue"), ("D_opt(C)", frontier.d_opt(c_grid), "tab:orange")):
        bx.plot(c_grid, line, color=colour, lw=1.8, label=label)
    rows = frontier.table(c_grid)
    for key, colour in (("n_opt_interval", "tab:blue"), ("d_opt_interval", "tab:orange")):
        lo = np.array([r[key][0] for r in rows])
        hi = np.array([r[key][1] for r in rows])
        if np.all(np.isfinite(lo)):
            bx.fill_between(c_grid, lo, hi, color=colour, alpha=0.18, lw=0)
    bx.scatter(c, n, s=12, color="tab:blue", alpha=0.4, label="runs: N")
    bx.scatter(c, d, s=12, color="tab:orange", alpha=0.4, marker="s", label="runs: D")
    if isoflop is not None:
        used = [b for b in isoflop.budgets if b.used and b.n_opt is not None]
        if used:
            bx.scatter([b.flops for b in used], [b.n_opt for b in used], marker="P", s=70, color="tab:red",
                       label="approach 2 N_opt", zorder=5)
    bx.set_xscale("log")
    bx.set_yscale("log")
    bx.set_xlabel("training FLOPs C")
    bx.set_title(f"Frontier: N_opt ~ C^{frontier.a:.3f}, D_opt ~ C^{frontier.b:.3f}", fontsize=10)
    bx.legend(fontsize=7, loc="best")
    bx.grid(True, which="both", alpha=0.25)
    if flops_convention:
        fig.text(0.01, 0.0, textwrap.fill(f"FLOPs convention: {flops_convention}; frontier with C = {k:g} N D", 150),
                 fontsize=7, va="bottom", alpha=0.8)
        fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    return _save(fig, path)


def family_scaling_figure(result: dict[str, Any], *, metric: str, path: str | Path) -> Path:
    """`metric` against training FLOPs, one colour per family, with each family's log-linear fit
    y = a + b ln C over its runs' range (`analysis.family_study.analyse_families`, one metric's
    result). Writes a PNG at `path`."""
    fig = Figure(figsize=(7.0, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colours = colormaps["tab10"]
    for index, (family, fam) in enumerate(sorted(result["per_family"].items())):
        flops = np.array([p["flops"] for p in fam["points"]], dtype=float)
        y = np.array([p[metric] for p in fam["points"]], dtype=float)
        colour = colours(index % 10)
        ax.scatter(flops, y, color=colour, s=22, label=f"{family} ({len(flops)} runs)")
        line = ((fam.get("plain") or {}).get("log_linear") or {}).get("fit")
        if line and flops.size:
            grid = np.geomspace(flops.min(), flops.max(), 50)
            ax.plot(grid, line["params"]["a"] + line["params"]["b"] * np.log(grid), color=colour, lw=1.2,
                    label=f"{family}: {line['gain_per_decade']:+.4f} per decade")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs spent up to the reported epoch")
    ax.set_ylabel(f"{metric} (test, at the best validation epoch)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    return out
