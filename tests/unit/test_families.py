"""The model-family contract (`gr_core.families`), checked for every entry of `FAMILIES`.

A new family gets these checks by being registered and listing a few option variants in
`VARIANTS`: its analytic parameters equal the built module's, its FLOP components sum to the
total and match FlopCounterMode on a real training step, its [model] keys work in TOML, --set
and sweep axes, and its module is a causal encoder with unit-norm outputs.
"""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from gr_core.config import SHARED_MODEL_FIELDS, ModelConfig, RunConfig, replace_path, table_keys
from gr_core.encoder import SequenceEncoder, build_model, count_parameters
from gr_core.families import FAMILIES, FamilyName, FamilyOptions, FuXiOptions, HSTUOptions, SASRecOptions
from gr_core.families.contract import RESERVED_COMPONENTS, SHARED_ELEMENTWISE
from gr_core.losses import sampled_softmax_loss
from kernels.per_sequence import per_sequence_attention
from scaling import count_params, elementwise_flops, forward_flops
from sweeps.spec import spec_from_dict

# Options of each family away from its defaults (at least one per family; every field of the
# family's options changed by at least one of them).
VARIANTS: dict[str, list[object]] = {
    "hstu": [
        HSTUOptions(attention_dim=3, linear_dim=5, use_rab=False),
        HSTUOptions(attn_norm="seq_len", num_time_buckets=17, attention_impl="reference"),
    ],
    "sasrec": [SASRecOptions(ffn_hidden_dim=7, ffn_activation="gelu")],
    "fuxi": [
        FuXiOptions(attention_dim=3, linear_dim=5, ffn_multiply=2.5),
        FuXiOptions(attn_norm="seq_len", num_time_buckets=17, ffn_single_stage=True, attention_impl="reference"),
    ],
}
# Shared shapes every family is checked at: (num_blocks, embedding_dim, num_heads, max_seq_len).
SHAPES = [(1, 8, 1, 6), (2, 12, 3, 9), (3, 16, 2, 5)]
NUM_ITEMS = 23


def _configs(name: str) -> list[ModelConfig]:
    shaped = [
        ModelConfig(family=name, num_blocks=b, embedding_dim=d, num_heads=h, max_seq_len=n, dropout=0.1)  # type: ignore[arg-type]
        for b, d, h, n in SHAPES
    ]
    return shaped + [dataclasses.replace(shaped[1], options=options) for options in VARIANTS[name]]  # type: ignore[arg-type]


CASES = [pytest.param(model, id=f"{name}-{i}") for name in FAMILIES for i, model in enumerate(_configs(name))]


def test_the_registry_lists_each_family_once_and_everywhere() -> None:
    assert typing.get_args(FamilyName) == tuple(FAMILIES)
    assert set(typing.get_args(FamilyOptions)) == {family.options for family in FAMILIES.values()}
    assert set(VARIANTS) == set(FAMILIES), "list option variants of a new family in VARIANTS"
    for name, family in FAMILIES.items():
        assert family.name == name and family.label
        fields = dataclasses.fields(family.options)
        assert family.options.__dataclass_params__.frozen  # type: ignore[attr-defined]
        assert not {f.name for f in fields} & set(SHARED_MODEL_FIELDS), "an option shadows a shared [model] key"
        assert all(f.default is not dataclasses.MISSING for f in fields), "every option needs a default"
        assert set(table_keys("model")) >= {f.name for f in fields}
        changed = {f.name for options in VARIANTS[name] for f in fields
                   if getattr(options, f.name) != f.default}
        assert changed == {f.name for f in fields}, f"VARIANTS[{name!r}] leaves {sorted({f.name for f in fields} - changed)}"
        model = ModelConfig(family=name)  # type: ignore[arg-type]
        assert not set(family.matmul_costs(model)) & RESERVED_COMPONENTS
        assert isinstance(family.describe(model), str) and family.describe(model)


@pytest.mark.parametrize("model", CASES)
@pytest.mark.parametrize("task", ["retrieval", "both"])
def test_analytic_params_equal_the_built_module_by_block(model: ModelConfig, task: str) -> None:
    counted = count_params(model, NUM_ITEMS, task=task)
    built = build_model(model, NUM_ITEMS, ranking_head=task != "retrieval")
    assert isinstance(built, SequenceEncoder)
    actual = count_parameters(built)
    assert (counted.embedding, counted.non_embedding, counted.total) == (
        actual["embedding"], actual["non_embedding"], actual["total"]
    )
    family = FAMILIES[model.family]
    assert counted.per_block == sum(family.block_params(model).values())
    for i in range(model.num_blocks):  # each block holds exactly the per-block count
        in_block = sum(p.numel() for n, p in built.named_parameters() if n.startswith(f"blocks.{i}."))
        assert in_block == counted.per_block, f"blocks.{i}"
    head = sum(p.numel() for n, p in built.named_parameters() if n.startswith("ranking_head."))
    assert head == counted.ranking_head
    assert counted.outside_blocks == actual["non_embedding"] - model.num_blocks * counted.per_block - head


