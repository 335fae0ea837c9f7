"""FuXi-alpha (gr_core.fuxi): the block against a plain loop written from the published formula,
the per-sequence (FLOP-counting) path against the batched one, exact FLOPs on random configs,
parameter names and formula, gradients into the channel weights, bf16 autocast.

The formula (arXiv 2502.03036 and its public code), for one block on a sequence x [n, D]:
x_hat = RMSNorm(x); U, V, Q, K = split(SiLU(x_hat W_uvqk), [3 H dv, H dv, H dqk, H dqk]);
per head and j <= i: A_sem = SiLU(q_i . k_j) / n, A_pos = w_p[j - i + N - 1],
A_ts = w_t[b(ts[i+1] - ts[j])]; out_c[i] = sum_j A_c[i, j] v_j; ams = U * RMSNorm([pos, ts, sem]);
h1 = W_0 ams + b_0 + x; h2 = W_2 (SiLU(W_1 RMSNorm(h1)) * W_3 RMSNorm(h1)) + h1.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from gr_core.config import ModelConfig, RunConfig
from gr_core.encoder import build_model, count_parameters
from gr_core.families import FAMILIES, FuXiOptions
from gr_core.fuxi import FuXiAlpha, keyed_sum_op
from gr_core.losses import sampled_softmax_loss
from kernels.per_sequence import per_sequence_attention
from scaling import forward_flops

NUM_ITEMS = 20


def _bucket(d: int, num_buckets: int) -> int:
    """The published time bucket: clamp(floor(ln(max(|d|, 1)) / 0.301), 0, num_buckets)."""
    return int(min(max(math.floor(math.log(max(abs(d), 1)) / 0.301), 0), num_buckets))


def _rms(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm without weights, eps 1e-6, one row at a time."""
    return torch.stack([row / torch.sqrt((row * row).mean() + 1e-6) for row in x]) if len(x) else x


def _loop_fuxi(model: FuXiAlpha, items, ts, offsets, request=None) -> torch.Tensor:
    """The formula of the module docstring, one token, one pair and one head at a time.

    request[b]: the time of the event sequence b's last position predicts (None: its own time).
    """
    cfg, opts = model.cfg, model.cfg.options
    d, h, dqk, dv, big_n = cfg.embedding_dim, cfg.num_heads, cfg.dqk, cfg.dv, cfg.max_seq_len
    outs = []
    for b in range(offsets.numel() - 1):
        s, e = int(offsets[b]), int(offsets[b + 1])
        n = e - s
        x = torch.stack([model.item_embedding.weight[items[s + i]] * math.sqrt(d) + model.position_embedding.weight[i]
                         for i in range(n)]) if n else torch.zeros(0, d)
        for block in model.blocks:
            proj = F.silu(_rms(x) @ block.uvqk.weight.T)
            u, v, q, k = torch.split(proj, [3 * h * dv, h * dv, h * dqk, h * dqk], dim=-1)
            pos_out, ts_out, sem_out = torch.zeros(n, h * dv), torch.zeros(n, h * dv), torch.zeros(n, h * dv)
            norm = big_n if opts.attn_norm == "max_len" else n
            for i in range(n):
                if i + 1 < n:
                    query_ts = int(ts[s + i + 1])
                else:
                    query_ts = int(ts[s + i]) if request is None else int(request[b])
                for j in range(i + 1):
                    a_pos = block.pos_weights[j - i + big_n - 1]
                    a_ts = block.ts_weights[_bucket(query_ts - int(ts[s + j]), opts.num_time_buckets)]
                    for head in range(h):
                        qs, vs = slice(head * dqk, (head + 1) * dqk), slice(head * dv, (head + 1) * dv)
                        a_sem = F.silu(q[i, qs] @ k[j, qs]) / norm
                        pos_out[i, vs] += a_pos * v[j, vs]
                        ts_out[i, vs] += a_ts * v[j, vs]
                        sem_out[i, vs] += a_sem * v[j, vs]
            ams = u * _rms(torch.cat([pos_out, ts_out, sem_out], dim=-1))
            x = ams @ block.output.weight.T + block.output.bias + x
            if not opts.ffn_single_stage:
                z = _rms(x)
                x = (F.silu(z @ block.ffn_w1.weight.T) * (z @ block.ffn_w3.weight.T)) @ block.ffn_w2.weight.T + x
        outs.append(x)
    return F.normalize(torch.cat(outs), dim=-1, eps=1e-6)


