r"""Sufficient statistics for class-similarity estimation, accumulated batch by batch.

One pass over a held-out split adds every batch into a :class:`SimilarityStats`
with :func:`update_stats` inside the jitted evaluation step. Every sum is a
scatter-add of the batch into the rows of its labels (``.at[rows].add``), so
a batch costs O(B C) (O(B D) for features), not the C x C x B of a one-hot
product; under ``jax.jit`` with the batch sharded over a ``('data',)`` mesh
(``Auto`` or ``Explicit`` axes, one host or many) XLA adds the per-device
partial sums with an all-reduce and the totals come back replicated; the
caller writes nothing extra. Counts are exact integers in float32 (up to
2^24 per entry); probability and feature sums agree across device counts to
float32 rounding (the order of the additions differs; accelerators' scatter
may also add in a different order from run to run).

For a batch with logits :math:`z_i`, labels :math:`y_i`, predictions
:math:`\hat y_i = \arg\max_j z_{ij}`, probabilities
:math:`p_i = \mathrm{softmax}(z_i)`, features :math:`h_i` and mask
:math:`m_i \in \{0, 1\}`:

.. math::

  \mathrm{confusion}_{yk} &= \textstyle\sum_i m_i [y_i = y][\hat y_i = k] \\
  \mathrm{prob\_sum}_{y} &= \textstyle\sum_i m_i [y_i = y]\, p_i \\
  \mathrm{prob\_sum\_correct}_{y} &= \textstyle\sum_i m_i [y_i = y][\hat y_i = y]\, p_i \\
  \mathrm{count}_y &= \textstyle\sum_i m_i [y_i = y], \quad
  \mathrm{count\_correct}_y = \textstyle\sum_i m_i [y_i = y][\hat y_i = y] \\
  \mathrm{feature\_sum}_y &= \textstyle\sum_i m_i [y_i = y]\, h_i

Labels outside ``[0, C)`` contribute nothing (their row index is out of bounds and dropped).
"""

from __future__ import annotations

import functools
import numbers

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec
from jax.typing import ArrayLike

__all__ = ["SimilarityStats", "init_stats", "update_stats", "merge_stats"]


@flax.struct.dataclass
class SimilarityStats:
  """Per-class sums over the samples seen so far; all float32.

  Attributes:
    confusion: [C, C]; row = true class y, column = argmax prediction.
    prob_sum: [C, C]; row y = sum of softmax probabilities over class-y samples.
    prob_sum_correct: [C, C]; as ``prob_sum``, correctly classified samples only.
    count: [C]; number of class-y samples.
    count_correct: [C]; number of correctly classified class-y samples.
    feature_sum: [C, D]; row y = sum of penultimate features of class-y
      samples (D = 0 when features are not collected).
  """

  confusion: jax.Array
  prob_sum: jax.Array
  prob_sum_correct: jax.Array
  count: jax.Array
  count_correct: jax.Array
  feature_sum: jax.Array

  @property
  def num_classes(self) -> int:
    return self.count.shape[0]

  @property
  def feature_dim(self) -> int:
    return self.feature_sum.shape[1]


def init_stats(num_classes: int, feature_dim: int = 0) -> SimilarityStats:
  """Zero statistics for `num_classes` classes and `feature_dim`-wide features."""
  if (
      not isinstance(num_classes, numbers.Integral)
      or isinstance(num_classes, bool)
      or num_classes < 1
  ):
    raise ValueError(
        f"`num_classes` must be a positive int, got {num_classes!r}."
    )
  if (
      not isinstance(feature_dim, numbers.Integral)
      or isinstance(feature_dim, bool)
      or feature_dim < 0
  ):
    raise ValueError(
        f"`feature_dim` must be a non-negative int, got {feature_dim!r}."
    )
  c, d = int(num_classes), int(feature_dim)
  zeros = lambda *shape: jnp.zeros(shape, jnp.float32)
  return SimilarityStats(
      confusion=zeros(c, c),
      prob_sum=zeros(c, c),
      prob_sum_correct=zeros(c, c),
      count=zeros(c),
      count_correct=zeros(c),
      feature_sum=zeros(c, d),
  )


