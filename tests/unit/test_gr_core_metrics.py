"""Full-ranking metrics on hand-computed rankings, history filtering and tie handling."""

from __future__ import annotations

import math

import pytest
import torch

from gr_core.metrics import filter_history, ranking_metrics, target_ranks


def _scores_with_target_at(rank: int, num_items: int = 100, target: int = 7) -> torch.Tensor:
    """Scores [num_items+1] where `target` has exactly rank-1 items above it."""
    scores = torch.linspace(0.0, -1.0, num_items + 1)
    order = [i for i in range(1, num_items + 1) if i != target]
    ranked = order[: rank - 1] + [target] + order[rank - 1 :]
    for position, item in enumerate(ranked):
        scores[item] = 10.0 - position * 0.01
    scores[0] = 100.0  # padding column: must be ignored after filtering
    return scores


def test_hand_computed_ranks_and_metrics():
    scores = torch.stack([_scores_with_target_at(r) for r in (1, 3, 60)])
    no_history = torch.zeros(0, dtype=torch.int64)
    filtered = filter_history(scores, no_history, torch.zeros(4, dtype=torch.int64))
    ranks = target_ranks(filtered, torch.tensor([7, 7, 7]))
    assert ranks.tolist() == [1, 3, 60]
    m = ranking_metrics(ranks)
    assert m["hr@10"] == pytest.approx(2 / 3)
    assert m["hr@50"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1.0 + 1.0 / math.log2(4)) / 3)
    assert m["ndcg@50"] == pytest.approx((1.0 + 0.5) / 3)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 60) / 3)
    assert ranking_metrics(torch.tensor([60]), ks=(100,))["ndcg@100"] == pytest.approx(1 / math.log2(61))


def test_history_filtering_moves_the_target_up():
    scores = _scores_with_target_at(5)[None]
    # The 4 items above the target are in the history: filtered out, the target becomes rank 1.
    above = [i for i in range(1, 101) if scores[0, i] > scores[0, 7]]
    assert len(above) == 4
    history = torch.tensor(above + [50])
    filtered = filter_history(scores, history, torch.tensor([0, 5]))
    assert target_ranks(filtered, torch.tensor([7])).tolist() == [1]
    assert torch.isinf(filtered[0, above]).all() and torch.isinf(filtered[0, 0])
    assert scores[0, above[0]] == 10.0  # the input is not modified


def test_filtering_is_per_row():
    scores = torch.stack([_scores_with_target_at(3), _scores_with_target_at(3)])
    above = [i for i in range(1, 101) if scores[0, i] > scores[0, 7]]
    filtered = filter_history(scores, torch.tensor(above), torch.tensor([0, 0, 2]))  # row 1 only
    assert target_ranks(filtered, torch.tensor([7, 7])).tolist() == [3, 1]


def test_ties_are_pessimistic_and_filtered_target_is_last():
    scores = torch.tensor([[0.0, 1.0, 2.0, 2.0, 2.0, 0.5]])
    unfiltered = filter_history(scores, torch.zeros(0, dtype=torch.int64), torch.tensor([0, 0]))
    assert target_ranks(unfiltered, torch.tensor([3])).tolist() == [3]
    filtered = filter_history(scores, torch.tensor([3]), torch.tensor([0, 1]))
    assert target_ranks(filtered, torch.tensor([3])).tolist() == [5]  # num_items = 5


def test_empty_ranks_raise():
    with pytest.raises(ValueError, match="no ranks"):
        ranking_metrics(torch.zeros(0))
