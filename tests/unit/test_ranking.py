"""The ranking task: NE by hand, target-aware batches, the head, and training it."""

from __future__ import annotations

import math

import pytest
import torch

from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gr_core.data import eval_batches
from gr_core.encoder import build_model
from gr_core.ranking import evaluate_ranking, normalized_entropy, ranking_logits
from gr_core.sequences import SequenceData
from gr_core.trainer import train_run


def test_normalized_entropy_by_hand():
    # Labels 1, 0, 1, 1 (base rate 3/4); predicted probabilities 0.9, 0.2, 0.6, 0.5.
    probs = [0.9, 0.2, 0.6, 0.5]
    labels = torch.tensor([1, 0, 1, 1])
    logits = torch.tensor([math.log(p / (1 - p)) for p in probs], dtype=torch.float64)
    cross_entropy = -(math.log(0.9) + math.log(0.8) + math.log(0.6) + math.log(0.5)) / 4
    base = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert normalized_entropy(logits, labels) == pytest.approx(cross_entropy / base, rel=1e-12)
    # Predicting the base rate everywhere gives exactly 1.
    constant = torch.full((4,), math.log(3.0), dtype=torch.float64)
    assert normalized_entropy(constant, labels) == pytest.approx(1.0, rel=1e-12)


def test_normalized_entropy_rejects_degenerate_labels():
    with pytest.raises(ValueError, match="every label is 1"):
        normalized_entropy(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="same non-empty shape"):
        normalized_entropy(torch.zeros(3), torch.ones(2))


def _hand_made() -> SequenceData:
    return SequenceData.from_sequences(
        [[1, 2, 3, 4, 5, 6, 7], [8, 9, 10], [11, 12, 13, 14]],
        actions=[[0, 1, 0, 1, 1, 0, 1], [1, 0, 0], [0, 0, 1, 1]],
        num_items=14,
    )


@pytest.mark.parametrize(
    ("split", "inputs", "labels"),
    [("val", [[4, 5, 6], [8, 9], [11, 12, 13]], [0, 0, 1]), ("test", [[5, 6, 7], [8, 9, 10], [12, 13, 14]], [1, 0, 1])],
)
def test_target_aware_batches_end_with_the_target(split, inputs, labels):
    data = _hand_made()
    (b,) = list(eval_batches(data, split=split, max_seq_len=3, batch_size=10, target_aware=True))
    off = b.seq_offsets.tolist()
    assert [b.item_ids[off[i] : off[i + 1]].tolist() for i in range(3)] == inputs
    last = b.seq_offsets[1:] - 1
    assert b.actions[last].tolist() == labels
    assert b.target_ids.tolist() == b.item_ids[last].tolist()
    # The same users and targets as the retrieval batches of the split.
    (r,) = list(eval_batches(data, split=split, max_seq_len=3, batch_size=10))
    assert r.target_ids.tolist() == b.target_ids.tolist() and r.user_ids.tolist() == b.user_ids.tolist()


def test_by_length_order_keeps_the_pairs():
    data = _hand_made()
    plain = list(eval_batches(data, split="test", max_seq_len=5, batch_size=2))
    ordered = list(eval_batches(data, split="test", max_seq_len=5, batch_size=2, by_length=True))
    pairs = lambda bs: sorted(zip(torch.cat([b.user_ids for b in bs]).tolist(),  # noqa: E731
                                  torch.cat([b.target_ids for b in bs]).tolist()))
    assert pairs(plain) == pairs(ordered)
    assert torch.cat([b.user_ids for b in ordered]).tolist() == [1, 2, 0]  # 2, 3, 5 input events


def test_evaluate_ranking_scores_the_last_token():
    torch.manual_seed(0)
    data = _hand_made()
    model = build_model(ModelConfig(embedding_dim=8, max_seq_len=4, dropout=0.0), data.num_items, ranking_head=True)
    batches = list(eval_batches(data, split="test", max_seq_len=4, batch_size=2, target_aware=True))
    ne = evaluate_ranking(model, batches)["ne"]
    logits, labels = [], []
    with torch.no_grad():
        for b in batches:
            for i in range(b.num_seqs):
                s, e = int(b.seq_offsets[i]), int(b.seq_offsets[i + 1])
                out = model(b.item_ids[s:e], b.timestamps[s:e], torch.tensor([0, e - s]))
                logits.append(ranking_logits(model, out[-1:], b.item_ids[e - 1 : e]))
                labels.append(int(b.actions[e - 1]))
    assert ne == pytest.approx(normalized_entropy(torch.cat(logits), torch.tensor(labels)), rel=1e-5)


def test_model_without_head_cannot_rank():
    model = build_model(ModelConfig(embedding_dim=8), 5)
    with pytest.raises(ValueError, match="no ranking_head"):
        ranking_logits(model, torch.zeros(1, 8), torch.tensor([1]))


def test_joint_training_learns_actions():
    cfg = RunConfig(
        data=DataConfig(num_users=400, num_items=80, num_clusters=4, max_events=25),
        model=ModelConfig(num_blocks=1, embedding_dim=16, max_seq_len=16, dropout=0.0),
        train=TrainConfig(task="both", epochs=6, batch_size=64, num_negatives=16, lr=1e-2, eval_every=3),
    )
    steps = []
    result = train_run(cfg, on_step=lambda s, m: steps.append(m))
    assert {"hr@10", "ndcg@10", "mrr", "ne", "val_ndcg@10"} <= set(result.metrics)
    # Synthetic actions depend on user taste and item quality: better than the base rate (NE 1).
    # 400 labels per split are noisy, so the bound on test NE is loose.
    assert result.history[-1]["val/ne"] < 0.95 and result.metrics["ne"] < 1.0
    assert set(steps[0]) == {"train/loss", "train/retrieval_loss", "train/ranking_loss"}
    assert steps[0]["train/loss"] == pytest.approx(steps[0]["train/retrieval_loss"] + steps[0]["train/ranking_loss"])


def test_ranking_only_task_selects_on_ne():
    cfg = RunConfig(
        data=DataConfig(num_users=200, num_items=60, num_clusters=4, max_events=20),
        model=ModelConfig(family="sasrec", num_blocks=1, embedding_dim=8, max_seq_len=12),
        train=TrainConfig(task="ranking", epochs=3, batch_size=64, lr=1e-2),
    )
    result = train_run(cfg)
    assert set(result.metrics) == {"ne", "val_ne", "final_ne", "final_train_loss"}
    best = min(result.history, key=lambda h: h["val/ne"])
    assert result.best_epoch == best["epoch"] and result.metrics["ne"] == best["test/ne"]
