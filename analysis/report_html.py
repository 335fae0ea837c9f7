"""Render a scaling report as one self-contained HTML page (inline CSS, PNG as base64).

Rendering only: `analysis.report` decides what goes in (`ReportContent`); this module escapes and
lays it out. Every user-provided string passes through `html.escape`.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from analysis import report_sections as sections
from analysis.dataset import X_AXIS_SPENT, Selection
from analysis.evidence import ImprovementEvidence
from analysis.loglinear import LogLinearFit
from analysis.powerlaw import PowerLawFit
from analysis.study import Study

# (row key, column header); optional ones appear only when some run has them.
RUN_COLUMNS = (
    ("run_id", "run"),
    ("params_non_embedding", "params (non-emb.)"),
    ("train_tokens", "train tokens"),
    ("num_blocks", "blocks"),
    ("embedding_dim", "dim"),
    ("num_users", "users"),
    ("seed", "seed"),
    ("reported_epoch", "reported epoch"),
    ("epochs_run", "epochs run"),
    ("flops_planned", "planned FLOPs"),
    ("flops", "training FLOPs"),
)
WALL_COLUMN = ("wall_time_s", "wall time (s)")

_CSS = """
body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.verdict{padding:.8em 1em;border-radius:6px;font-size:1.08em;font-weight:600;margin:1em 0}
.improves{background:#e6f4ea;border-left:6px solid #2e7d32}
.no-evidence{background:#fff4e5;border-left:6px solid #ef6c00}
.no-fit{background:#fdecea;border-left:6px solid #c62828}
#caveats{margin:.3em 0 1em;padding-left:1.4em;font-size:.92em;color:#5d4037}
.note{font-size:.9em;color:#555}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:right} th{background:#f5f5f5}
td:first-child,th:first-child{text-align:left}
code,pre{background:#f7f7f7;font-size:.85em} pre{padding:.6em;overflow-x:auto}
img{max-width:100%}
"""


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ReportContent:
    title: str
    metric: str
    higher_is_better: bool
    flops_convention: str
    runs: Sequence[Mapping[str, Any]]  # usable runs, sorted by FLOPs
    excluded: Sequence[tuple[str, str]]  # (run_id, why)
    power_law: PowerLawFit | None
    power_law_error: str | None
    log_linear: LogLinearFit | None
    log_linear_error: str | None
    evidence: ImprovementEvidence | None
    verdict: str
    n_replicated_configs: int
    png: bytes | None
    study: Study | None = None
    residuals_png: bytes | None = None
    frontier_png: bytes | None = None
    selection: Selection | None = None  # None: rows used as given (no selection recorded)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, fmt: str = ".4g") -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else format(value, fmt)
    return _e(value)


def _interval(lo: float, hi: float) -> str:
    return "not available" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:.4g}, {hi:.4g}]"


def _caveats(content: ReportContent) -> list[str]:
    """Every caveat once, for one short list under the verdict.

    The verdict states the finding; why to doubt it is listed here only. Without a fit the verdict
    already says why and that no claim is made, so that is not repeated. The study's note that the
    power law did not converge repeats the evidence's caveat, so only the latter is kept.
    """
    out: list[str] = []
    fit, evidence = content.power_law, content.evidence
    if evidence is not None:
        out.extend(evidence.caveats)
    elif fit is not None and not fit.converged:
        out.append(f"the power-law fit did not converge ({fit.message}): its parameters are not reliable")
    if fit is not None and fit.n_bootstrap_used < 20:
        out.append(f"only {fit.n_bootstrap_used} usable bootstrap resamples: no intervals or band")
    if content.study is not None:
        out.extend(n for n in content.study.notes if not (fit is not None and n.startswith("the power_law fit ")))
    sel = content.selection
    if sel is not None and sel.fallback:
        out.append(sel.fallback)
    if content.excluded:
        listed = "; ".join(f"{run_id}: {why}" for run_id, why in content.excluded)
        out.append(f"{len(content.excluded)} run(s) excluded from the fit: {listed}")
    return out


def _selection_line(content: ReportContent) -> str:
    sel = content.selection
    if sel is None:
        return ""
    spent = sel.x_axis == X_AXIS_SPENT
    where = f"the {_e(sel.x_axis)}" + (f" ({_e(sel.x_key)}; D = {_e(sel.d_key)})" if spent else "")
    return (f"<b>Selection:</b> <span id='selection'>{_e(sel.name)}</span>: each run's {_e(content.metric)} is "
            f"{'its test value' if spent else 'as recorded'} at {_e(sel.checkpoint)} ({_e(sel.y_key)}), plotted and "
            f"fitted at {where}. ")


def _power_law_section(fit: PowerLawFit) -> str:
    pct = round(100 * fit.level)
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td>{v:.5g}</td><td>{_interval(*fit.param_intervals[k])}</td></tr>"
        for k, v in fit.params.items()
    )
    bounds = ", ".join(fit.params_at_bounds) or "none"
    return (
        f"<p>Formula: <code>{_e(fit.formula)}</code></p>"
        f"<table><tr><th>parameter</th><th>estimate</th><th>{pct}% bootstrap interval</th></tr>{rows}</table>"
        f"<p>R&sup2; = {fit.r2:.4f}; residual sum of squares {fit.rss:.4g}; {fit.n_points} runs; "
        f"converged: {'yes' if fit.converged else '<b>NO</b>'} ({_e(fit.message)}). "
        f"Bootstrap: {fit.n_bootstrap_used} of {fit.n_bootstrap} resamples used "
        f"({fit.n_bootstrap_degenerate} skipped with &lt; 3 distinct FLOPs), seed {fit.seed}, unit: "
        f"{_e(fit.bootstrap_unit)}. "
        f"Parameters on a bound: {_e(bounds)}.</p>"
    )


def _log_linear_section(ll: LogLinearFit) -> str:
    pct = round(100 * ll.level)
    a_lo, a_hi = ll.param_intervals["a"]
    b_lo, b_hi = ll.param_intervals["b"]
    return (
        f"<p>Formula (the HSTU paper's form): <code>{_e(ll.formula)}</code>, C in FLOPs.</p>"
        f"<table><tr><th>parameter</th><th>estimate</th><th>{pct}% t interval</th></tr>"
        f"<tr><td>a</td><td>{ll.params['a']:.5g}</td><td>{_interval(a_lo, a_hi)}</td></tr>"
        f"<tr><td>b</td><td>{ll.params['b']:.5g}</td><td>{_interval(b_lo, b_hi)}</td></tr></table>"
        f"<p>Change per 10x compute: {ll.gain_per_decade:.4g} "
        f"(interval {_interval(b_lo * math.log(10), b_hi * math.log(10))}); slope p-value (two-sided) "
        f"{ll.slope_p_value:.2g}; R&sup2; = {ll.r2:.4f}.</p>"
        f"<details><summary>statsmodels OLS summary</summary><pre>{_e(ll.summary_text)}</pre></details>"
    )


def _runs_table(content: ReportContent) -> str:
    present = [col for col in RUN_COLUMNS if col[0] in ("run_id", "flops") or any(col[0] in r for r in content.runs)]
    if content.selection is not None and content.selection.x_axis == X_AXIS_SPENT:
        present = [(k, "FLOPs spent to the checkpoint" if k == "flops" else h) for k, h in present]
    cols = [*present, (content.metric, content.metric)]
    if any(WALL_COLUMN[0] in r for r in content.runs):
        cols.append(WALL_COLUMN)
    head = "".join(f"<th>{_e(h)}</th>" for _, h in cols)
    body = "".join(
        "<tr>" + "".join(
            f"<td>{_num(r.get(k), '.3e' if k in ('flops', 'flops_planned') else '.4g')}</td>" for k, _ in cols
        ) + "</tr>"
        for r in content.runs
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


def render_html(content: ReportContent) -> str:
    if content.evidence is not None:
        klass = "improves" if content.evidence.improves else "no-evidence"
    else:
        klass = "no-fit"
    direction = "higher" if content.higher_is_better else "lower"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{_e(content.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(content.title)}</h1>",
        f"<div class='verdict {klass}' id='verdict'>{_e(content.verdict)}</div>",
    ]
    caveats = _caveats(content)
    if caveats:
        parts.append("<ul id='caveats'>" + "".join(f"<li>{_e(c)}</li>" for c in caveats) + "</ul>")
    parts.append(
        f"<p><b>Metric:</b> {_e(content.metric)} ({direction} is better). {_selection_line(content)}"
        f"<b>FLOPs convention:</b> <span id='flops-convention'>{_e(content.flops_convention)}</span>. "
        f"<b>Runs:</b> {len(content.runs)} used, {len(content.excluded)} excluded.</p>")
    if content.png is not None:
        parts.append(_img(content.png, f"{content.metric} vs training FLOPs"))
    parts.append("<h2>Saturating power law</h2>")
    if content.power_law is not None:
        parts.append(_power_law_section(content.power_law))
    else:
        parts.append(f"<p>No fit: {_e(content.power_law_error)}</p>")
    parts.append("<h2>Log-linear fit (for comparison)</h2>")
    if content.log_linear is not None:
        parts.append(_log_linear_section(content.log_linear))
    else:
        parts.append(f"<p>No fit: {_e(content.log_linear_error)}</p>")
    study = content.study
    if study is not None:
        parts.append("<h2>Model choice and backtest</h2>")
        parts.append(sections.model_choice_section(study))
        if content.residuals_png is not None:
            parts.append(_img(content.residuals_png, "residuals"))
        parts.append("<h2>Pure power law (OLS in log-log space)</h2>")
        parts.append(sections.pure_power_section(study))
        parts.append("<h2>Two-variable law L(N, D)</h2>")
        parts.append(sections.chinchilla_section(study))
        parts.append("<h2>Compute-optimal frontier and IsoFLOP curves</h2>")
        parts.append(sections.frontier_section(study))
        if content.frontier_png is not None:
            parts.append(_img(content.frontier_png, "IsoFLOP curves and compute-optimal frontier"))
        parts.append("<h2>Forecast</h2>")
        parts.append(sections.forecast_section(study, content.flops_convention))
    parts.append("<h2>Runs (sorted by training FLOPs)</h2>")
    if content.n_replicated_configs:
        parts.append(
            f"<p>{content.n_replicated_configs} config(s) have several seeds. Every run is a separate "
            "point in the fit; the bootstrap resamples whole configs (all seeds of a config together), "
            "so replicates never count as independent evidence; the plot also marks seed means.</p>"
        )
    parts.append(_runs_table(content))
    parts.append("</body></html>")
    return "\n".join(parts)
