"""What `gr-scaling fit` and `forecast` print, and the JSON `forecast --json` writes.

Text from the analysis' own records (fit.json's dict, `analysis.study.Study`): one line per
fitted form, its backtest and intervals, the forecast table and the cost of the next 10x.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from analysis.dataset import Selection
from analysis.report import plain_json
from analysis.study import Study


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
    a = summary.get("analysis") or {}
    fits = a.get("fits", {})  # each form's fit, once; summary["power_law"] only points here
    power_law = (fits.get("power_law") or {}).get("fit")
    if power_law:
        lines.append(f"  {power_law['formula']}")
        lines += [f"  {k} = {v:.4g}  {_iv(power_law['param_intervals'][k])}" for k, v in power_law["params"].items()]
    else:
        lines.append(f"  no power-law fit: {a.get('fit_errors', {}).get('power_law', 'no usable runs')}")
    lines.append(summary["verdict"])
    if not a:
        return "\n".join(lines)
    lines.append("forms (backtest on the largest runs; AIC/BIC in-sample):")
    for row in a["model_choice"]["table"]:
        bt = a["backtests"].get(row["form"]) or {}
        err = bt.get("mean_abs_rel_err")
        why = bt.get("error") or a.get("backtest_error") or "not run"
        score = f"{100 * err:.3g}%" if err is not None else f"n/a ({why.split(':')[0]})"
        lines.append(f"  {row['form']:<11} backtest |rel err| {score}  dAIC {_g(row['delta_aic'], '.1f')}  "
                     f"dBIC {_g(row['delta_bic'], '.1f')}{'' if fits[row['form']]['converged'] else '  NOT CONVERGED'}")
    for form, why in a["fit_errors"].items():
        lines.append(f"  {form:<11} not fitted: {why}")
    lines.append(f"  forecast form: {a['forecast_form']} ({a['model_choice']['criterion']})")
    ch = fits.get("chinchilla")
    if ch:
        law = ch["fit"]
        lines.append(f"  {law['formula']}{'' if ch['converged'] else '  (DID NOT CONVERGE: ' + ch['message'] + ')'}")
        lines += [f"    {k} = {v:.4g}  {_iv(law['param_intervals'][k])}" for k, v in law["params"].items()]
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
