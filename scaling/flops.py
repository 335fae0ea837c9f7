"""Analytic training FLOPs of an HSTU run, exact over the run's real jagged sequence lengths.

Counting convention (`FLOPS_CONVENTION`, stated in every ledger entry and report):
- matmul FLOPs only, 2 per multiply-add; norms, SiLU, rab lookups, dropout and embedding
  gathers are elementwise work and are not counted;
- attention over each jagged sequence of n tokens counts the full n x n square ("dense-jagged",
  as Chinchilla counts attention; no causal halving); the causal-exact figure (n (n + 1) / 2
  query-key pairs) is reported beside it;
- backward = 2 x forward (every matmul needs the gradient of both operands), so training = 3 x
  forward;
- the sampled-softmax head scores R negatives plus the positive at every supervised position;
- evaluation (full ranking over all items) is counted apart and is not training compute.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gr_core.config import DataConfig, ModelConfig, TrainConfig
from gr_core.lengths import train_sequence_lengths

FLOPS_CONVENTION = (
    "training FLOPs: matmuls only (2 per multiply-add), attention over the full n x n square of "
    "each jagged sequence (dense-jagged), backward = 2 x forward, evaluation excluded"
)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ForwardFlops:
    """Forward matmul FLOPs of one pass over a set of sequences, by component."""

    uvqk: float
    attention_dense: float
    attention_causal: float
    output_projection: float
    head: float

    @property
    def total_dense(self) -> float:
        return self.uvqk + self.attention_dense + self.output_projection + self.head

    @property
    def total_causal(self) -> float:
        return self.uvqk + self.attention_causal + self.output_projection + self.head


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class RunFlops:
    """Training (and, apart, evaluation) FLOPs of one run."""

    train_tokens: int  # supervised positions over all epochs
    forward_per_epoch: ForwardFlops
    epochs: int
    eval_per_pass: float  # one full-ranking pass over all users' eval inputs

    @property
    def train(self) -> float:
        """Training FLOPs in the dense-jagged convention: the x-axis of every scaling curve."""
        return 3.0 * self.epochs * self.forward_per_epoch.total_dense

    @property
    def train_causal(self) -> float:
        return 3.0 * self.epochs * self.forward_per_epoch.total_causal

    @property
    def attention_fraction(self) -> float:
        fwd = self.forward_per_epoch
        return (fwd.attention_dense) / max(fwd.total_dense - fwd.head, 1.0)

    def to_dict(self) -> dict[str, float | str]:
        fwd = self.forward_per_epoch
        return {
            "train": self.train,
            "train_causal": self.train_causal,
            "train_tokens": float(self.train_tokens),
            "forward_per_epoch_uvqk": fwd.uvqk,
            "forward_per_epoch_attention_dense": fwd.attention_dense,
            "forward_per_epoch_attention_causal": fwd.attention_causal,
            "forward_per_epoch_output_projection": fwd.output_projection,
            "forward_per_epoch_head": fwd.head,
            "eval_per_pass": self.eval_per_pass,
            "convention": FLOPS_CONVENTION,
        }


def forward_flops(
    lengths: np.ndarray, model: ModelConfig, *, head_candidates: int
) -> ForwardFlops:
    """Forward matmul FLOPs of the encoder over sequences of the given `lengths`.

    `head_candidates` is the number of items scored per supervised position (R + 1 in training).
    """
    n = np.asarray(lengths, dtype=np.float64)
    tokens = float(n.sum())
    pairs_dense = float((n * n).sum())
    pairs_causal = float((n * (n + 1) / 2).sum())
    d, h, dqk, dv, layers = model.embedding_dim, model.num_heads, model.dqk, model.dv, model.num_blocks
    return ForwardFlops(
        uvqk=layers * 2.0 * tokens * d * (2 * h * dv + 2 * h * dqk),
        attention_dense=layers * 2.0 * pairs_dense * h * (dqk + dv),
        attention_causal=layers * 2.0 * pairs_causal * h * (dqk + dv),
        output_projection=layers * 2.0 * tokens * h * dv * d,
        head=2.0 * tokens * d * head_candidates,
    )


def run_flops(
    data: DataConfig, model: ModelConfig, train: TrainConfig, *, lengths: np.ndarray | None = None
) -> RunFlops:
    """Exact FLOPs of a training run, from the data set's real per-user training lengths.

    `lengths` (from `gr_core.lengths.train_sequence_lengths`) may be passed to share one draw
    between runs over the same data.
    """
    if lengths is None:
        lengths = train_sequence_lengths(data, model.max_seq_len)
    per_epoch = forward_flops(lengths, model, head_candidates=train.num_negatives + 1)
    # Evaluation: the encoder over each user's eval input (one item longer than training, capped
    # at max_seq_len) scored at its last position against every item.
    eval_lengths = np.minimum(lengths + 1, model.max_seq_len)
    eval_encoder = forward_flops(eval_lengths, model, head_candidates=0)
    eval_scoring = 2.0 * len(eval_lengths) * model.embedding_dim * data.num_items
    return RunFlops(
        train_tokens=int(lengths.sum()) * train.epochs,
        forward_per_epoch=per_epoch,
        epochs=train.epochs,
        eval_per_pass=eval_encoder.total_dense + eval_scoring,
    )
