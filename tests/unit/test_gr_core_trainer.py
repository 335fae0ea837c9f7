"""End-to-end training on tiny synthetic data: learning, bookkeeping and determinism."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from gr_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from gr_core.data import eval_batches
from gr_core.lengths import train_sequence_lengths
from gr_core.synthetic import generate_synthetic
from gr_core.trainer import Trainer, train_run
from gr_core.training.selection import Selection
from gr_core.training.state import Progress
from scripted_evaluation import scripted

TINY = RunConfig(
    data=DataConfig(num_users=600, num_items=100, num_clusters=5, max_events=30, transition_strength=0.9),
    model=ModelConfig(num_blocks=1, embedding_dim=16, max_seq_len=20, dropout=0.0),
    train=TrainConfig(epochs=10, batch_size=64, num_negatives=32, lr=3e-3, eval_every=3),
)



def _random_hr10(cfg: RunConfig) -> float:
    """Expected HR@10 of a random ranking of the items left after history filtering."""
    data = generate_synthetic(cfg.data)
    hits = []
    for b in eval_batches(data, split="test", max_seq_len=cfg.model.max_seq_len, batch_size=1000):
        remaining = cfg.data.num_items - (b.history_offsets[1:] - b.history_offsets[:-1]).double()
        hits.append((10.0 / remaining).clamp(max=1.0))
    return torch.cat(hits).mean().item()


@pytest.fixture(scope="module")
def tiny_result():
    torch.set_num_threads(1)
    steps, evals = [], []
    result = train_run(TINY, on_step=lambda s, m: steps.append((s, m)), on_eval=lambda e, m: evals.append((e, m)))
    return result, steps, evals


def test_training_reduces_loss_and_beats_random(tiny_result):
    result, steps, _ = tiny_result
    losses = [m["train/loss"] for _, m in steps]
    steps_per_epoch = len(steps) // TINY.train.epochs
    assert np.mean(losses[-steps_per_epoch:]) < 0.6 * np.mean(losses[:steps_per_epoch])
    random_hr = _random_hr10(TINY)
    assert 0.1 < random_hr < 0.2
    assert result.metrics["hr@10"] > 2.0 * random_hr
    assert result.metrics["ndcg@10"] <= result.metrics["hr@10"] <= result.metrics["hr@50"]


def test_result_bookkeeping(tiny_result):
    result, steps, evals = tiny_result
    assert [e for e, _ in evals] == [3, 6, 9, 10]  # every 3 epochs and the last
    assert set(evals[0][1]) == {"val/hr@10", "val/hr@50", "val/ndcg@10", "val/ndcg@50", "val/mrr"}
    assert [s for s, _ in steps] == list(range(1, result.steps + 1))
    names = {"hr@10", "hr@50", "ndcg@10", "ndcg@50", "mrr"}
    assert set(result.metrics) == {*names, *(f"val_{m}" for m in names), *(f"final_{m}" for m in names),
                                   "final_train_loss"}
    lengths = train_sequence_lengths(TINY.data, TINY.model.max_seq_len)
    assert result.train_tokens == TINY.train.epochs * int(lengths.sum())
    # Cumulative tokens at each evaluation, and the tokens behind the reported (best) epoch.
    assert [h["train_tokens"] for h in result.history] == [e * int(lengths.sum()) for e in (3, 6, 9, 10)]
    assert result.tokens_at_best == result.best_epoch * int(lengths.sum())
    assert result.selection_metric == "ndcg@10"
    assert {f"final_{m}": result.history[-1][f"test/{m}"] for m in names} == {
        k: v for k, v in result.metrics.items() if k.startswith("final_") and k != "final_train_loss"}
    assert result.steps == TINY.train.epochs * int(np.ceil((lengths > 0).sum() / TINY.train.batch_size))
    best = max(result.history, key=lambda h: h["val/ndcg@10"])
    assert result.best_epoch == best["epoch"]
    assert result.metrics["val_ndcg@10"] == best["val/ndcg@10"]
    assert result.metrics["val_hr@10"] == best["val/hr@10"]  # validation values of the same epoch
    assert result.metrics["hr@10"] == best["test/hr@10"]
    assert result.num_params["total"] == result.num_params["embedding"] + result.num_params["non_embedding"]
    assert result.wall_time_s > 0
    # Where the run's time went: every phase took some, and together they fit in its wall time.
    assert set(result.phase_s) == {"data", "setup", "train", "eval"}
    assert all(seconds > 0 for seconds in result.phase_s.values())
    assert sum(result.phase_s.values()) <= result.wall_time_s


def test_same_config_same_metrics():
    cfg = RunConfig(
        data=DataConfig(num_users=150, num_items=60, num_clusters=4, max_events=20),
        model=ModelConfig(num_blocks=1, embedding_dim=8, max_seq_len=12),
        train=TrainConfig(epochs=2, batch_size=32, num_negatives=8),
    )
    first, second = train_run(cfg), train_run(cfg)
    assert first.metrics == second.metrics
    assert first.history == second.history
    reseeded = TrainConfig(epochs=2, batch_size=32, num_negatives=8, seed=1)
    other = train_run(RunConfig(data=cfg.data, model=cfg.model, train=reseeded))
    assert other.metrics["final_train_loss"] != first.metrics["final_train_loss"]


def test_test_metrics_on_the_kept_weights_equal_a_run_that_stopped_at_the_best_epoch():
    """Test is evaluated once, after training, on a copy of the best epoch's weights: bit for bit
    what the same run reports when it ends at that epoch (evaluation draws no random numbers)."""
    cfg = RunConfig(data=TINY.data, model=TINY.model,
                    train=TrainConfig(epochs=8, batch_size=64, num_negatives=32, lr=1e-1, eval_every=1))
    full = train_run(cfg)
    assert full.best_epoch < full.epochs_run, "the scenario needs a best epoch before the last"
    short = train_run(RunConfig(data=cfg.data, model=cfg.model,
                                train=dataclasses.replace(cfg.train, epochs=full.best_epoch)))
    reported = {k: v for k, v in full.metrics.items() if not k.startswith("final_")}
    assert reported == {k: v for k, v in short.metrics.items() if not k.startswith("final_")}
    assert np.array_equal(full.test_per_user["rank"], short.test_per_user["rank"])


def test_early_stopping_reports_test_at_the_best_validation_epoch(monkeypatch):
    import gr_core.trainer as trainer

    # Scripted validation ndcg@10 per epoch (test values are 10x): best at epoch 2, then two worse.
    script = [0.1, 0.3, 0.2, 0.25, 0.9]
    monkeypatch.setattr(trainer, "evaluate", scripted({"hr@10": script, "ndcg@10": script}))
    cfg = RunConfig(
        data=DataConfig(num_users=60, num_items=30, num_clusters=3, max_events=10),
        model=ModelConfig(num_blocks=1, embedding_dim=8, max_seq_len=8),
        train=TrainConfig(epochs=10, batch_size=32, num_negatives=4, patience=2),
    )
    result = train_run(cfg)
    assert result.epochs_run == 4 and [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.best_epoch == 2
    assert result.metrics["ndcg@10"] == 3.0 and result.metrics["val_ndcg@10"] == 0.3
    assert result.metrics["final_ndcg@10"] == 2.5  # the last weights' test value
    assert [("test/ndcg@10" in h) for h in result.history] == [False, True, False, True]  # tested: best, last
    lengths = train_sequence_lengths(cfg.data, cfg.model.max_seq_len)
    assert result.train_tokens == 4 * int(lengths.sum())


@pytest.mark.parametrize(
    "selection, best_epoch, epochs_run",
    [("ndcg@10", 2, 4), ("hr@10", 3, 5), ("mrr", 1, 3), ("auto", 2, 4)],
)
def test_selection_and_early_stopping_follow_the_selection_metric(monkeypatch, selection, best_epoch, epochs_run):
    """Validation ndcg@10, hr@10 and mrr peak at different epochs: the trainer must choose its
    reported epoch, and stop, on train.selection_metric (a sweep's metric), not on ndcg@10."""
    import gr_core.trainer as trainer

    # Per epoch (validation; test at 10x): ndcg@10 peaks at 2, hr@10 at 3, mrr at 1.
    val = {"ndcg@10": [0.1, 0.5, 0.3, 0.2, 0.2, 0.1], "hr@10": [0.2, 0.3, 0.6, 0.4, 0.5, 0.1],
           "mrr": [0.9, 0.1, 0.2, 0.3, 0.4, 0.5]}
    monkeypatch.setattr(trainer, "evaluate", scripted(val))
    cfg = RunConfig(
        data=DataConfig(num_users=60, num_items=30, num_clusters=3, max_events=10),
        model=ModelConfig(num_blocks=1, embedding_dim=8, max_seq_len=8),
        train=TrainConfig(epochs=6, batch_size=32, num_negatives=4, patience=2, selection_metric=selection),
    )
    result = train_run(cfg)
    chosen = "ndcg@10" if selection == "auto" else selection
    assert result.selection_metric == chosen
    assert (result.best_epoch, result.epochs_run) == (best_epoch, epochs_run)
    for m in val:  # test and validation values from the same (selected) epoch
        assert result.metrics[m] == pytest.approx(10 * val[m][best_epoch - 1])
        assert result.metrics[f"val_{m}"] == pytest.approx(val[m][best_epoch - 1])
        assert result.metrics[f"final_{m}"] == pytest.approx(10 * val[m][epochs_run - 1])


def test_ne_selection_keeps_the_lowest_validation_ne_and_stops_on_it(monkeypatch):
    """Task "ranking" selects on NE, where lower is better: the reported epoch is the minimum."""
    import gr_core.trainer as trainer

    val_ne = [0.9, 0.7, 0.6, 0.65, 0.6, 0.5]  # best at 3; 0.6 again at 5 is a tie, not better
    monkeypatch.setattr(trainer, "evaluate_ranking", scripted({"ne": val_ne}))
    cfg = RunConfig(
        data=DataConfig(num_users=60, num_items=30, num_clusters=3, max_events=10),
        model=ModelConfig(num_blocks=1, embedding_dim=8, max_seq_len=8),
        train=TrainConfig(task="ranking", epochs=6, batch_size=32, patience=2),
    )
    result = train_run(cfg)
    assert result.selection_metric == "ne"
    assert (result.best_epoch, result.epochs_run) == (3, 5)
    assert result.metrics["ne"] == pytest.approx(6.0) and result.metrics["val_ne"] == pytest.approx(0.6)
    assert result.metrics["final_ne"] == pytest.approx(6.0)  # epoch 5's test NE (its val tied epoch 3's)


def test_selection_decides_better_and_stop_in_the_metric_direction():
    higher = Selection.from_config(TrainConfig(epochs=10, patience=2, selection_metric="hr@10"))
    lower = Selection.from_config(TrainConfig(task="ranking", epochs=10, patience=2))
    assert (higher.metric, higher.higher_is_better, lower.metric, lower.higher_is_better) == (
        "hr@10", True, "ne", False)
    assert higher.improves(0.2, None) and lower.improves(0.9, None)  # the first evaluation is the best so far
    assert higher.improves(0.3, 0.2) and not higher.improves(0.2, 0.3)
    assert lower.improves(0.2, 0.3) and not lower.improves(0.3, 0.2)
    for rule in (higher, lower):
        assert not rule.improves(0.25, 0.25)  # ties keep the earlier epoch
        assert not rule.improves(float("nan"), 0.25)
    assert [higher.should_stop(epoch, best_epoch=3) for epoch in (3, 4, 5, 6)] == [False, False, True, True]
    assert not higher.should_stop(10, best_epoch=3)  # the last epoch: nothing left to stop
    never = Selection.from_config(TrainConfig(epochs=10))
    assert not any(never.should_stop(epoch, best_epoch=1) for epoch in range(1, 11))


def test_trainer_state_dict_carries_progress_and_generators_into_a_fresh_trainer():
    cfg = RunConfig(
        data=DataConfig(num_users=80, num_items=40, num_clusters=3, max_events=12),
        model=ModelConfig(num_blocks=1, embedding_dim=8, max_seq_len=10, dropout=0.3),
        train=TrainConfig(epochs=3, batch_size=32, num_negatives=4),
    )
    first = Trainer(cfg)
    first.train_epoch()  # between epochs: the shuffling generator has moved on from its seed
    state = first.state_dict()
    progress = state["progress"]
    assert (progress["epoch"], progress["epochs_run"], progress["batch_in_epoch"]) == (2, 1, 0)
    assert progress["step"] == first.progress.step == 3 and progress["elapsed_s"] > 0
    second = Trainer(cfg)  # reseeds every generator
    second.load_state_dict(state)
    assert second.resumed_from_step == 3 and second.progress == Progress(**progress)
    # Phase times are this life's only (the job's own marks cover the same life), and not in the
    # checkpoint, so an older trainer can still load it.
    assert "phase_s" not in progress and set(first.phase_s) == {"data", "setup", "train"}
    assert set(second.phase_s) == {"data", "setup"}
    assert second.shuffle_rng.bit_generator.state == first.shuffle_rng.bit_generator.state
    assert torch.equal(second.negatives_gen.get_state(), first.negatives_gen.get_state())
    draws = (torch.rand(4), np.random.rand(4))  # the process-wide generators, as saved
    torch.set_rng_state(state["generators"]["torch"])
    np.random.set_state(state["generators"]["numpy"])
    assert torch.equal(draws[0], torch.rand(4)) and np.array_equal(draws[1], np.random.rand(4))


def test_selection_metric_is_validated_against_the_task():
    with pytest.raises(ValueError, match=r"train.selection_metric='ne' is not reported by train.task='retrieval'"):
        TrainConfig(selection_metric="ne")
    with pytest.raises(ValueError, match="train.selection_metric must be"):
        TrainConfig(selection_metric="auc")
    assert TrainConfig(task="ranking").selection == "ne"


def test_sasrec_trains_through_the_same_path():
    cfg = RunConfig(
        data=TINY.data,
        model=ModelConfig(family="sasrec", num_blocks=1, embedding_dim=16, max_seq_len=20, dropout=0.0),
        train=TrainConfig(epochs=6, batch_size=64, num_negatives=32, lr=3e-3, eval_every=3),
    )
    result = train_run(cfg)
    assert result.metrics["hr@10"] > 2.0 * _random_hr10(cfg)
