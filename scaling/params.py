"""Analytic parameter counts of the HSTU encoder, by group.

Embedding parameters are the item table ((num_items + 1) x D, row 0 is padding) and the learned
absolute positions (max_seq_len x D). Everything else is non-embedding ("dense"): per block the
bias-free uvqk projection, the output projection with its bias and, with rab, the positional
(2N - 1) and time-bucket (num_time_buckets + 1) bias weights. LayerNorms carry no affine weights.
Kaplan-style scaling laws use the non-embedding count as "N".
"""

from __future__ import annotations

import dataclasses

from gr_core.config import ModelConfig


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ParamCounts:
    item_embedding: int
    position_embedding: int
    per_block: int  # non-embedding parameters of one HSTU block
    num_blocks: int

    @property
    def embedding(self) -> int:
        return self.item_embedding + self.position_embedding

    @property
    def non_embedding(self) -> int:
        return self.per_block * self.num_blocks

    @property
    def total(self) -> int:
        return self.embedding + self.non_embedding

    def to_dict(self) -> dict[str, int]:
        return {
            "embedding": self.embedding,
            "non_embedding": self.non_embedding,
            "total": self.total,
            "item_embedding": self.item_embedding,
            "position_embedding": self.position_embedding,
            "per_block": self.per_block,
        }


def count_params(model: ModelConfig, num_items: int) -> ParamCounts:
    """Parameter counts of an HSTU model over `num_items` items (ids 1..num_items)."""
    d, h = model.embedding_dim, model.num_heads
    uvqk = d * (2 * h * model.dv + 2 * h * model.dqk)
    output = h * model.dv * d + d
    rab = (2 * model.max_seq_len - 1) + (model.num_time_buckets + 1) if model.use_rab else 0
    return ParamCounts(
        item_embedding=(num_items + 1) * d,
        position_embedding=model.max_seq_len * d,
        per_block=uvqk + output + rab,
        num_blocks=model.num_blocks,
    )
