"""SASRec: the jagged softmax attention op against loops, the model's layout, params and causality."""

from __future__ import annotations

import math

import pytest
import torch

from gr_core.config import ModelConfig, RunConfig
from gr_core.encoder import build_model, count_parameters
from gr_core.families import SASRecOptions
from gr_core.families.sasrec import ffn_dim
from gr_core.sasrec import SASRec
from gr_core.softmax_attention import jagged_softmax_attention, jagged_softmax_attention_op
from scaling import count_params


def _loop_attention(q, k, v, offsets):
    """Causal softmax attention, one query at a time (independent ground truth, autograd-able)."""
    out = []
    scale = 1.0 / math.sqrt(q.shape[-1])
    for b in range(offsets.numel() - 1):
        s, e = int(offsets[b]), int(offsets[b + 1])
        for i in range(s, e):
            rows = []
            for h in range(q.shape[1]):
                logits = torch.stack([scale * (q[i, h] * k[j, h]).sum() for j in range(s, i + 1)])
                w = torch.softmax(logits, dim=0)
                rows.append(sum(w[j - s] * v[j, h] for j in range(s, i + 1)))
            out.append(torch.stack(rows))
    return torch.stack(out) if out else v.new_zeros((0, *v.shape[1:]))


def _case(lengths, heads=2, dqk=3, dv=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    q, k = (torch.randn(total, heads, dqk, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(total, heads, dv, generator=g, dtype=torch.float64)
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    return q, k, v, offsets


@pytest.mark.parametrize("lengths", [[3, 0, 1, 4], [1], [5, 2]])
def test_op_matches_loops_forward_and_backward(lengths):
    q, k, v, offsets = _case(lengths)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    got = jagged_softmax_attention(*leaves, offsets)
    refs = [t.clone().requires_grad_(True) for t in (q, k, v)]
    want = _loop_attention(*refs, offsets)
    torch.testing.assert_close(got, want)
    grad = torch.randn_like(got)
    got.backward(grad)
    want.backward(grad)
    for a, b in zip(leaves, refs):
        torch.testing.assert_close(a.grad, b.grad)


def test_dropout_is_seeded_and_its_backward_is_exact():
    q, k, v, offsets = _case([4, 2, 3], heads=1, dqk=2, dv=2)
    args = (offsets, 1.0 / math.sqrt(2), 0.5, 1234)
    first = jagged_softmax_attention_op(q, k, v, *args)
    torch.testing.assert_close(first, jagged_softmax_attention_op(q, k, v, *args))
    assert not torch.allclose(first, jagged_softmax_attention_op(q, k, v, offsets, args[1], 0.5, 99))
    no_dropout = jagged_softmax_attention_op(q, k, v, offsets, args[1], 0.0, 0)
    assert not torch.allclose(first, no_dropout)
    inputs = tuple(t.clone().requires_grad_(True) for t in (q, k, v))
    assert torch.autograd.gradcheck(lambda a, b, c: jagged_softmax_attention_op(a, b, c, *args), inputs)


def test_op_registration_passes_opcheck():
    q, k, v, offsets = (t.float() if t.is_floating_point() else t for t in _case([3, 1, 2]))
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    torch.library.opcheck(jagged_softmax_attention_op, (q, k, v, offsets, 0.5, 0.0, 0))


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(family="sasrec", num_blocks=2, embedding_dim=16, num_heads=2, max_seq_len=10),
        ModelConfig(family="sasrec", num_blocks=3, embedding_dim=12, num_heads=3, max_seq_len=7,
                    options=SASRecOptions(ffn_hidden_dim=20, ffn_activation="gelu")),
    ],
)
def test_parameter_count_matches_the_scaling_formula(cfg):
    num_items = 31
    d, f = cfg.embedding_dim, ffn_dim(cfg)
    per_block = 4 * d * d + 5 * d + 2 * d * f + f  # documented in gr_core/sasrec.py
    counted = count_params(cfg, num_items)
    actual = count_parameters(SASRec(cfg, num_items))
    assert counted.per_block == per_block
    assert actual == {
        "embedding": counted.embedding, "non_embedding": counted.non_embedding, "total": counted.total,
    }
    assert counted.non_embedding == cfg.num_blocks * per_block
    with_head = count_params(cfg, num_items, task="both")
    assert count_parameters(build_model(cfg, num_items, ranking_head=True))["non_embedding"] == with_head.non_embedding
    assert with_head.non_embedding - counted.non_embedding == 3 * d * d + 2 * d + 1


def test_parameter_names_and_init():
    model = SASRec(ModelConfig(family="sasrec", num_blocks=1, embedding_dim=8), 5)
    names = {name for name, _ in model.named_parameters()}
    assert names == {"item_embedding.weight", "position_embedding.weight"} | {
        f"blocks.0.{layer}.{p}" for layer in ("q_proj", "kv_proj", "out_proj", "ffn_in", "ffn_out")
        for p in ("weight", "bias")
    }
    block = model.blocks[0]
    assert torch.all(block.q_proj.bias == 0) and torch.all(block.kv_proj.bias == 0)


def test_forward_is_unit_norm_causal_and_ignores_timestamps():
    torch.manual_seed(0)
    cfg = ModelConfig(family="sasrec", num_blocks=2, embedding_dim=8, num_heads=2, max_seq_len=8, dropout=0.0)
    model = SASRec(cfg, 20).eval()
    g = torch.Generator().manual_seed(1)
    items = torch.randint(1, 21, (8,), generator=g)
    ts = torch.arange(8) * 100
    offsets = torch.tensor([0, 5, 5, 8])
    out = model(items, ts, offsets)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(8))
    items2 = items.clone()
    items2[4] = items[4] % 20 + 1
    out2 = model(items2, ts, offsets)
    torch.testing.assert_close(out2[:4], out[:4])
    torch.testing.assert_close(out2[5:], out[5:])
    assert not torch.allclose(out2[4], out[4])
    torch.testing.assert_close(model(items, ts * 7 + 3, offsets), out)


