"""Which checkpoint a run reports (`--selection best_val | final`) and the compute it is plotted at.

A run that early-stopped spent fewer FLOPs than planned; its default metric comes from its best
validation epoch, reached earlier still. The report fits and plots each run at the FLOPs spent up
to the checkpoint whose metric it reports, never at the planned FLOPs of all epochs.
"""

from __future__ import annotations

import dataclasses
import html
import json

import pytest

import analysis.report
from analysis.dataset import X_AXIS_SPENT, select_runs
from analysis.report import write_report
from analysis.study import StudyOptions
from early_stop_rows import early_stopped_rows
from gr_scaling.analysis_commands import study_of_rows
from gr_scaling.analysis_format import study_json
from gr_scaling.cli import build_parser
from sweeps.rows import Checkpoint

CONVENTION = "exact HSTU count, causal attention, backward = 2x forward"


@pytest.fixture
def plotted(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The x, y and axis label each report's main figure was drawn with (the real plot still runs)."""
    calls: list[dict] = []
    real = analysis.report.plot_metric_vs_flops

    def spy(flops, y, **kwargs):
        calls.append({"flops": list(flops), "y": list(y), "x_label": kwargs.get("x_label")})
        return real(flops, y, **kwargs)

    monkeypatch.setattr(analysis.report, "plot_metric_vs_flops", spy)
    return calls


def _report(tmp_path, rows, **kwargs):
    paths = write_report(tmp_path, rows, metric="ndcg@10", higher_is_better=True, flops_convention=CONVENTION,
                         title="early stop", n_bootstrap=60, options=StudyOptions(backtest_bootstrap=20), **kwargs)
    return paths, json.loads(paths.fit_json.read_text()), paths.report_html.read_text()


def test_early_stopped_runs_are_fitted_and_plotted_at_the_flops_spent_to_the_best_epoch(tmp_path, plotted) -> None:
    rows = early_stopped_rows()
    paths, summary, page = _report(tmp_path, rows)  # selection defaults to best_val

    by_flops = sorted(rows, key=lambda r: r.at_best.flops)
    spent = [r.at_best.flops for r in by_flops]
    assert not set(spent) & {r.flops for r in rows}  # the planned FLOPs differ from every x
    assert [p["flops"] for p in summary["points"]] == pytest.approx(spent)
    assert [p["run_id"] for p in summary["points"]] == [r.run_id for r in by_flops]
    assert [p["ndcg@10"] for p in summary["points"]] == pytest.approx([r.metrics["ndcg@10"] for r in by_flops])
    assert [p["train_tokens"] for p in summary["points"]] == pytest.approx([r.at_best.tokens for r in by_flops])
    assert [p["flops_planned"] for p in summary["points"]] == pytest.approx([r.flops for r in by_flops])
    assert [p["reported_epoch"] for p in summary["points"]] == [r.at_best.epoch for r in by_flops]
    # The fit used the same x: its FLOPs range and the forecast's largest run are spent FLOPs.
    assert summary["analysis"]["fits"]["power_law"]["fit"]["flops_range"] == pytest.approx([spent[0], spent[-1]])
    assert summary["analysis"]["forecast"]["max_observed_flops"] == pytest.approx(spent[-1])
    # The figure drew the same points.
    (call,) = plotted
    assert call["flops"] == pytest.approx(spent) and call["y"] == pytest.approx([r.metrics["ndcg@10"] for r in by_flops])
    assert call["x_label"] == "training FLOPs spent (to the reported checkpoint)"

    sel = summary["selection"]
    assert sel["name"] == "best_val" and sel["fallback"] is None and sel["n_fallback"] == 0
    assert sel["x_axis"] == X_AXIS_SPENT == "training FLOPs spent up to the reported checkpoint"
    assert (sel["x_key"], sel["d_key"], sel["y_key"]) == ("flops_at_best", "tokens_at_best", "ndcg@10")
    assert "best validation epoch" in sel["checkpoint"]
    assert "<span id='selection'>best_val</span>" in page and X_AXIS_SPENT in page


def test_final_selection_uses_the_last_epoch_metric_at_all_the_flops_spent(tmp_path, plotted) -> None:
    rows = early_stopped_rows()
    _, summary, page = _report(tmp_path, rows, selection="final")

    by_flops = sorted(rows, key=lambda r: r.at_last.flops)
    spent = [r.at_last.flops for r in by_flops]
    assert [p["flops"] for p in summary["points"]] == pytest.approx(spent)
    assert [p["ndcg@10"] for p in summary["points"]] == pytest.approx([r.metrics["final_ndcg@10"] for r in by_flops])
    assert [p["train_tokens"] for p in summary["points"]] == pytest.approx([r.at_last.tokens for r in by_flops])
    assert [p["reported_epoch"] for p in summary["points"]] == [r.at_last.epoch for r in by_flops]
    (call,) = plotted
    assert call["flops"] == pytest.approx(spent)
    assert call["y"] == pytest.approx([r.metrics["final_ndcg@10"] for r in by_flops])
    sel = summary["selection"]
    assert (sel["name"], sel["x_key"], sel["y_key"]) == ("final", "flops_spent", "final_ndcg@10")
    assert "last epoch" in sel["checkpoint"]
    assert "<span id='selection'>final</span>" in page


def test_rows_without_spent_compute_fall_back_to_flops_and_say_so_once(tmp_path, plotted) -> None:
    legacy = [dataclasses.replace(r, at_best=None, at_last=None) for r in early_stopped_rows()]  # an older ledger
    _, summary, page = _report(tmp_path, legacy)

    planned = sorted(r.flops for r in legacy)
    assert [p["flops"] for p in summary["points"]] == pytest.approx(planned)
    assert plotted[0]["flops"] == pytest.approx(planned)
    assert plotted[0]["x_label"] == "training FLOPs (as recorded: planned for all epochs, not spent)"
    sel = summary["selection"]
    assert sel["n_fallback"] == 8 and sel["x_axis"] != X_AXIS_SPENT and (sel["x_key"], sel["y_key"]) == ("flops", "ndcg@10")
    line = sel["fallback"]
    assert "\n" not in line and line.startswith("8 of 8 runs have no flops_at_best") and "planned" in line
    assert page.count(html.escape(line)) == 1


def test_a_ledger_with_old_and_new_runs_falls_back_only_for_the_old_ones() -> None:
    rows = early_stopped_rows()
    rows[0] = dataclasses.replace(rows[0], at_best=None)
    selected, sel = select_runs(rows, metric="ndcg@10", selection="best_val")
    assert selected[0]["flops"] == rows[0].flops and selected[0]["train_tokens"] == rows[0].tokens
    assert [r["flops"] for r in selected[1:]] == [r.at_best.flops for r in rows[1:]]
    assert sel.n_fallback == 1 and sel.fallback.startswith("1 of 8 runs have no flops_at_best")
    assert sel.x_axis == X_AXIS_SPENT
    with pytest.raises(ValueError, match="selection must be 'best_val' or 'final', got 'best'"):
        select_runs(rows, metric="ndcg@10", selection="best")


def test_forecast_study_and_its_json_use_the_selection() -> None:
    rows = early_stopped_rows()
    opts = StudyOptions(n_bootstrap=40, backtest_bootstrap=0, cost=None)
    study, sel = study_of_rows(rows, metric="ndcg@10", higher_is_better=True, selection="final", options=opts)
    assert sorted(study.data.flops) == pytest.approx(sorted(r.at_last.flops for r in rows))
    assert sorted(study.data.tokens) == pytest.approx(sorted(r.at_last.tokens for r in rows))
    doc = json.loads(study_json(study, CONVENTION, sel))
    assert doc["selection"]["name"] == "final" and doc["selection"]["x_axis"] == X_AXIS_SPENT


@pytest.mark.parametrize("command", ["fit", "report", "forecast"])
def test_cli_selection_flag(command) -> None:
    parser = build_parser()
    assert parser.parse_args([command, "somedir"]).selection == "best_val"
    assert parser.parse_args([command, "somedir", "--selection", "final"]).selection == "final"
    with pytest.raises(SystemExit):
        parser.parse_args([command, "somedir", "--selection", "last"])



def test_seeds_that_stop_at_different_epochs_are_still_replicates_of_one_config() -> None:
    from analysis.dataset import data_from_runs

    rows = early_stopped_rows()
    best = rows[3].at_best
    twin = dataclasses.replace(rows[3], run_id="run3-seed1", seed=1,
                               at_best=Checkpoint(flops=best.flops * 5 / 9, tokens=best.tokens * 5 / 9, epoch=5))
    selected, _ = select_runs([*rows, twin], metric="ndcg@10")
    data = data_from_runs(selected, metric="ndcg@10", higher_is_better=True)
    group = dict(zip(data.run_ids, data.groups))
    assert data.flops[-1] != data.flops[3]  # different x ...
    assert group["run3"] == group["run3-seed1"] and data.n_replicated_groups == 1  # ... one config
    assert len(set(group.values())) == len(rows)
