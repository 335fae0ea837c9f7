"""`gr-scaling fit / report / forecast` on CSV input, the CSV reader, and non-convergence flags."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

import analysis.chinchilla
from analysis.csv_input import load_csv
from analysis.report import write_report
from analysis.study import StudyOptions
from gr_scaling.analysis_format import format_fit
from gr_scaling.cli import main


def _write_csv(path: Path, *, with_flops: bool = False, nan_row: bool = True) -> Path:
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run", "params", "tokens", *(["flops"] if with_flops else []), "loss"])
        for i, n in enumerate(np.geomspace(1e5, 1e7, 5)):
            for j, d in enumerate(np.geomspace(1e7, 1e9, 5)):
                loss = (0.7 + 50 / n**0.3 + 80 / d**0.25) * np.exp(rng.normal(0.0, 0.004))
                w.writerow([f"r{i}{j}", f"{n:.6g}", f"{d:.6g}", *([f"{6 * n * d:.6g}"] if with_flops else []), loss])
        if nan_row:
            w.writerow(["diverged", "1e6", "1e8", *(["6e14"] if with_flops else []), "nan"])
    return path


CSV_ARGS = ["--y-col", "loss", "--lower-is-better", "--n-col", "params", "--d-col", "tokens", "--id-col", "run",
            "--bootstrap", "100"]


def test_load_csv_derives_flops_and_reports_bad_cells(tmp_path) -> None:
    path = _write_csv(tmp_path / "a.csv")
    rows, convention = load_csv(path, y_col="loss", n_col="params", d_col="tokens", id_col="run", flops_per_nd=6)
    assert len(rows) == 26 and convention == "C = 6 N D (derived from columns 'params', 'tokens')"
    assert rows[0].flops == pytest.approx(6 * 1e5 * 1e7) and not rows[0].planned
    assert rows[0].params_non_embedding == 1e5 and rows[0].tokens == 1e7
    assert np.isnan(rows[-1].metrics["loss"]) and rows[-1].run_id == "diverged"
    with pytest.raises(ValueError, match=r"has no column\(s\) \['ndcg'\]; its columns are \['run', 'params'"):
        load_csv(path, y_col="ndcg", n_col="params", d_col="tokens", flops_per_nd=6)
    with pytest.raises(ValueError, match="no FLOPs column 'flops'.*--flops-per-nd"):
        load_csv(path, y_col="loss")
    bad = tmp_path / "bad.csv"
    bad.write_text("flops,loss\n1e13,0.9\n1e14,oops\n")
    with pytest.raises(ValueError, match=r"line 3, column 'loss': 'oops' is not a number"):
        load_csv(bad, y_col="loss")
    with pytest.raises(ValueError, match="no such file"):
        load_csv(tmp_path / "missing.csv", y_col="loss")


def test_fit_csv_writes_json_with_every_analysis(tmp_path, capsys) -> None:
    path = _write_csv(tmp_path / "ext.csv")
    out_json = tmp_path / "fit.json"
    argv = ["fit", "--csv", str(path), *CSV_ARGS, "--flops-per-nd", "6", "--holdout", "3", "--json", str(out_json)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    fit = json.loads(out_json.read_text())
    a = fit["analysis"]
    assert set(a["fits"]) == {"power_law", "log_linear", "pure_power", "chinchilla"}
    assert fit["flops_convention"].startswith("C = 6 N D (derived")
    assert fit["excluded"] == [{"run_id": "diverged", "reason": "loss is nan (diverged or unfinished run?)"}]
    ch = a["fits"]["chinchilla"]["fit"]
    assert a["fits"]["chinchilla"]["converged"] and ch["params"]["alpha"] == pytest.approx(0.3, rel=0.1)
    assert all(lo is not None for lo, _ in ch["param_intervals"].values())
    assert a["backtests"]["chinchilla"]["n_holdout"] == 3 and a["backtests"]["chinchilla"]["mean_abs_rel_err"] < 0.02
    assert a["frontier"]["a"] == pytest.approx(0.25 / 0.55, abs=0.05)
    assert a["model_choice"]["chosen"] in ("power_law", "log_linear", "pure_power")
    assert a["forecast"]["next_10x"]["cost"]["inputs"]["device"] == "h100-sxm"
    assert "frontier (C = 6 N D): N_opt ~ C^" in printed and "chinchilla  backtest |rel err|" in printed
    assert (tmp_path / "ext-report" / "loss" / "report.html").is_file()  # default: beside the CSV, per metric


def test_report_csv_html_has_every_section_and_figure(tmp_path) -> None:
    path = _write_csv(tmp_path / "ext.csv", with_flops=True)
    out = tmp_path / "rep"
    assert main(["report", "--csv", str(path), *CSV_ARGS, "--out", str(out), "--target", "0.5",
                 "--flops-convention", "published 6ND"]) == 0
    page = (out / "report.html").read_text()
    for heading in ("Model choice and backtest", "Pure power law (OLS in log-log space)", "Two-variable law L(N, D)",
                    "Compute-optimal frontier and IsoFLOP curves", "Forecast"):
        assert f"<h2>{heading}</h2>" in page, heading
    assert len(re.findall(r"data:image/png;base64,", page)) == 3
    assert "published 6ND" in page and "Next 10x" in page and "statsmodels OLS summary" in page
    assert "unreachable under the fitted" in page or "FLOPs needed" in page
    assert "1 run(s) excluded from the fit: diverged" in page


def test_forecast_csv_prints_targets_cost_and_writes_strict_json(tmp_path, capsys) -> None:
    path = _write_csv(tmp_path / "ext.csv")
    out_json = tmp_path / "fc.json"
    argv = ["forecast", "--csv", str(path), *CSV_ARGS, "--flops-per-nd", "6", "--form", "chinchilla", "--at", "1e18",
            "--target", "0.5", "--target", "1.2", "--price", "2.0", "--mfu", "0.35", "--json", str(out_json)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "forecast with chinchilla" in printed and "FLOPs convention: C = 6 N D" in printed
    assert "reach loss = 0.5: unreachable under the fitted chinchilla: its asymptote" in printed
    assert "reach loss = 1.2: about" in printed
    assert "device-hours" in printed and "gain per unit of money" in printed
    doc = json.loads(out_json.read_text())  # strict JSON: NaN/inf written as null
    targets = doc["forecast"]["targets"]
    assert targets[0]["reachable"] is False and targets[0]["flops"] is None
    assert doc["forecast"]["next_10x"]["cost"]["inputs"]["mfu"] == 0.35


@pytest.mark.parametrize(("argv", "pattern"), [
    (["fit"], "give a sweep directory or --csv FILE"),
    (["fit", "--csv", "{csv}"], "--csv needs --y-col"),
    (["fit", "--csv", "{csv}", "--y-col", "loss", "--n-col", "params", "--d-col", "tokens", "--flops-per-nd", "6"],
     "say --higher-is-better or --lower-is-better"),
    (["fit", "somedir", "--csv", "{csv}", "--y-col", "loss"], "not both"),
    (["forecast", "--csv", "{csv}", "--y-col", "loss", "--lower-is-better", "--n-col", "params", "--d-col", "tokens",
      "--flops-per-nd", "6", "--holdout", "26"], "leaves none"),
])
def test_cli_errors_are_one_clear_line(tmp_path, capsys, argv, pattern) -> None:
    path = _write_csv(tmp_path / "e.csv")
    code = main([a.replace("{csv}", str(path)) for a in argv] + ["--bootstrap", "20"])
    err = capsys.readouterr().err
    if pattern == "leaves none":  # a holdout that leaves nothing is reported, not fatal
        assert code == 0
        return
    assert code == 2 and pattern in err and "Traceback" not in err


def test_a_fit_that_did_not_converge_says_so_everywhere(tmp_path, monkeypatch) -> None:
    real = analysis.chinchilla.fit_chinchilla

    def not_converged(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), converged=False, message="forced: max iterations")

    monkeypatch.setattr(analysis.chinchilla, "fit_chinchilla", not_converged)
    rows, _ = load_csv(_write_csv(tmp_path / "c.csv", nan_row=False), y_col="loss", n_col="params", d_col="tokens",
                       flops_per_nd=6)
    paths = write_report(tmp_path / "rep", rows, metric="loss", higher_is_better=False, flops_convention="6ND",
                         title="t", n_bootstrap=50, options=StudyOptions(backtest_bootstrap=20))
    summary = json.loads(paths.fit_json.read_text())
    page = paths.report_html.read_text()
    assert "the chinchilla fit did NOT converge: forced: max iterations" in summary["analysis"]["notes"]
    assert "the chinchilla fit did NOT converge: forced: max iterations" in page
    assert "Converged: <b>NO</b>" in page
    assert "DID NOT CONVERGE: forced: max iterations" in format_fit(summary)
    assert summary["analysis"]["fits"]["chinchilla"]["converged"] is False


def test_runs_without_tokens_skip_the_two_variable_law_and_say_why(tmp_path) -> None:
    rows = [{"run_id": f"r{i}", "flops": 1e13 * 3.0**i, "params_non_embedding": 1e4 * 2**i,
             "ndcg@10": 0.2 - 0.05 * 3.0 ** (-0.4 * i)} for i in range(8)]
    paths = write_report(tmp_path, rows, metric="ndcg@10", higher_is_better=True, flops_convention="x", title="t",
                         n_bootstrap=50)
    a = json.loads(paths.fit_json.read_text())["analysis"]
    assert "train_tokens missing" in a["fit_errors"]["chinchilla"]
    assert a["frontier"] is None and a["isoflop"] is None and paths.frontier_png is None
    assert "Not fitted: no N and D per run" in paths.report_html.read_text()


def test_flops_per_nd_auto_matches_the_runs_and_a_mismatch_is_noted(tmp_path) -> None:
    from analysis.dataset import data_from_runs, select_runs
    from analysis.study import run_study

    rows, _ = load_csv(_write_csv(tmp_path / "k.csv", nan_row=False), y_col="loss", n_col="params", d_col="tokens",
                       id_col="run", flops_per_nd=9)  # this "accounting" counts 9 FLOPs per parameter-token
    points, _ = select_runs(rows, metric="loss")  # a CSV records no checkpoints: its own FLOPs, N and D
    data = data_from_runs(points, metric="loss", higher_is_better=False)
    fixed = run_study(data, StudyOptions(n_bootstrap=50, backtest_bootstrap=0, cost=None, flops_per_nd=6.0))
    assert fixed.frontier.flops_per_nd == 6.0
    assert any("not the frontier's k = 6" in n and "median 9" in n for n in fixed.notes)
    auto = run_study(data, StudyOptions(n_bootstrap=50, backtest_bootstrap=0, cost=None, flops_per_nd="auto"))
    assert auto.frontier.flops_per_nd == pytest.approx(9.0)
    assert auto.frontier.n_opt(9e18) == pytest.approx(fixed.frontier.n_opt(6e18))
    with pytest.raises(ValueError, match="flops_per_nd must be a positive number"):
        StudyOptions(flops_per_nd=-1.0)
    with pytest.raises(ValueError, match="holdout must be"):
        StudyOptions(holdout=0)


SMALL_SPEC = """
[sweep]
name = "per-metric"
metric = "ndcg@10"

