"""Parameters and FLOPs of one run config, as one JSON-able dict and as text (`gr-scaling flops`).

Torch-free. The "flops" entry is exactly `run_flops(...).to_dict()` (what the ledger stores); the
per-component tables are derived from the same `RunFlops`, so text and JSON cannot disagree. The
encoder's rows are whatever components its family reports (`gr_core.families`); the heads,
totals and evaluation rows are shared.
"""

from __future__ import annotations

from typing import Any

from gr_core.config import RunConfig
from gr_core.families import FAMILIES
from gr_core.lengths import dataset_event_counts, dataset_num_items
from scaling.flops import RunFlops, run_flops
from scaling.params import block_groups, run_params

# Labels of the rows `scaling` adds beside the family's components.
_SHARED_LABELS = {
    "head": "sampled-softmax head",
    "ranking_head": "ranking head",
    "total": "total (the x-axis)",
    "attention_causal": "attention, causal-exact",
    "total_causal": "total, causal-exact",
}


def _breakdown(flops: RunFlops, retrieval: bool, ranking: bool) -> dict[str, dict[str, float]]:
    """Training matmul FLOPs per component (the family's, then the heads the task has; they sum to
    `train`), then the totals: per run, per epoch, per step (mean) and per token."""
    fwd, epochs = flops.forward_per_epoch, flops.epochs
    forward = dict(fwd.encoder)
    if retrieval:
        forward["head"] = fwd.head
    if ranking:
        forward["ranking_head"] = fwd.ranking_head
    rows: dict[str, dict[str, float]] = {}
    for name, value in forward.items():
        per_epoch = 3.0 * value
        rows[name] = {"per_epoch": per_epoch, "per_run": epochs * per_epoch}
    rows["total"] = {"per_epoch": flops.train / epochs, "per_run": flops.train}
    per_epoch_causal = 3.0 * fwd.attention_causal
    rows["attention_causal"] = {"per_epoch": per_epoch_causal, "per_run": epochs * per_epoch_causal}
    rows["total_causal"] = {"per_epoch": flops.train_causal / epochs, "per_run": flops.train_causal}
    for row in rows.values():
        row["per_step"] = row["per_epoch"] / flops.steps_per_epoch if flops.steps_per_epoch else 0.0
        row["per_token"] = row["per_run"] / flops.train_tokens if flops.train_tokens else 0.0
    return rows


def flops_summary(config: RunConfig) -> dict[str, Any]:
    """Params by group and FLOPs by component of `config`, JSON-able.

    "dataset" holds the data set's real user and item counts (for a real source, the config's
    num_users / num_items are only the synthetic generator's unused defaults). "encoder" names
    the family, its shape and the labels of its components.
    """
    model = config.model
    family = FAMILIES[model.family]
    params = run_params(config.data, model, config.train)
    flops = run_flops(config.data, model, config.train)
    stored = flops.to_dict()
    # A component that grows with (query, key) pairs (attention) is counted dense-jagged here.
    labels = {
        name: (cost.label or name) + (" (dense-jagged)" if cost.per_pair else "")
        for name, cost in family.matmul_costs(model).items()
    }
    return {
        "run_id": config.run_id,
        "config": config.to_dict(),
        "dataset": {
            "source": config.data.source,
            "num_users": int(len(dataset_event_counts(config.data))),
            "num_items": dataset_num_items(config.data),
        },
        "encoder": {"family": family.label, "shape": family.describe(model), "component_labels": labels},
        "head_dims": {"dqk": model.dqk, "dv": model.dv},
        "params": {
            **params.to_dict(), "num_blocks": params.num_blocks, "per_block_groups": block_groups(model),
            "outside_block_groups": family.outside_block_params(model),
        },
        "flops": stored,
        "train_breakdown": _breakdown(flops, config.train.retrieval, config.train.ranking),
        "elementwise_train_breakdown": {
            name: 3.0 * config.train.epochs * value for name, value in flops.elementwise_forward_per_epoch.to_dict().items()
        },
    }


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.3e}"


def format_flops_summary(summary: dict[str, Any]) -> str:
    cfg, params, flops, encoder = summary["config"], summary["params"], summary["flops"], summary["encoder"]
    m, t, dataset = cfg["model"], cfg["train"], summary["dataset"]
    per_block = params["per_block_groups"]
    outside = params["outside_block_groups"]
    head = (
        (" + outside the blocks " + ", ".join(f"{k} {v:,}" for k, v in outside.items()) if outside else "")
        + (f" + ranking head {params['ranking_head']:,}" if params["ranking_head"] else "")
    )
    lines = [
        f"run {summary['run_id']}: {encoder['family']} {m['num_blocks']} blocks x D {m['embedding_dim']}, "
        f"{encoder['shape']}, max_seq_len {m['max_seq_len']}",
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
    labels = {**encoder["component_labels"], **_SHARED_LABELS}
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
        f"measured: one training step of {FAMILIES[measured['family']].label} on {measured['data_source']} "
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
