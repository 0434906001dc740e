r"""Class-similarity-aware classification losses, in the style of optax's losses.

Every loss is a pure function: arrays in, one value per example out (no
reduction). Options are keyword-only. The similarity matrix ``S`` ([C, C],
row ``y`` = how similar each class is to class ``y``) is an ordinary array
argument, so a jitted loss takes a new ``S`` of the same shape without
recompiling.

Two forms (Negi, Chan and Mahoor, arXiv 1812.09744; Kobs et al. 2020):

* soft-target cross-entropy, :func:`similarity_cross_entropy`:
  :math:`-\sum_j t_j \log p_j` with
  :math:`t = (1-\alpha)\,\mathrm{onehot}(y) + \alpha R_y`, where ``R`` is ``S``
  with rows normalised to sum to one;
* SimLoss, :func:`similarity_log_loss`: :math:`-\log \sum_j S_{yj} p_j`.

Both reduce to plain cross-entropy for ``S = I``. Logits may be float32 or
bfloat16; the arithmetic runs in at least float32 and the losses are float32
(float64 under ``jax_enable_x64`` with float64 logits).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "similarity_targets",
    "similarity_cross_entropy",
    "similarity_log_loss",
    "validate_similarity",
]


def _check_labels(labels, name: str = "labels") -> None:
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise TypeError(
        f"`{name}` must hold integer class indices, got dtype "
        f"{jnp.result_type(labels)}."
    )


def _check_similarity(similarity, num_classes: int) -> None:
  shape = jnp.shape(similarity)
  if shape != (num_classes, num_classes):
    raise ValueError(
        f"`similarity` must be [C, C] with C = {num_classes} (the size of the "
        f"class axis), got shape {shape}."
    )
  if not (
      jnp.issubdtype(jnp.result_type(similarity), jnp.floating)
      or jnp.issubdtype(jnp.result_type(similarity), jnp.integer)
  ):
    raise TypeError(
        f"`similarity` must be a real-valued array, got dtype "
        f"{jnp.result_type(similarity)}."
    )


def _check_inputs(logits, labels, similarity, where):
  """Trace-time checks shared by the losses. Returns the compute dtype."""
  if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
    raise TypeError(
        f"`logits` must be floating point, got dtype {jnp.result_type(logits)}."
    )
  _check_labels(labels)
  logits_shape, labels_shape = jnp.shape(logits), jnp.shape(labels)
  if len(logits_shape) < 1 or logits_shape[:-1] != labels_shape:
    raise ValueError(
        "`logits` must be [..., C] and `labels` [...] with the same batch "
        f"shape, got logits {logits_shape} and labels {labels_shape}."
    )
  _check_similarity(similarity, logits_shape[-1])
  if where is not None and jnp.shape(where) != labels_shape:
    raise ValueError(
        f"`where` must have the batch shape of `labels` {labels_shape}, got "
        f"{jnp.shape(where)}."
    )
  return jnp.promote_types(jnp.result_type(logits), jnp.float32)


def _rows_of(labels, matrix: jax.Array) -> jax.Array:
  """matrix[labels] as a one-hot matmul: [...] x [C, C] -> [..., C].

  A gather with batch-sharded indices has no unambiguous output sharding under
  explicit-sharding meshes; the matmul keeps the batch sharding of `labels`.
  HIGHEST precision keeps float32 rows exact on TPU/GPU (default is bf16 passes).
  """
  onehot = jax.nn.one_hot(labels, matrix.shape[0], dtype=matrix.dtype)
  return jnp.matmul(onehot, matrix, precision=jax.lax.Precision.HIGHEST)


def _apply_where(loss: jax.Array, where) -> jax.Array:
  if where is None:
    return loss
  return jnp.where(jnp.asarray(where, bool), loss, jnp.zeros_like(loss))


def similarity_targets(labels, similarity, *, alpha=1.0) -> jax.Array:
  r"""Soft targets built from a class-similarity matrix.

  .. math::
    t_i = (1 - \alpha)\,\mathrm{onehot}(y_i) + \alpha\, R_{y_i}, \qquad
    R_{yj} = \frac{S_{yj}}{\sum_k S_{yk}}

  Args:
    labels: int [...], class indices in ``[0, C)``.
    similarity: [C, C] non-negative matrix ``S``; no row may sum to zero.
    alpha: weight of the similarity row (scalar, may be traced). ``alpha = 0``
      gives one-hot targets; ``S = 1`` (all ones) gives label smoothing.

  Returns:
    float [..., C], each row a probability distribution.

  Example:
    >>> import jax.numpy as jnp
    >>> S = jnp.array([[2., 1., 1.], [0., 1., 0.], [1., 1., 2.]])
    >>> similarity_targets(jnp.array([0]), S, alpha=0.5)
    Array([[0.75 , 0.125, 0.125]], dtype=float32)
  """
  _check_labels(labels)
  shape = jnp.shape(similarity)
  if len(shape) != 2 or shape[0] != shape[1]:
    raise ValueError(f"`similarity` must be a square [C, C] matrix, got {shape}.")
  _check_similarity(similarity, shape[0])
  dtype = jnp.promote_types(jnp.result_type(similarity), jnp.float32)
  similarity = jnp.asarray(similarity, dtype)
  rows = similarity / jnp.sum(similarity, axis=-1, keepdims=True)
  onehot = jax.nn.one_hot(labels, shape[0], dtype=dtype)
  alpha = jnp.asarray(alpha, dtype)
  return (1.0 - alpha) * onehot + alpha * _rows_of(labels, rows)


def similarity_cross_entropy(
    logits, labels, similarity, *, alpha=1.0, where=None
) -> jax.Array:
  r"""Cross-entropy against similarity-dependent soft targets.

  .. math::
    \ell_i = -\sum_{j=1}^{C} t_{ij} \log \mathrm{softmax}(x_i)_j, \qquad
    t_i = (1 - \alpha)\,\mathrm{onehot}(y_i) + \alpha\, R_{y_i}

  with ``R`` the row-normalised ``S`` (see :func:`similarity_targets`).
  ``S = I`` or ``alpha = 0`` gives
  ``optax.softmax_cross_entropy_with_integer_labels``; ``S`` all ones gives
  cross-entropy against ``optax.smooth_labels(onehot, alpha)``.

  Args:
    logits: float [..., C] unnormalised log-probabilities (float32 or bfloat16).
    labels: int [...] class indices.
    similarity: [C, C] non-negative, no all-zero row.
    alpha: weight of the similarity target, scalar in [0, 1] (may be traced).
    where: optional bool [...]; examples where it is False get loss 0.

  Returns:
    float32 [...], one loss per example.

  Example:
    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> labels = jnp.array([0, 1])
    >>> similarity_cross_entropy(logits, labels, jnp.eye(3))
    Array([0.2761297, 2.951799 ], dtype=float32)
  """
  dtype = _check_inputs(logits, labels, similarity, where)
  log_probs = jax.nn.log_softmax(jnp.asarray(logits, dtype), axis=-1)
  targets = similarity_targets(labels, jnp.asarray(similarity, dtype), alpha=alpha)
  return _apply_where(-jnp.sum(targets * log_probs, axis=-1), where)


def similarity_log_loss(logits, labels, similarity, *, where=None) -> jax.Array:
  r"""SimLoss (Kobs et al. 2020): log of the similarity-weighted probability mass.

  .. math::
    \ell_i = -\log \sum_{j=1}^{C} S_{y_i j}\, \mathrm{softmax}(x_i)_j
           = -\operatorname{logsumexp}_{j:\,S_{y_i j} > 0}
               \bigl(\log \mathrm{softmax}(x_i)_j + \log S_{y_i j}\bigr)

  computed from log-probabilities with a weighted logsumexp over the classes
  with non-zero weight, so it stays finite where the probabilities underflow.
  ``S`` is used as given (not row-normalised); the usual choice has
  ``S_{yy} = 1`` and off-diagonal entries in [0, 1]. ``S = I`` gives plain
  cross-entropy.

  Args:
    logits: float [..., C] unnormalised log-probabilities (float32 or bfloat16).
    labels: int [...] class indices.
    similarity: [C, C] non-negative, no all-zero row.
    where: optional bool [...]; examples where it is False get loss 0.

  Returns:
    float32 [...], one loss per example.

  Example:
    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[0., 0., 0.]])
    >>> S = jnp.array([[1., .5, 0.], [.5, 1., 0.], [0., 0., 1.]])
    >>> similarity_log_loss(logits, jnp.array([0]), S)  # -log(1.5 / 3)
    Array([0.6931472], dtype=float32)
  """
  dtype = _check_inputs(logits, labels, similarity, where)
  log_probs = jax.nn.log_softmax(jnp.asarray(logits, dtype), axis=-1)
  weights = _rows_of(labels, jnp.asarray(similarity, dtype))
  loss = -jax.nn.logsumexp(log_probs, axis=-1, b=weights, where=weights > 0)
  return _apply_where(loss, where)


def validate_similarity(similarity, num_classes: int | None = None) -> np.ndarray:
  """Checks a concrete similarity matrix; returns it as a float32 numpy array.

  Rules, in order: concrete (not traced), square [C, C], C == num_classes when
  given, finite, non-negative, no all-zero row.

  Args:
    similarity: array-like [C, C].
    num_classes: expected C (for example the dataset's class count), or None.

  Returns:
    np.ndarray float32 [C, C].

  Raises:
    TypeError: if `similarity` is a tracer (call this outside jit).
    ValueError: naming the failed rule and, where it applies, the first
      offending row index and value.
  """
  if isinstance(similarity, jax.core.Tracer):
    raise TypeError(
        "validate_similarity needs a concrete matrix; call it outside jax.jit."
    )
  matrix = np.asarray(similarity)
  if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
    raise ValueError(f"similarity must be a square [C, C] matrix, got shape {matrix.shape}.")
  if num_classes is not None and matrix.shape[0] != num_classes:
    raise ValueError(
        f"similarity is {matrix.shape[0]} x {matrix.shape[1]} but there are "
        f"{num_classes} classes."
    )
  if not (np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)):
    raise ValueError(f"similarity must be real-valued, got dtype {matrix.dtype}.")
  matrix = matrix.astype(np.float32)
  bad = np.argwhere(~np.isfinite(matrix))
  if bad.size:
    r, c = bad[0]
    raise ValueError(
        f"similarity has a non-finite entry at row {r}, column {c}: {matrix[r, c]}."
    )
  bad = np.argwhere(matrix < 0)
  if bad.size:
    r, c = bad[0]
    raise ValueError(
        f"similarity has a negative entry at row {r}, column {c}: {matrix[r, c]}."
    )
  zero_rows = np.flatnonzero(matrix.sum(axis=1) == 0)
  if zero_rows.size:
    raise ValueError(
        f"similarity row {zero_rows[0]} is all zeros; every class needs some "
        "similarity mass (at least itself)."
    )
  return matrix
