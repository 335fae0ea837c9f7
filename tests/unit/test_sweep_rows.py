"""The sweep directory's layout, and the typed rows between the ledger and the analysis."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from analysis.dataset import select_runs
from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from sweeps.layout import SweepLayout
from sweeps.ledger import storage_url_for
from sweeps.plan import plan_run
from sweeps.rows import Checkpoint, RunRow, SpentCompute
from sweeps.spec import spec_from_dict
from sweeps.status import completed_rows


def test_the_layout_names_every_file_of_a_sweep(tmp_path: Path) -> None:
    layout = SweepLayout(tmp_path)
    assert SweepLayout(str(tmp_path)) == layout  # a str is taken as its Path
    assert layout.spec == tmp_path / "spec.toml"
    assert layout.ledger_url(None) == storage_url_for(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'ledger.db'}"
    assert layout.ledger_url("journal:ledger.journal") == f"journal:{(tmp_path / 'ledger.journal').resolve()}"
    assert layout.ledger_url("postgresql://db/sweeps") == "postgresql://db/sweeps"
    run = layout.run("abc")
    assert (run.config, run.result, run.error, run.checkpoints) == (
        tmp_path / "runs" / "abc" / "config.json", tmp_path / "runs" / "abc" / "result.json",
        tmp_path / "runs" / "abc" / "error.txt", tmp_path / "runs" / "abc" / "checkpoints")
    assert (layout.jobs, layout.wandb, layout.driver_lock, layout.driver_log) == (
        tmp_path / "jobs", tmp_path / "wandb", tmp_path / "driver.lock", tmp_path / "driver.log")
    assert layout.report("ndcg@10") == tmp_path / "report" / "ndcg@10"
    assert layout.earlier_spec(0.0).name.startswith("spec.19") and layout.earlier_spec(0.0).suffix == ".toml"
    with pytest.raises(ValueError, match=rf"{tmp_path} is not a sweep directory \(no spec.toml\)"):
        layout.load_spec()
    assert not (tmp_path / "ledger.db").exists()  # nothing is created by naming it


def test_spent_compute_round_trips_through_the_ledgers_dict() -> None:
    spent = SpentCompute(flops=6e9, tokens=3000, flops_at_best=4e9, tokens_at_best=2000, flops_per_epoch=2e9,
                         epochs_run=3, best_epoch=2)
    assert SpentCompute.from_dict(spent.to_dict()) == spent
    assert SpentCompute.from_dict({}) is None  # unfinished, or a ledger from before it was recorded


SPEC = {"sweep": {"name": "rows"}, "axes": {"width": [8, 16, 32]},
        "base": {"data": {"num_users": 50, "num_items": 40, "max_events": 12}, "model": {"max_seq_len": 10},
                 "train": {"epochs": 4}}}


def _ledger_with_runs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Three completed runs of a grid: two with spent compute, one from an older ledger without."""
    spec = spec_from_dict(SPEC, source="rows.toml")
    layout = SweepLayout(tmp_path)
    ledger = layout.open_ledger(spec, create=True)
    planned = [plan_run(config, axes) for axes, config in spec.run_configs()]
    ledger.register(planned)
    for i, run in enumerate(planned):
        record = ledger.runs()[run.run_id]
        assert ledger.claim(record.trial_id)
        per_epoch, tokens = run.flops["train"] / 4, run.flops["train_tokens"] / 4
        metrics = {"ndcg@10": 0.1 + i / 100, "val_ndcg@10": 0.11 + i / 100, "final_ndcg@10": 0.09 + i / 100}
        results: dict = {"metrics": metrics, "wall_time_s": 2.0 + i}
        if i < 2:
            results["spent"] = SpentCompute(flops=per_epoch * 3, tokens=tokens * 3, flops_at_best=per_epoch * (1 + i),
                                            tokens_at_best=tokens * (1 + i), flops_per_epoch=per_epoch, epochs_run=3,
                                            best_epoch=1 + i).to_dict()
        ledger.complete(record.trial_id, value=metrics["ndcg@10"], results=results)
    return spec, ledger.runs(), planned


def _flat(row: RunRow) -> dict:
    """The flat dict `sweeps.status.completed_rows` returned before rows were typed."""
    flat = {"run_id": row.run_id, "flops": row.flops, "flops_planned": row.flops, "train_tokens": row.tokens,
            "tokens_planned": row.tokens, "params_non_embedding": row.params_non_embedding,
            "num_blocks": row.num_blocks, "embedding_dim": row.embedding_dim, "num_users": row.num_users,
            "seed": row.seed, "wall_time_s": row.wall_time_s, **row.metrics}
    if row.at_best is not None and row.at_last is not None:
        flat.update(flops_at_best=row.at_best.flops, tokens_at_best=row.at_best.tokens, best_epoch=row.at_best.epoch,
                    flops_spent=row.at_last.flops, tokens_spent=row.at_last.tokens, epochs_run=row.at_last.epoch)
    return flat


