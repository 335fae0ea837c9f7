"""The training loss as one module: the encoder's forward pass and each task's summed loss.

Computing the losses inside a module's forward is what lets DeepSpeed's ZeRO-3 (which gathers a
module's weights only while that module runs) serve the item embedding table to the sampled
softmax and the ranking head, which read it outside the embedding's own forward:
`shared_parameters()` names those weights for `deepspeed.zero.register_external_parameter`.
"""

from __future__ import annotations

import torch
from torch import nn

from gr_core.config import RunConfig
from gr_core.data import JaggedBatch
from gr_core.losses import CandidateScoring, sampled_softmax_loss
from gr_core.ranking import ranking_logits, ranking_loss


class TrainingObjective(nn.Module):
    def __init__(self, encoder: nn.Module, config: RunConfig, *, candidate_scoring: CandidateScoring = "auto") -> None:
        """candidate_scoring: how the sampled softmax scores its candidates (`gr_core.losses`);
        "gather" runs exactly the FLOPs the convention counts (for `FlopCounterMode`)."""
        super().__init__()
        self.encoder = encoder
        self._candidate_scoring = candidate_scoring
        self._num_negatives = config.train.num_negatives
        self._temperature = config.model.temperature
        self._ranking = config.train.ranking

    def shared_parameters(self) -> list[nn.Parameter]:
        """Weights used outside the submodule that owns them (the item embedding table)."""
        return [self.encoder.item_embedding.weight]

    def forward(self, batch: JaggedBatch, negatives_TR: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Summed (not averaged) per-position losses of a training batch: "retrieval" (when
        negatives are given) and "ranking" (when the task ranks actions)."""
        out_TD = self.encoder(batch.item_ids, batch.timestamps, batch.seq_offsets, batch.request_timestamps)
        parts: dict[str, torch.Tensor] = {}
        if negatives_TR is not None:
            parts["retrieval"] = sampled_softmax_loss(
                out_TD, batch.target_ids, self.encoder.item_vectors(), num_negatives=self._num_negatives,
                temperature=self._temperature, negatives_TR=negatives_TR, reduction="sum",
                scoring=self._candidate_scoring,
            )
        if self._ranking:
            assert batch.actions is not None
            logits = ranking_logits(self.encoder, out_TD, batch.item_ids)
            parts["ranking"] = ranking_loss(logits, batch.actions, reduction="sum")
        return parts
