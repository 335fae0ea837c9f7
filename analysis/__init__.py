"""Scaling-law analysis: fits with calibrated intervals, evidence tests, plots and reports.

Imports flow `analysis -> sweeps -> ...`; nothing here imports torch. Plotting (matplotlib) is
confined to `analysis.plots` and loaded only by `analysis.report`, so importing the fits stays fast.
"""

from __future__ import annotations

from analysis.fit import (
    ChinchillaFit,
    ImprovementEvidence,
    LogLinearFit,
    PowerLawFit,
    PurePowerFit,
    assess_improvement,
    compute_frontier,
    fit_chinchilla,
    fit_isoflop,
    fit_log_linear,
    fit_pure_power_law,
    fit_saturating_power_law,
    metric_bounds,
)

__all__ = [
    "ChinchillaFit",
    "ImprovementEvidence",
    "LogLinearFit",
    "PowerLawFit",
    "PurePowerFit",
    "assess_improvement",
    "compute_frontier",
    "fit_chinchilla",
    "fit_isoflop",
    "fit_log_linear",
    "fit_pure_power_law",
    "fit_saturating_power_law",
    "metric_bounds",
]