def test_hstu_only_fields_are_rejected_for_sasrec():
    with pytest.raises(ValueError, match="model.attention_dim do not apply to model.family='sasrec'"):
        RunConfig.from_dict({"model": {"family": "sasrec", "attention_dim": 8}})
    with pytest.raises(ValueError, match="model.ffn_hidden_dim do not apply to model.family='hstu'"):
        RunConfig.from_dict({"model": {"ffn_hidden_dim": 8}})
    with pytest.raises(ValueError, match="model.family='sasrec' takes SASRecOptions"):
        from gr_core.families import HSTUOptions

        ModelConfig(family="sasrec", options=HSTUOptions())


def test_per_sequence_softmax_attention_matches_the_op_and_is_counted_not_asserted():
    from torch.utils.flop_counter import FlopCounterMode

    from gr_core.softmax_attention import jagged_softmax_attention
    from kernels.per_sequence import per_sequence_attention

    g = torch.Generator().manual_seed(0)
    lengths = [4, 0, 1, 6]
    offsets = torch.tensor([0, 4, 4, 5, 11])
    q, k, v = (torch.randn(11, 2, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    grad = torch.randn(11, 2, 3, generator=g, dtype=torch.float64)
    want = jagged_softmax_attention(q, k, v, offsets)
    want_grads = torch.autograd.grad(want, (q, k, v), grad)
    with per_sequence_attention(), FlopCounterMode(display=False) as counter:
        got = jagged_softmax_attention(q, k, v, offsets)
        got_grads = torch.autograd.grad(got, (q, k, v), grad)
    torch.testing.assert_close(got, want)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b)
    assert not any(str(op).startswith("gr_core") for op in counter.get_flop_counts()["Global"])
    assert counter.get_total_flops() == 3 * sum(n * n for n in lengths) * 2 * (3 + 3) * 2
