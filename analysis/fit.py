"""The fitting API in one import: power law, log-linear fit, and the improvement test.

Each piece lives in its own module (`powerlaw`, `loglinear`, `evidence`, with input checks in
`inputs`); this module only gathers them so callers need not know the split. Later fits
(two-variable Chinchilla forms, backtests, forecasts) are added beside them and exported here.
"""

from __future__ import annotations

from analysis.evidence import ImprovementEvidence, assess_improvement
from analysis.loglinear import LogLinearFit, fit_log_linear
from analysis.powerlaw import ALPHA_BOUNDS, PowerLawFit, fit_saturating_power_law

__all__ = [
    "ALPHA_BOUNDS",
    "ImprovementEvidence",
    "LogLinearFit",
    "PowerLawFit",
    "assess_improvement",
    "fit_log_linear",
    "fit_saturating_power_law",
]
