"""The fitting API in one import: the fitted forms, the frontier, and the improvement test.

Each piece lives in its own module (`powerlaw`, `loglinear`, `purepower`, `chinchilla`,
`frontier`, `isoflop`, `evidence`, with input checks in `inputs`, metric ranges in `bounds` and
the run-to-run noise behind every interval in `noise`); this module only gathers them
so callers need not know the split. Backtests (`analysis.backtest`), forecasts
(`analysis.forecast`) and the whole pipeline (`analysis.study`) are imported from their modules.
"""

from __future__ import annotations

from analysis.bounds import MetricBounds, metric_bounds
from analysis.chinchilla import ChinchillaFit, fit_chinchilla
from analysis.evidence import ImprovementEvidence, assess_improvement
from analysis.frontier import Frontier, compute_frontier
from analysis.isoflop import IsoFlopResult, fit_isoflop
from analysis.loglinear import LogLinearFit, fit_log_linear
from analysis.noise import NoiseModel, estimate_noise
from analysis.powerlaw import ALPHA_BOUNDS, PowerLawFit, fit_saturating_power_law
from analysis.purepower import PurePowerFit, fit_pure_power_law

__all__ = [
    "ALPHA_BOUNDS",
    "ChinchillaFit",
    "Frontier",
    "ImprovementEvidence",
    "IsoFlopResult",
    "LogLinearFit",
    "MetricBounds",
    "NoiseModel",
    "PowerLawFit",
    "PurePowerFit",
    "assess_improvement",
    "compute_frontier",
    "estimate_noise",
    "fit_chinchilla",
    "fit_isoflop",
    "fit_log_linear",
    "fit_pure_power_law",
    "fit_saturating_power_law",
    "metric_bounds",
]
