"""HTML sections of the report for `analysis.study`: model choice and backtest, the pure power law,
the two-variable law, the compute-optimal frontier and IsoFLOP profiles, and the forecast table.

Rendering only (every user string through `html.escape`); `analysis.report_html` assembles them.
"""

from __future__ import annotations

import html
import math
from typing import Any

from analysis.study import Study

_PCT = ("80%", "95%")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _g(v: Any, fmt: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "unreachable" if v > 0 else "-inf"
    return format(v, fmt)


def _iv(pair: Any, fmt: str = ".4g") -> str:
    if not pair or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in pair):
        return "n/a"
    return f"[{_g(pair[0], fmt)}, {_g(pair[1], fmt)}]"


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{x}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def model_choice_section(study: Study) -> str:
    parts = []
    ch = study.choice
    if study.backtest_error:
        parts.append(f"<p>No backtest: {_e(study.backtest_error)}</p>")
    else:
        hold = study.options.holdout
        what = f"the largest {100 * hold:g}% of runs by FLOPs" if isinstance(hold, float) and hold < 1 else f"the {hold} largest run(s)"
        parts.append(f"<p>Backtest: each form is fitted on all runs but {_e(what)} (ties held out together) and "
                     "predicts them; the interval is for one new run (curve + resampled residual).</p>")
    rows = []
    for r in ch.table:
        mark = " &#9733;" if r["form"] == ch.chosen else ""
        rows.append([
            _e(r["label"]) + mark, "yes" if r["converged"] else "<b>NO</b>", str(r["n_params"]),
            _g(None if r["backtest_mean_abs_rel_err"] is None else 100 * r["backtest_mean_abs_rel_err"], ".3g"),
            _g(r["backtest_interval_coverage"], ".2f"), _g(r["aic"], ".1f"), _g(r["delta_aic"], ".1f"),
            _g(r["bic"], ".1f"), _g(r["delta_bic"], ".1f"),
        ])
    for form, why in study.errors.items():
        rows.append([_e(form), "not fitted", "", "", "", "", "", "", _e(why)])
    parts.append(_table(["form", "converged", "k", "backtest mean |rel. err.| %", "interval coverage",
                         "AIC", "&Delta;AIC", "BIC", "&Delta;BIC"], rows))
    parts.append(f"<p id='model-choice'><b>Chosen for the forecast ({_e(ch.criterion)}):</b> {_e(ch.reason)}.</p>")
    bt = study.backtests.get(study.forecast_form or "")
    if bt is not None and bt.ok:
        lvl = round(100 * bt.level)
        rows = [[_e(r["run_id"]), _g(r["flops"], ".3e"), _g(r["observed"]), _g(r["predicted"]), _g(r["abs_err"], ".3g"),
                 _g(None if r["rel_err"] is None else 100 * r["rel_err"], ".3g"), _iv(r["interval"])]
                for r in bt.to_dict()["runs"]]
        parts.append(f"<p>Held-out runs, {_e(bt.form)} fitted on the {bt.n_train} smaller runs:</p>")
        parts.append(_table(["run", "FLOPs", "observed", "predicted", "abs. err.", "rel. err. %", f"{lvl}% interval"], rows))
    return "".join(parts)


def pure_power_section(study: Study) -> str:
    f = study.fits.get("pure_power")
    if f is None:
        return f"<p>Not fitted: {_e(study.errors.get('pure_power', 'n/a'))}</p>"
    fit = f.fit
    pct = round(100 * fit.level)
    rows = [[k, _g(v, ".5g"), _iv(fit.param_intervals[k])] for k, v in fit.params.items()]
    return (f"<p>Formula: <code>{_e(fit.formula)}</code>, OLS of ln y on ln(C/C0).</p>"
            + _table(["parameter", "estimate", f"{pct}% t interval"], rows)
            + f"<p>R&sup2; (log space) = {fit.r2_log:.4f}; residual sd of ln y = {fit.sigma_log:.3g}.</p>"
            + f"<details><summary>statsmodels OLS summary</summary><pre>{_e(fit.summary_text)}</pre></details>")


def chinchilla_section(study: Study) -> str:
    f = study.fits.get("chinchilla")
    if f is None:
        return (f"<p>Not fitted: {_e(study.errors.get('chinchilla', 'n/a'))}. The two-variable law needs N "
                "(params_non_embedding) and D (train_tokens) per run, each with >= 3 distinct values.</p>")
    fit = f.fit
    pct = round(100 * fit.level)
    rows = [[k, _g(v, ".5g"), _iv(fit.param_intervals[k], ".5g")] for k, v in fit.params.items()]
    conv = "yes" if fit.converged else "<b>NO</b>"
    return (f"<p>Formula: <code>{_e(fit.formula)}</code> (N = non-embedding parameters, D = training tokens); "
            "Chinchilla approach 3: log-sum-exp parametrisation, Huber loss (delta "
            f"{fit.huber_delta:g}) on log residuals, summed; L-BFGS from a grid of starts, best kept.</p>"
            + _table(["parameter", "estimate", f"{pct}% bootstrap interval"], rows)
            + f"<p>Converged: {conv} ({_e(fit.message)}). Huber loss {fit.huber_loss:.4g}. Bootstrap: "
            f"{fit.n_bootstrap_used} of {fit.n_bootstrap} refits used ({fit.n_bootstrap_degenerate} resamples with "
            f"&lt; 3 distinct N or D skipped, {fit.n_bootstrap_not_converged} not converged), unit: "
            f"{_e(fit.bootstrap_unit)}. Parameters on a bound: {_e(', '.join(fit.params_at_bounds) or 'none')}.</p>")