def _training_step_flops(model_cfg: ModelConfig, lengths: list[int], num_negatives: int, seed: int) -> float:
    """FlopCounterMode's count of forward + sampled softmax + backward, attention as plain
    per-sequence matmuls (so the attention ops' registered formulas are not what is counted)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(model_cfg, NUM_ITEMS)
    offsets = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int64)
    num_tokens = sum(lengths)
    items = torch.randint(1, NUM_ITEMS + 1, (num_tokens,), generator=gen)
    timestamps = 1_500_000_000 + torch.cumsum(torch.randint(1, 10**5, (num_tokens,), generator=gen), 0)
    targets = torch.randint(1, NUM_ITEMS + 1, (num_tokens,), generator=gen)
    with per_sequence_attention(), FlopCounterMode(display=False) as counter:
        out = model(items, timestamps, offsets)
        loss = sampled_softmax_loss(
            out, targets, model.item_vectors(), num_negatives=num_negatives, temperature=0.05, scoring="gather", generator=gen
        )
        loss.backward()
    return float(counter.get_total_flops())


@pytest.mark.parametrize("model", CASES)
def test_flop_components_sum_to_the_total_and_match_the_flop_counter(model: ModelConfig) -> None:
    # Two length mixes with different tokens : pairs ratios, so per-token and per-pair terms are
    # both pinned down (an error in one cannot hide in the other); empty sequences included.
    for lengths in ([1, 0, model.max_seq_len, 2], [model.max_seq_len, model.max_seq_len - 1, 0]):
        fwd = forward_flops(np.array(lengths), model, head_candidates=5)
        assert sum(fwd.encoder.values()) + fwd.head + fwd.ranking_head == fwd.total_dense
        costs = FAMILIES[model.family].matmul_costs(model)
        assert list(fwd.encoder) == list(costs) and all(c.label for c in costs.values())
        assert all(c.per_token >= 0 and c.per_pair >= 0 for c in costs.values())
        n = np.array(lengths, dtype=float)
        pair_part = sum(c.per_pair for c in costs.values())
        assert fwd.attention_dense == pytest.approx(pair_part * float((n * n).sum()), rel=1e-12)
        assert fwd.total_dense - fwd.total_causal == pytest.approx(pair_part * float((n * (n - 1) / 2).sum()))
        measured = _training_step_flops(model, lengths, num_negatives=4, seed=len(lengths))
        assert measured == pytest.approx(3 * fwd.total_dense, rel=1e-9), lengths


@pytest.mark.parametrize("model", CASES)
def test_elementwise_kinds_are_non_negative_and_dropout_only_in_training(model: ModelConfig) -> None:
    lengths = np.array([3, 0, model.max_seq_len])
    args = dict(head_candidates=5, num_items=NUM_ITEMS, item_table_norms=1, ranking=True)
    train = elementwise_flops(lengths, model, training=True, **args)
    evaluate = elementwise_flops(lengths, model, training=False, **args)
    assert set(train.components) >= set(SHARED_ELEMENTWISE) and list(train.components) == list(evaluate.components)
    assert all(value >= 0 for value in train.components.values())
    assert evaluate["dropout"] == 0 < train["dropout"]  # the configs have dropout 0.1
    no_dropout = dataclasses.replace(model, dropout=0.0)
    assert elementwise_flops(lengths, no_dropout, training=True, **args)["dropout"] == 0
    assert train.total > evaluate.total


@pytest.mark.parametrize("model", CASES)
def test_the_encoder_is_causal_with_unit_norm_outputs(model: ModelConfig) -> None:
    torch.manual_seed(0)
    encoder = build_model(dataclasses.replace(model, dropout=0.0), NUM_ITEMS).eval()
    n = model.max_seq_len
    items = torch.arange(1, 2 * n + 1) % NUM_ITEMS + 1
    timestamps = torch.arange(2 * n) * 3600
    offsets = torch.tensor([0, n, 2 * n])
    with torch.no_grad():
        out = encoder(items, timestamps, offsets)
        changed = items.clone()
        changed[n - 1] = changed[n - 1] % NUM_ITEMS + 1  # the last item of the first sequence
        out2 = encoder(changed, timestamps, offsets)
    assert out.shape == (2 * n, model.embedding_dim)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2 * n))
    torch.testing.assert_close(out2[: n - 1], out[: n - 1])  # earlier positions do not see it
    torch.testing.assert_close(out2[n:], out[n:])  # nor does the other sequence
    assert not torch.allclose(out2[n - 1], out[n - 1])


@pytest.mark.parametrize("model", CASES)
def test_the_flat_model_table_round_trips_and_keys_stay_with_their_family(model: ModelConfig) -> None:
    table = model.to_dict()
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in table.values())  # the run id hashes it
    assert list(table)[: len(SHARED_MODEL_FIELDS)] == list(SHARED_MODEL_FIELDS)
    assert ModelConfig.from_table(table) == model
    config = RunConfig(model=model)
    assert RunConfig.from_dict(config.to_dict()).run_id == config.run_id
    for key, value in table.items():  # every key works as --set / a sweep axis value
        assert replace_path(config, f"model.{key}", value) == config
    for other, variants in VARIANTS.items():
        if other == model.family:
            continue
        defaults = FAMILIES[other].options()
        for options in variants:
            for field in dataclasses.fields(options):  # type: ignore[arg-type]
                value = getattr(options, field.name)
                if value == getattr(defaults, field.name) or field.name in table:
                    continue
                with pytest.raises(ValueError, match=rf"run.toml: model\.{field.name} do not apply to "
                                                     rf"model\.family='{model.family}'; remove them"):
                    RunConfig.from_dict({"model": {**table, field.name: value}}, where="run.toml")


def test_switching_family_keeps_the_shared_keys_and_drops_foreign_defaults() -> None:
    base = RunConfig()
    ids = set()
    for name in FAMILIES:
        switched = replace_path(base, "model.family", name)
        assert isinstance(switched.model.options, FAMILIES[name].options)
        assert {k: switched.model.to_dict()[k] for k in SHARED_MODEL_FIELDS if k != "family"} == {
            k: base.model.to_dict()[k] for k in SHARED_MODEL_FIELDS if k != "family"
        }
        ids.add(switched.run_id)
    assert len(ids) == len(FAMILIES)


def test_unknown_and_mistyped_model_keys_name_the_field_and_list_the_family_keys() -> None:
    with pytest.raises(ValueError) as info:
        RunConfig.from_dict({"model": {"family": "sasrec", "widht": 3}}, where="run.toml")
    message = str(info.value)
    assert message.startswith("run.toml: unknown key(s) ['widht'] in [model]; valid keys are ")
    assert "ffn_hidden_dim" in message and "attention_dim" not in message  # the family's keys only
    with pytest.raises(TypeError, match="run.toml: model.ffn_hidden_dim must be an integer"):
        RunConfig.from_dict({"model": {"family": "sasrec", "ffn_hidden_dim": "wide"}}, where="run.toml")
    with pytest.raises(ValueError, match=r"model.family must be one of \['hstu', 'sasrec', 'fuxi'\], got 'tiger'"):
        RunConfig.from_dict({"model": {"family": "tiger"}}, where="run.toml")
    with pytest.raises(ValueError, match="model.options is a HSTUOptions, but model.family='sasrec' takes SASRecOptions"):
        ModelConfig(family="sasrec", options=HSTUOptions())


def test_a_sweep_can_take_the_family_and_any_family_key_as_axes() -> None:
    spec = spec_from_dict({
        "sweep": {"name": "families", "metric": "ndcg@10"},
        "axes": {"model.family": list(FAMILIES), "width": [8, 16]},
        "base": {"data": {"num_users": 30, "num_items": 20, "num_clusters": 2}, "model": {"max_seq_len": 8}},
    }, source="spec.toml")
    families = sorted({config.model.family for _, config in spec.run_configs()})
    assert families == sorted(FAMILIES) and spec.num_grid_points == 2 * len(FAMILIES)
    spec = spec_from_dict({
        "sweep": {"name": "ffn", "metric": "ndcg@10"},
        "axes": {"model.ffn_hidden_dim": [8, 16]},
        "base": {"model": {"family": "sasrec"}},
    }, source="spec.toml")
    assert [config.model.to_dict()["ffn_hidden_dim"] for _, config in spec.run_configs()] == [8, 16]
    with pytest.raises(ValueError, match=r"axes.model.ffn_width: 'ffn_width' is not a field of \[model\]"):
        spec_from_dict({"sweep": {"name": "x", "metric": "ndcg@10"}, "axes": {"model.ffn_width": [8]}}, source="spec.toml")
    with pytest.raises(ValueError, match="model.ffn_hidden_dim do not apply to model.family='hstu'"):
        spec_from_dict({"sweep": {"name": "x", "metric": "ndcg@10"}, "axes": {"model.ffn_hidden_dim": [8]}},
                       source="spec.toml")


def test_head_dims_are_positive_and_match_the_config() -> None:
    for name in FAMILIES:
        for model in _configs(name):
            dqk, dv = FAMILIES[name].head_dims(model)
            assert (model.dqk, model.dv) == (dqk, dv) and dqk >= 1 and dv >= 1
