"""Analytic parameter counts of a run's encoder (any model family), by group.

Embedding parameters are the item table ((num_items + 1) x D, row 0 is padding) and the learned
absolute positions (max_seq_len x D), shared by every family. Everything else is non-embedding
("dense"): each block's parameters, counted by the family's one formula
(`gr_core.families`, `Family.block_params`, by tensor group: HSTU uvqk / output / rab, SASRec
qkv / output / ffn), any the family keeps outside its blocks (`Family.outside_block_params`),
and the ranking task's head (`gr_core.ranking`, 3 D^2 + 2 D + 1). Kaplan-style scaling laws
use the non-embedding count as "N".
"""

from __future__ import annotations

import dataclasses

from gr_core.config import DataConfig, ModelConfig, TrainConfig
from gr_core.families import FAMILIES
from gr_core.lengths import dataset_num_items


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ParamCounts:
    item_embedding: int
    position_embedding: int
    per_block: int  # non-embedding parameters of one encoder block
    num_blocks: int
    outside_blocks: int = 0  # the family's non-embedding parameters outside its blocks
    ranking_head: int = 0  # the ranking task's head; 0 for retrieval only

    @property
    def embedding(self) -> int:
        return self.item_embedding + self.position_embedding

    @property
    def non_embedding(self) -> int:
        return self.per_block * self.num_blocks + self.outside_blocks + self.ranking_head

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
            "outside_blocks": self.outside_blocks,
            "ranking_head": self.ranking_head,
        }


def block_groups(model: ModelConfig) -> dict[str, int]:
    """Non-embedding parameters of one block of `model.family`, by tensor group."""
    return FAMILIES[model.family].block_params(model)


def block_params(model: ModelConfig) -> int:
    """Non-embedding parameters of one block of `model.family`."""
    return sum(block_groups(model).values())


def ranking_head_params(embedding_dim: int) -> int:
    """`gr_core.ranking.RankingHead`: Linear(3D -> D) and Linear(D -> 1), with biases."""
    d = embedding_dim
    return 3 * d * d + d + d + 1


def count_params(model: ModelConfig, num_items: int, *, task: str = "retrieval") -> ParamCounts:
    """Parameter counts of a model over `num_items` items (ids 1..num_items).

    task: the run's `train.task`; "ranking" and "both" add the ranking head. For a run config use
    `run_params`, which takes num_items from `gr_core.lengths.dataset_num_items(data)` (for a real
    source `data.num_items` is not the data set's item count).
    """
    d = model.embedding_dim
    return ParamCounts(
        item_embedding=(num_items + 1) * d,
        position_embedding=model.max_seq_len * d,
        per_block=block_params(model),
        num_blocks=model.num_blocks,
        outside_blocks=sum(FAMILIES[model.family].outside_block_params(model).values()),
        ranking_head=ranking_head_params(d) if task in ("ranking", "both") else 0,
    )


def run_params(data: DataConfig, model: ModelConfig, train: TrainConfig) -> ParamCounts:
    """Parameter counts of a run: `count_params` over the data set's items, with its task's heads.

    What every planner and report should use: `data.num_items` is only the synthetic generator's
    setting (a real source leaves it at its default), and the ranking head is part of the model
    whenever train.task ranks. A real source's item count comes from its (cached) file.
    """
    return count_params(model, dataset_num_items(data), task=train.task)
