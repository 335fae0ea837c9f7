"""The ranking task: target-aware action prediction, scored by normalized entropy (NE).

In HSTU's ranking setting the candidate item is a token of the sequence, so causal attention
makes its output target-aware. Here the sequence is of item ids (actions are labels, never
inputs), so the action a_i of event i is predicted from the encoder output h_i at that event's
own position, which has attended to the history and to item i itself, together with the item's
embedding e_i (both L2-normalised, as the retrieval head sees them):

    logit_i = w_2 . ReLU(W_1 [sqrt(D) h_i ; sqrt(D) e_i ; D (h_i * e_i)] + b_1) + b_2

(the scales bring unit vectors' components to order 1). In training every input position is
supervised with its own event's action; in evaluation the input ends with the held-out target
(`eval_batches(..., target_aware=True)`) and its action is the label. MovieLens / Amazon: action
= rating >= 4; synthetic data: its generated actions.

NE = mean binary cross-entropy / entropy of the base rate p of the evaluated labels,
H(p) = -(p ln p + (1 - p) ln(1 - p)); 1.0 is a constant predictor at the base rate; lower is better.

Parameters ("ranking_head.*", non-embedding): 3 D^2 + D + D + 1. Forward FLOPs per scored
position (matmuls): 2 * 3D * D + 2 * D.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gr_core.data import JaggedBatch
from gr_core.devices import full_precision


class RankingHead(nn.Module):
    def __init__(self, embedding_dim: int) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.hidden = nn.Linear(3 * embedding_dim, embedding_dim)
        self.out = nn.Linear(embedding_dim, 1)

    def forward(self, out_TD: torch.Tensor, items_TD: torch.Tensor) -> torch.Tensor:
        """out_TD, items_TD: [T, D] unit vectors -> logits [T]."""
        d = self.embedding_dim
        features = torch.cat([out_TD * math.sqrt(d), items_TD * math.sqrt(d), out_TD * items_TD * d], dim=-1)
        return self.out(F.relu(self.hidden(features))).squeeze(-1)


def ranking_logits(model: nn.Module, out_TD: torch.Tensor, item_ids_T: torch.Tensor) -> torch.Tensor:
    """Action logits [T] of the items item_ids_T given the encoder outputs at their positions."""
    head = getattr(model, "ranking_head", None)
    if head is None:
        raise ValueError("the model has no ranking_head: build it with build_model(..., ranking_head=True)")
    return head(out_TD, model.item_vectors()[item_ids_T])


def ranking_loss(logits_T: torch.Tensor, labels_T: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy (nats) of the logits against {0, 1} labels, "mean" or "sum" over T."""
    return F.binary_cross_entropy_with_logits(logits_T, labels_T.to(logits_T.dtype), reduction=reduction)


def normalized_entropy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """NE = mean BCE(logits, labels) / H(base rate of labels). Raises if the labels are all equal."""
    if logits.shape != labels.shape or logits.numel() == 0:
        raise ValueError(f"logits and labels must have the same non-empty shape, got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    y = labels.to(torch.float64)
    p = y.mean().item()
    if p <= 0.0 or p >= 1.0:
        raise ValueError(f"NE is undefined when every label is {int(p)}: the base rate has zero entropy")
    base_entropy = -(p * math.log(p) + (1.0 - p) * math.log(1.0 - p))
    cross_entropy = F.binary_cross_entropy_with_logits(logits.to(torch.float64), y).item()
    return cross_entropy / base_entropy


@torch.no_grad()
def evaluate_ranking(
    model: nn.Module, batches: Iterable[JaggedBatch], *, per_user: dict[str, np.ndarray] | None = None
) -> dict[str, float]:
    """{"ne"} over target-aware eval batches: the action on each sequence's last token.

    per_user: when given, filled with "ranking_user_ids" [U] (sorted), "label" and "logit" [U].
    """
    was_training = model.training
    model.eval()
    all_logits, all_labels, all_users = [], [], []
    for batch in batches:
        if batch.actions is None:
            raise ValueError("evaluate_ranking needs batches with actions")
        last = batch.seq_offsets[1:] - 1
        out_TD = model(batch.item_ids, batch.timestamps, batch.seq_offsets, batch.request_timestamps)
        with full_precision(out_TD.device):  # the head in float32 even under a bf16 autocast
            all_logits.append(ranking_logits(model, out_TD[last].float(), batch.item_ids[last]))
        all_labels.append(batch.actions[last])
        all_users.append(batch.user_ids)
    model.train(was_training)
    if not all_logits:
        raise ValueError("no sequences to evaluate: the evaluation produced no users")
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    if per_user is not None:
        users = torch.cat(all_users).cpu().numpy()
        order = np.argsort(users, kind="stable")
        per_user.update(ranking_user_ids=users[order], label=labels.cpu().numpy()[order],
                        logit=logits.double().cpu().numpy()[order])
    return {"ne": normalized_entropy(logits, labels)}
