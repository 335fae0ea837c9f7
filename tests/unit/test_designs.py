from __future__ import annotations

import pytest

from gr_core.config import RunConfig
from gr_core.lengths import train_sequence_lengths
from scaling import count_params, run_flops
from sweeps.plan import format_plan, plan_sweep
from sweeps.spec import spec_from_dict

BASE = {
    "data": {"num_items": 200, "num_clusters": 8, "min_events": 6, "max_events": 40},
    "model": {"max_seq_len": 24},
    "train": {"epochs": 2, "num_negatives": 16},
}


def test_isoflop_runs_land_on_their_budgets() -> None:
    budgets = [2e9, 8e9]
    spec = spec_from_dict(
        {"axes": {"width": [16, 32, 64]}, "base": BASE, "design": {"kind": "isoflop", "budgets": budgets}},
        source="iso.toml",
    )
    plan = plan_sweep(spec)
    assert len(plan.runs) + len(plan.skipped) == 6
    assert len(plan.runs) >= 5
    for run in plan.runs:
        budget = run.axis_values["budget"]
        assert budget in budgets
        assert run.flops["train"] == pytest.approx(budget, rel=0.02)
    # On one isoFLOP curve, a wider model gets fewer users.
    on_curve = sorted((r for r in plan.runs if r.axis_values["budget"] == 8e9), key=lambda r: r.axis_values["width"])
    users = [r.config["data"]["num_users"] for r in on_curve]
    assert users == sorted(users, reverse=True)


def test_ladder_rungs_train_on_multiples_of_tokens_per_param() -> None:
    spec = spec_from_dict(
        {
            "axes": {"width": [16, 32]},
            "base": BASE,
            "design": {"kind": "ladder", "tokens_per_param": 20, "multipliers": [1, 2, 5]},
        },
        source="ladder.toml",
    )
    plan = plan_sweep(spec)
    assert len(plan.runs) == 6 and not plan.skipped
    for run in plan.runs:
        config = RunConfig.from_dict(run.config)
        target = run.axis_values["multiplier"] * 20 * count_params(config.model, config.data.num_items).non_embedding
        tokens = train_sequence_lengths(config.data, config.model.max_seq_len).sum() * config.train.epochs
        per_user = max(train_sequence_lengths(config.data, config.model.max_seq_len))
        assert target <= tokens < target + per_user * config.train.epochs  # the fewest users that reach it
        assert run.flops["train"] == pytest.approx(run_flops(config.data, config.model, config.train).train)


def test_design_cannot_also_sweep_the_solved_field() -> None:
    with pytest.raises(ValueError, match="solves data.num_users for each run, so it cannot also be an axis"):
        spec_from_dict({"axes": {"users": [100]}, "design": {"kind": "isoflop", "budgets": [1e9]}}, source="x.toml")
    with pytest.raises(ValueError, match="design.budgets must list at least one"):
        spec_from_dict({"design": {"kind": "isoflop"}}, source="x.toml")
    with pytest.raises(ValueError, match=r"design.budgets\[1\] must be > 0"):
        spec_from_dict({"design": {"kind": "isoflop", "budgets": [1e9, -1]}}, source="x.toml")
    with pytest.raises(ValueError, match="design.kind must be one of"):
        spec_from_dict({"design": {"kind": "random"}}, source="x.toml")


def test_unreachable_budget_is_skipped_with_its_reason() -> None:
    spec = spec_from_dict(
        {"axes": {"width": [16]}, "base": BASE, "design": {"kind": "isoflop", "budgets": [1e3]}}, source="x.toml"
    )
    plan = plan_sweep(spec)
    assert plan.runs == [] and len(plan.skipped) == 1
    assert "1.000e+03" in plan.skipped[0].reason
    assert "skipped" in format_plan(plan)


def test_budget_keeps_the_cheapest_prefix() -> None:
    spec = spec_from_dict({"axes": {"width": [8, 16, 32, 64]}, "base": BASE}, source="b.toml")
    full = plan_sweep(spec)
    flops = [r.flops["train"] for r in full.runs]
    capped = plan_sweep(spec_from_dict({"axes": {"width": [8, 16, 32, 64]}, "base": BASE,
                                        "budget": {"max_flops": flops[0] + flops[1] + 0.5 * flops[2]}}, source="b.toml"))
    assert [r.run_id for r in capped.within_budget()] == [r.run_id for r in full.runs[:2]]
    assert "2 of 4 runs fit" in format_plan(capped)
    with pytest.raises(ValueError, match="budget.max_flops must be > 0"):
        spec_from_dict({"budget": {"max_flops": 0}}, source="b.toml")


def test_plan_estimates_cost_and_caps_device_hours() -> None:
    raw = {"axes": {"width": [8, 16, 32, 64]}, "base": BASE,
           "cost": {"device": "h100-sxm", "mfu": 0.5, "price_per_device_hour": 2.0}}
    plan = plan_sweep(spec_from_dict(raw, source="c.toml"))
    total = plan.total_flops
    estimate = plan.estimate(total)
    assert estimate.device_hours == pytest.approx(total / (989e12 * 0.5) / 3600)
    assert estimate.cost == pytest.approx(2.0 * estimate.device_hours)
    text = format_plan(plan)
    assert "device-hours on 1 x h100-sxm at MFU 0.5" in text
    first_two = plan.estimate(plan.runs[0].flops["train"] + plan.runs[1].flops["train"]).device_hours
    capped = plan_sweep(spec_from_dict({**raw, "budget": {"max_device_hours": first_two * 1.001}}, source="c.toml"))
    assert [r.run_id for r in capped.within_budget()] == [r.run_id for r in plan.runs[:2]]
    with pytest.raises(ValueError, match="cost.mfu must be in"):
        spec_from_dict({"cost": {"mfu": 1.5}}, source="c.toml")
    with pytest.raises(ValueError, match="cost.device must be one of"):
        spec_from_dict({"cost": {"device": "tpu"}}, source="c.toml")


def test_ladder_counts_the_ranking_head_in_tokens_per_param() -> None:
    base = {**BASE, "train": {**BASE["train"], "task": "both"}}
    spec = spec_from_dict(
        {"axes": {"width": [16]}, "base": base, "design": {"kind": "ladder", "multipliers": [1, 2]}},
        source="ladder.toml",
    )
    for run in plan_sweep(spec).runs:
        config = RunConfig.from_dict(run.config)
        d = config.model.embedding_dim
        non_embedding = count_params(config.model, config.data.num_items).non_embedding + 3 * d * d + 2 * d + 1
        assert run.params["non_embedding"] == non_embedding
        target = run.axis_values["multiplier"] * 20 * non_embedding
        lengths = train_sequence_lengths(config.data, config.model.max_seq_len)
        tokens = lengths.sum() * config.train.epochs
        assert target <= tokens < target + max(lengths) * config.train.epochs
