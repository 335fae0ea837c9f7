from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sweeps.plan import format_plan, plan_sweep
from sweeps.spec import load_spec, spec_from_dict

GOOD = """
[sweep]
name = "grid"
metric = "ndcg@10"

[axes]
depth = [1, 2]
width = [8, 16]
seed = [0, 1]

[base.data]
num_users = 50
num_items = 40
num_clusters = 4

[base.model]
max_seq_len = 12
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_grid_expands_to_the_product_of_axes(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, GOOD))
    assert spec.num_grid_points == 8
    configs = [config for _, config in spec.run_configs()]
    assert {(c.model.num_blocks, c.model.embedding_dim, c.train.seed) for c in configs} == {
        (d, w, s) for d in (1, 2) for w in (8, 16) for s in (0, 1)
    }
    assert all(c.data.num_users == 50 and c.model.max_seq_len == 12 for c in configs)
    assert len({c.run_id for c in configs}) == 8


def test_plan_orders_runs_by_flops_and_flops_grow_with_size(tmp_path: Path) -> None:
    plan = plan_sweep(load_spec(_write(tmp_path, GOOD)))
    runs = plan.runs
    flops = [r.flops["train"] for r in runs]
    assert flops == sorted(flops)
    by_shape = {(r.axis_values["depth"], r.axis_values["width"]): r.flops["train"] for r in runs}
    assert by_shape[(2, 16)] > by_shape[(1, 16)] > by_shape[(1, 8)]
    assert by_shape[(2, 8)] > by_shape[(1, 8)]
    table = format_plan(plan)
    assert "8 runs" in table and "convention:" in table


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"axes": {"depth": [1], "widht": [8]}}, "axes.widht is not a known axis"),
        ({"axes": {"width": [16, -8]}}, "model.embedding_dim must be >= 1, got -8 (from axes.width = -8)"),
        ({"axes": {"width": []}}, "axes.width is empty"),
        ({"axes": {"width": 8}}, "axes.width must be a list"),
        ({"axes": {"model.dropuot": [0.1]}}, "'dropuot' is not a field of [model]"),
        ({"axes": {"width": [8, 8]}}, "axes.width repeats a value"),
        ({"sweep": {"name": "x", "metirc": "mrr"}}, "unknown key(s) ['metirc'] in [sweep]"),
        ({"sweep": {"metric": "auc"}}, "sweep.metric must be one of"),
        ({"base": {"model": {"num_blocks": 0}}}, "model.num_blocks must be >= 1"),
        ({"dispatch": {"executor": "kubernetes"}}, "dispatch.executor must be one of ['local', 'slurm', 'auto']"),
        ({"launcher": {}}, "unknown table(s) ['launcher']"),
        ({"axes": {"width": [8], "model.embedding_dim": [16]}}, "two axes set the same field"),
    ],
)
def test_malformed_spec_fails_naming_the_field(patch: dict, fragment: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        spec_from_dict(patch, source="bad.toml")
    assert fragment in str(info.value)
    assert str(info.value).startswith("bad.toml")


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not valid TOML"):
        load_spec(_write(tmp_path, "[axes\nwidth = 1"))
    with pytest.raises(ValueError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("tune", "fragment"),
    [
        ({"trials": 2, "param": "lr"}, "tune.param must be a dotted config path"),
        ({"trials": 2, "param": "train.learning_rate"}, "'learning_rate' is not a field of [train]"),
        ({"trials": 2, "low": 0.0}, "tune.low must be below tune.high (and > 0 when tune.log = true)"),
        ({"trials": 2, "sampler": "grid"}, "tune.sampler must be one of ['tpe', 'random']"),
        ({"trials": -1}, "tune.trials must be >= 0"),
    ],
)
def test_bad_tune_table_names_the_field(tune: dict, fragment: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        spec_from_dict({"tune": tune}, source="t.toml")
    assert fragment in str(info.value)


def test_tuned_param_cannot_be_an_axis() -> None:
    with pytest.raises(ValueError, match="is tuned, so it cannot also be an axis"):
        spec_from_dict({"axes": {"lr": [0.1]}, "tune": {"trials": 2}}, source="t.toml")
