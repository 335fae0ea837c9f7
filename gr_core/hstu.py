"""HSTU encoder (DESIGN.md section 2) over jagged batches.

The torch module of the HSTU family; its options, parameter and FLOP formulas are in
`gr_core.families.hstu`, which builds it. Parameter names (stable: the family module counts
them analytically; D = embedding_dim,
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
(`ranking_head.*` is added by `gr_core.encoder.build_model` for the ranking task.)

As upstream (generative_recommenders/research/modeling/sequential/hstu.py): uvqk ~ N(0, 0.02),
W_o Xavier-uniform with nn.Linear's default bias init, rab weights ~ N(0, 0.02); LayerNorm eps
1e-6; dropout on the input embedding and on U * LN(AV) before W_o (none inside the attention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import kernels
from kernels.hstu_attention import batch_scope
from gr_core.config import ModelConfig
from gr_core.encoder import EMBEDDING_PARAMS, SequenceEncoder, count_parameters
from gr_core.families.hstu import head_dims, options_of

_LN_EPS = 1e-6
_UVQK_STD = 0.02
_RAB_STD = 0.02

__all__ = ["EMBEDDING_PARAMS", "HSTU", "HSTUBlock", "count_parameters"]


class HSTUBlock(nn.Module):
    """x -> x + W_o Dropout(U * LayerNorm(SiLU-attention(Q, K, V))) + b_o on jagged [T, D]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.opts = options_of(cfg)
        self.dqk, self.dv = head_dims(cfg)
        d, h = cfg.embedding_dim, cfg.num_heads
        self.uvqk = nn.Linear(d, 2 * h * self.dv + 2 * h * self.dqk, bias=False)
        self.output = nn.Linear(h * self.dv, d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.pos_weights: nn.Parameter | None = None
        self.ts_weights: nn.Parameter | None = None
        if self.opts.use_rab:
            self.pos_weights = nn.Parameter(torch.empty(2 * cfg.max_seq_len - 1).normal_(0.0, _RAB_STD))
            self.ts_weights = nn.Parameter(torch.empty(self.opts.num_time_buckets + 1).normal_(0.0, _RAB_STD))
        nn.init.normal_(self.uvqk.weight, 0.0, _UVQK_STD)
        nn.init.xavier_uniform_(self.output.weight)

    def forward(
        self, x_TD: torch.Tensor, seq_offsets: torch.Tensor, timestamps_T: torch.Tensor,
        request_timestamps_B: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cfg, dqk, dv = self.cfg, self.dqk, self.dv
        num_tokens, h = x_TD.shape[0], cfg.num_heads
        x_hat = F.layer_norm(x_TD, (cfg.embedding_dim,), eps=_LN_EPS)
        u, v, q, k = torch.split(F.silu(self.uvqk(x_hat)), [h * dv, h * dv, h * dqk, h * dqk], dim=-1)
        av_THD = kernels.hstu_attention(
            q.reshape(num_tokens, h, dqk),
            k.reshape(num_tokens, h, dqk),
            v.reshape(num_tokens, h, dv),
            seq_offsets,
            cfg.max_seq_len,
            alpha=1.0,  # HSTU uses no 1/sqrt(d) scaling
            norm=self.opts.attn_norm,
            timestamps=timestamps_T if self.ts_weights is not None else None,
            pos_weights=self.pos_weights,
            ts_weights=self.ts_weights,
            request_timestamps=request_timestamps_B if self.ts_weights is not None else None,
            impl=self.opts.attention_impl,
        )
        av = F.layer_norm(av_THD.reshape(num_tokens, h * dv), (h * dv,), eps=_LN_EPS)
        return x_TD + self.output(self.dropout(u * av))


class HSTU(SequenceEncoder):
    """Item-id sequences -> L2-normalised embeddings at every position ([T] ids -> [T, D])."""

    def __init__(self, cfg: ModelConfig, num_items: int) -> None:
        options_of(cfg)  # a ValueError unless cfg is an HSTU config
        super().__init__(cfg, num_items)
        self.blocks = nn.ModuleList(HSTUBlock(cfg) for _ in range(cfg.num_blocks))

    def encode(
        self, x_TD: torch.Tensor, seq_offsets: torch.Tensor, timestamps_T: torch.Tensor,
        request_timestamps_B: torch.Tensor | None,
    ) -> torch.Tensor:
        with batch_scope():  # the blocks share the batch's attention time tables
            for block in self.blocks:
                x_TD = block(x_TD, seq_offsets, timestamps_T, request_timestamps_B)
        return x_TD
