from __future__ import annotations

import pytest

from gr_core.config import ModelConfig, RunConfig, replace_path
from gr_core.families import HSTUOptions


def test_defaults_resolve_per_head_widths() -> None:
    model = ModelConfig(embedding_dim=64, num_heads=4)
    assert (model.dqk, model.dv) == (16, 16)
    assert ModelConfig(embedding_dim=64, num_heads=4, options=HSTUOptions(attention_dim=8)).dqk == 8
    assert RunConfig.from_dict({"model": {"embedding_dim": 64, "num_heads": 4, "attention_dim": 8}}).model.dqk == 8


def test_run_id_is_stable_and_changes_with_any_field() -> None:
    a, b = RunConfig(), RunConfig()
    assert a.run_id == b.run_id and len(a.run_id) == 12
    assert replace_path(a, "train.seed", 1).run_id != a.run_id
    assert replace_path(a, "model.dropout", 0.2).run_id == a.run_id  # same value, same id


@pytest.mark.parametrize(
    ("raw", "exc", "fragment"),
    [
        ({"model": {"embeding_dim": 8}}, ValueError, "unknown key(s) ['embeding_dim'] in [model]"),
        ({"modle": {}}, ValueError, "valid keys are ['data', 'model', 'train']"),
        ({"model": {"embedding_dim": -8}}, ValueError, "model.embedding_dim must be >= 1, got -8"),
        ({"model": {"attn_norm": "mean"}}, ValueError, "model.attn_norm must be one of ['max_len', 'seq_len']"),
        ({"train": {"lr": "fast"}}, TypeError, "train.lr must be a number"),
        ({"train": {"epochs": 2.5}}, TypeError, "train.epochs must be an integer"),
        ({"model": {"embedding_dim": 30, "num_heads": 4}}, ValueError, "not divisible by model.num_heads=4"),
        ({"data": {"min_events": 2}}, ValueError, "data.min_events must be >= 3"),
        ({"data": {"min_events": 3, "max_events": 3}}, ValueError, "data.max_events must be >= 4"),
        ({"train": {"lr": float("inf")}}, ValueError, "train.lr must be a finite number, got inf"),
        ({"train": {"grad_clip": float("nan")}}, ValueError, "train.grad_clip must be a finite number, got nan"),
    ],
)
def test_bad_config_names_the_field(raw: dict, exc: type, fragment: str) -> None:
    with pytest.raises(exc) as info:
        RunConfig.from_dict(raw, where="run.toml")
    assert str(info.value).startswith("run.toml: ")
    assert fragment in str(info.value)


def test_ints_are_accepted_for_floats() -> None:
    config = RunConfig.from_dict({"train": {"lr": 1}})
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