def test_completed_rows_are_typed_and_select_like_their_flat_dicts(tmp_path: Path) -> None:
    spec, records, planned = _ledger_with_runs(tmp_path)
    rows = completed_rows(spec, records)
    assert [row.run_id for row in rows] == [run.run_id for run in sorted(planned, key=lambda r: r.flops["train"])]
    by_id = {row.run_id: row for row in rows}
    first, old = by_id[planned[0].run_id], by_id[planned[2].run_id]
    per_epoch = planned[0].flops["train"] / 4
    assert first.planned and first.flops == planned[0].flops["train"] and first.tokens == planned[0].flops["train_tokens"]
    assert first.at_best == Checkpoint(flops=per_epoch, tokens=planned[0].flops["train_tokens"] / 4, epoch=1)
    assert first.at_last == Checkpoint(flops=3 * per_epoch, tokens=3 * planned[0].flops["train_tokens"] / 4, epoch=3)
    assert (first.embedding_dim, first.num_users, first.seed, first.wall_time_s) == (8, 50, 0, 2.0)
    assert first.params_non_embedding == planned[0].params["non_embedding"] and first.shape is None
    assert old.at_best is None and old.at_last is None and old.metrics["ndcg@10"] == pytest.approx(0.12)

    for selection in ("best_val", "final"):
        typed, typed_sel = select_runs(rows, metric="ndcg@10", selection=selection)
        flat, flat_sel = select_runs([_flat(row) for row in rows], metric="ndcg@10", selection=selection)
        assert typed == flat and typed_sel == flat_sel  # a dict with the same names reads as the same row
        assert typed_sel.n_fallback == 1  # the run without spent compute, at its planned FLOPs
        point = next(p for p in typed if p["run_id"] == first.run_id)
        at = first.at_best if selection == "best_val" else first.at_last
        assert (point["flops"], point["train_tokens"], point["reported_epoch"]) == (at.flops, at.tokens, at.epoch)
        assert point["ndcg@10"] == first.metrics["ndcg@10" if selection == "best_val" else "final_ndcg@10"]
        assert point["flops_planned"] == first.flops and point["epochs_run"] == 3
        fallback = next(p for p in typed if p["run_id"] == old.run_id)
        assert fallback["flops"] == old.flops and "reported_epoch" not in fallback


def test_a_row_without_the_metric_is_refused_naming_its_metrics() -> None:
    row = RunRow(run_id="a", metrics={"ne": 0.9}, flops=1e13)
    with pytest.raises(ValueError, match=r"rows\[0\] \(run_id 'a'\) has no 'ndcg@10'; its metrics are \['ne'\]"):
        select_runs([row], metric="ndcg@10")
    with pytest.raises(ValueError, match=r"rows\[1\] is a str"):
        select_runs([row, "b"], metric="ne")
    with pytest.raises(ValueError, match=r"rows\[0\] \(run_id 'c'\) has no 'flops'"):
        select_runs([{"run_id": "c", "ne": 0.9}], metric="ne")
    assert select_runs([dataclasses.replace(row, tokens=5.0)], metric="ne")[0] == [
        {"run_id": "a", "flops": 1e13, "ne": 0.9, "train_tokens": 5.0}]


def test_a_tuned_sweep_keeps_the_best_run_of_each_shape_by_validation_value() -> None:
    from sweeps.status import _best_per_shape

    def row(run_id: str, shape: str | None, val: float, flops: float) -> RunRow:
        return RunRow(run_id=run_id, metrics={"val_ndcg@10": val}, flops=flops, shape=shape)

    rows = [row("a1", "A", 0.2, 1.0), row("a2", "A", 0.3, 1.0), row("b1", "B", 0.5, 2.0), row("b2", "B", 0.4, 2.0),
            row("u", None, 0.0, 3.0)]
    assert {r.run_id for r in _best_per_shape(rows, key="val_ndcg@10", maximize=True)} == {"a2", "b1", "u"}
    assert {r.run_id for r in _best_per_shape(rows, key="val_ndcg@10", maximize=False)} == {"a1", "b2", "u"}


def test_the_worker_reads_the_config_dict_the_planner_wrote(tmp_path: Path) -> None:
    """The resolved config crosses the ledger as a dict and comes back equal (config.json is that dict)."""
    from sweeps.worker import LedgerRun

    config = RunConfig(data=DataConfig(num_users=30, num_items=40, max_events=12),
                       model=ModelConfig(embedding_dim=8, max_seq_len=10), train=TrainConfig(epochs=1))
    spec = spec_from_dict(SPEC, source="rows.toml")
    ledger = SweepLayout(tmp_path).open_ledger(spec, create=True)
    run = plan_run(config, {"width": 8})
    ledger.register([run])
    read = LedgerRun.read(ledger, ledger.runs()[run.run_id].trial_id)
    assert (read.run_id, read.attempt, read.config, read.flops, read.params, read.tune) == (
        run.run_id, 1, config.to_dict(), run.flops, run.params, None)
    assert RunConfig.from_dict(read.config) == config and RunConfig.from_dict(read.config).run_id == run.run_id
