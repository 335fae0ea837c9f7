"""The fit forms, one explicit dict from name to the form (`analysis.curves.Form`), and `fit_form`.

Each form is defined once, in its module: "power_law" (saturating, `analysis.powerlaw`),
"log_linear" (`analysis.loglinear`), "pure_power" (`analysis.purepower`) in training FLOPs C, and
"chinchilla" (`analysis.chinchilla`) in (N, D). Backtests, model choice and forecasts use the
`FormFit` that `fit_form` returns and never branch on a form's name.
"""

from __future__ import annotations

from analysis.bounds import check_in_bounds, metric_bounds
from analysis.chinchilla import Chinchilla
from analysis.curves import Form, FormFit
from analysis.dataset import ScalingData
from analysis.loglinear import LogLinear
from analysis.powerlaw import PowerLaw
from analysis.purepower import PurePower

FORMS: dict[str, type[Form]] = {"power_law": PowerLaw, "log_linear": LogLinear, "pure_power": PurePower,
                                "chinchilla": Chinchilla}
FORM_NAMES = tuple(FORMS)

__all__ = ["FORMS", "FORM_NAMES", "Form", "FormFit", "fit_form"]


def fit_form(
    name: str, data: ScalingData, *, n_bootstrap: int = 500, seed: int = 0, level: float = 0.95,
    flops_per_nd: float = 6.0,
) -> FormFit:
    """Fit one form to the runs of `data`; ValueError (with the reason) when it cannot be fitted.

    The metric's range (`analysis.bounds`, from `data.metric`) constrains the saturating law and
    clips every form's draws; values outside it are rejected. `flops_per_nd` is the k in C = k N D
    of the two-variable law's curve in C.
    """
    if name not in FORMS:
        raise ValueError(f"form must be one of {list(FORMS)}, got {name!r}")
    check_in_bounds(data.y, metric_bounds(data.metric))
    return FORMS[name].fit(data, n_bootstrap=n_bootstrap, seed=seed, level=level, flops_per_nd=flops_per_nd)