def frontier_section(study: Study) -> str:
    parts = []
    fr = study.frontier
    if fr is None:
        parts.append("<p>No frontier: it needs the two-variable law (see above).</p>")
    else:
        pct = round(100 * fr.level)
        parts.append(
            f"<p>With <b>C = {fr.flops_per_nd:g} N D</b> (the frontier's convention; change it with "
            f"--flops-per-nd): N_opt = G (C/{fr.flops_per_nd:g})^a, D_opt = (C/{fr.flops_per_nd:g})^b / G.</p>"
            + _table(["quantity", "estimate", f"{pct}% bootstrap interval"], [
                ["a (N_opt ~ C^a)", _g(fr.a), _iv(fr.intervals["a"])],
                ["b (D_opt ~ C^b)", _g(fr.b), _iv(fr.intervals["b"])],
                ["G", _g(fr.G), _iv(fr.intervals["G"])],
                ["gamma (metric gap ~ C^-gamma on the frontier)", _g(fr.gamma), _iv(fr.intervals["gamma"])],
            ]))
        rows = [[_g(r["flops"], ".3e"), _g(r["n_opt"], ".3e"), _iv(r["n_opt_interval"], ".3e"), _g(r["d_opt"], ".3e"),
                 _iv(r["d_opt_interval"], ".3e"), _g(r["metric_opt"]), _iv(r["metric_opt_interval"])]
                for r in fr.table(study._budgets())]
        parts.append(_table(["C (FLOPs)", "N_opt", "interval", "D_opt", "interval", f"{_e(study.data.metric)} at optimum",
                             "interval"], rows))
    iso = study.isoflop
    if iso is not None:
        if iso.a is None:
            parts.append(f"<p>IsoFLOP (approach 2): {_e(iso.note)}.</p>")
        else:
            parts.append(f"<p>IsoFLOP (approach 2): N_opt ~ C^{iso.a:.3f}, interval {_iv(iso.a_interval)}; "
                         f"D_opt ~ C^{iso.b:.3f} ({_e(iso.note)}).</p>")
    return "".join(parts)


def forecast_section(study: Study, flops_convention: str) -> str:
    fc = study.forecast
    if fc is None:
        return f"<p>No forecast: {_e(study.forecast_error)}</p>"
    parts = [f"<p>Curve: <code>{_e(fc.description)}</code> ({_e(fc.form)}). FLOPs convention: "
             f"{_e(flops_convention)}. Largest observed run: {fc.max_observed_flops:.3g} FLOPs; run-to-run "
             f"residual sd {_g(fc.residual_sd, '.3g')}.</p>"]
    rows = [[_g(a["flops"], ".3e"), _g(a["value"]), *(_iv(a["curve"][p]) for p in _PCT), *(_iv(a["new_run"][p]) for p in _PCT)]
            for a in fc.at]
    parts.append(_table(["C (FLOPs)", _e(study.data.metric), "curve 80%", "curve 95%", "new run 80%", "new run 95%"], rows))
    if fc.targets:
        rows = [[_g(t["target"]), _e(t["verdict"])] for t in fc.targets]
        parts.append(_table(["target", "FLOPs needed"], rows))
    nx = fc.next_10x
    if nx is not None:
        unit = nx["unit"]
        key = unit.replace("-", "_")
        c = nx["cost"]
        parts.append(
            f"<p id='next-10x'><b>Next 10x</b> ({nx['from_flops']:.3g} &rarr; {nx['to_flops']:.3g} FLOPs on "
            f"{_e(c['inputs']['device'])} at MFU {c['inputs']['mfu']:g}): {c['device_hours']:.4g} device-hours, cost "
            f"{c['cost']:.4g} (price {c['inputs']['price_per_device_hour']:g} per device-hour). Predicted gain "
            f"{_g(nx['gain'])} (80% {_iv(nx['gain_intervals']['80%'])}, 95% {_iv(nx['gain_intervals']['95%'])}); "
            f"gain per {'unit of money' if unit == 'money' else unit}: {_g(nx[f'gain_per_{key}'])}; marginal gain "
            f"per {'unit of money' if unit == 'money' else unit} at the larger run: "
            f"{_g(nx[f'marginal_gain_per_{key}_at_to'])}.</p>")
    parts.extend(f"<p class='note'>Note: {_e(n)}</p>" for n in fc.notes)
    return "".join(parts)
