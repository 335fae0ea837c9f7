"""HSTU model: parameter count, an independent loop implementation of the layer (rab with the
published bucketing, both attention normalisations), causality; the sampled-softmax loss."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from gr_core.config import ModelConfig
from gr_core.data import eval_batches, train_batches
from gr_core.families import HSTUOptions
from gr_core.hstu import HSTU, count_parameters
from gr_core.lengths import CUTS
from gr_core.sequences import SequenceData
from gr_core.losses import chosen_scoring, sampled_softmax_loss


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(num_blocks=2, embedding_dim=16, num_heads=2, max_seq_len=10),
        ModelConfig(
            num_blocks=3, embedding_dim=12, num_heads=3, max_seq_len=7,
            options=HSTUOptions(attention_dim=5, linear_dim=7, use_rab=False),
        ),
    ],
)
def test_parameter_count_matches_documented_formula(cfg):
    num_items = 31
    d, h, dqk, dv, n = cfg.embedding_dim, cfg.num_heads, cfg.dqk, cfg.dv, cfg.max_seq_len
    per_block = d * (2 * h * dv + 2 * h * dqk) + h * dv * d + d
    if cfg.options.use_rab:
        per_block += (2 * n - 1) + (cfg.options.num_time_buckets + 1)
    counts = count_parameters(HSTU(cfg, num_items))
    assert counts == {
        "embedding": (num_items + 1) * d + n * d,
        "non_embedding": cfg.num_blocks * per_block,
        "total": (num_items + 1) * d + n * d + cfg.num_blocks * per_block,
    }


def test_parameter_names_are_stable():
    names = {name for name, _ in HSTU(ModelConfig(num_blocks=1), 5).named_parameters()}
    assert names == {
        "item_embedding.weight", "position_embedding.weight", "blocks.0.uvqk.weight",
        "blocks.0.output.weight", "blocks.0.output.bias", "blocks.0.pos_weights", "blocks.0.ts_weights",
    }


def _batch(lengths, num_items=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    items = torch.randint(1, num_items + 1, (total,), generator=g)
    ts = torch.randint(1, 10_000, (total,), generator=g).cumsum(0)
    return items, ts, offsets


def test_forward_is_unit_norm_and_causal():
    torch.manual_seed(0)
    model = HSTU(ModelConfig(num_blocks=2, embedding_dim=8, num_heads=2, max_seq_len=8, dropout=0.0), 20).eval()
    items, ts, offsets = _batch([5, 0, 3])
    out = model(items, ts, offsets)
    assert out.shape == (8, 8)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(8))
    # Changing the last item of sequence 0 leaves its earlier positions and other sequences unchanged.
    items2 = items.clone()
    items2[4] = (items[4] % 20) + 1
    out2 = model(items2, ts, offsets)
    torch.testing.assert_close(out2[:4], out[:4])
    torch.testing.assert_close(out2[5:], out[5:])
    assert not torch.allclose(out2[4], out[4])
    # Its timestamp is the "next action" time of position 3: only positions 3 and 4 may move.
    ts2 = ts.clone()
    ts2[4] += 10**7
    out3 = model(items, ts2, offsets)
    torch.testing.assert_close(out3[:3], out[:3])
    assert not torch.allclose(out3[3], out[3])


def test_item_embedding_init_and_padding_row():
    model = HSTU(ModelConfig(embedding_dim=64), 500)
    w = model.item_embedding.weight
    assert torch.all(w[0] == 0)
    assert w[1:].std().item() == pytest.approx(0.02 * 0.88, rel=0.1)  # truncated at 2 std
    assert w.abs().max().item() <= 0.04 + 1e-6


@pytest.mark.parametrize("scoring", ["gather", "dense"])
def test_sampled_softmax_masks_negatives_equal_to_positive(scoring: str):
    torch.manual_seed(0)
    num_items, d = 3, 4
    items = F.normalize(torch.randn(num_items + 1, d), dim=-1)
    out = F.normalize(torch.randn(6, d), dim=-1)
    targets = torch.tensor([1, 2, 3, 1, 2, 3])
    gen_seed = 5
    loss = sampled_softmax_loss(
        out, targets, items, num_negatives=8, temperature=0.1, generator=torch.Generator().manual_seed(gen_seed),
        scoring=scoring,
    )
    # Recompute by hand with the same negatives: collisions (very likely with 3 items) are dropped.
    negs = torch.randint(1, num_items + 1, (6, 8), generator=torch.Generator().manual_seed(gen_seed))
    assert (negs == targets[:, None]).any()
    expected = []
    for t in range(6):
        pos = (out[t] @ items[targets[t]]) / 0.1
        others = [(out[t] @ items[n]) / 0.1 for n in negs[t].tolist() if n != targets[t]]
        expected.append(torch.logsumexp(torch.stack([pos, *others]), 0) - pos)
    torch.testing.assert_close(loss, torch.stack(expected).mean())


def test_sampled_softmax_with_only_collisions_has_zero_loss():
    items = F.normalize(torch.randn(2, 4), dim=-1)  # one real item: every negative is the positive
    out = F.normalize(torch.randn(3, 4), dim=-1)
    loss = sampled_softmax_loss(
        out, torch.ones(3, dtype=torch.int64), items, num_negatives=5, temperature=0.05,
        generator=torch.Generator().manual_seed(0),
    )
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_sampled_softmax_is_one_bmm_for_the_flop_counter():
    t, d, r = 7, 6, 9
    out = F.normalize(torch.randn(t, d), dim=-1).requires_grad_(True)
    items = F.normalize(torch.randn(50, d), dim=-1)
    with FlopCounterMode(display=False) as counter:
        sampled_softmax_loss(
            out, torch.randint(1, 50, (t,)), items, num_negatives=r, temperature=0.05, scoring="gather",
            generator=torch.Generator().manual_seed(0),
        )
    assert counter.get_total_flops() == 2 * t * d * (r + 1)
    assert math.isfinite(counter.get_total_flops())


def test_dense_and_gathered_scoring_agree_in_loss_and_gradients():
    gen = torch.Generator().manual_seed(3)
    t, d, num_items, r = 40, 8, 25, 6
    out_TD = F.normalize(torch.randn(t, d, generator=gen), dim=-1)
    table = F.normalize(torch.randn(num_items + 1, d, generator=gen), dim=-1)
    targets = torch.randint(1, num_items + 1, (t,), generator=gen)
    negatives = torch.randint(1, num_items + 1, (t, r), generator=gen)
    assert (negatives == targets[:, None]).any()  # collisions masked in both forms
    results = {}
    for scoring in ("gather", "dense"):
        out, items = out_TD.clone().requires_grad_(True), table.clone().requires_grad_(True)
        loss = sampled_softmax_loss(out, targets, items, num_negatives=r, temperature=0.05, negatives_TR=negatives,
                                    reduction="sum", scoring=scoring)
        loss.backward()
        results[scoring] = (loss.detach(), out.grad, items.grad)
    for gathered, dense in zip(results["gather"], results["dense"]):
        torch.testing.assert_close(dense, gathered, rtol=1e-5, atol=1e-5)


def test_auto_scoring_is_dense_for_small_catalogues_and_gathers_for_large_ones():
    assert chosen_scoring("auto", num_items=1682, num_candidates=129) == "dense"  # ML-100K, R 128
    assert chosen_scoring("auto", num_items=26744, num_candidates=129) == "gather"  # ML-20M
    assert chosen_scoring("auto", num_items=32 * 129 - 1, num_candidates=129) == "dense"
    assert chosen_scoring("auto", num_items=32 * 129, num_candidates=129) == "gather"
    assert chosen_scoring("gather", num_items=10, num_candidates=129) == "gather"
    with pytest.raises(ValueError, match=r"scoring must be one of \['auto', 'gather', 'dense'\], got 'sparse'"):
        chosen_scoring("sparse", num_items=10, num_candidates=3)  # type: ignore[arg-type]


def _bucket(d: int, num_buckets: int) -> int:
    """The published time bucket: clamp(floor(ln(max(|d|, 1)) / 0.301), 0, num_buckets)."""
    return int(min(max(math.floor(math.log(max(abs(d), 1)) / 0.301), 0), num_buckets))


def _loop_hstu(model: HSTU, items, ts, offsets, request=None) -> torch.Tensor:
    """DESIGN.md section 2, one token and one pair at a time (no padding, no einsum).

    request[b]: the time of the event sequence b's last position predicts (None: its own time).
    """
    cfg = model.cfg
    d, h, dqk, dv, big_n = cfg.embedding_dim, cfg.num_heads, cfg.dqk, cfg.dv, cfg.max_seq_len
    outs = []
    for b in range(offsets.numel() - 1):
        s, e = int(offsets[b]), int(offsets[b + 1])
        n = e - s
        x = torch.stack([model.item_embedding.weight[items[s + i]] * math.sqrt(d) + model.position_embedding.weight[i]
                         for i in range(n)]) if n else torch.zeros(0, d)
        for block in model.blocks:
            x_hat = F.layer_norm(x, (d,), eps=1e-6)
            proj = F.silu(x_hat @ block.uvqk.weight.T)
            u, v, q, k = torch.split(proj, [h * dv, h * dv, h * dqk, h * dqk], dim=-1)
            av = torch.zeros(n, h * dv)
            norm = big_n if cfg.options.attn_norm == "max_len" else n
            for i in range(n):
                if i + 1 < n:  # the next action's time
                    request_ts = int(ts[s + i + 1])
                else:
                    request_ts = int(ts[s + i]) if request is None else int(request[b])
                for j in range(i + 1):
                    rab = 0.0
                    if cfg.options.use_rab:
                        rab = block.pos_weights[j - i + big_n - 1] + block.ts_weights[
                            _bucket(request_ts - int(ts[s + j]), cfg.options.num_time_buckets)]
                    for head in range(h):
                        qi, kj = q[i, head * dqk:(head + 1) * dqk], k[j, head * dqk:(head + 1) * dqk]
                        weight = F.silu(qi @ kj + rab) / norm
                        av[i, head * dv:(head + 1) * dv] += weight * v[j, head * dv:(head + 1) * dv]
            y = u * F.layer_norm(av, (h * dv,), eps=1e-6)
            x = x + y @ block.output.weight.T + block.output.bias
        outs.append(x)
    return F.normalize(torch.cat(outs), dim=-1, eps=1e-6)


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(num_blocks=2, embedding_dim=8, num_heads=2, max_seq_len=6, dropout=0.0),
        ModelConfig(num_blocks=1, embedding_dim=6, num_heads=1, max_seq_len=5, dropout=0.0,
                    options=HSTUOptions(attn_norm="seq_len", num_time_buckets=20)),
        ModelConfig(num_blocks=1, embedding_dim=4, num_heads=2, max_seq_len=5, dropout=0.0,
                    options=HSTUOptions(attention_dim=3, linear_dim=5, use_rab=False)),
    ],
)
def test_model_matches_a_loop_implementation_of_the_paper(cfg):
    torch.manual_seed(0)
    model = HSTU(cfg, 20).eval()
    with torch.no_grad():  # rab weights large enough to matter
        for block in model.blocks:
            if cfg.options.use_rab:
                block.pos_weights.normal_(0.0, 1.0)
                block.ts_weights.normal_(0.0, 1.0)
    lengths = [4, 0, 1, min(5, cfg.max_seq_len)]
    g = torch.Generator().manual_seed(3)
    total = sum(lengths)
    items = torch.randint(1, 21, (total,), generator=g)
    gaps = torch.tensor([0, 1, 3, 40, 1000, 90_000, 2, 0, 7, 500, 10**6, 5, 60, 3600])[:total]
    ts = 1_600_000_000 + torch.cumsum(gaps, 0)
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    with torch.no_grad():
        torch.testing.assert_close(model(items, ts, offsets), _loop_hstu(model, items, ts, offsets),
                                   rtol=1e-4, atol=1e-5)


def _events() -> SequenceData:
    """Three users whose events are spread over every time scale (seconds to months)."""
    gaps = [[0, 1, 3, 40, 1000, 90_000, 2], [7, 500, 10**6, 5], [60, 3600, 10**7, 0, 1, 86_400]]
    return SequenceData.from_sequences(
        [[1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15, 16, 17]],
        num_items=17, timestamps=[list(1_600_000_000 + np.cumsum(g)) for g in gaps],
    )


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_every_position_is_scored_at_the_next_events_time(split):
    """Query i of a user's input is scored at the time of the event after it, from the raw events:
    for the last input position that is the training target's, validation item's or test item's
    time (the request time), in training and evaluation alike."""
    data = _events()
    cfg = ModelConfig(num_blocks=1, embedding_dim=8, num_heads=2, max_seq_len=4, dropout=0.0,
                      options=HSTUOptions(num_time_buckets=40))
    torch.manual_seed(0)
    model = HSTU(cfg, 17).eval()
    with torch.no_grad():
        model.blocks[0].ts_weights.normal_(0.0, 1.0)
    if split == "train":
        batch = next(train_batches(data, max_seq_len=4, batch_size=8, rng=np.random.default_rng(0)))
    else:
        batch = next(eval_batches(data, split=split, max_seq_len=4, batch_size=8))
    # The loop's request times come from the raw events: the event right after each input.
    cut = CUTS[split]
    request = [int(data.timestamps[data.offsets[u] + data.lengths[u] - cut]) for u in batch.user_ids.tolist()]
    with torch.no_grad():
        got = model(batch.item_ids, batch.timestamps, batch.seq_offsets, batch.request_timestamps)
        want = _loop_hstu(model, batch.item_ids, batch.timestamps, batch.seq_offsets, request)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    last = batch.seq_offsets[1:] - 1
    # Scored at its own time instead, the last position would differ (the pre-fix behaviour).
    with torch.no_grad():
        own = _loop_hstu(model, batch.item_ids, batch.timestamps, batch.seq_offsets)
    assert not torch.allclose(own[last], want[last], atol=1e-4)


def test_attention_normalisation_options_differ_only_by_the_divisor():
    torch.manual_seed(0)
    base = ModelConfig(num_blocks=1, embedding_dim=8, max_seq_len=10, dropout=0.0)
    by_max = HSTU(base, 20).eval()
    by_len = HSTU(dataclasses.replace(base, options=HSTUOptions(attn_norm="seq_len")), 20).eval()
    by_len.load_state_dict(by_max.state_dict())
    items, ts, offsets = _batch([10, 4])
    with torch.no_grad():
        full_max, full_len = by_max(items, ts, offsets), by_len(items, ts, offsets)
    torch.testing.assert_close(full_max[:10], full_len[:10])  # n = N for the full-length sequence
    assert not torch.allclose(full_max[10:], full_len[10:])  # 4 / 10 vs 1 for the short one


def test_uvqk_init_is_upstreams():
    block = HSTU(ModelConfig(embedding_dim=64, num_heads=2), 10).blocks[0]
    assert block.uvqk.weight.std().item() == pytest.approx(0.02, rel=0.05)
