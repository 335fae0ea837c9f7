"""Compute grids: configs and data volumes whose training FLOPs land on a budget."""

from __future__ import annotations

import dataclasses
import logging
import math

import pytest

from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from scaling import FixedAspect, FixedDepth, configs_for_budget, data_for_budget, run_flops

BASE = RunConfig(
    data=DataConfig(num_users=500, num_items=200, num_clusters=10, max_events=60),
    model=ModelConfig(num_heads=2, max_seq_len=40),
    train=TrainConfig(epochs=2, num_negatives=32),
)


def _train_flops(config: RunConfig) -> float:
    return run_flops(config.data, config.model, config.train).train


@pytest.mark.parametrize("budget", [3e10, 1e11, 1e12])
@pytest.mark.parametrize(
    "rule", [FixedDepth(num_blocks=3, max_width=128), FixedAspect(width_per_block=24, max_blocks=8)]
)
@pytest.mark.parametrize("adjust", ["num_users", "epochs"])
def test_configs_land_within_two_percent(budget: float, rule, adjust: str) -> None:
    points = configs_for_budget(budget, BASE, rule, adjust=adjust)
    assert len(points) >= 2
    for p in points:
        m = p.config.model
        assert abs(_train_flops(p.config) / budget - 1) <= 0.02  # recounted from scratch
        assert p.train_flops == _train_flops(p.config)
        assert m.embedding_dim % 8 == 0 and m.embedding_dim % m.num_heads == 0
        if isinstance(rule, FixedDepth):
            assert m.num_blocks == 3
        else:
            assert m.embedding_dim == max(8, round(24 * m.num_blocks / 8) * 8)
        other = p.config.train.epochs == 2 if adjust == "num_users" else p.config.data.num_users == 500
        assert other  # only the chosen data axis moves
    params = [p.non_embedding_params for p in points]
    assert params == sorted(params)


def _with_users(config: RunConfig, users: int) -> RunConfig:
    return dataclasses.replace(config, data=dataclasses.replace(config.data, num_users=users))


def test_data_for_budget_is_the_nearest_user_count() -> None:
    budget = 2e11
    point = data_for_budget(budget, BASE, adjust="num_users")
    users = point.config.data.num_users
    below, above = _train_flops(_with_users(BASE, users - 1)), _train_flops(_with_users(BASE, users + 1))
    assert below <= budget <= above
    assert abs(point.train_flops - budget) <= min(abs(below - budget), abs(above - budget))
    assert abs(point.rel_error) < 1e-3


def test_data_for_budget_epochs_rounds_to_the_nearest_epoch() -> None:
    per_epoch = _train_flops(dataclasses.replace(BASE, train=dataclasses.replace(BASE.train, epochs=1)))
    point = data_for_budget(7.1 * per_epoch, BASE, adjust="epochs")
    assert point.config.train.epochs == 7
    assert point.train_flops == pytest.approx(7 * per_epoch)
    with pytest.raises(ValueError, match=r"no epochs reaches .* within \+/-2%"):
        data_for_budget(1.5 * per_epoch, BASE, adjust="epochs")  # 1 or 2 epochs: 33% off either way
    loose = data_for_budget(1.5 * per_epoch, BASE, adjust="epochs", tolerance=None)
    assert loose.config.train.epochs == 2  # round half to even


def test_fixed_data_falls_back_to_multiples_of_num_heads(caplog: pytest.LogCaptureFixture) -> None:
    base = RunConfig(data=BASE.data, model=ModelConfig(num_heads=3, embedding_dim=48, max_seq_len=40), train=BASE.train)
    target = RunConfig(data=base.data, model=ModelConfig(num_heads=3, embedding_dim=36, max_seq_len=40),
                       train=base.train)
    budget = _train_flops(target)
    with caplog.at_level(logging.WARNING, logger="scaling.grid"):
        points = configs_for_budget(budget, base, FixedDepth(num_blocks=2, max_width=96), adjust=None)
    assert "multiples of num_heads=3" in caplog.text  # 24 and 48 miss by far more than 2%
    assert [p.config.model.embedding_dim for p in points] == [36]
    assert points[0].rel_error == 0.0


def test_unreachable_budgets_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"no HSTU config under FixedDepth.*with the data fixed; the nearest is"):
        configs_for_budget(1e15, BASE, FixedDepth(num_blocks=2, max_width=64), adjust=None)
    with pytest.raises(ValueError, match="adjusting train.epochs"):
        configs_for_budget(1e6, BASE, FixedAspect(width_per_block=16, max_blocks=4), adjust="epochs")
    with pytest.raises(ValueError, match="budget must be a positive number"):
        configs_for_budget(-1.0, BASE, FixedDepth(num_blocks=2))
    with pytest.raises(ValueError, match="FixedDepth.num_blocks must be >= 1"):
        FixedDepth(num_blocks=0)
    assert math.isfinite(configs_for_budget(1e11, BASE, FixedDepth(num_blocks=1, max_width=32))[0].train_flops)


@pytest.mark.parametrize("task", ["ranking", "both"])
def test_ranking_tasks_land_on_the_budget_and_count_their_head(task: str) -> None:
    from scaling import count_params

    config = dataclasses.replace(BASE, train=dataclasses.replace(BASE.train, task=task))
    point = data_for_budget(2e11, config, adjust="num_users")
    assert point.train_flops == _train_flops(point.config)  # run_flops counts the task's heads
    assert abs(point.rel_error) < 1e-3
    d = config.model.embedding_dim
    retrieval_only = count_params(config.model, config.data.num_items).non_embedding
    assert point.non_embedding_params == retrieval_only + 3 * d * d + 2 * d + 1
    assert point.to_dict()["non_embedding_params"] == point.non_embedding_params
