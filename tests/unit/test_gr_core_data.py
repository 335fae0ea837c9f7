"""Synthetic data, leave-one-out split and jagged batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gr_core.config import DataConfig
from gr_core.data import SequenceData, eval_batches, train_batches, train_sequence_lengths
from gr_core.synthetic import event_counts, generate_synthetic

SMALL = DataConfig(num_users=300, num_items=200, num_clusters=8, min_events=3, max_events=40, seed=3)


def _equal(a: SequenceData, b: SequenceData) -> bool:
    return all(
        np.array_equal(getattr(a, f), getattr(b, f)) for f in ("item_ids", "timestamps", "actions", "offsets")
    )


def test_synthetic_is_deterministic_and_seed_dependent():
    a, b = generate_synthetic(SMALL), generate_synthetic(SMALL)
    assert _equal(a, b)
    other = generate_synthetic(DataConfig(**{**_fields(SMALL), "seed": 4}))
    assert not np.array_equal(a.item_ids[:100], other.item_ids[:100])


def _fields(cfg: DataConfig) -> dict:
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}


def test_synthetic_respects_config_and_invariants():
    data = generate_synthetic(SMALL)
    counts = event_counts(SMALL)
    assert data.num_users == SMALL.num_users and data.num_items == SMALL.num_items
    assert np.array_equal(data.lengths, counts)
    assert counts.min() >= SMALL.min_events and counts.max() <= SMALL.max_events
    assert counts.min() < 10 and counts.max() > 30  # spread over the range, not constant
    assert data.item_ids.min() >= 1 and data.item_ids.max() <= SMALL.num_items
    assert set(np.unique(data.actions)) == {0, 1}
    for u in range(data.num_users):
        items = data.user_items(u)
        assert len(np.unique(items)) == len(items)  # no repeats
        ts = data.timestamps[data.offsets[u] : data.offsets[u + 1]]
        assert np.all(np.diff(ts) > 0)


def test_synthetic_popularity_is_skewed():
    cfg = DataConfig(num_users=400, num_items=300, num_clusters=10, seed=1)
    data = generate_synthetic(cfg)
    pop = np.bincount(data.item_ids, minlength=cfg.num_items + 1)[1:]
    top_share = np.sort(pop)[::-1][: cfg.num_items // 10].sum() / pop.sum()
    assert top_share > 0.25  # Zipf popularity: the top 10% of items take far more than 10%


def test_train_sequence_lengths_match_the_batches():
    max_seq_len = 12
    data = generate_synthetic(SMALL)
    planned = train_sequence_lengths(SMALL, max_seq_len)
    seen = np.zeros(SMALL.num_users, dtype=np.int64)
    tokens = 0
    for batch in train_batches(data, max_seq_len=max_seq_len, batch_size=37, rng=np.random.default_rng(0)):
        lengths = (batch.seq_offsets[1:] - batch.seq_offsets[:-1]).numpy()
        seen[batch.user_ids.numpy()] += lengths
        tokens += batch.num_tokens
        assert batch.target_ids.shape == batch.item_ids.shape
        assert lengths.min() > 0  # users with nothing to train on are skipped
    assert np.array_equal(seen, planned)
    assert tokens == planned.sum() and (planned == 0).any() and planned.max() == max_seq_len


def _hand_made() -> SequenceData:
    return SequenceData.from_sequences(
        [[1, 2, 3, 4, 5, 6, 7], [8, 9, 10], [11, 12, 13, 14]],
        timestamps=[[10, 20, 30, 40, 50, 60, 70], [1, 2, 3], [5, 6, 7, 8]],
        num_items=14,
    )


def test_leave_one_out_training_sequences():
    data = _hand_made()
    batches = list(train_batches(data, max_seq_len=3, batch_size=10, rng=np.random.default_rng(0)))
    assert len(batches) == 1
    b = batches[0]
    by_user = {}
    for row, user in enumerate(b.user_ids.tolist()):
        s, e = b.seq_offsets[row].item(), b.seq_offsets[row + 1].item()
        by_user[user] = (b.item_ids[s:e].tolist(), b.target_ids[s:e].tolist(), b.timestamps[s:e].tolist())
    # user 0: events 1..7, training input e_0..e_3 = 1..4 truncated to the last 3, targets shifted.
    assert by_user[0] == ([2, 3, 4], [3, 4, 5], [20, 30, 40])
    assert 1 not in by_user  # 3 events: nothing left for training
    assert by_user[2] == ([11], [12], [5])
    assert b.max_seq_len == 3
    assert b.positions().tolist() == [0, 1, 2, 0] or b.positions().tolist() == [0, 0, 1, 2]


@pytest.mark.parametrize(
    ("split", "inputs", "targets", "histories"),
    [
        ("val", [[4, 5], [8], [11, 12]], [6, 9, 13], [[1, 2, 3, 4, 5], [8], [11, 12]]),
        ("test", [[5, 6], [8, 9], [12, 13]], [7, 10, 14], [[1, 2, 3, 4, 5, 6], [8, 9], [11, 12, 13]]),
    ],
)
def test_leave_one_out_eval_sequences(split, inputs, targets, histories):
    data = _hand_made()
    (b,) = list(eval_batches(data, split=split, max_seq_len=2, batch_size=10))
    off, hoff = b.seq_offsets.tolist(), b.history_offsets.tolist()
    assert [b.item_ids[off[i] : off[i + 1]].tolist() for i in range(3)] == inputs
    assert b.target_ids.tolist() == targets
    assert [b.history_ids[hoff[i] : hoff[i + 1]].tolist() for i in range(3)] == histories
    assert b.user_ids.tolist() == [0, 1, 2]
    # "window" filters only the truncated input itself (upstream's protocol).
    (w,) = list(eval_batches(data, split=split, max_seq_len=2, batch_size=10, history="window"))
    woff = w.history_offsets.tolist()
    assert [w.history_ids[woff[i] : woff[i + 1]].tolist() for i in range(3)] == inputs
    assert torch.equal(w.item_ids, b.item_ids) and torch.equal(w.target_ids, b.target_ids)


def test_eval_history_filter_changes_the_metrics_as_the_protocol_says():
    """A target seen early in the history (outside the window) is a miss with "full" filtering
    (it scores -inf) and can be ranked with "window"."""
    from gr_core.config import ModelConfig
    from gr_core.hstu import HSTU
    from gr_core.metrics import evaluate

    data = SequenceData.from_sequences([[3, 1, 2, 4, 5, 3]], num_items=6)  # test target 3 seen at position 0
    torch.manual_seed(0)
    model = HSTU(ModelConfig(num_blocks=1, embedding_dim=8, max_seq_len=2, dropout=0.0), 6).eval()
    full = evaluate(model, eval_batches(data, split="test", max_seq_len=2, batch_size=4))
    window = evaluate(model, eval_batches(data, split="test", max_seq_len=2, batch_size=4, history="window"))
    assert full["mrr"] == pytest.approx(1 / 6)  # ranked last of the 6 items (pessimistic)
    assert window["mrr"] > full["mrr"]


def test_eval_batches_cover_every_user_once():
    data = generate_synthetic(SMALL)
    users = torch.cat([b.user_ids for b in eval_batches(data, split="test", max_seq_len=8, batch_size=64)])
    assert users.tolist() == list(range(SMALL.num_users))


def test_sequence_data_rejects_padding_ids():
    with pytest.raises(ValueError, match="1..num_items"):
        SequenceData.from_sequences([[0, 1, 2]], num_items=5)
    with pytest.raises(ValueError, match="split must be"):
        eval_batches(_hand_made(), split="train", max_seq_len=2, batch_size=2)  # type: ignore[arg-type]


# --- Stochastic Length -------------------------------------------------------------------------

SL = DataConfig(num_users=300, num_items=200, num_clusters=8, min_events=3, max_events=60, seed=5,
                stochastic_length_alpha=1.5)


def test_stochastic_length_follows_the_paper_rule():
    from gr_core.lengths import split_lengths, stochastic_length_subsampled, stochastic_length_target

    max_len = 40
    m = stochastic_length_target(max_len, 1.5)
    assert m == int(40**0.75)  # floor(N^(alpha/2)) = 15
    n = np.array([m, m + 1, 30, 40] * 5000)
    sub = stochastic_length_subsampled(n, max_len, 1.5, seed=0)
    assert not sub[n <= m].any()  # short histories stay whole
    for length in (m + 1, 30, 40):  # P(subsample) = 1 - N^alpha / n^2
        assert sub[n == length].mean() == pytest.approx(1 - 40**1.5 / length**2, abs=0.02)
    assert np.array_equal(sub, stochastic_length_subsampled(n, max_len, 1.5, seed=0))  # deterministic
    assert not np.array_equal(sub, stochastic_length_subsampled(n, max_len, 1.5, seed=1))
    assert not stochastic_length_subsampled(n, max_len, None, seed=0).any()
    lengths = train_sequence_lengths(SL, max_len)
    full = split_lengths(event_counts(SL), "train", max_len)
    changed = lengths != full
    assert changed.any() and np.all(lengths[changed] == m) and np.all(full[changed] > m)


def test_stochastic_length_batches_match_the_planned_lengths_and_are_subsequences():
    from gr_core.lengths import split_lengths, stochastic_length_subsampled, stochastic_length_target

    max_len = 40
    data = generate_synthetic(SL)
    planned = train_sequence_lengths(SL, max_len)
    full = split_lengths(data.lengths, "train", max_len)
    sub = stochastic_length_subsampled(full, max_len, SL.stochastic_length_alpha, SL.seed)
    m = stochastic_length_target(max_len, SL.stochastic_length_alpha)

    def epoch(seed):
        out = {}
        for b in train_batches(data, max_seq_len=max_len, batch_size=64, rng=np.random.default_rng(seed),
                               subsampled=sub, subsample_length=m):
            for row, user in enumerate(b.user_ids.tolist()):
                s, e = b.seq_offsets[row].item(), b.seq_offsets[row + 1].item()
                out[user] = (b.item_ids[s:e].tolist(), b.target_ids[s:e].tolist(), b.timestamps[s:e].tolist())
        return out

    first = epoch(0)
    seen = np.zeros(SL.num_users, dtype=np.int64)
    for user, (items, targets, ts) in first.items():
        seen[user] = len(items)
        history = data.user_items(user).tolist()
        window = history[: len(history) - 2][-(full[user] + 1):]  # inputs and targets of the training window
        kept = items + targets[-1:]
        assert targets[:-1] == items[1:]  # each target is the next kept event
        positions = [window.index(i) for i in kept]  # synthetic items do not repeat within a user
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert ts == sorted(ts)
        if not sub[user]:
            assert kept == window
    assert np.array_equal(seen, planned)  # the FLOPs planner's lengths are what training runs
    assert first == epoch(0)  # deterministic from the training seed
    again = epoch(1)
    assert any(first[u] != again[u] for u in np.flatnonzero(sub))  # positions are redrawn per seed


def test_stochastic_length_flops_use_the_subsampled_lengths():
    from gr_core.config import ModelConfig, TrainConfig
    from gr_core.lengths import split_lengths, stochastic_length_sparsity
    from scaling import forward_flops, run_flops

    model, train = ModelConfig(max_seq_len=40), TrainConfig(epochs=2)
    flops = run_flops(SL, model, train)
    lengths = train_sequence_lengths(SL, 40)
    assert flops.train == pytest.approx(3 * 2 * forward_flops(lengths, model, head_candidates=129).total_dense)
    whole = DataConfig(**{**_fields(SL), "stochastic_length_alpha": None})
    assert flops.train < run_flops(whole, model, train).train
    assert flops.eval_per_pass == run_flops(whole, model, train).eval_per_pass  # evaluation is never subsampled
    sparsity = stochastic_length_sparsity(split_lengths(event_counts(SL), "train", 40), lengths)
    assert 0.0 < sparsity < 1.0


def test_stochastic_length_alpha_is_validated():
    with pytest.raises(ValueError, match=r"stochastic_length_alpha must be in \(1, 2\]"):
        DataConfig(stochastic_length_alpha=2.5)
