"""Parameters and FLOPs of one run config, as one JSON-able dict and as text (`gr-scaling flops`).

Torch-free. The "flops" entry is exactly `run_flops(...).to_dict()` (what the ledger stores); the
per-component tables are derived from it, so text and JSON cannot disagree.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gr_core.config import ModelConfig, RunConfig
from scaling.elementwise import ElementwiseFlops
from scaling.flops import run_flops
from scaling.params import count_params

_MATMUL_COMPONENTS = (
    ("uvqk", "uvqk projection", "forward_per_epoch_uvqk"),
    ("attention", "attention QK^T + AV (dense-jagged)", "forward_per_epoch_attention_dense"),
    ("output_projection", "output projection", "forward_per_epoch_output_projection"),
    ("head", "sampled-softmax head", "forward_per_epoch_head"),
)


def block_params(model: ModelConfig) -> dict[str, int]:
    """Non-embedding parameters of one HSTU block by tensor group (see `gr_core.hstu`'s names)."""
    d, h = model.embedding_dim, model.num_heads
    return {
        "uvqk": d * (2 * h * model.dv + 2 * h * model.dqk),
        "output": h * model.dv * d + d,
        "rab": (2 * model.max_seq_len - 1) + (model.num_time_buckets + 1) if model.use_rab else 0,
    }


def _breakdown(flops: dict[str, Any], epochs: int) -> dict[str, dict[str, float]]:
    """Training matmul FLOPs per component: per run, per epoch, per step (mean) and per token."""
    steps_per_epoch = flops["steps_per_epoch"]
    tokens = flops["train_tokens"]
    rows: dict[str, dict[str, float]] = {}
    for name, _, key in _MATMUL_COMPONENTS:
        per_epoch = 3.0 * flops[key]
        rows[name] = {"per_epoch": per_epoch, "per_run": epochs * per_epoch}
    rows["total"] = {"per_epoch": flops["train"] / epochs, "per_run": flops["train"]}
    per_epoch_causal = 3.0 * flops["forward_per_epoch_attention_causal"]
    rows["attention_causal"] = {"per_epoch": per_epoch_causal, "per_run": epochs * per_epoch_causal}
    rows["total_causal"] = {"per_epoch": flops["train_causal"] / epochs, "per_run": flops["train_causal"]}
    for row in rows.values():
        row["per_step"] = row["per_epoch"] / steps_per_epoch if steps_per_epoch else 0.0
        row["per_token"] = row["per_run"] / tokens if tokens else 0.0
    return rows


def flops_summary(config: RunConfig) -> dict[str, Any]:
    """Params by group and FLOPs by component of `config`, JSON-able."""
    params = count_params(config.model, config.data.num_items)
    flops = run_flops(config.data, config.model, config.train).to_dict()
    per_block = block_params(config.model)
    assert sum(per_block.values()) == params.per_block  # the two counts are written independently
    return {
        "run_id": config.run_id,
        "config": config.to_dict(),
        "head_dims": {"dqk": config.model.dqk, "dv": config.model.dv},
        "params": {**params.to_dict(), "num_blocks": params.num_blocks, "per_block_groups": per_block},
        "flops": flops,
        "train_breakdown": _breakdown(flops, config.train.epochs),
        "elementwise_train_breakdown": {
            name: 3.0 * config.train.epochs * flops[f"elementwise_forward_per_epoch_{name}"]
            for name in (f.name for f in dataclasses.fields(ElementwiseFlops))
        },
    }


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.3e}"


