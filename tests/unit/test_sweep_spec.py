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


def _real_data_spec(path: Path, task: str, metric: str) -> dict:
    return {
        "sweep": {"name": "real", "metric": metric},
        "axes": {"width": [8, 16]},
        "base": {
            "data": {"source": "ml-100k", "path": str(path)},
            "model": {"max_seq_len": 6, "num_heads": 2},
            "train": {"task": task, "epochs": 1},
        },
    }


def test_plan_counts_params_over_the_real_items_and_the_ranking_head(tiny_ml100k: Path) -> None:
    # data.num_items stays at the synthetic default (1000) for a real source; the file has 7 items.
    plan = plan_sweep(spec_from_dict(_real_data_spec(tiny_ml100k, "both", "ndcg@10"), source="real.toml"))
    assert len(plan.runs) == 2
    for run in plan.runs:
        d = run.axis_values["width"]
        assert run.params["item_embedding"] == (7 + 1) * d
        assert run.params["embedding"] == (7 + 1) * d + 6 * d
        assert run.params["ranking_head"] == 3 * d * d + 2 * d + 1
        per_block = d * 4 * d + (d * d + d) + (2 * 6 - 1) + (128 + 1)  # uvqk, output, rab
        assert run.params["non_embedding"] == 2 * per_block + 3 * d * d + 2 * d + 1


def test_plan_on_the_real_movielens_100k(real_ml100k: Path) -> None:
    plan = plan_sweep(spec_from_dict(_real_data_spec(real_ml100k, "ranking", "ne"), source="real.toml"))
    assert sorted(run.params["item_embedding"] for run in plan.runs) == [(1682 + 1) * 8, (1682 + 1) * 16]


@pytest.mark.parametrize("task", ["ranking", "both"])
def test_ne_metric_is_minimised_for_ranking_tasks(task: str) -> None:
    spec = spec_from_dict({"sweep": {"metric": "ne"}, "base": {"train": {"task": task}}}, source="ne.toml")
    assert spec.sweep.metric == "ne" and spec.sweep.higher_is_better is False
    spec = spec_from_dict({"sweep": {"metric": "ne"}, "axes": {"train.task": ["ranking", "both"]}}, source="ne.toml")
    assert [config.train.task for _, config in spec.run_configs()] == ["ranking", "both"]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (
            {"sweep": {"metric": "ne"}, "base": {"train": {"task": "retrieval"}}},
            "ne.toml: sweep.metric = 'ne' is not reported by runs with train.task = 'retrieval' (from [base.train]); "
            "set [base.train] task = 'ranking' or 'both'",
        ),
        (  # the default task is retrieval
            {"sweep": {"metric": "ne"}},
            "sweep.metric = 'ne' is not reported by runs with train.task = 'retrieval'",
        ),
        (
            {"sweep": {"metric": "ne"}, "axes": {"train.task": ["ranking", "retrieval"]}},
            "(from axes.train.task); keep only 'ranking' or 'both' in axes.train.task",
        ),
        (  # and the other way round: a ranking-only run reports no retrieval metric
            {"sweep": {"metric": "ndcg@10"}, "base": {"train": {"task": "ranking"}}},
            "sweep.metric = 'ndcg@10' is not reported by runs with train.task = 'ranking' (from [base.train]); "
            "set [base.train] task = 'retrieval' or 'both', or set sweep.metric to one that task reports: ['ne']",
        ),
    ],
)
def test_metric_the_task_does_not_report_fails_naming_the_fix(raw: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        spec_from_dict(raw, source="ne.toml")
    assert fragment in str(info.value)


def test_every_run_selects_on_the_sweep_metric() -> None:
    # The trainer picks the reported epoch (and early-stops) on the same metric the ledger records.
    spec = spec_from_dict({"sweep": {"metric": "hr@50"}, "axes": {"width": [8, 16]}}, source="sel.toml")
    assert {config.train.selection_metric for _, config in spec.run_configs()} == {"hr@50"}
    plan = plan_sweep(spec)
    assert {run.config["train"]["selection_metric"] for run in plan.runs} == {"hr@50"}
    with pytest.raises(ValueError, match=r"sel.toml: \[base.train\] selection_metric = 'mrr' differs from "
                                         r"sweep.metric = 'hr@50'; remove it"):
        spec_from_dict({"sweep": {"metric": "hr@50"}, "base": {"train": {"selection_metric": "mrr"}}},
                       source="sel.toml")
    with pytest.raises(ValueError, match="cannot be an axis"):
        spec_from_dict({"axes": {"train.selection_metric": ["hr@10", "mrr"]}}, source="sel.toml")


def test_axis_settings_follow_a_value_of_their_axis() -> None:
    spec = spec_from_dict(
        {"sweep": {"name": "s"}, "axes": {"family": ["hstu", "sasrec", "fuxi"], "width": [16, 32]},
         "axis_settings": {"family": {"sasrec": {"train": {"lr": 3e-3}, "model": {"dropout": 0.5}},
                                      "fuxi": {"train": {"lr": 2e-3}}}}},
        source="s.toml",
    )
    got = {(av["family"], av["width"]): (cfg.model.family, cfg.train.lr, cfg.model.dropout) for av, cfg in spec.run_configs()}
    assert got[("sasrec", 32)] == ("sasrec", 3e-3, 0.5) and got[("fuxi", 16)][1] == 2e-3
    assert got[("hstu", 16)][1:] == (1e-3, spec.base.model.dropout)  # the base's, where no setting applies
    assert {av["family"] for av, _ in spec.run_configs()} == {"hstu", "sasrec", "fuxi"}  # axis values stay plain


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"depth": {"2": {"train": {"lr": 1e-2}}}}, "axis_settings.depth: there is no axis 'depth' in [axes]"),
        ({"family": {"bert": {"train": {"lr": 1e-2}}}}, "'bert' is not a value of axes.family"),
        ({"family": {"sasrec": {"optim": {"lr": 1e-2}}}}, "axis_settings.family.sasrec.optim: not a config table"),
        ({"family": {"sasrec": {"train": {"learning_rate": 1e-2}}}}, "'learning_rate' is not a field of [train]"),
        ({"family": {"sasrec": {"model": {"embedding_dim": 8}}}}, "model.embedding_dim is an axis of its own"),
        ({"family": {"sasrec": {"train": {"lr": -1.0}}}}, "(from axis_settings.family.sasrec)"),
        ({"family": {"sasrec": {"train": {"task": "ranking"}}}}, "train.task cannot follow another axis"),
        ({"family": {"sasrec": {"train": {"seed": 3}}}, "width": {"16": {"train": {"seed": 4}}}},
         "train.seed is set by the values of axes family and width both"),
        ({"family": {"sasrec": {"lr": 1e-2}}}, "must hold config tables"),
    ],
)
def test_bad_axis_settings_name_the_table_and_the_fix(settings: dict, fragment: str) -> None:
    raw = {"sweep": {"name": "s"}, "axes": {"family": ["hstu", "sasrec"], "width": [16, 32]}, "axis_settings": settings}
    with pytest.raises(ValueError) as info:
        spec_from_dict(raw, source="s.toml")
    assert fragment in str(info.value) and str(info.value).startswith("s.toml")
