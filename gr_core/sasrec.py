"""SASRec baseline (Kang & McAuley, ICDM'18) as upstream GR trains it, over jagged batches.

Block (upstream generative_recommenders/research/modeling/sequential/sasrec.py, which keeps the
public SASRec code's layout: LayerNorm on the query only, then LayerNorm before the FFN; neither
pure pre-LN nor post-LN):

    Q   = LN(x)                                  (no affine, eps 1e-8, as upstream)
    a   = softmax-attention(Q W_q + b_q, x W_k + b_k, x W_v + b_v), causal, 1/sqrt(d) scaled,
          dropout on the probabilities; heads of width D / H
    y   = LN(Q + a W_o + b_o)
    x'  = y + Dropout(W_2 Dropout(ReLU(W_1 y + b_1)) + b_2)      (FFN hidden = ffn_dim, D by default)

The input (x * sqrt(D) + positions, dropout), the L2-normalised output (upstream's SASRec for GR
has no final LayerNorm; its output post-processor is the L2 norm), the sampled-softmax loss with
the same negatives and the evaluation are HSTU's (`gr_core.encoder`, `gr_core.trainer`), so the
two are compared like for like. Attention runs through `gr_core.softmax_attention` (padded inside
the op only). Initialisation as upstream: Xavier-normal on every weight matrix (the QKV
projection initialised as one [3D, D] matrix, as nn.MultiheadAttention's in_proj), zero
attention biases, default nn.Linear biases in the FFN.

The torch module of the SASRec family; its options, parameter and FLOP formulas are in
`gr_core.families.sasrec`, which builds it. Parameter names (F = the FFN width), per block i,
4 D^2 + 5 D + 2 D F + F:
  blocks.{i}.q_proj.weight [D, D], .bias [D]; blocks.{i}.kv_proj.weight [2D, D], .bias [2D]
  blocks.{i}.out_proj.weight [D, D], .bias [D]
  blocks.{i}.ffn_in.weight [F, D], .bias [F]; blocks.{i}.ffn_out.weight [D, F], .bias [D]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gr_core.config import ModelConfig
from gr_core.encoder import SequenceEncoder
from gr_core.families.sasrec import ffn_dim, options_of
from gr_core.softmax_attention import jagged_softmax_attention

_LN_EPS = 1e-8


class SASRecBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, f = cfg.embedding_dim, ffn_dim(cfg)
        self.q_proj = nn.Linear(d, d)
        self.kv_proj = nn.Linear(d, 2 * d)
        self.out_proj = nn.Linear(d, d)
        self.ffn_in = nn.Linear(d, f)
        self.ffn_out = nn.Linear(f, d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.activation = F.gelu if options_of(cfg).ffn_activation == "gelu" else F.relu
        with torch.no_grad():
            in_proj = nn.init.xavier_normal_(torch.empty(3 * d, d))
            self.q_proj.weight.copy_(in_proj[:d])
            self.kv_proj.weight.copy_(in_proj[d:])
            for bias in (self.q_proj.bias, self.kv_proj.bias, self.out_proj.bias):
                bias.zero_()
            for linear in (self.out_proj, self.ffn_in, self.ffn_out):
                nn.init.xavier_normal_(linear.weight)

    def forward(self, x_TD: torch.Tensor, seq_offsets: torch.Tensor) -> torch.Tensor:
        d, h = self.cfg.embedding_dim, self.cfg.num_heads
        num_tokens = x_TD.shape[0]
        query = F.layer_norm(x_TD, (d,), eps=_LN_EPS)
        k, v = self.kv_proj(x_TD).chunk(2, dim=-1)
        a = jagged_softmax_attention(
            self.q_proj(query).reshape(num_tokens, h, d // h),
            k.reshape(num_tokens, h, d // h),
            v.reshape(num_tokens, h, d // h),
            seq_offsets,
            dropout_p=self.cfg.dropout if self.training else 0.0,
        )
        y = F.layer_norm(query + self.out_proj(a.reshape(num_tokens, d)), (d,), eps=_LN_EPS)
        return y + self.dropout(self.ffn_out(self.dropout(self.activation(self.ffn_in(y)))))


class SASRec(SequenceEncoder):
    """Item-id sequences -> L2-normalised embeddings at every position; timestamps are unused."""

    def __init__(self, cfg: ModelConfig, num_items: int) -> None:
        options_of(cfg)  # a ValueError unless cfg is a SASRec config
        super().__init__(cfg, num_items)
        self.blocks = nn.ModuleList(SASRecBlock(cfg) for _ in range(cfg.num_blocks))

    def encode(
        self, x_TD: torch.Tensor, seq_offsets: torch.Tensor, timestamps_T: torch.Tensor,
        request_timestamps_B: torch.Tensor | None,
    ) -> torch.Tensor:
        del timestamps_T, request_timestamps_B  # SASRec has no time features
        for block in self.blocks:
            x_TD = block(x_TD, seq_offsets)
        return x_TD