[axes]
users = [100, 200, 400, 800]
width = [8, 16]

[base.data]
num_items = 50
min_events = 4
max_events = 12

[base.model]
num_blocks = 1
max_seq_len = 12

[base.train]
epochs = 10

[tracking]
mode = "disabled"
"""


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """A sweep directory whose ledger holds 8 completed runs that early-stopped at different epochs
    (metrics and spent compute written here in the worker's format, not trained)."""
    return _early_stopped_sweep(tmp_path / "sweep", SMALL_SPEC)


def _early_stopped_sweep(d: Path, spec_text: str, c0: float = 1e9) -> Path:
    from sweeps.layout import SweepLayout
    from sweeps.plan import plan_sweep

    layout = SweepLayout(d)
    d.mkdir()
    layout.spec.write_text(spec_text)
    spec = layout.load_spec()
    ledger = layout.open_ledger(spec, create=True)
    plan = plan_sweep(spec)
    ledger.register(plan.runs)
    rng = np.random.default_rng(0)
    for run, best in zip(plan.runs, (2, 7, 4, 9, 3, 6, 5, 8)):
        record = ledger.runs()[run.run_id]
        assert ledger.claim(record.trial_id)
        per_epoch, tokens_per_epoch, last = run.flops["train"] / 10, run.flops["train_tokens"] / 10, min(best + 3, 10)
        spent = {"flops": per_epoch * last, "tokens": tokens_per_epoch * last, "flops_at_best": per_epoch * best,
                 "tokens_at_best": tokens_per_epoch * best, "flops_per_epoch": per_epoch, "epochs_run": last,
                 "best_epoch": best}
        ndcg = 0.2 - 0.05 * (spent["flops_at_best"] / c0) ** -0.3 + rng.normal(0.0, 1e-3)
        metrics = {"ndcg@10": ndcg, "hr@10": 2.5 * ndcg, "val_ndcg@10": ndcg + 0.01,
                   "final_ndcg@10": ndcg - 0.001 * (last - best), "final_hr@10": 2.5 * ndcg - 0.002 * (last - best)}
        ledger.complete(record.trial_id, value=ndcg,
                        results={"metrics": metrics, "spent": spent, "best_epoch": best, "wall_time_s": 1.0})
    return d


def test_fit_and_report_of_another_metric_never_overwrite_the_first(sweep_dir: Path, capsys) -> None:
    fast = ["--bootstrap", "20", "--holdout", "2"]
    assert main(["report", str(sweep_dir), *fast]) == 0  # the spec's metric
    first = sweep_dir / "report" / "ndcg@10"
    before = {name: (first / name).read_bytes() for name in ("report.html", "fit.json", "metric_vs_flops.png")}
    assert json.loads(before["fit.json"])["metric"] == "ndcg@10"
    assert f"report: {first / 'report.html'}" in capsys.readouterr().out

    assert main(["fit", str(sweep_dir), "--metric", "hr@10", *fast]) == 0
    second = sweep_dir / "report" / "hr@10"
    assert json.loads((second / "fit.json").read_text())["metric"] == "hr@10"
    assert "hr@10" in (second / "report.html").read_text()
    assert main(["report", str(sweep_dir), "--selection", "final", *fast]) == 0
    third = sweep_dir / "report" / "ndcg@10-final"
    assert json.loads((third / "fit.json").read_text())["selection"]["name"] == "final"
    assert {name: (first / name).read_bytes() for name in before} == before  # untouched by the other two


def test_a_sweep_report_places_each_run_at_the_flops_it_spent(sweep_dir: Path) -> None:
    """Through the ledger and `sweeps.status.completed_rows`: best_val at flops_at_best, final at flops_spent."""
    from sweeps.status import load_sweep

    _, records = load_sweep(sweep_dir)
    fast = ["--bootstrap", "20", "--holdout", "2"]
    for selection, key, metric_key in (("best_val", "flops_at_best", "ndcg@10"), ("final", "flops", "final_ndcg@10")):
        out = sweep_dir / selection
        assert main(["fit", str(sweep_dir), "--selection", selection, "--out", str(out), *fast]) == 0
        points = json.loads((out / "fit.json").read_text())["points"]
        assert len(points) == len(records) == 8
        for p in points:
            record = records[p["run_id"]]
            assert p["flops"] == pytest.approx(record.spent[key]) and p["flops"] <= record.flops["train"]
            assert p["flops_planned"] == pytest.approx(record.flops["train"])
            assert p["ndcg@10"] == pytest.approx(record.metrics[metric_key])
        assert sum(p["flops"] < p["flops_planned"] for p in points) == (8 if selection == "best_val" else 5)  # 3 ran all 10 epochs


PRICED_SPEC = SMALL_SPEC.replace('name = "per-metric"', 'name = "priced"') + """
[cost]
device = "a100"
mfu = 0.3
price_per_device_hour = 2.5
num_devices = 4

[budget]
max_device_hours = 1000.0
"""


def test_a_sweeps_cost_table_prices_plan_status_and_forecast_alike(tmp_path: Path, capsys) -> None:
    """`sweep plan`, `sweep status`, `forecast` and `report` (so `fit`) of one sweep price compute on its spec's [cost]."""
    from scaling.cost import CostInputs, cost
    from sweeps.ledger import Ledger, storage_url_for
    from sweeps.plan import summarize_plan
    from sweeps.spec import load_spec

    sweep = _early_stopped_sweep(tmp_path / "priced", PRICED_SPEC, c0=1e6)  # every ndcg@10 in (0, 0.2)
    spec = load_spec(sweep / "spec.toml")
    table = CostInputs(device="a100", mfu=0.3, price_per_device_hour=2.5, num_devices=4)
    assert spec.cost == table
    capsys.readouterr()

    assert main(["sweep", "plan", str(sweep / "spec.toml")]) == 0
    plan = summarize_plan(spec)
    assert (f"estimated {cost(plan.total_flops, table).device_hours:.3g} device-hours on 4 x a100 at MFU 0.3"
            in capsys.readouterr().out)

    assert main(["sweep", "status", str(sweep)]) == 0
    spent = sum(r.spent["flops"] for r in Ledger(storage_url_for(sweep), "priced").runs().values())
    assert (f"budget: {cost(spent, table).device_hours:.3g} of 1000 device-hours spent (a100 at MFU 0.3)"
            in capsys.readouterr().out)

    fast = ["--bootstrap", "20", "--holdout", "2"]
    out = tmp_path / "forecast.json"
    assert main(["forecast", str(sweep), *fast, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    nx = json.loads(out.read_text())["forecast"]["next_10x"]
    priced_by_plan = plan.estimate(nx["to_flops"])  # the plan's own pricing of the next 10x
    assert nx["cost"]["inputs"] == dataclasses.asdict(table)
    assert nx["cost"]["device_hours"] == pytest.approx(priced_by_plan.device_hours, rel=1e-12)
    assert nx["cost"]["cost"] == pytest.approx(priced_by_plan.cost, rel=1e-12) and priced_by_plan.cost > 0
    assert (f"a100 at MFU 0.3, 4 device(s)): {priced_by_plan.device_hours:.4g} device-hours, "
            f"{priced_by_plan.wall_clock_hours:.4g} h wall clock, cost {priced_by_plan.cost:.4g}") in printed
    assert nx["unit"] == "money" and "gain per unit of money" in printed

    # report (and fit, which writes the same report) price the same, into fit.json
    assert main(["report", str(sweep), *fast]) == 0
    fit = json.loads((sweep / "report" / "ndcg@10" / "fit.json").read_text())
    assert fit["analysis"]["forecast"]["next_10x"]["cost"]["inputs"] == dataclasses.asdict(table)

    # a flag given replaces its one field of the table; the others stay the spec's
    assert main(["forecast", str(sweep), *fast, "--mfu", "0.6", "--json", str(out)]) == 0
    inputs = json.loads(out.read_text())["forecast"]["next_10x"]["cost"]["inputs"]
    assert inputs == dataclasses.asdict(dataclasses.replace(table, mfu=0.6))
    assert main(["forecast", str(sweep), *fast, "--device", "h200", "--price", "0", "--json", str(out)]) == 0
    nx = json.loads(out.read_text())["forecast"]["next_10x"]
    assert nx["cost"]["inputs"] == dataclasses.asdict(dataclasses.replace(table, device="h200", price_per_device_hour=0.0))
    assert nx["unit"] == "device-hour"
