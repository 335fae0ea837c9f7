"""HSTU encoder (DESIGN.md section 2) over jagged batches.

Parameter names (stable: `scaling/params.py` counts them analytically; D = embedding_dim,
H = num_heads, N = max_seq_len, I = num_items):

embedding (counted as "embedding" by `count_parameters`):
  item_embedding.weight        [I+1, D]   row 0 is padding; shared by inputs, positives, negatives
  position_embedding.weight    [N, D]     learned absolute positions
per block i (non-embedding), D*(2H dv + 2H dqk) + H dv*D + D, plus (2N-1) + (B_t+1) with rab:
  blocks.{i}.uvqk.weight       [2H dv + 2H dqk, D]   no bias; output split as U, V, Q, K
  blocks.{i}.output.weight     [D, H dv]
  blocks.{i}.output.bias       [D]
  blocks.{i}.pos_weights       [2N-1]      only with use_rab; shared over heads
  blocks.{i}.ts_weights        [B_t+1]     only with use_rab; B_t = num_time_buckets

No other parameters: LayerNorms have no affine part and there is no final norm beyond L2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from gr_core.config import ModelConfig

_LN_EPS = 1e-6
_EMBEDDING_STD = 0.02
_RAB_STD = 0.02
EMBEDDING_PARAMS = ("item_embedding.weight", "position_embedding.weight")


class HSTUBlock(nn.Module):
    """x -> x + W_o Dropout(U * LayerNorm(SiLU-attention(Q, K, V))) + b_o on jagged [T, D]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, h = cfg.embedding_dim, cfg.num_heads
        self.uvqk = nn.Linear(d, 2 * h * cfg.dv + 2 * h * cfg.dqk, bias=False)
        self.output = nn.Linear(h * cfg.dv, d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.pos_weights: nn.Parameter | None = None
        self.ts_weights: nn.Parameter | None = None
        if cfg.use_rab:
            self.pos_weights = nn.Parameter(torch.empty(2 * cfg.max_seq_len - 1).normal_(0.0, _RAB_STD))
            self.ts_weights = nn.Parameter(torch.empty(cfg.num_time_buckets + 1).normal_(0.0, _RAB_STD))
        # Upstream initialises both projections with Xavier-uniform (biases keep nn.Linear's default).
        nn.init.xavier_uniform_(self.uvqk.weight)
        nn.init.xavier_uniform_(self.output.weight)

    def forward(self, x_TD: torch.Tensor, seq_offsets: torch.Tensor, timestamps_T: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        num_tokens, h = x_TD.shape[0], cfg.num_heads
        x_hat = F.layer_norm(x_TD, (cfg.embedding_dim,), eps=_LN_EPS)
        u, v, q, k = torch.split(
            F.silu(self.uvqk(x_hat)), [h * cfg.dv, h * cfg.dv, h * cfg.dqk, h * cfg.dqk], dim=-1
        )
        av_THD = kernels.hstu_attention(
            q.reshape(num_tokens, h, cfg.dqk),
            k.reshape(num_tokens, h, cfg.dqk),
            v.reshape(num_tokens, h, cfg.dv),
            seq_offsets,
            cfg.max_seq_len,
            alpha=1.0,  # HSTU uses no 1/sqrt(d) scaling
            norm=cfg.attn_norm,
            timestamps=timestamps_T if self.ts_weights is not None else None,
            pos_weights=self.pos_weights,
            ts_weights=self.ts_weights,
        )
        av = F.layer_norm(av_THD.reshape(num_tokens, h * cfg.dv), (h * cfg.dv,), eps=_LN_EPS)
        return x_TD + self.output(self.dropout(u * av))


class HSTU(nn.Module):
    """Item-id sequences -> L2-normalised embeddings at every position ([T] ids -> [T, D])."""

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
        self.blocks = nn.ModuleList(HSTUBlock(cfg) for _ in range(cfg.num_blocks))
        with torch.no_grad():
            std = _EMBEDDING_STD
            nn.init.trunc_normal_(self.item_embedding.weight, std=std, a=-2 * std, b=2 * std)
            self.item_embedding.weight[0].zero_()
            # Upstream's learnable-position preprocessor uses std sqrt(1/D), truncated at 2 std.
            std = math.sqrt(1.0 / d)
            nn.init.trunc_normal_(self.position_embedding.weight, std=std, a=-2 * std, b=2 * std)

    def forward(
        self, item_ids_T: torch.Tensor, timestamps_T: torch.Tensor, seq_offsets: torch.Tensor
    ) -> torch.Tensor:
        """item_ids_T, timestamps_T: [T] jagged by seq_offsets [B+1] -> [T, D], unit norm per row."""
        lengths = seq_offsets[1:] - seq_offsets[:-1]
        starts = torch.repeat_interleave(seq_offsets[:-1], lengths)
        positions = torch.arange(item_ids_T.numel(), device=item_ids_T.device) - starts
        x = self.item_embedding(item_ids_T) * math.sqrt(self.cfg.embedding_dim) + self.position_embedding(positions)
        x = self.input_dropout(x)
        for block in self.blocks:
            x = block(x, seq_offsets, timestamps_T)
        return F.normalize(x, dim=-1)

    def item_vectors(self) -> torch.Tensor:
        """All L2-normalised item embeddings [num_items+1, D] (row 0 is padding, never scored)."""
        return F.normalize(self.item_embedding.weight, dim=-1)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """{"embedding", "non_embedding", "total"} parameter counts of a built model."""
    embedding = non_embedding = 0
    for name, p in model.named_parameters():
        if name in EMBEDDING_PARAMS:
            embedding += p.numel()
        else:
            non_embedding += p.numel()
    return {"embedding": embedding, "non_embedding": non_embedding, "total": embedding + non_embedding}