def _model(cfg: ModelConfig, seed: int = 0) -> FuXiAlpha:
    torch.manual_seed(seed)
    model = FuXiAlpha(cfg, NUM_ITEMS).eval()
    with torch.no_grad():  # channel weights large enough to matter
        for block in model.blocks:
            block.pos_weights.normal_(0.0, 1.0)
            block.ts_weights.normal_(0.0, 1.0)
    return model


def _batch(lengths: list[int], seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    items = torch.randint(1, NUM_ITEMS + 1, (total,), generator=g)
    gaps = torch.tensor([0, 1, 3, 40, 1000, 90_000, 2, 0, 7, 500, 10**6, 5, 60, 3600, 86_400, 10**7, 11, 4])
    ts = 1_600_000_000 + torch.cumsum(gaps[torch.arange(total) % gaps.numel()], 0)
    offsets = torch.tensor([0, *np.cumsum(lengths).tolist()])
    request = ts[offsets[1:] - 1].clamp(min=0) + torch.tensor([7, 10**5, 3, 10**8, 1])[: len(lengths)]
    return items, ts, offsets, request


LOOP_CASES = [
    ModelConfig(family="fuxi", num_blocks=2, embedding_dim=8, num_heads=2, max_seq_len=6, dropout=0.0),
    ModelConfig(family="fuxi", num_blocks=1, embedding_dim=6, num_heads=1, max_seq_len=5, dropout=0.0,
                options=FuXiOptions(attn_norm="seq_len", num_time_buckets=20, ffn_multiply=1.5)),
    ModelConfig(family="fuxi", num_blocks=2, embedding_dim=4, num_heads=2, max_seq_len=5, dropout=0.0,
                options=FuXiOptions(attention_dim=3, linear_dim=5, ffn_single_stage=True)),
]


@pytest.mark.parametrize("cfg", LOOP_CASES)
def test_forward_matches_a_loop_written_from_the_formula(cfg: ModelConfig) -> None:
    model = _model(cfg)
    lengths = [4, 0, 1, cfg.max_seq_len, 2]  # empty and single-token sequences included
    items, ts, offsets, request = _batch(lengths)
    with torch.no_grad():
        got = model(items, ts, offsets, request)
        torch.testing.assert_close(got, _loop_fuxi(model, items, ts, offsets, request), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(items, ts, offsets), _loop_fuxi(model, items, ts, offsets),
                                   rtol=1e-5, atol=1e-5)
        own = model(items, ts, offsets)
    last = offsets[1:][torch.tensor(lengths) > 0] - 1
    assert not torch.allclose(own[last], got[last], atol=1e-4)  # the request time reaches the last query


def test_each_channel_matters() -> None:
    """Zeroing one channel's weights changes the output: none of them is silently unused."""
    cfg = LOOP_CASES[0]
    items, ts, offsets, request = _batch([5, 3])
    base = _model(cfg)
    with torch.no_grad():
        want = base(items, ts, offsets, request)
        for name in ("pos_weights", "ts_weights"):
            changed = _model(cfg)
            for block in changed.blocks:
                getattr(block, name).zero_()
            assert not torch.allclose(changed(items, ts, offsets, request), want, atol=1e-4), name


@pytest.mark.parametrize("cfg", LOOP_CASES)
def test_the_per_sequence_path_equals_the_batched_path_with_its_gradients(cfg: ModelConfig) -> None:
    items, ts, offsets, request = _batch([3, 0, 1, cfg.max_seq_len])
    results = []
    for per_sequence in (False, True):
        model = _model(cfg)
        if per_sequence:
            with per_sequence_attention():
                out = model(items, ts, offsets, request)
        else:
            out = model(items, ts, offsets, request)
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (out_a, grads_a), (out_b, grads_b) = results
    torch.testing.assert_close(out_b, out_a, rtol=1e-5, atol=1e-6)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    for i in range(cfg.num_blocks):  # the channel weights are trained
        assert grads_a[f"blocks.{i}.pos_weights"].abs().sum() > 0
        assert grads_a[f"blocks.{i}.ts_weights"].abs().sum() > 0


def test_parameter_names_and_the_documented_count() -> None:
    cfg = ModelConfig(family="fuxi", num_blocks=1, embedding_dim=10, num_heads=2, max_seq_len=7,
                      options=FuXiOptions(attention_dim=3, linear_dim=4, ffn_multiply=1.7, num_time_buckets=9))
    model = FuXiAlpha(cfg, 5)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    d, h, dqk, dv, n, f = 10, 2, 3, 4, 7, 17
    assert shapes == {
        "item_embedding.weight": (6, d), "position_embedding.weight": (n, d),
        "blocks.0.uvqk.weight": (4 * h * dv + 2 * h * dqk, d),
        "blocks.0.pos_weights": (2 * n - 1,), "blocks.0.ts_weights": (10,),
        "blocks.0.output.weight": (d, 3 * h * dv), "blocks.0.output.bias": (d,),
        "blocks.0.ffn_w1.weight": (f, d), "blocks.0.ffn_w3.weight": (f, d), "blocks.0.ffn_w2.weight": (d, f),
    }
    per_block = d * (4 * h * dv + 2 * h * dqk) + (3 * h * dv * d + d) + 3 * d * f + (2 * n - 1) + 10
    assert count_parameters(model)["non_embedding"] == per_block
    single = dataclasses.replace(cfg, options=dataclasses.replace(cfg.options, ffn_single_stage=True))
    assert count_parameters(FuXiAlpha(single, 5))["non_embedding"] == per_block - 3 * d * f


def test_initialisation_is_the_public_codes() -> None:
    torch.manual_seed(0)
    block = FuXiAlpha(ModelConfig(family="fuxi", num_blocks=1, embedding_dim=64, num_heads=2, max_seq_len=200), 5).blocks[0]
    assert block.uvqk.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert block.pos_weights.std().item() == pytest.approx(0.02, rel=0.15)
    assert block.ts_weights.std().item() == pytest.approx(0.02, rel=0.3)
    for linear in (block.output, block.ffn_w1, block.ffn_w2, block.ffn_w3):
        fan_out, fan_in = linear.weight.shape
        bound = math.sqrt(6.0 / (fan_in + fan_out))  # Xavier-uniform
        assert linear.weight.abs().max().item() <= bound
        assert linear.weight.abs().max().item() > 0.9 * bound


def _random_config(rng: np.random.Generator) -> ModelConfig:
    h = int(rng.integers(1, 4))
    return ModelConfig(
        family="fuxi", num_blocks=int(rng.integers(1, 4)), embedding_dim=int(rng.integers(3, 17)), num_heads=h,
        max_seq_len=int(rng.integers(2, 12)), dropout=float(rng.choice([0.0, 0.3])),
        options=FuXiOptions(
            attention_dim=int(rng.integers(1, 7)), linear_dim=int(rng.integers(1, 7)),
            attn_norm=str(rng.choice(["max_len", "seq_len"])),  # type: ignore[arg-type]
            num_time_buckets=int(rng.integers(1, 130)), ffn_multiply=float(rng.choice([0.5, 1.0, 2.3, 4.0])),
            ffn_single_stage=bool(rng.random() < 0.3),
        ),
    )


@pytest.mark.parametrize("seed", range(6))
def test_analytic_flops_equal_flop_counter_mode_exactly_on_random_configs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cfg = _random_config(rng)
    lengths = [int(n) for n in rng.integers(0, cfg.max_seq_len + 1, size=int(rng.integers(1, 6)))]
    torch.manual_seed(seed)
    model = build_model(cfg, NUM_ITEMS).train()
    items, ts, offsets, _ = _batch(lengths, seed)
    request = ts[(offsets[1:] - 1).clamp(min=0)] + 5 if ts.numel() else None
    gen = torch.Generator().manual_seed(seed)
    targets = torch.randint(1, NUM_ITEMS + 1, (sum(lengths),), generator=gen)
    with per_sequence_attention(), FlopCounterMode(display=False) as counter:
        out = model(items, ts, offsets, request)
        sampled_softmax_loss(out, targets, model.item_vectors(), num_negatives=3, temperature=0.05, scoring="gather",
                             generator=gen).backward()
    analytic = 3 * forward_flops(np.array(lengths), cfg, head_candidates=4).total_dense
    assert float(counter.get_total_flops()) == analytic, (cfg, lengths)


def test_outside_the_switch_the_channel_op_is_counted_by_the_dense_jagged_formula() -> None:
    """Without `per_sequence_attention()` the bias channels run as one padded op, counted like the
    other attention ops by formula (sum n^2, never the padding): a whole step still equals 3 x forward."""
    cfg = ModelConfig(family="fuxi", num_blocks=2, embedding_dim=12, num_heads=2, max_seq_len=9)
    lengths = [7, 1, 0, 9, 3]
    items, ts, offsets, request = _batch(lengths)
    torch.manual_seed(0)
    model = build_model(cfg, NUM_ITEMS, ranking_head=True)
    with FlopCounterMode(display=False) as counter:
        out = model(items, ts, offsets, request)
        sampled_softmax_loss(out, items, model.item_vectors(), num_negatives=5, temperature=0.05, scoring="gather",
                             generator=torch.Generator().manual_seed(0)).backward()
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    pairs = sum(n * n for n in lengths)
    assert by_op["gr_core.fuxi_keyed_sum"] == 2 * cfg.num_blocks * 2 * pairs * cfg.num_heads * cfg.dv
    assert by_op["gr_core.fuxi_keyed_sum_backward"] == 2 * by_op["gr_core.fuxi_keyed_sum"]
    assert counter.get_total_flops() == 3 * forward_flops(np.array(lengths), cfg, head_candidates=6).total_dense


def test_the_channel_op_passes_torch_library_opcheck() -> None:
    """Schema, fake (meta) implementation and autograd registration of `gr_core::fuxi_keyed_sum`."""
    g = torch.Generator().manual_seed(0)
    offsets = torch.tensor([0, 3, 3, 4, 8])
    weights = torch.randn(4, 4, 4, generator=g).tril().requires_grad_()
    v = torch.randn(8, 6, generator=g, requires_grad=True)
    torch.library.opcheck(keyed_sum_op, (weights, v, offsets))


def test_bf16_autocast_trains_close_to_fp32() -> None:
    cfg = LOOP_CASES[0]
    items, ts, offsets, request = _batch([5, 2, 6])
    model = _model(cfg)
    want = model(items, ts, offsets, request)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = model(items, ts, offsets, request)
    got.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad
               and p is not model.item_embedding.weight)
    torch.testing.assert_close(got.float(), want, rtol=0.0, atol=0.05)


def test_options_are_validated_and_the_family_is_registered() -> None:
    assert FAMILIES["fuxi"].label == "FuXi-alpha"
    config = RunConfig.from_dict({"model": {"family": "fuxi", "ffn_multiply": 2, "ffn_single_stage": True}})
    assert config.model.options == FuXiOptions(ffn_multiply=2.0, ffn_single_stage=True)
    with pytest.raises(ValueError, match="model.ffn_multiply must be > 0"):
        FuXiOptions(ffn_multiply=0.0)
    with pytest.raises(ValueError, match=r"MFFN width int\(4 \* 0.1\) = 0"):
        ModelConfig(family="fuxi", embedding_dim=4, options=FuXiOptions(ffn_multiply=0.1))
    ModelConfig(family="fuxi", embedding_dim=4, options=FuXiOptions(ffn_multiply=0.1, ffn_single_stage=True))
    with pytest.raises(ValueError, match="FuXi-alpha needs model.family='fuxi'"):
        FuXiAlpha(ModelConfig(), 5)
    with pytest.raises(ValueError, match="model.use_rab do not apply to model.family='fuxi'"):
        RunConfig.from_dict({"model": {"family": "fuxi", "use_rab": False}})
