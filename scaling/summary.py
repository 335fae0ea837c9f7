"""Parameters and FLOPs of one run config, as one JSON-able dict and as text (`gr-scaling flops`).

Torch-free. The "flops" entry is exactly `run_flops(...).to_dict()` (what the ledger stores); the
per-component tables are derived from it, so text and JSON cannot disagree.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gr_core.config import ModelConfig, RunConfig, TrainConfig
from gr_core.lengths import dataset_event_counts, dataset_num_items
from scaling.elementwise import ElementwiseFlops
from scaling.flops import run_flops
from scaling.params import run_params

FAMILY_NAMES = {"hstu": "HSTU", "sasrec": "SASRec"}
# Training matmul components: name -> (label, `RunFlops.to_dict` key). "uvqk" is the block's fused
# input projection (SASRec's QKV); see `scaling.flops.ForwardFlops`.
_MATMUL_COMPONENTS = {
    "uvqk": ("uvqk projection", "forward_per_epoch_uvqk"),
    "attention": ("attention QK^T + AV (dense-jagged)", "forward_per_epoch_attention_dense"),
    "output_projection": ("output projection", "forward_per_epoch_output_projection"),
    "ffn": ("FFN", "forward_per_epoch_ffn"),
    "head": ("sampled-softmax head", "forward_per_epoch_head"),
    "ranking_head": ("ranking head", "forward_per_epoch_ranking_head"),
}


def _matmul_components(model: ModelConfig, train: TrainConfig) -> list[str]:
    """The training matmul components this run has (their FLOPs sum to `train`)."""
    names = ["uvqk", "attention", "output_projection"]
    if model.family == "sasrec":
        names.append("ffn")
    if train.retrieval:
        names.append("head")
    if train.ranking:
        names.append("ranking_head")
    return names


def block_params(model: ModelConfig) -> dict[str, int]:
    """Non-embedding parameters of one block of `model.family` by tensor group.

    HSTU (`gr_core.hstu`): uvqk, output (with bias), rab. SASRec (`gr_core.sasrec`): qkv
    (q_proj + kv_proj, with biases), output (out_proj), ffn (ffn_in + ffn_out).
    """
    d, h = model.embedding_dim, model.num_heads
    if model.family == "sasrec":
        f = model.ffn_dim
        return {
            "qkv": (d * d + d) + (2 * d * d + 2 * d),
            "output": d * d + d,
            "ffn": (d * f + f) + (f * d + d),
        }
    return {
        "uvqk": d * (2 * h * model.dv + 2 * h * model.dqk),
        "output": h * model.dv * d + d,
        "rab": (2 * model.max_seq_len - 1) + (model.num_time_buckets + 1) if model.use_rab else 0,
    }


def _breakdown(flops: dict[str, Any], epochs: int, components: list[str]) -> dict[str, dict[str, float]]:
    """Training matmul FLOPs per component: per run, per epoch, per step (mean) and per token."""
    steps_per_epoch = flops["steps_per_epoch"]
    tokens = flops["train_tokens"]
    rows: dict[str, dict[str, float]] = {}
    for name in components:
        per_epoch = 3.0 * flops[_MATMUL_COMPONENTS[name][1]]
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
    """Params by group and FLOPs by component of `config`, JSON-able.

    "dataset" holds the data set's real user and item counts (for a real source, the config's
    num_users / num_items are only the synthetic generator's unused defaults).
    """
    params = run_params(config.data, config.model, config.train)
    flops = run_flops(config.data, config.model, config.train).to_dict()
    per_block = block_params(config.model)
    assert sum(per_block.values()) == params.per_block  # the two counts are written independently
    return {
        "run_id": config.run_id,
        "config": config.to_dict(),
        "dataset": {
            "source": config.data.source,
            "num_users": int(len(dataset_event_counts(config.data))),
            "num_items": dataset_num_items(config.data),
        },
        "head_dims": {"dqk": config.model.dqk, "dv": config.model.dv},
        "params": {**params.to_dict(), "num_blocks": params.num_blocks, "per_block_groups": per_block},
        "flops": flops,
        "train_breakdown": _breakdown(flops, config.train.epochs, _matmul_components(config.model, config.train)),
        "elementwise_train_breakdown": {
            name: 3.0 * config.train.epochs * flops[f"elementwise_forward_per_epoch_{name}"]
            for name in (f.name for f in dataclasses.fields(ElementwiseFlops))
        },
    }


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.3e}"


def format_flops_summary(summary: dict[str, Any]) -> str:
    cfg, params, flops = summary["config"], summary["params"], summary["flops"]
    m, t, dataset = cfg["model"], cfg["train"], summary["dataset"]
    per_block = params["per_block_groups"]
    dims = summary["head_dims"]
    if m["family"] == "sasrec":
        # SASRec's per-head widths are D / H; it has an FFN and no relative attention bias.
        shape = f"{m['num_heads']} head(s), FFN {m['ffn_hidden_dim'] or m['embedding_dim']}"
        extras = ""
    else:
        shape = f"{m['num_heads']} head(s) (dqk {dims['dqk']}, dv {dims['dv']})"
        extras = f", rab {'on' if m['use_rab'] else 'off'}"
    head = f" + ranking head {params['ranking_head']:,}" if params["ranking_head"] else ""
    lines = [
        f"run {summary['run_id']}: {FAMILY_NAMES[m['family']]} {m['num_blocks']} blocks x D {m['embedding_dim']}, "
        f"{shape}, max_seq_len {m['max_seq_len']}{extras}",
        f"data: {dataset['source']}, {dataset['num_users']:,} users, {dataset['num_items']:,} items; "
        f"train: task {t['task']}, {t['epochs']} epochs, "
        f"batch {t['batch_size']}, {t['num_negatives']} negatives; {int(flops['steps']):,} steps, "
        f"{int(flops['train_tokens']):,} supervised tokens, mean training length {flops['mean_length']:.2f}",
        "",
        "parameters",
        f"  embedding        {params['embedding']:>14,}  (items {params['item_embedding']:,}, "
        f"positions {params['position_embedding']:,})",
        f"  non-embedding    {params['non_embedding']:>14,}  ({params['num_blocks']} blocks x {params['per_block']:,}: "
        + ", ".join(f"{k} {v:,}" for k, v in per_block.items()) + f"){head}",
        f"  total            {params['total']:>14,}",
        "",
        "training FLOPs, matmuls (forward + backward = 3 x forward)",
        f"  {'component':<38}{'per run':>12}{'per epoch':>12}{'per step':>12}{'per token':>12}",
    ]
    labels = {name: label for name, (label, _) in _MATMUL_COMPONENTS.items()}
    if m["family"] == "sasrec":
        labels["uvqk"] = "QKV projection"
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
        f"measured: one training step of {FAMILY_NAMES[measured['family']]} on {measured['data_source']} "
        f"({measured['num_items']:,} items) under FlopCounterMode ({measured['num_sequences']} sequences, "
        f"{measured['num_tokens']} tokens, sum n^2 = {measured['sum_squared_lengths']}); attention counted "
        "from per-sequence matmuls, not from the attention op's own FLOP formula",
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
