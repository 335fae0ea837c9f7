"""Analytic parameter and FLOP counts against the real model and PyTorch's FLOP counter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from gr_core.families import FAMILIES
from gr_core.config import DataConfig, ModelConfig, TrainConfig
from gr_core.data import train_batches
from gr_core.families import HSTUOptions, SASRecOptions
from gr_core.hstu import HSTU, count_parameters
from gr_core.lengths import train_sequence_lengths
from gr_core.losses import sampled_softmax_loss
from gr_core.synthetic import generate_synthetic
from scaling import count_params, forward_flops, run_flops

MODELS = [
    ModelConfig(num_blocks=1, embedding_dim=8, num_heads=1, max_seq_len=12),
    ModelConfig(num_blocks=2, embedding_dim=16, num_heads=2, max_seq_len=20, options=HSTUOptions(use_rab=False)),
    ModelConfig(num_blocks=3, embedding_dim=24, num_heads=3, max_seq_len=16,
                options=HSTUOptions(attention_dim=5, linear_dim=7)),
    ModelConfig(num_blocks=2, embedding_dim=32, num_heads=4, max_seq_len=30, options=HSTUOptions(num_time_buckets=64)),
]


@pytest.mark.parametrize("model_cfg", MODELS)
def test_param_counts_match_the_built_model(model_cfg: ModelConfig) -> None:
    counted = count_params(model_cfg, num_items=57)
    actual = count_parameters(HSTU(model_cfg, num_items=57))
    assert (counted.embedding, counted.non_embedding, counted.total) == (
        actual["embedding"],
        actual["non_embedding"],
        actual["total"],
    )


@pytest.mark.parametrize("model_cfg", MODELS)
def test_training_step_flops_match_flop_counter(model_cfg: ModelConfig) -> None:
    torch.manual_seed(0)
    data = generate_synthetic(DataConfig(num_users=40, num_items=57, num_clusters=5, min_events=4, max_events=45))
    model = HSTU(model_cfg, data.num_items)
    batch = next(iter(train_batches(data, max_seq_len=model_cfg.max_seq_len, batch_size=16, rng=np.random.default_rng(0))))
    lengths = (batch.seq_offsets[1:] - batch.seq_offsets[:-1]).numpy()
    num_negatives = 9
    with FlopCounterMode(display=False) as counter:
        out = model(batch.item_ids, batch.timestamps, batch.seq_offsets)
        loss = sampled_softmax_loss(
            out, batch.target_ids, model.item_vectors(), num_negatives=num_negatives,
            temperature=0.05, scoring="gather", generator=torch.Generator().manual_seed(0),
        )
        loss.backward()
    analytic = 3 * forward_flops(lengths, model_cfg, head_candidates=num_negatives + 1).total_dense
    assert counter.get_total_flops() == pytest.approx(analytic, rel=1e-9)


def test_run_flops_scale_with_epochs_and_count_real_lengths() -> None:
    data, model = DataConfig(num_users=300, num_items=100), ModelConfig(max_seq_len=20)
    one = run_flops(data, model, TrainConfig(epochs=1))
    three = run_flops(data, model, TrainConfig(epochs=3))
    assert three.train == pytest.approx(3 * one.train)
    lengths = train_sequence_lengths(data, model.max_seq_len)
    assert one.train_tokens == int(lengths.sum())
    # Causal-exact attention counts n(n+1)/2 of the n^2 pairs.
    fwd = one.forward_per_epoch
    pairs = lengths.astype(float)
    assert fwd.attention_causal / fwd.attention_dense == pytest.approx(
        (pairs * (pairs + 1) / 2).sum() / (pairs**2).sum()
    )
    assert 0 < one.attention_fraction < 1


def test_hand_computed_forward_flops() -> None:
    # One block, D=4, H=1, dqk=dv=4, two sequences of 2 and 3 tokens, R+1 = 3 candidates.
    model = ModelConfig(num_blocks=1, embedding_dim=4, num_heads=1, max_seq_len=8)
    fwd = forward_flops(np.array([2, 3]), model, head_candidates=3)
    assert fwd.encoder["uvqk_projection"] == 2 * 5 * 4 * 16  # 5 tokens, D x 4D projection
    assert fwd.encoder["attention"] == fwd.attention_dense == 2 * (4 + 9) * (4 + 4)
    assert fwd.encoder_causal["attention"] == fwd.attention_causal == 2 * (3 + 6) * (4 + 4)
    assert fwd.encoder["output_projection"] == 2 * 5 * 4 * 4
    assert list(fwd.encoder) == ["uvqk_projection", "attention", "output_projection"]
    assert fwd.head == 2 * 5 * 4 * 3


def _random_case(seed: int) -> tuple[ModelConfig, np.ndarray, int]:
    """A random small HSTU config and skewed jagged lengths (many short sequences, a few long)."""
    rng = np.random.default_rng(seed)
    heads = int(rng.integers(1, 5))
    width = heads * int(rng.integers(-(-16 // heads), 256 // heads + 1))  # in [16, 256], a multiple of heads
    explicit = rng.random() < 0.3  # per-head widths set apart from width / heads
    max_len = int(rng.integers(4, 17))
    num_blocks = int(rng.integers(1, 9))  # drawn in the order of the flat config these cases began as
    attention_dim = int(rng.integers(2, 17)) if explicit else None
    linear_dim = int(rng.integers(2, 17)) if explicit else None
    attn_norm = "seq_len" if rng.random() < 0.3 else "max_len"
    dropout = float(rng.choice([0.0, 0.2]))
    model = ModelConfig(
        num_blocks=num_blocks,
        embedding_dim=width,
        num_heads=heads,
        max_seq_len=max_len,
        dropout=dropout,
        options=HSTUOptions(
            attention_dim=attention_dim,
            linear_dim=linear_dim,
            use_rab=bool(seed % 2),  # half with rab, half without
            attn_norm=attn_norm,
            num_time_buckets=int(rng.integers(4, 129)),
        ),
    )
    num_seqs = int(rng.integers(2, 7))
    lengths = np.minimum(rng.geometric(0.5, size=num_seqs), max_len)  # mostly 1-2 tokens
    lengths[rng.integers(num_seqs)] = max_len  # and one full-length sequence
    if seed % 3 == 0:
        lengths[rng.integers(num_seqs)] = 0  # an empty sequence contributes nothing
    return model, lengths.astype(np.int64), int(rng.integers(1, 17))


@pytest.mark.parametrize("seed", range(24))
def test_random_configs_flops_match_flop_counter_by_component(seed: int) -> None:
    model_cfg, lengths, num_negatives = _random_case(seed)
    num_items = 30
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = HSTU(model_cfg, num_items)
    offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]))
    num_tokens = int(lengths.sum())
    item_ids = torch.randint(1, num_items + 1, (num_tokens,), generator=gen)
    gaps = torch.randint(1, 10**6, (num_tokens,), generator=gen)
    timestamps = 1_500_000_000 + torch.cumsum(gaps, 0)
    targets = torch.randint(1, num_items + 1, (num_tokens,), generator=gen)
    with FlopCounterMode(display=False) as counter:
        out = model(item_ids, timestamps, offsets)
        loss = sampled_softmax_loss(
            out, targets, model.item_vectors(), num_negatives=num_negatives, temperature=0.05, scoring="gather", generator=gen
        )
        loss.backward()
    fwd = forward_flops(lengths, model_cfg, head_candidates=num_negatives + 1)
    measured = counter.get_total_flops()
    assert measured == pytest.approx(3 * fwd.total_dense, rel=0.01)  # issue 3's acceptance bound
    assert measured == pytest.approx(3 * fwd.total_dense, rel=1e-9)  # and in fact exact
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    attention = by_op.get("gr_scaling.hstu_attention", 0) + by_op.get("gr_scaling.hstu_attention_backward", 0)
    assert attention == pytest.approx(3 * fwd.attention_dense, rel=1e-9)
    assert by_op.get("aten.bmm", 0) == pytest.approx(3 * fwd.head, rel=1e-9)  # the sampled-softmax logits
    projections = by_op.get("aten.mm", 0) + by_op.get("aten.addmm", 0)
    assert projections == pytest.approx(
        3 * (fwd.encoder["uvqk_projection"] + fwd.encoder["output_projection"]), rel=1e-9
    )


def _random_sasrec_case(seed: int) -> tuple[ModelConfig, np.ndarray, int]:
    """A random small SASRec config and skewed jagged lengths, as `_random_case` for HSTU."""
    rng = np.random.default_rng(1000 + seed)
    heads = int(rng.integers(1, 5))
    width = heads * int(rng.integers(-(-16 // heads), 128 // heads + 1))
    max_len = int(rng.integers(4, 17))
    model = ModelConfig(
        family="sasrec",
        num_blocks=int(rng.integers(1, 5)),
        embedding_dim=width,
        num_heads=heads,
        max_seq_len=max_len,
        options=SASRecOptions(
            ffn_hidden_dim=int(rng.integers(4, 65)) if rng.random() < 0.5 else None,
            ffn_activation="gelu" if rng.random() < 0.3 else "relu",
        ),
        dropout=float(rng.choice([0.0, 0.2])),
    )
    num_seqs = int(rng.integers(2, 7))
    lengths = np.minimum(rng.geometric(0.5, size=num_seqs), max_len)
    lengths[rng.integers(num_seqs)] = max_len
    if seed % 3 == 0:
        lengths[rng.integers(num_seqs)] = 0
    return model, lengths.astype(np.int64), int(rng.integers(1, 17))


@pytest.mark.parametrize("seed", range(12))
def test_sasrec_random_configs_flops_match_flop_counter_by_component(seed: int) -> None:
    from gr_core.sasrec import SASRec

    model_cfg, lengths, num_negatives = _random_sasrec_case(seed)
    num_items = 30
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SASRec(model_cfg, num_items)  # training mode: attention and FFN dropout are on
    offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]))
    num_tokens = int(lengths.sum())
    item_ids = torch.randint(1, num_items + 1, (num_tokens,), generator=gen)
    timestamps = torch.cumsum(torch.randint(1, 10**6, (num_tokens,), generator=gen), 0)
    targets = torch.randint(1, num_items + 1, (num_tokens,), generator=gen)
    with FlopCounterMode(display=False) as counter:
        out = model(item_ids, timestamps, offsets)
        loss = sampled_softmax_loss(
            out, targets, model.item_vectors(), num_negatives=num_negatives, temperature=0.05, scoring="gather", generator=gen
        )
        loss.backward()
    fwd = forward_flops(lengths, model_cfg, head_candidates=num_negatives + 1)
    assert counter.get_total_flops() == pytest.approx(3 * fwd.total_dense, rel=1e-9)
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    attention = by_op.get("gr_core.jagged_softmax_attention", 0) + by_op.get(
        "gr_core.jagged_softmax_attention_backward", 0
    )
    assert attention == pytest.approx(3 * fwd.attention_dense, rel=1e-9)
    assert by_op.get("aten.bmm", 0) == pytest.approx(3 * fwd.head, rel=1e-9)
    projections = by_op.get("aten.mm", 0) + by_op.get("aten.addmm", 0)
    assert projections == pytest.approx(
        3 * (fwd.encoder["qkv_projection"] + fwd.encoder["output_projection"] + fwd.encoder["ffn"]), rel=1e-9
    )
    assert set(fwd.encoder) == {"qkv_projection", "attention", "output_projection", "ffn"}


def test_hand_computed_sasrec_forward_flops() -> None:
    # One block, D=4, one head, FFN 6; sequences of 2 and 3 tokens; R+1 = 3 candidates.
    model = ModelConfig(family="sasrec", num_blocks=1, embedding_dim=4, max_seq_len=8,
                        options=SASRecOptions(ffn_hidden_dim=6))
    fwd = forward_flops(np.array([2, 3]), model, head_candidates=3, ranking=True)
    assert fwd.encoder["qkv_projection"] == 2 * 5 * 4 * 12  # Q, K and V projections
    assert fwd.encoder["attention"] == fwd.attention_dense == 2 * (4 + 9) * (4 + 4)
    assert fwd.encoder["output_projection"] == 2 * 5 * 4 * 4
    assert fwd.encoder["ffn"] == 2 * 5 * (4 * 6 + 6 * 4)
    assert fwd.head == 2 * 5 * 4 * 3
    assert fwd.ranking_head == 5 * (2 * 12 * 4 + 2 * 4)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_ranking_task_flops_match_flop_counter(family: str) -> None:
    from gr_core.encoder import build_model
    from gr_core.ranking import ranking_logits, ranking_loss

    model_cfg = ModelConfig(family=family, num_blocks=2, embedding_dim=12, num_heads=2, max_seq_len=9)
    torch.manual_seed(0)
    data = generate_synthetic(DataConfig(num_users=30, num_items=40, num_clusters=4, min_events=4, max_events=14))
    model = build_model(model_cfg, data.num_items, ranking_head=True)
    batch = next(iter(train_batches(data, max_seq_len=9, batch_size=8, rng=np.random.default_rng(0))))
    lengths = (batch.seq_offsets[1:] - batch.seq_offsets[:-1]).numpy()
    with FlopCounterMode(display=False) as counter:
        out = model(batch.item_ids, batch.timestamps, batch.seq_offsets)
        loss = sampled_softmax_loss(
            out, batch.target_ids, model.item_vectors(), num_negatives=5, temperature=0.05, scoring="gather",
            generator=torch.Generator().manual_seed(0),
        ) + ranking_loss(ranking_logits(model, out, batch.item_ids), batch.actions)
        loss.backward()
    analytic = 3 * forward_flops(lengths, model_cfg, head_candidates=6, ranking=True).total_dense
    assert counter.get_total_flops() == pytest.approx(analytic, rel=1e-9)


def test_run_flops_follow_the_task() -> None:
    data, train = DataConfig(num_users=200, num_items=80), dict(epochs=2, num_negatives=16)
    model = ModelConfig(family="sasrec", max_seq_len=20)
    retrieval = run_flops(data, model, TrainConfig(**train))
    ranking = run_flops(data, model, TrainConfig(task="ranking", **train))
    both = run_flops(data, model, TrainConfig(task="both", **train))
    assert retrieval.forward_per_epoch.ranking_head == 0 and ranking.forward_per_epoch.head == 0
    assert both.train == pytest.approx(
        retrieval.train + 3 * 2 * ranking.forward_per_epoch.ranking_head
    )
    assert ranking.eval_per_pass == 0 and ranking.eval_ranking_per_evaluation > 0
    assert both.eval_total > retrieval.eval_total


@pytest.mark.parametrize(("family", "task"), [("hstu", "retrieval"), ("hstu", "ranking"), ("sasrec", "both")])
def test_run_params_count_the_real_data_sets_items_and_the_tasks_head(tiny_ml100k, family: str, task: str) -> None:
    from gr_core.config import RunConfig
    from gr_core.encoder import build_model
    from gr_core.loaders import load_sequence_data
    from scaling import run_params

    # A real source keeps data.num_items at the synthetic default (1000); the file has 7 items.
    config = RunConfig(
        data=DataConfig(source="ml-100k", path=str(tiny_ml100k)),
        model=ModelConfig(family=family, num_blocks=2, embedding_dim=8, num_heads=2, max_seq_len=6),
        train=TrainConfig(task=task),
    )
    counted = run_params(config.data, config.model, config.train)
    assert counted.item_embedding == (7 + 1) * 8
    assert counted.ranking_head == (3 * 8 * 8 + 8 + 8 + 1 if task != "retrieval" else 0)
    built = build_model(config.model, load_sequence_data(config.data).num_items, ranking_head=config.train.ranking)
    actual = count_parameters(built)
    assert (counted.embedding, counted.non_embedding, counted.total) == (
        actual["embedding"], actual["non_embedding"], actual["total"]
    )


def test_run_params_on_the_real_movielens_100k(real_ml100k) -> None:
    from scaling import run_params

    data, model = DataConfig(source="ml-100k", path=str(real_ml100k)), ModelConfig(embedding_dim=16, num_heads=2)
    counted = run_params(data, model, TrainConfig(task="both"))
    assert counted.item_embedding == (1682 + 1) * 16
    assert counted.to_dict() == count_params(model, 1682, task="both").to_dict()
