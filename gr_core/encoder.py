"""What every model family shares: the input embedding, the L2-normalised output, model building.

x0 = E[id] * sqrt(D) + P[pos] (learned absolute positions), then dropout; the item table is
shared by inputs, positives and negatives. Outputs and item vectors are L2-normalised with
upstream's eps (1e-6), so the score of an item is a cosine, divided by the temperature in the loss.
Padding never exists outside attention (jagged [T, D] tensors), so nothing needs zeroing here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gr_core.config import ModelConfig
from gr_core.families import FAMILIES
from kernels.per_sequence import per_sequence_attention  # noqa: F401 - the encoders' FLOP-counting switch

EMBEDDING_STD = 0.02
L2_NORM_EPS = 1e-6
EMBEDDING_PARAMS = ("item_embedding.weight", "position_embedding.weight")


def jagged_positions(seq_offsets: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """[T] index of each token within its sequence (no host sync: the output size is given)."""
    lengths = seq_offsets[1:] - seq_offsets[:-1]
    starts = torch.repeat_interleave(seq_offsets[:-1], lengths, output_size=num_tokens)
    return torch.arange(num_tokens, device=seq_offsets.device) - starts


class SequenceEncoder(nn.Module):
    """Base of the encoders: item ids [T] jagged by seq_offsets [B+1] -> unit vectors [T, D].

    Subclasses implement `encode(x_TD, seq_offsets, timestamps_T, request_timestamps_B) -> [T, D]`
    (the blocks); request_timestamps_B [B] is the time of the event each sequence's last position
    predicts (`gr_core.data.JaggedBatch`), None where unknown (the last position keeps its own).
    """

    def __init__(self, cfg: ModelConfig, num_items: int) -> None:
        super().__init__()
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        self.cfg = cfg
        self.num_items = num_items
        d = cfg.embedding_dim
        self.item_embedding = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.position_embedding = nn.Embedding(cfg.max_seq_len, d)
        self.input_dropout = nn.Dropout(cfg.dropout)
        with torch.no_grad():
            std = EMBEDDING_STD
            nn.init.trunc_normal_(self.item_embedding.weight, std=std, a=-2 * std, b=2 * std)
            self.item_embedding.weight[0].zero_()
            # Upstream's learnable-position preprocessor uses std sqrt(1/D), truncated at 2 std.
            std = math.sqrt(1.0 / d)
            nn.init.trunc_normal_(self.position_embedding.weight, std=std, a=-2 * std, b=2 * std)

    def encode(
        self, x_TD: torch.Tensor, seq_offsets: torch.Tensor, timestamps_T: torch.Tensor,
        request_timestamps_B: torch.Tensor | None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self, item_ids_T: torch.Tensor, timestamps_T: torch.Tensor, seq_offsets: torch.Tensor,
        request_timestamps_B: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """item_ids_T, timestamps_T: [T] jagged by seq_offsets [B+1] -> [T, D], unit norm per row."""
        positions = jagged_positions(seq_offsets, item_ids_T.numel())
        x = self.item_embedding(item_ids_T) * math.sqrt(self.cfg.embedding_dim) + self.position_embedding(positions)
        x = self.encode(self.input_dropout(x), seq_offsets, timestamps_T, request_timestamps_B)
        return F.normalize(x, dim=-1, eps=L2_NORM_EPS)

    def item_vectors(self) -> torch.Tensor:
        """All L2-normalised item embeddings [num_items+1, D] (row 0 is padding, never scored)."""
        return F.normalize(self.item_embedding.weight, dim=-1, eps=L2_NORM_EPS)


def build_model(cfg: ModelConfig, num_items: int, *, ranking_head: bool = False) -> SequenceEncoder:
    """The encoder of `cfg.family` (built by its `gr_core.families` entry), with a `ranking_head`
    submodule when the task ranks actions."""
    from gr_core.ranking import RankingHead

    model = FAMILIES[cfg.family].build(cfg, num_items)
    if ranking_head:
        model.ranking_head = RankingHead(cfg.embedding_dim)
    return model


def count_parameters(model: nn.Module) -> dict[str, int]:
    """{"embedding", "non_embedding", "total"} parameter counts of a built model."""
    embedding = non_embedding = 0
    for name, p in model.named_parameters():
        if name in EMBEDDING_PARAMS:
            embedding += p.numel()
        else:
            non_embedding += p.numel()
    return {"embedding": embedding, "non_embedding": non_embedding, "total": embedding + non_embedding}
