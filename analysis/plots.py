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

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.inputs import ArrayLike
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
    fit: PowerLawFit | None,
    metric_name: str,
    flops_convention: str,
    path: str | Path,
    labels: Sequence[str] | None = None,
    groups: Sequence[Hashable] | None = None,
    group_name: str = "group",
    log_linear: LogLinearFit | None = None,
    replicate_means: tuple[ArrayLike, ArrayLike] | None = None,
    title: str | None = None,
) -> Path:
    """Scatter one point per run against training FLOPs (log x), with the fit and its band.

    `fit=None` draws the points only (used when no fit is possible). `groups` colours points by
    a per-run value such as model depth; `replicate_means` (flops, mean) marks seed-averaged
    configs. Returns the PNG path.
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
    ax.set_xlabel("training FLOPs")
    fig.text(0.01, 0.0, textwrap.fill(f"FLOPs convention: {flops_convention}", 120), fontsize=7, va="bottom", alpha=0.8)
    fig.get_layout_engine().set(rect=(0, 0.06, 1, 0.94))
    ax.set_title(title or f"{metric_name} vs training compute")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    return out