def format_flops_summary(summary: dict[str, Any]) -> str:
    cfg, params, flops = summary["config"], summary["params"], summary["flops"]
    m, d, t = cfg["model"], cfg["data"], cfg["train"]
    per_block = params["per_block_groups"]
    dims = summary["head_dims"]
    lines = [
        f"run {summary['run_id']}: HSTU {m['num_blocks']} blocks x D {m['embedding_dim']}, {m['num_heads']} head(s) "
        f"(dqk {dims['dqk']}, dv {dims['dv']}), max_seq_len {m['max_seq_len']}, rab {'on' if m['use_rab'] else 'off'}",
        f"data: {d['num_users']:,} users, {d['num_items']:,} items; train: {t['epochs']} epochs, "
        f"batch {t['batch_size']}, {t['num_negatives']} negatives; {int(flops['steps']):,} steps, "
        f"{int(flops['train_tokens']):,} supervised tokens, mean training length {flops['mean_length']:.2f}",
        "",
        "parameters",
        f"  embedding        {params['embedding']:>14,}  (items {params['item_embedding']:,}, "
        f"positions {params['position_embedding']:,})",
        f"  non-embedding    {params['non_embedding']:>14,}  ({params['num_blocks']} blocks x {params['per_block']:,}: "
        + ", ".join(f"{k} {v:,}" for k, v in per_block.items()) + ")",
        f"  total            {params['total']:>14,}",
        "",
        "training FLOPs, matmuls (forward + backward = 3 x forward)",
        f"  {'component':<38}{'per run':>12}{'per epoch':>12}{'per step':>12}{'per token':>12}",
    ]
    labels = {name: label for name, label, _ in _MATMUL_COMPONENTS}
    labels.update(total="total (the x-axis)", attention_causal="attention, causal-exact",
                  total_causal="total, causal-exact")
    for name, row in summary["train_breakdown"].items():
        label = labels[name] + (f" (R+1 = {t['num_negatives'] + 1})" if name == "head" else "")
        lines.append(
            f"  {label:<38}{_fmt(row['per_run']):>12}{_fmt(row['per_epoch']):>12}"
            f"{_fmt(row['per_step']):>12}{_fmt(row['per_token']):>12}"
        )
    lines += [
        f"  attention share of encoder FLOPs: {flops['attention_fraction']:.1%}; one full batch at the mean "
        f"length: {_fmt(flops['train_per_step_at_mean_length'])} per step",
        "",
        "elementwise FLOPs (approximate, training = 3 x forward; NOT in the totals above)",
    ]
    elementwise = summary["elementwise_train_breakdown"]
    for name, value in elementwise.items():
        lines.append(f"  {name:<38}{_fmt(value):>12}")
    total = flops["elementwise_train"]
    share = total / flops["train"] if flops["train"] else 0.0
    lines += [
        f"  {'total':<38}{_fmt(total):>12}  ({share:.1%} of the matmul total)",
        "",
        "evaluation (apart; not training compute)",
        f"  {int(flops['eval_passes'])} passes ({int(flops['eval_passes']) // 2} evaluations x validation + test), "
        f"per pass {_fmt(flops['eval_per_pass'])} (validation) / {_fmt(flops['eval_test_per_pass'])} (test)",
        f"  matmul total {_fmt(flops['eval_total'])}, elementwise total {_fmt(flops['elementwise_eval_total'])}",
        "",
        f"convention: {flops['convention']}",
        f"elementwise: {flops['elementwise_convention']}",
    ]
    return "\n".join(lines)


def format_measurement(measured: dict[str, Any]) -> str:
    lines = [
        "",
        f"measured: one training step under FlopCounterMode ({measured['num_sequences']} sequences, "
        f"{measured['num_tokens']} tokens, sum n^2 = {measured['sum_squared_lengths']})",
        f"  measured matmul FLOPs   {measured['measured_matmul_flops']:.6e}",
        f"  analytic matmul FLOPs   {measured['analytic_matmul_flops']:.6e}",
        f"  ratio                   {measured['ratio']:.6f}",
    ]
    for op, value in sorted(measured["by_op"].items(), key=lambda kv: -kv[1]):
        lines.append(f"    {op:<40}{value:.4e}")
    lines.append(
        f"  step time {measured['step_seconds'] * 1e3:.1f} ms -> {measured['achieved_flops_per_s']:.3e} FLOP/s, "
        f"MFU {measured['mfu']:.1%} of the measured CPU float32 peak {measured['cpu_peak_flops_per_s']:.3e} FLOP/s"
    )
    return "\n".join(lines)