def _replicated(batch: jax.Array) -> NamedSharding | None:
  """Replicated on `batch`'s mesh when its axes are Explicit (a scatter with
  batch-sharded indices needs its output sharding spelled out there); None
  for Auto axes and single devices."""
  sharding = jax.typeof(batch).sharding
  if (
      isinstance(sharding, NamedSharding)
      and AxisType.Explicit in sharding.mesh.axis_types
  ):
    return NamedSharding(sharding.mesh, PartitionSpec())
  return None


def update_stats(
    stats: SimilarityStats,
    logits: jax.Array,
    labels: ArrayLike,
    features: jax.Array | None = None,
    mask: ArrayLike | None = None,
) -> SimilarityStats:
  """Adds one batch to `stats`; pure and jit-able.

  Args:
    stats: running statistics for C classes and D-wide features.
    logits: float [B, C].
    labels: int [B].
    features: float [B, D] penultimate features; required when D > 0 and
      not allowed when D = 0.
    mask: [B] of 0/1 (bool, int or float), or None for all ones. Samples with
      mask 0 (padding) change nothing, even if their logits are not finite.

  Returns:
    The updated statistics (same shapes, float32).
  """
  c, d = stats.num_classes, stats.feature_dim
  if jnp.ndim(logits) != 2 or jnp.shape(logits)[1] != c:
    raise ValueError(
        f"`logits` must be [B, {c}], got shape {jnp.shape(logits)}."
    )
  if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
    raise TypeError(
        f"`logits` must be floating point, got {jnp.result_type(logits)}."
    )
  b = jnp.shape(logits)[0]
  if jnp.shape(labels) != (b,):
    raise ValueError(
        f"`labels` must be [B] = [{b}], got shape {jnp.shape(labels)}."
    )
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise TypeError(
        f"`labels` must be integer class indices, got {jnp.result_type(labels)}."
    )
  if features is None and d > 0:
    raise ValueError(
        f"`features` is None but the stats collect D = {d} features."
    )
  if features is not None and jnp.shape(features) != (b, d):
    raise ValueError(
        f"`features` must be [B, D] = [{b}, {d}] (D from init_stats), got shape "
        f"{jnp.shape(features)}."
    )
  if mask is not None and jnp.shape(mask) != (b,):
    raise ValueError(
        f"`mask` must be [B] = [{b}], got shape {jnp.shape(mask)}."
    )

  valid = jnp.ones((b,), bool) if mask is None else jnp.asarray(mask) != 0
  labels = jnp.asarray(labels)
  valid &= (labels >= 0) & (labels < c)
  logits = logits.astype(jnp.float32)
  probs = jnp.where(valid[:, None], jax.nn.softmax(logits, axis=-1), 0.0)
  pred = jnp.argmax(logits, axis=-1)
  # Row of each sample; C (out of bounds, dropped) for masked or invalid ones.
  row = jnp.where(valid, labels, c)
  row_correct = jnp.where(pred == labels, row, c)
  add = functools.partial(_scatter_add, out_sharding=_replicated(logits))

  feature_sum = stats.feature_sum
  if d > 0:
    feats = jnp.where(valid[:, None], features.astype(jnp.float32), 0.0)
    feature_sum = add(feature_sum, row, feats)
  return SimilarityStats(
      confusion=add(stats.confusion, (row, pred), 1.0),
      prob_sum=add(stats.prob_sum, row, probs),
      prob_sum_correct=add(stats.prob_sum_correct, row_correct, probs),
      count=add(stats.count, row, 1.0),
      count_correct=add(stats.count_correct, row_correct, 1.0),
      feature_sum=feature_sum,
  )


def _scatter_add(total, index, values, *, out_sharding):
  """total.at[index].add(values), O(B x row length); out-of-bounds rows dropped."""
  return total.at[index].add(
      jnp.asarray(values, total.dtype), mode="drop", out_sharding=out_sharding
  )


def merge_stats(a: SimilarityStats, b: SimilarityStats) -> SimilarityStats:
  """Elementwise sum of two statistics of the same shapes (e.g. two splits)."""
  if jax.tree.map(jnp.shape, a) != jax.tree.map(jnp.shape, b):
    raise ValueError(
        f"cannot merge stats of different shapes: C={a.num_classes}, D={a.feature_dim} "
        f"vs C={b.num_classes}, D={b.feature_dim}."
    )
  return jax.tree.map(jnp.add, a, b)
