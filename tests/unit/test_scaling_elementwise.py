"""Elementwise FLOPs by hand, and the per-token / per-step / evaluation figures of `run_flops`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from gr_core.config import DataConfig, ModelConfig, TrainConfig
from gr_core.data import eval_batches, train_batches
from gr_core.families import HSTUOptions, SASRecOptions
from gr_core.hstu import HSTU
from gr_core.lengths import split_lengths, train_sequence_lengths
from gr_core.metrics import evaluate
from gr_core.synthetic import event_counts, generate_synthetic
from scaling import elementwise_flops, forward_flops, num_evaluations, run_flops

TINY = ModelConfig(num_blocks=1, embedding_dim=4, num_heads=1, max_seq_len=8, dropout=0.2)


def test_hand_computed_elementwise_flops() -> None:
    # 1 block, D=4, H=1, dqk=dv=4; sequences of 2 and 3 tokens: 5 tokens, 4 + 9 = 13 pairs;
    # R+1 = 3 candidates; 9 items (table of 10 rows) normalised once.
    fwd = elementwise_flops(np.array([2, 3]), TINY, head_candidates=3, num_items=9, item_table_norms=1, training=True)
    assert fwd["embedding_scale"] == 2 * 5 * 4  # x * sqrt(D) + P
    assert fwd["layernorm"] == 5 * 5 * (4 + 4)  # LN(x) over D, LN(AV) over H dv
    assert fwd["silu_uvqk"] == 4 * 5 * 16
    assert fwd["silu_attention"] == 4 * 13
    assert fwd["attention_mask_norm"] == 2 * 13
    assert fwd["rab"] == 13 * (2 * 1 + 7)  # two bias adds per pair and head, the time bucket per pair
    assert fwd["gate"] == 5 * 4
    assert fwd["residual"] == 2 * 5 * 4
    assert fwd["dropout"] == 2 * 5 * (4 + 4)  # input dropout over D, block dropout over H dv
    assert fwd["l2_norm"] == 3 * (5 * 4 + 10 * 4)  # outputs, then the item table
    assert fwd["loss"] == 5 * 5 * 3
    assert fwd.total == 1150

    no_extras = elementwise_flops(
        np.array([2, 3]),
        ModelConfig(num_blocks=1, embedding_dim=4, max_seq_len=8, dropout=0.2, options=HSTUOptions(use_rab=False)),
        head_candidates=3, num_items=9, item_table_norms=1, training=False,
    )
    assert no_extras["rab"] == 0 and no_extras["dropout"] == 0
    assert no_extras.total == 1150 - 117 - 80
    causal = elementwise_flops(
        np.array([2, 3]), TINY, head_candidates=3, num_items=9, item_table_norms=1, training=True, causal=True
    )
    assert causal["silu_attention"] == 4 * (3 + 6)  # n (n + 1) / 2 pairs


def test_hand_computed_sasrec_elementwise_flops() -> None:
    # 1 block, D=4, H=2 (heads 2 wide), FFN 6 with GELU; sequences of 2 and 3 tokens: 5 tokens,
    # 13 pairs; R+1 = 3 candidates; 9 items normalised once; the ranking head at every position.
    model = ModelConfig(family="sasrec", num_blocks=1, embedding_dim=4, num_heads=2, max_seq_len=8, dropout=0.2,
                        options=SASRecOptions(ffn_hidden_dim=6, ffn_activation="gelu"))
    args = dict(head_candidates=3, num_items=9, item_table_norms=1, ranking=True)
    fwd = elementwise_flops(np.array([2, 3]), model, training=True, **args)
    assert fwd.to_dict() == {
        "embedding_scale": 2 * 5 * 4,
        "layernorm": 5 * 5 * (4 + 4),  # LN(x) and LN(Q + attention) over D
        "attention_mask_norm": 2 * 13 * 2,  # per pair and head
        "softmax": 5 * 13 * 2,
        "residual": 5 * (2 * 4 + 5 * 4 + 6),  # two residual adds, five linears' bias adds
        "ffn_activation": 8 * 5 * 6,  # GELU over F
        "dropout": 2 * (5 * 4 + 13 * 2 + 5 * 6 + 5 * 4),  # input, attention probabilities, FFN hidden and output
        "l2_norm": 3 * (5 * 4 + 10 * 4),
        "loss": 5 * 5 * 3,
        "ranking_head": 5 * (4 * 4 + (4 + 1) + 4 + 5),  # scaling and product, bias adds, ReLU, BCE
    }
    assert fwd.total == 1429
    evaluation = elementwise_flops(np.array([2, 3]), model, training=False, **args)
    assert evaluation["dropout"] == 0 and evaluation.total == 1429 - 192 - 5 * 5


def test_run_figures_per_token_step_and_evaluation() -> None:
    data = DataConfig(num_users=300, num_items=100)
    model = ModelConfig(max_seq_len=20, dropout=0.1)
    train = TrainConfig(epochs=5, eval_every=2, batch_size=64, num_negatives=16)
    flops = run_flops(data, model, train)
    lengths = train_sequence_lengths(data, model.max_seq_len)
    active = int((lengths > 0).sum())
    assert flops.steps_per_epoch == math.ceil(active / 64)
    assert flops.train_per_step * flops.steps == pytest.approx(flops.train)
    assert flops.train_per_token * flops.train_tokens == pytest.approx(flops.train)
    assert flops.mean_length == pytest.approx(lengths[lengths > 0].mean())
    at_mean = forward_flops(np.full(64, lengths[lengths > 0].mean()), model, head_candidates=17)
    assert flops.train_per_step_at_mean_length == pytest.approx(3 * at_mean.total_dense)

    # The trainer evaluates at epochs 2, 4 and the last (5), each a validation and a test pass.
    assert [e for e in range(1, 6) if e % 2 == 0 or e == 5] == [2, 4, 5]
    assert num_evaluations(5, 2) == 3 and num_evaluations(4, 2) == 2 and num_evaluations(1, 1) == 1
    assert flops.eval_passes == 6
    counts = event_counts(data)
    for split, per_pass in (("val", flops.eval_per_pass), ("test", flops.eval_test_per_pass)):
        split_len = split_lengths(counts, split, model.max_seq_len)
        encoder = forward_flops(split_len[split_len > 0], model, head_candidates=0).total_dense
        scoring = 2 * int((split_len > 0).sum()) * model.embedding_dim * (data.num_items + 1)
        assert per_pass == pytest.approx(encoder + scoring)
    assert flops.eval_total == pytest.approx(3 * (flops.eval_per_pass + flops.eval_test_per_pass))

    # Elementwise work: 3 x forward, the item table normalised once per step, listed apart.
    fwd = elementwise_flops(lengths, model, head_candidates=17, num_items=100,
                            item_table_norms=flops.steps_per_epoch, training=True)
    assert flops.elementwise_train == pytest.approx(3 * 5 * fwd.total)
    assert flops.train == pytest.approx(15 * flops.forward_per_epoch.total_dense)  # unchanged by them
    stored = flops.to_dict()
    assert stored["train"] == flops.train and stored["eval_total"] == flops.eval_total
    assert stored["elementwise_forward_per_epoch_rab"] == fwd["rab"]


def test_steps_and_eval_flops_match_the_real_loops() -> None:
    data_cfg = DataConfig(num_users=40, num_items=57, num_clusters=5, min_events=3, max_events=30)
    model_cfg = ModelConfig(num_blocks=2, embedding_dim=16, num_heads=2, max_seq_len=12)
    train_cfg = TrainConfig(epochs=1, batch_size=16, eval_batch_size=16, num_negatives=4)
    flops = run_flops(data_cfg, model_cfg, train_cfg)
    data = generate_synthetic(data_cfg)
    steps = sum(1 for _ in train_batches(data, max_seq_len=12, batch_size=16, rng=np.random.default_rng(0)))
    assert flops.steps_per_epoch == steps
    torch.manual_seed(0)
    model = HSTU(model_cfg, data.num_items)
    for split, expected in (("val", flops.eval_per_pass), ("test", flops.eval_test_per_pass)):
        with FlopCounterMode(display=False) as counter:
            evaluate(model, eval_batches(data, split=split, max_seq_len=12, batch_size=16))
        assert counter.get_total_flops() == pytest.approx(expected, rel=1e-9)
