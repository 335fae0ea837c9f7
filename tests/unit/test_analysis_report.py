"""write_report / plot_metric_vs_flops outputs, and the analysis package's import rules."""

from __future__ import annotations

import ast
import base64
import dataclasses
import html
import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from matplotlib.container import ErrorbarContainer

from analysis.backtest import Backtest
from analysis.fit import fit_saturating_power_law
from analysis.plots import DPI, metric_vs_flops_figure, plot_metric_vs_flops, residuals_figure
from analysis.evidence import assess_improvement
from analysis.report import write_report
from analysis.report_html import ReportContent, render_html

ANALYSIS = Path(__file__).resolve().parents[2] / "analysis"
CONVENTION = "exact HSTU count, causal attention, backward = 2x forward"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])


def _rows(n_configs: int = 6, seeds: int = 2) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_configs):
        flops = 1e13 * 3.0**i
        for s in range(seeds):
            ndcg = 0.20 - 0.05 * (flops / 1e14) ** -0.35 + rng.normal(0.0, 1.5e-3)
            rows.append({
                "run_id": f"cfg{i}-s{s}", "flops": flops, "ndcg@10": ndcg, "hr@10": 2 * ndcg,
                "params_non_embedding": 10_000 * 2**i, "num_blocks": 2 * (1 + i // 2),
                "embedding_dim": 32 * (1 + i % 2), "num_users": 2000, "seed": s, "wall_time_s": 5.0 + i,
            })
    return rows[::-1]  # unsorted on purpose: the report sorts by FLOPs


def _repeated_objects(doc) -> list[list[str]]:
    """Paths of JSON objects (with >= 3 values) that fit.json holds more than once."""
    seen: dict[str, list[str]] = {}

    def walk(v, path: str) -> int:
        if isinstance(v, dict):
            n = sum(walk(x, f"{path}/{k}") for k, x in v.items())
            if n >= 3:
                seen.setdefault(json.dumps(v, sort_keys=True), []).append(path)
            return n
        if isinstance(v, list):
            return sum(walk(x, f"{path}/{i}") for i, x in enumerate(v))
        return 1

    walk(doc, "")
    return [paths for paths in seen.values() if len(paths) > 1]


def test_report_writes_three_files_with_verdict_convention_and_image(tmp_path) -> None:
    rows = _rows()
    paths = write_report(tmp_path / "rep", rows, metric="ndcg@10", higher_is_better=True,
                         flops_convention=CONVENTION, title="HSTU <test> scaling", n_bootstrap=200)
    for p in (paths.fit_json, paths.plot_png, paths.report_html):
        assert p is not None and p.is_file() and p.stat().st_size > 0
    summary = json.loads(paths.fit_json.read_text())
    page = paths.report_html.read_text()

    assert summary["improves"] is True
    assert summary["verdict"].startswith("ndcg@10 improves with compute: +")
    assert not re.search(r"[.;:]\s+[A-Z]", summary["verdict"]) and "Caveat" not in summary["verdict"]  # one sentence
    assert html.escape(summary["verdict"]) in page
    assert CONVENTION in page and summary["flops_convention"] == CONVENTION
    assert "HSTU &lt;test&gt; scaling" in page  # user strings are escaped
    flops = [p["flops"] for p in summary["points"]]
    assert flops == sorted(flops) and len(flops) == 12
    fits = summary["analysis"]["fits"]  # each fit once; the summary points to the headline ones
    assert summary["power_law"] == "#/analysis/fits/power_law" and summary["log_linear"] == "#/analysis/fits/log_linear"
    power_law = fits["power_law"]["fit"]
    assert set(power_law["params"]) == {"y_max", "A", "alpha"}
    # Seeds of one config are resampled together: 6 configs, so a few resamples have < 3 budgets.
    assert power_law["n_bootstrap_used"] + power_law["n_bootstrap_degenerate"] == 200
    assert power_law["n_bootstrap_used"] >= 180 and power_law["bootstrap_unit"] == "replicate group (config)"
    assert summary["analysis"]["replicate_groups"] == 6
    assert fits["log_linear"]["fit"]["params"]["b"] > 0
    assert not _repeated_objects(summary)
    assert "hr@10" not in summary["points"][0]  # only the fitted metric and known columns

    match = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert match is not None
    embedded = base64.b64decode(match.group(1))
    assert embedded == paths.plot_png.read_bytes()
    assert _png_size(embedded) == (round(7.5 * DPI), round(5.0 * DPI))
    # Runs table is in FLOPs order and states the fit's formula and intervals.
    runs_table = page[page.index("<h2>Runs"):]
    assert runs_table.index("cfg0-s0") < runs_table.index("cfg5-s0")
    assert "y_max - A * (C / C0)^(-alpha)" in page and "95% bootstrap interval" in page
    assert "OLS Regression Results" in page


def test_report_with_two_runs_says_no_fit_is_possible(tmp_path) -> None:
    paths = write_report(tmp_path, _rows()[:2], metric="ndcg@10", higher_is_better=True,
                         flops_convention=CONVENTION, title="tiny")
    summary = json.loads(paths.fit_json.read_text())
    page = paths.report_html.read_text()
    assert summary["power_law"] is None and summary["evidence"] is None and summary["improves"] is None
    assert "needs at least 4" in summary["analysis"]["fit_errors"]["power_law"]
    assert summary["verdict"].startswith("No fit is possible")
    assert "No fit is possible" in page and "no-fit" in page and CONVENTION in page
    assert paths.plot_png is not None and paths.plot_png.is_file()  # the points are still shown


def test_report_with_constant_metric_and_bad_runs(tmp_path) -> None:
    rows = [{"run_id": f"r{i}", "flops": 1e13 * 10**i, "ne": 0.9} for i in range(5)]
    rows.append({"run_id": "diverged", "flops": 1e15, "ne": float("nan")})
    paths = write_report(tmp_path, rows, metric="ne", higher_is_better=False,
                         flops_convention=CONVENTION, title="flat")
    summary = json.loads(paths.fit_json.read_text())
    assert "constant" in summary["analysis"]["fit_errors"]["power_law"]
    assert summary["excluded"] == [{"run_id": "diverged", "reason": "ne is nan (diverged or unfinished run?)"}]
    assert "1 run(s) excluded" in paths.report_html.read_text()


def test_report_rejects_malformed_rows(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"rows\[0\] .* has no 'ndcg@10'.*pass metric="):
        write_report(tmp_path, [{"run_id": "a", "flops": 1e13, "ne": 0.9}], metric="ndcg@10",
                     higher_is_better=True, flops_convention=CONVENTION, title="t")
    dup = [{"run_id": "a", "flops": 1e13, "ne": 0.9}] * 2
    with pytest.raises(ValueError, match="run_id 'a' appears twice"):
        write_report(tmp_path, dup, metric="ne", higher_is_better=False, flops_convention=CONVENTION, title="t")
    with pytest.raises(ValueError, match="flops_convention"):
        write_report(tmp_path, dup, metric="ne", higher_is_better=False, flops_convention="", title="t")


def test_html_flags_a_fit_that_did_not_converge() -> None:
    c = np.geomspace(1e13, 1e15, 6)
    y = 0.2 - 0.05 * (c / 1e14) ** -0.4
    fit = dataclasses.replace(
        fit_saturating_power_law(c, y, higher_is_better=True, n_bootstrap=50), converged=False, message="max_nfev"
    )
    evidence = assess_improvement(fit, c, y, metric_name="ndcg@10")
    assert "the power-law fit did not converge (max_nfev)" in evidence.caveats
    content = ReportContent(
        title="t", metric="ndcg@10", higher_is_better=True, flops_convention=CONVENTION,
        runs=[{"run_id": f"r{i}", "flops": ci, "ndcg@10": yi} for i, (ci, yi) in enumerate(zip(c, y))],
        excluded=[], power_law=fit, power_law_error=None, log_linear=None, log_linear_error="skipped",
        evidence=evidence, verdict=evidence.verdict, n_replicated_configs=0, png=None,
    )
    page = render_html(content)
    assert page.count("the power-law fit did not converge (max_nfev)") == 1  # in the caveats, once
    assert "converged: <b>NO</b>" in page


def test_plot_without_fit_and_with_groups(tmp_path) -> None:
    c = np.geomspace(1e13, 1e15, 5)
    y = np.array([0.10, 0.13, 0.15, 0.16, 0.165])
    out = plot_metric_vs_flops(c, y, fit=None, metric_name="HR@10", flops_convention=CONVENTION,
                               path=tmp_path / "a" / "p.png", groups=[2, 2, 4, 4, 8], labels=list("abcde"))
    assert _png_size(out.read_bytes()) == (round(7.5 * DPI), round(5.0 * DPI))
    fit = fit_saturating_power_law(c, y, higher_is_better=True, n_bootstrap=50)
    out = plot_metric_vs_flops(c, y, fit=fit, metric_name="HR@10", flops_convention=CONVENTION, path=tmp_path / "b.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="groups has 2 entries for 5 points"):
        plot_metric_vs_flops(c, y, fit=None, metric_name="m", flops_convention="x", path=tmp_path / "c.png", groups=[1, 2])



def _backtest() -> Backtest:
    return Backtest(
        form="power_law", holdout=2, threshold_flops=1e15, n_train=4, run_ids=("big1", "big2"),
        flops=np.array([1e15, 3e15]), observed=np.array([0.180, 0.190]), predicted=np.array([0.175, 0.182]),
        interval=(np.array([0.170, 0.175]), np.array([0.181, 0.192])), level=0.95, converged=True, error=None,
    )


def _errorbars(ax, label_start: str) -> ErrorbarContainer:
    (container,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer) and c.get_label().startswith(label_start)]
    return container


def _vertical_lines(ax) -> list:
    """Lines drawn at one x across the axis (axvline and the like)."""
    return [line for line in ax.lines if len(line.get_xdata()) >= 2 and len(set(np.asarray(line.get_xdata()).tolist())) == 1]


def test_backtest_is_drawn_as_points_with_their_intervals_not_as_a_line() -> None:
    c = np.array([1e13, 3e13, 1e14, 3e14, 1e15, 3e15])
    y = np.array([0.10, 0.13, 0.15, 0.165, 0.180, 0.190])
    bt = _backtest()
    fig = metric_vs_flops_figure(c, y, fit=None, metric_name="ndcg@10", flops_convention=CONVENTION, backtest=bt)
    (ax,) = fig.axes
    bars = _errorbars(ax, "backtest")
    np.testing.assert_allclose(bars.lines[0].get_xydata(), [[1e15, 0.175], [3e15, 0.182]])
    np.testing.assert_allclose(bars.lines[2][0].get_segments(), [[[1e15, 0.170], [1e15, 0.181]],
                                                                 [[3e15, 0.175], [3e15, 0.192]]])
    assert _vertical_lines(ax) == []

    fig = residuals_figure(c, {"power_law": y - 0.15}, metric_name="ndcg@10", backtest=bt)
    (ax,) = fig.axes
    bars = _errorbars(ax, "backtest")
    # observed - predicted at each held-out run; the bar is observed - interval: it covers 0 iff the run is inside.
    np.testing.assert_allclose(bars.lines[0].get_xydata(), [[1e15, 0.005], [3e15, 0.008]], atol=1e-12)
    np.testing.assert_allclose(bars.lines[2][0].get_segments(), [[[1e15, -0.001], [1e15, 0.010]],
                                                                 [[3e15, -0.002], [3e15, 0.015]]], atol=1e-12)
    assert _vertical_lines(ax) == []


def test_verdict_is_shown_once_and_the_caveats_once_as_a_short_list() -> None:
    c = np.geomspace(1e13, 1e15, 6)
    y = 0.2 - 0.05 * (c / 1e14) ** -0.4
    fit = fit_saturating_power_law(c, y, higher_is_better=True, n_bootstrap=50)
    evidence = dataclasses.replace(
        assess_improvement(fit, c, y, metric_name="ndcg@10"), verdict="ndcg@10 improves with compute.",
        caveats=("alpha is at its lower bound", "3 of 50 resamples skipped"),
    )
    content = ReportContent(
        title="t", metric="ndcg@10", higher_is_better=True, flops_convention=CONVENTION,
        runs=[{"run_id": f"r{i}", "flops": ci, "ndcg@10": yi} for i, (ci, yi) in enumerate(zip(c, y))],
        excluded=[("bad", "ndcg@10 is nan")], power_law=fit, power_law_error=None, log_linear=None,
        log_linear_error="skipped", evidence=evidence, verdict=evidence.verdict, n_replicated_configs=0, png=None,
    )
    page = render_html(content)
    assert page.count("ndcg@10 improves with compute.") == 1
    assert "class='warn'" not in page  # no red boxes
    caveats = re.search(r"<ul id='caveats'>(.*?)</ul>", page, re.S)
    assert caveats is not None
    items = re.findall(r"<li>(.*?)</li>", caveats.group(1))
    assert items == ["alpha is at its lower bound", "3 of 50 resamples skipped",
                     "1 run(s) excluded from the fit: bad: ndcg@10 is nan"]
    for item in items:
        assert page.count(item) == 1, item
    assert page.index("id='verdict'") < page.index("id='caveats'") < page.index("<h2>")


def test_a_report_states_each_caveat_once(tmp_path) -> None:
    """Saturation not resolved (alpha at its bound): the caveat is in the list, not also in the verdict."""
    c = np.geomspace(1e12, 1e16, 9)
    rows = [{"run_id": f"r{i}", "flops": ci, "ndcg@10": 0.02 + 0.01 * np.log10(ci / 1e12) + 1e-4 * (-1) ** i}
            for i, ci in enumerate(c)]
    paths = write_report(tmp_path, rows, metric="ndcg@10", higher_is_better=True, flops_convention=CONVENTION,
                         title="log-linear", n_bootstrap=100)
    summary = json.loads(paths.fit_json.read_text())
    page = paths.report_html.read_text()
    caveats = summary["evidence"]["caveats"]
    assert caveats and page.count(html.escape(summary["verdict"])) == 1
    for caveat in caveats:
        assert caveat not in summary["verdict"]
        assert page.count(html.escape(caveat)) == 1, caveat


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_analysis_import_rules() -> None:
    files = sorted(ANALYSIS.glob("*.py"))
    assert files
    for path in files:
        imported = _imported_modules(path)
        assert "torch" not in imported, path.name
        assert ("matplotlib" in imported) == (path.name == "plots.py"), path.name
        assert len(path.read_text().splitlines()) < 400, path.name


def test_importing_the_fits_does_not_load_matplotlib() -> None:
    code = "import sys, analysis.fit; print('matplotlib' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ANALYSIS.parent)
    assert out.stdout.split() == ["False", "False"]
