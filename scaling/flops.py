"""Analytic training FLOPs of a run of any model family, exact over the run's real jagged lengths.

The encoder's forward matmul FLOPs come from its family (`gr_core.families`, `Family.matmul_costs`)
as named components, each per token plus per (query, key) pair: HSTU reports its uvqk
projection, attention and output projection, SASRec its QKV projection, attention, output
projection and FFN. This module adds what every family shares: the sampled-softmax head
(2 D (R + 1) per supervised position), the ranking task's head (`gr_core.ranking`: 2 (3D) D + 2 D
per scored position), evaluation, and the pair convention below. Lengths are after Stochastic
Length (`gr_core.lengths.train_sequence_lengths`).

Counting convention (`FLOPS_CONVENTION`, stated in every ledger entry and report):
- matmul FLOPs only, 2 per multiply-add; norms, SiLU, rab lookups, dropout and embedding
  gathers are elementwise work and are not counted in `train` (they are estimated apart by
  `scaling.elementwise` and listed beside it, see `ELEMENTWISE_CONVENTION`);
- attention over each jagged sequence of n tokens counts the full n x n square ("dense-jagged",
  as Chinchilla counts attention; no causal halving); the causal-exact figure (n (n + 1) / 2
  query-key pairs) is reported beside it;
- backward = 2 x forward (every matmul needs the gradient of both operands), so training = 3 x
  forward;
- the sampled-softmax head scores R negatives plus the positive at every supervised position;
- evaluation (full ranking over all items) is counted apart and is not training compute: the
  trainer evaluates every `eval_every` epochs and after the last one, each time one validation and
  one test pass, so a run makes 2 x evaluations passes.

Figures per run (`train`), per epoch, per step and per token are all reported; "per step" is the
mean over the epoch's steps (the last batch of an epoch may be short), and, for intuition, a full
batch of `batch_size` sequences all of the mean length (`train_per_step_at_mean_length`; it
undercounts attention, since mean(n)^2 <= mean(n^2)).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from gr_core.config import DataConfig, ModelConfig, TrainConfig
from gr_core.families import FAMILIES
from gr_core.lengths import dataset_event_counts, dataset_num_items, split_lengths, train_sequence_lengths
from scaling.elementwise import ELEMENTWISE_CONVENTION, ElementwiseFlops, elementwise_flops, ranking_flops

FLOPS_CONVENTION = (
    "training FLOPs: matmuls only (2 per multiply-add), attention over the full n x n square of "
    "each jagged sequence (dense-jagged), backward = 2 x forward, evaluation excluded"
)


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ForwardFlops:
    """Forward matmul FLOPs of one pass over a set of sequences, by component.

    encoder: the family's components (`Family.matmul_costs`, e.g. "uvqk_projection",
    "attention"), pairs counted dense-jagged; encoder_causal: the same with causal-exact pairs.
    attention_dense / attention_causal: the part of the encoder that grows with (query, key)
    pairs (attention in Kaplan's sense). head: the sampled-softmax logits; ranking_head: the
    ranking task's head.
    """

    encoder: dict[str, float]
    encoder_causal: dict[str, float]
    attention_dense: float
    attention_causal: float
    head: float
    ranking_head: float = 0.0

    @property
    def total_dense(self) -> float:
        return sum(self.encoder.values()) + self.head + self.ranking_head

    @property
    def total_causal(self) -> float:
        return sum(self.encoder_causal.values()) + self.head + self.ranking_head


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class RunFlops:
    """Training (and, apart, evaluation) FLOPs of one run. All matmul figures unless named elementwise."""

    train_tokens: int  # supervised positions over all epochs
    forward_per_epoch: ForwardFlops
    epochs: int
    eval_per_pass: float  # one validation pass: encoder over all users' inputs + full-ranking scores
    eval_test_per_pass: float  # one test pass (inputs one item longer than validation's)
    evaluations: int  # evaluation rounds (each = one validation + one test pass)
    steps_per_epoch: int
    step_at_mean_length: ForwardFlops  # one full batch, every sequence of the mean training length
    mean_length: float  # mean training input length over users with a training input
    elementwise_forward_per_epoch: ElementwiseFlops
    eval_elementwise_per_evaluation: float  # validation + test, encoder and ranking
    # Ranking task: the target-aware validation + test passes (encoder + head) of one evaluation.
    eval_ranking_per_evaluation: float = 0.0

    @property
    def train(self) -> float:
        """Training FLOPs in the dense-jagged convention: the x-axis of every scaling curve."""
        return 3.0 * self.epochs * self.forward_per_epoch.total_dense

    @property
    def train_causal(self) -> float:
        return 3.0 * self.epochs * self.forward_per_epoch.total_causal

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def train_per_token(self) -> float:
        return self.train / self.train_tokens if self.train_tokens else 0.0

    @property
    def train_per_step(self) -> float:
        """Mean training FLOPs of one optimizer step (exact: the epoch's total over its steps)."""
        return self.train / self.steps if self.steps else 0.0

    @property
    def train_per_step_at_mean_length(self) -> float:
        return 3.0 * self.step_at_mean_length.total_dense

    @property
    def elementwise_train(self) -> float:
        """Approximate non-matmul training FLOPs (3 x forward); not part of `train`."""
        return 3.0 * self.epochs * self.elementwise_forward_per_epoch.total

    @property
    def eval_passes(self) -> int:
        return 2 * self.evaluations

    @property
    def eval_total(self) -> float:
        """Matmul FLOPs of all evaluation passes of the run; not part of `train`."""
        return self.evaluations * (self.eval_per_pass + self.eval_test_per_pass + self.eval_ranking_per_evaluation)

    @property
    def eval_elementwise_total(self) -> float:
        return self.evaluations * self.eval_elementwise_per_evaluation

    @property
    def attention_fraction(self) -> float:
        fwd = self.forward_per_epoch
        return (fwd.attention_dense) / max(fwd.total_dense - fwd.head - fwd.ranking_head, 1.0)

    def to_dict(self) -> dict[str, float | str]:
        """Flat JSON-able figures, as stored in the ledger and logged to W&B (keys are stable)."""
        fwd = self.forward_per_epoch
        out: dict[str, float | str] = {
            "train": self.train,
            "train_causal": self.train_causal,
            "train_tokens": float(self.train_tokens),
            "train_per_token": self.train_per_token,
            "train_per_step": self.train_per_step,
            "train_per_step_at_mean_length": self.train_per_step_at_mean_length,
            "steps": float(self.steps),
            "steps_per_epoch": float(self.steps_per_epoch),
            "mean_length": self.mean_length,
            "attention_fraction": self.attention_fraction,
            # The family's components by name (`Family.matmul_costs`), then the shared figures.
            **{f"forward_per_epoch_{name}": value for name, value in fwd.encoder.items()},
            "forward_per_epoch_attention_dense": fwd.attention_dense,
            "forward_per_epoch_attention_causal": fwd.attention_causal,
            "forward_per_epoch_head": fwd.head,
            "forward_per_epoch_ranking_head": fwd.ranking_head,
            "eval_per_pass": self.eval_per_pass,
            "eval_test_per_pass": self.eval_test_per_pass,
            "eval_passes": float(self.eval_passes),
            "eval_ranking_per_evaluation": self.eval_ranking_per_evaluation,
            "eval_total": self.eval_total,
            "elementwise_train": self.elementwise_train,
            "elementwise_eval_total": self.eval_elementwise_total,
        }
        for name, value in self.elementwise_forward_per_epoch.to_dict().items():
            out[f"elementwise_forward_per_epoch_{name}"] = value
        out["convention"] = FLOPS_CONVENTION
        out["elementwise_convention"] = ELEMENTWISE_CONVENTION
        return out


def num_evaluations(epochs: int, eval_every: int) -> int:
    """Evaluation rounds of `gr_core.trainer.train_run`: every `eval_every` epochs and after the last."""
    return epochs // eval_every + (1 if epochs % eval_every else 0)


def forward_flops(
    lengths: np.ndarray, model: ModelConfig, *, head_candidates: int, ranking: bool = False
) -> ForwardFlops:
    """Forward matmul FLOPs of the encoder over sequences of the given `lengths`.

    `head_candidates` is the number of items scored per supervised position (R + 1 in training,
    0 without the retrieval loss); `ranking` adds the ranking head at every position.
    """
    n = np.asarray(lengths, dtype=np.float64)
    tokens = float(n.sum())
    pairs_dense = float((n * n).sum())
    pairs_causal = float((n * (n + 1) / 2).sum())
    d = model.embedding_dim
    costs = FAMILIES[model.family].matmul_costs(model)
    return ForwardFlops(
        encoder={name: cost.flops(tokens, pairs_dense) for name, cost in costs.items()},
        encoder_causal={name: cost.flops(tokens, pairs_causal) for name, cost in costs.items()},
        attention_dense=sum(cost.per_pair * pairs_dense for cost in costs.values()),
        attention_causal=sum(cost.per_pair * pairs_causal for cost in costs.values()),
        head=2.0 * tokens * d * head_candidates,
        ranking_head=tokens * (2.0 * 3 * d * d + 2.0 * d) if ranking else 0.0,
    )


def _eval_pass(lengths: np.ndarray, model: ModelConfig, num_items: int) -> tuple[float, float]:
    """(matmul, elementwise) FLOPs of one full-ranking pass over inputs of the given lengths.

    The encoder runs over every input position; the last position of each sequence is scored
    against the whole item table including its padding row 0 (`gr_core.metrics.evaluate`:
    [B, D] @ [D, num_items + 1]), so scoring is 2 * D * (num_items + 1) per sequence.
    """
    lengths = lengths[lengths > 0]  # evaluation skips users without an input
    encoder = forward_flops(lengths, model, head_candidates=0)
    scoring = 2.0 * len(lengths) * model.embedding_dim * (num_items + 1)
    elementwise = elementwise_flops(
        lengths, model, head_candidates=0, num_items=num_items, item_table_norms=1, training=False
    ).total + ranking_flops(len(lengths), num_items)
    return encoder.total_dense + scoring, elementwise


def _ranking_eval_pass(lengths: np.ndarray, model: ModelConfig) -> float:
    """Matmul FLOPs of one target-aware pass: the encoder, then the head at each last position."""
    lengths = lengths[lengths > 0]
    encoder = forward_flops(lengths, model, head_candidates=0)
    return encoder.total_dense + len(lengths) * (2.0 * 3 * model.embedding_dim**2 + 2.0 * model.embedding_dim)


def run_flops(
    data: DataConfig, model: ModelConfig, train: TrainConfig, *, lengths: np.ndarray | None = None
) -> RunFlops:
    """Exact FLOPs of a training run, from the data set's real per-user training lengths.

    `lengths` (from `gr_core.lengths.train_sequence_lengths`, i.e. after Stochastic Length) may be
    passed to share one draw between runs over the same data. Training counts the sampled-softmax
    head with the retrieval loss and the ranking head with the ranking loss (`train.task`).
    An early stop (`train.patience`) ends a run before these planned FLOPs are spent.
    """
    if lengths is None:
        lengths = train_sequence_lengths(data, model.max_seq_len)
    lengths = np.asarray(lengths, dtype=np.int64)
    num_items = dataset_num_items(data)
    candidates = train.num_negatives + 1 if train.retrieval else 0
    per_epoch = forward_flops(lengths, model, head_candidates=candidates, ranking=train.ranking)
    active = lengths[lengths > 0]  # train_batches skips users without a training input
    steps_per_epoch = math.ceil(active.size / train.batch_size)
    mean_length = float(active.mean()) if active.size else 0.0
    step_at_mean = forward_flops(
        np.full(min(train.batch_size, active.size), mean_length), model, head_candidates=candidates,
        ranking=train.ranking,
    )
    elementwise = elementwise_flops(
        lengths, model, head_candidates=candidates, num_items=num_items,
        item_table_norms=steps_per_epoch, training=True, ranking=train.ranking,
    )
    # Evaluation inputs (`gr_core.lengths.CUTS`) from the event counts: Stochastic Length only
    # shortens training inputs. Target-aware (ranking) inputs end with the target: one event longer.
    counts = dataset_event_counts(data)
    val_len, test_len = (split_lengths(counts, split, model.max_seq_len) for split in ("val", "test"))
    val = test = val_elementwise = test_elementwise = ranking_eval = 0.0
    if train.retrieval:
        val, val_elementwise = _eval_pass(val_len, model, num_items)
        test, test_elementwise = _eval_pass(test_len, model, num_items)
    if train.ranking:
        for split_len in (val_len, test_len):
            aware = np.where(split_len > 0, np.minimum(split_len + 1, model.max_seq_len), 0)
            ranking_eval += _ranking_eval_pass(aware, model)
    return RunFlops(
        train_tokens=int(lengths.sum()) * train.epochs,
        forward_per_epoch=per_epoch,
        epochs=train.epochs,
        eval_per_pass=val,
        eval_test_per_pass=test,
        evaluations=num_evaluations(train.epochs, train.eval_every),
        steps_per_epoch=steps_per_epoch,
        step_at_mean_length=step_at_mean,
        mean_length=mean_length,
        elementwise_forward_per_epoch=elementwise,
        eval_elementwise_per_evaluation=val_elementwise + test_elementwise,
        eval_ranking_per_evaluation=ranking_eval,
    )
