r"""Class-similarity-aware classification losses, in the style of optax's losses.

Every loss is a pure function: arrays in, one value per example out (no
reduction). Options are keyword-only. The similarity matrix ``S`` ([C, C],
row ``y`` = how similar each class is to class ``y``) is an ordinary array
argument, so a jitted loss takes a new ``S`` of the same shape without
recompiling.

Two forms (Negi, Chan and Mahoor, arXiv 1812.09744; Kobs et al. 2020):

* soft-target cross-entropy, :func:`similarity_cross_entropy`:
  :math:`-\sum_j t_j \log p_j` against a target row of
  :func:`similarity_target_matrix`;
* SimLoss, :func:`similarity_log_loss`: :math:`-\log \sum_j S_{yj} p_j`.

A target row is set in one of two ways:

* ``alpha``: :math:`t = (1-\alpha)\,\mathrm{onehot}(y) + \alpha R_y`, with ``R``
  the row-normalized ``S``. The off-target mass :math:`\alpha (1 - R_{yy})`
  then depends on S's diagonal, so one alpha smooths each source differently.
* ``mass``: :math:`t = (1-m)\,\mathrm{onehot}(y) + m\, Q_y`, with ``Q`` the
  off-diagonal part of ``S`` row-normalized (:func:`off_target_distribution`):
  every class gives exactly ``m`` to the other classes and S decides only
  where it goes. Label smoothing is ``Q`` uniform over the other ``C - 1``
  classes (``S`` all ones).

Bad arguments: concrete (non-traced) ``alpha``, ``mass``, ``labels`` and
``S`` are checked eagerly (``alpha`` and ``mass`` finite in [0, 1], labels in
``[0, C)``, ``S`` finite and non-negative with no all-zero row; the weights
of :func:`weighted_cross_entropy` may have zero rows) and raise
``ValueError`` naming the argument; a bool or string ``alpha`` or ``mass``
raises ``TypeError``. Under ``jax.jit`` nothing can raise, so an example
whose label lies outside ``[0, C)``, and every example when a traced
``alpha`` or ``mass`` lies outside [0, 1], gets a NaN loss (and
:func:`similarity_targets` a NaN row), never a plausible finite value, in
every loss; examples masked out by ``where`` get 0 whatever their label.

Both reduce to plain cross-entropy for ``S = I``. Logits may be float32 or
bfloat16; the arithmetic runs in at least float32 and the losses are float32
(float64 under ``jax_enable_x64`` with float64 logits).

Cost: only the rows :math:`S_{y_i}` of the batch's labels are read, by a
gather that keeps the batch sharding (Explicit or Auto mesh axes), so a loss
costs O(B C) like optax's cross-entropy, never a C x C product per batch; up
to ``ONEHOT_MAX_CLASSES`` (128) classes the rows are read by the one-hot
product of before, so earlier runs reproduce bit for bit. ``S`` may also be
a top-k :class:`simsoft.similarity.sparse.SparseSimilarity` (indices and
values [C, k]): its kept entries are normalized as a dense row is (k = C is
the dense loss), at O(B k) beyond the logsumexp of the logits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec
from jax.typing import ArrayLike
import numpy as np

__all__ = [
    "check_amount",
    "off_target_distribution",
    "similarity_target_matrix",
    "similarity_targets",
    "similarity_cross_entropy",
    "similarity_log_loss",
    "validate_similarity",
    "weighted_cross_entropy",
    "hierarchical_cross_entropy",
]


def _check_labels(labels, name: str = "labels") -> None:
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise TypeError(
        f"`{name}` must hold integer class indices, got dtype "
        f"{jnp.result_type(labels)}."
    )


def _concrete(x) -> bool:
  return x is not None and not isinstance(x, jax.core.Tracer)


def _check_label_range(labels, num_classes: int, where=None) -> None:
  """Eager check of concrete labels: each must lie in [0, C) (where `where` is True)."""
  if not _concrete(labels) or isinstance(where, jax.core.Tracer):
    return
  y = np.asarray(labels)
  bad = (y < 0) | (y >= num_classes)
  if where is not None:
    bad &= np.broadcast_to(np.asarray(where, bool), y.shape)
  if bad.any():
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
        f"`labels` must be class indices in [0, {num_classes}), got {y[index]} at index "
        f"{index if len(index) != 1 else index[0]}."
    )


def _valid_labels(labels, num_classes: int) -> jax.Array:
  """bool [...]: the label lies in [0, C) (works traced)."""
  labels = jnp.asarray(labels)
  return (labels >= 0) & (labels < num_classes)


def _nan_where_invalid(values: jax.Array, valid: jax.Array) -> jax.Array:
  """NaN where `valid` is False (broadcast over trailing axes); no gradient leaks from the NaN."""
  valid = valid.reshape(valid.shape + (1,) * (values.ndim - valid.ndim))
  return jnp.where(valid, values, jnp.nan)


def _is_sparse(similarity) -> bool:
  """A top-k sparse S (simsoft.similarity.sparse.SparseSimilarity): indices and values [C, k]."""
  return hasattr(similarity, "indices") and hasattr(similarity, "values")


def _check_sparse(similarity, num_classes: int) -> None:
  shape = jnp.shape(similarity.indices)
  if (
      len(shape) != 2
      or jnp.shape(similarity.values) != shape
      or shape[0] != num_classes
      or not 1 <= shape[1] <= num_classes
  ):
    raise ValueError(
        f"a sparse `similarity` needs indices and values [C, k] with C = "
        f"{num_classes} and 1 <= k <= C, got {shape} and "
        f"{jnp.shape(similarity.values)}."
    )
  if not jnp.issubdtype(jnp.result_type(similarity.indices), jnp.integer):
    raise TypeError(
        "a sparse `similarity` needs integer indices, got dtype "
        f"{jnp.result_type(similarity.indices)}."
    )


def _check_similarity(
    similarity, num_classes: int, *, zero_rows: bool = False
) -> None:
  """Shape and dtype of S; with a concrete S also its values (`_check_values`)."""
  if _is_sparse(similarity):
    _check_sparse(similarity, num_classes)
    similarity = similarity.values
    shape = (num_classes, num_classes)
  else:
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
  if _concrete(similarity):
    _check_values(similarity, zero_rows=zero_rows)


@jax.jit
def _device_defects(matrix: jax.Array) -> jax.Array:
  """int [3]: counts of non-finite entries, negative entries and all-zero rows."""
  finite = jnp.isfinite(matrix)
  return jnp.stack(
      [
          jnp.sum(~finite),
          jnp.sum(finite & (matrix < 0)),
          jnp.sum(jnp.all(matrix == 0, axis=-1)),
      ]
  )


# A concrete S at least this large is reduced where it lives (three counts come
# back, not 4 C^2 bytes); a smaller one is read on the host.
_DEVICE_CHECK_SIZE = 1 << 20


def _check_values(similarity, *, zero_rows: bool) -> None:
  """A concrete S (or a sparse S's values): finite, >= 0, and no all-zero row
  unless `zero_rows`; ValueError naming the first offending entry or row."""
  if (
      isinstance(similarity, jax.Array)
      and similarity.size >= _DEVICE_CHECK_SIZE
  ):
    counts = [int(n) for n in _device_defects(similarity)]
    if not (counts[0] or counts[1] or (counts[2] and not zero_rows)):
      return
  host = np.asarray(similarity)
  for bad, what in (
      (~np.isfinite(host), "a non-finite"),
      (np.isfinite(host) & (host < 0), "a negative"),
  ):
    if bad.any():
      r, c = (int(i) for i in np.argwhere(bad)[0])
      raise ValueError(
          f"`similarity` has {what} entry at row {r}, column {c}: {host[r, c]}."
      )
  if not zero_rows and host.size:
    empty = np.flatnonzero(np.all(host == 0, axis=-1))
    if empty.size:
      raise ValueError(
          f"`similarity` row {empty[0]} is all zeros; every class needs some "
          "similarity mass (at least itself)."
      )


def _check_inputs(logits, labels, similarity, where, *, zero_rows=False):
  """Trace-time checks shared by the losses (and of a concrete S's values).
  Returns the compute dtype."""
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
  if similarity is not None:
    _check_similarity(similarity, logits_shape[-1], zero_rows=zero_rows)
  if where is not None and jnp.shape(where) != labels_shape:
    raise ValueError(
        f"`where` must have the batch shape of `labels` {labels_shape}, got "
        f"{jnp.shape(where)}."
    )
  _check_label_range(labels, logits_shape[-1], where)
  return jnp.promote_types(jnp.result_type(logits), jnp.float32)


def _batch_sharding(labels: jax.Array, extra_dims: int) -> NamedSharding | None:
  """The sharding of `labels` with `extra_dims` unsharded trailing axes, on
  meshes with Explicit axes (where a gather's output sharding must be given);
  None elsewhere (Auto axes, one device: XLA propagates it)."""
  sharding = jax.typeof(labels).sharding
  if not (
      isinstance(sharding, NamedSharding)
      and AxisType.Explicit in sharding.mesh.axis_types
  ):
    return None
  spec = tuple(sharding.spec) + (None,) * (labels.ndim - len(sharding.spec))
  return NamedSharding(
      sharding.mesh, PartitionSpec(*spec, *[None] * extra_dims)
  )


def _rows_of(labels, matrix: jax.Array) -> jax.Array:
  """matrix[labels] by a gather: [...] x [C, K] -> [..., K], O(B K).

  Labels outside [0, C) read a clipped row: callers mask those examples
  (:func:`_nan_where_invalid`, or a zero loss). The output keeps the batch
  sharding of `labels` (spelled out on Explicit meshes, where a gather with
  batch-sharded indices is otherwise refused as ambiguous); a gather copies,
  so float32 rows are exact on every backend (no matmul precision to pick).
  """
  labels = jnp.asarray(labels)
  index = jnp.clip(labels, 0, matrix.shape[0] - 1)
  return matrix.at[index].get(
      mode="promise_in_bounds",
      out_sharding=_batch_sharding(labels, matrix.ndim - 1),
  )


def _support(logits: jax.Array, labels, similarity, dtype):
  """Row y of S where the loss reads it: (logits, S_y, [j == y]), each [..., K].

  Dense S: K = C, every column. Sparse S: K = k, the row's kept columns, the
  logits read there with take_along_axis. O(B K).
  """
  labels = jnp.asarray(labels)
  if _is_sparse(similarity):
    cols = _rows_of(labels, jnp.asarray(similarity.indices, jnp.int32))
    weights = _rows_of(labels, jnp.asarray(similarity.values, dtype))
    return (
        jnp.take_along_axis(logits, cols, axis=-1),
        weights,
        cols == labels[..., None],
    )
  c = logits.shape[-1]
  weights = _rows_of(labels, jnp.asarray(similarity, dtype))
  return logits, weights, jnp.arange(c) == labels[..., None]


def _safe(total: jax.Array) -> jax.Array:
  """`total` where positive, else 1 (a 0/0 would leak NaN into gradients)."""
  return jnp.where(total > 0, total, 1)


def _target_rows(
    weights, diag, num_classes: int, *, alpha, mass, normalize, dense
):
  r"""Soft targets of the batch on the support of its rows: ([..., K], fallback).

  normalize, alpha: :math:`(1-\alpha)[j = y] + \alpha S_{yj} / \sum_k S_{yk}`;
  normalize, mass: :math:`(1-m)[j = y] + m Q_{yj}` (Q: the row without its
  diagonal, normalized; uniform over the other C - 1 classes when it has no
  mass); not normalize: :math:`(1-\alpha)[j = y] + \alpha S_{yj}`.
  On a sparse support the uniform row cannot be written: the targets then
  hold the diagonal part only and `fallback` (bool [...], rows that need the
  uniform part) is returned for the caller to add it; else fallback is None.
  """
  dtype = weights.dtype
  eye = diag.astype(dtype)
  if not normalize:
    if alpha is None:
      return weights, None
    a = jnp.asarray(alpha, dtype)
    return (1.0 - a) * eye + a * weights, None
  if mass is None:
    a = jnp.asarray(1.0 if alpha is None else alpha, dtype)
    rows = weights / _safe(jnp.sum(weights, axis=-1, keepdims=True))
    return (1.0 - a) * eye + a * rows, None
  if num_classes < 2:
    raise ValueError("the `mass` target needs at least 2 classes.")
  m = jnp.asarray(mass, dtype)
  off = jnp.where(diag, 0, weights)
  total = jnp.sum(off, axis=-1, keepdims=True)
  q = off / _safe(total)
  if dense:
    q = jnp.where(total > 0, q, (1 - eye) / (num_classes - 1))
    return (1.0 - m) * eye + m * q, None
  return (1.0 - m) * eye + m * q, total[..., 0] <= 0


def _soft_dense(z, labels, w, amount, mode: str) -> jax.Array:
  r""":math:`-\sum_j t_j \log \mathrm{softmax}(z)_j` for dense rows, [..., C] -> [...],
  with the targets of :func:`_log_sum_dense` (``w`` row y of S, ``mode``
  'given', 'alpha' or 'mass'), never writing t: with
  :math:`t = a[j=y] + b\,w' + u[j \ne y]` (w' without the diagonal for
  'mass'; b, u per row) and :math:`z' = z - \max_j z_j`,

  .. math::
    \ell = T \log \sum_j e^{z'_j} - \bigl(a z'_y + b \langle w', z'\rangle
            + u \sum_{j \ne y} z'_j\bigr), \quad T = \sum_j t_j .

  Row reductions of (z, w) the compiler fuses; autodiff gives
  :math:`T\,\mathrm{softmax}(z) - t`.
  """
  c = z.shape[-1]
  diag = jnp.arange(c) == labels[..., None]
  amount = jnp.asarray(amount, z.dtype)
  if mode == "mass":
    w = jnp.where(diag, 0, w)
  a = 1.0 - amount
  total_w = jnp.sum(w, axis=-1, keepdims=True)
  if mode == "given":
    b, u = amount, 0.0
  else:
    b = jnp.where(total_w > 0, amount / _safe(total_w), 0)
    u = 0.0
    if mode == "mass":  # no off-diagonal mass: uniform over the other classes
      u = jnp.where(total_w > 0, 0, amount / (c - 1))
  shifted = z - jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
  lse = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
  z_y = jnp.take_along_axis(shifted, labels[..., None], axis=-1)
  dot = jnp.sum(w * shifted, axis=-1, keepdims=True)
  total = a + b * total_w
  loss = lse * total - a * z_y - b * dot
  if mode == "mass":
    others = jnp.sum(shifted, axis=-1, keepdims=True) - z_y
    loss = loss + u * ((c - 1) * lse - others)
  return loss[..., 0]


def _log_sum_parts(z, labels, w, amount, mode: str):
  """Per-row quantities of :func:`_log_sum_dense`'s target and shifts, [..., 1]."""
  c = z.shape[-1]
  diag = jnp.arange(c) == labels[..., None]
  amount = jnp.asarray(amount, z.dtype)
  if mode == "mass":
    w = jnp.where(diag, 0, w)  # Q: the row without its diagonal
  a = 1.0 - amount
  # the weighted classes (t_j > 0), but for the uniform fallback of 'mass'
  weighted = ((a > 0) & diag) | ((amount > 0) & (w > 0))
  m = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
  mt = jnp.max(jnp.where(weighted, z, -jnp.inf), axis=-1, keepdims=True)
  if mode == "given":
    norm = jnp.ones_like(m)
    has = norm > 0
  else:
    total_w = jnp.sum(w, axis=-1, keepdims=True)
    norm, has = _safe(total_w), total_w > 0
  beta = jnp.where(has, amount, 0)
  u = jnp.zeros_like(beta)
  if mode == "mass":  # no off-diagonal mass: uniform over the other classes
    u = jnp.where(has, 0, amount / (c - 1))
    mt = jnp.where(u > 0, m, mt)  # every class is weighted then
  mt = jax.lax.stop_gradient(jnp.where(jnp.isfinite(mt), mt, m))
  return w, a, beta, u, norm, m, mt


def _log_sum_exps(z, labels, w, a, beta, u, m, mt):
  """(e^{z - m}, e^{z - m_t} where t_j > 0 else 0, t) with one exponential per entry."""
  diag = jnp.arange(z.shape[-1]) == labels[..., None]
  t = a * diag + beta * w + u * ~diag  # times 1 / norm for normalized forms
  pos = t > 0
  ex = jnp.exp(jnp.where(pos, z - mt, z - m))
  return jnp.where(pos, ex * jnp.exp(mt - m), ex), jnp.where(pos, ex, 0), t


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _log_sum_dense(z, labels, w, amount, mode: str) -> jax.Array:
  r""":math:`-\log \sum_j t_j \mathrm{softmax}(z)_j` for dense rows, [..., C] -> [...].

  ``w`` is row y of S ([..., C]) and the target t is, by ``mode``:
  'given' :math:`(1-\alpha)[j=y] + \alpha w`; 'alpha'
  :math:`(1-\alpha)[j=y] + \alpha w / \sum_k w_k`; 'mass'
  :math:`(1-m)[j=y] + m\,Q_y` (Q: w without its diagonal, normalized;
  uniform over the other classes when that is zero). The value of
  ``-logsumexp(log_softmax(z), b=t, where=t > 0)`` with one exponential per
  entry forward and backward and a hand-written VJP (autodiff of the
  masked, weighted logsumexp costs several times optax CE at large C):

  .. math::
    \ell = (m - m_t) + \log \sum_j e^{z_j - m}
          - \log \sum_{j: t_j > 0} t_j e^{z_j - m_t}

  with :math:`m = \max_j z_j` and :math:`m_t` the largest logit of a
  weighted class, so neither sum overflows or underflows to zero.
  """
  return _log_sum_dense_fwd(z, labels, w, amount, mode)[0]


def _log_sum_dense_fwd(z, labels, w, amount, mode):
  wq, a, beta, u, norm, m, mt = _log_sum_parts(z, labels, w, amount, mode)
  e, et, t = _log_sum_exps(z, labels, wq, a, beta / norm, u, m, mt)
  total = jnp.sum(e, axis=-1, keepdims=True)
  n = jnp.sum(t * et, axis=-1, keepdims=True)
  loss = (m - mt) + (jnp.log(total) - jnp.log(_safe(n)))
  residuals = (z, labels, w, amount, wq, a, beta, u, norm, m, mt, total, n)
  return loss[..., 0], residuals


def _log_sum_dense_bwd(mode, residuals, g):
  z, labels, w, amount, wq, a, beta, u, norm, m, mt, total, n = residuals
  e, et, t = _log_sum_exps(z, labels, wq, a, beta / norm, u, m, mt)
  g = g[..., None]
  gn = g / _safe(n)
  dz = g * e / total - gn * t * et
  # n = a e_y + beta <wq, et> / norm + u sum_{j != y} et_j, norm = sum(wq)
  # (1 for 'given'); the gradients to S's row and to the amount follow.
  diag = jnp.arange(z.shape[-1]) == labels[..., None]
  wet = jnp.sum(wq * et, axis=-1, keepdims=True)
  dw = -gn * beta / norm * et
  if mode != "given":
    dw = dw + gn * beta * wet / norm**2
  if mode == "mass":
    dw = jnp.where(diag, 0, dw)
  e_y = jnp.sum(jnp.where(diag, et, 0), axis=-1, keepdims=True)
  d_amount = gn * e_y - gn * jnp.where(beta > 0, wet / norm, 0)
  if mode == "mass":
    others = jnp.sum(jnp.where(diag, 0, et), axis=-1, keepdims=True)
    d_amount = d_amount - gn * jnp.where(u > 0, others / (z.shape[-1] - 1), 0)
  d_amount = jnp.reshape(jnp.sum(d_amount), jnp.shape(amount))
  return (
      dz.astype(z.dtype),
      None,
      dw.astype(w.dtype),
      d_amount.astype(jnp.result_type(amount)),
  )


_log_sum_dense.defvjp(_log_sum_dense_fwd, _log_sum_dense_bwd)


# Up to this many classes a dense S's rows are read as before issue 23: a
# one-hot product with the whole target matrix (B C^2 + C^2, next to nothing
# at such C), so earlier runs reproduce bit for bit (a gather fuses otherwise
# and rounds a few gradients differently in the last place). Above it, a
# gather of the batch's rows of S: O(B C).
ONEHOT_MAX_CLASSES = 128


def _onehot_rows(labels, matrix: jax.Array) -> jax.Array:
  """matrix[labels] as a one-hot matmul: [...] x [C, C] -> [..., C] (zero rows
  for labels outside [0, C)); HIGHEST precision keeps float32 rows exact on
  TPU/GPU. The matmul keeps the batch sharding of `labels` on any mesh."""
  onehot = jax.nn.one_hot(labels, matrix.shape[0], dtype=matrix.dtype)
  return jnp.matmul(onehot, matrix, precision=jax.lax.Precision.HIGHEST)


def _small_c_loss(
    z, labels, similarity, log_sum, alpha, mass, normalize, dtype
):
  """The loss for C <= ONEHOT_MAX_CLASSES, computed as before issue 23."""
  s = jnp.asarray(similarity, dtype)
  if normalize:
    matrix = similarity_target_matrix(s, alpha=alpha, mass=mass)
  elif alpha is None:
    matrix = s
  else:
    a = alpha
    matrix = (1.0 - a) * jnp.eye(s.shape[0], dtype=s.dtype) + a * s
  log_probs = jax.nn.log_softmax(z, axis=-1)
  rows = _onehot_rows(labels, matrix)
  if log_sum:
    return -jax.nn.logsumexp(log_probs, axis=-1, b=rows, where=rows > 0)
  return -jnp.sum(rows * log_probs, axis=-1)


def _row_loss(
    logits,
    labels,
    similarity,
    *,
    log_sum,
    alpha,
    mass,
    normalize,
    where,
    zero_rows=False,
) -> jax.Array:
  """The soft-target (``-sum_j t_j log p_j``) or log-sum (``-log sum_j t_j p_j``)
  loss against the batch's target rows, O(B C) for dense S, O(B k) beyond the
  log-softmax for sparse S. NaN for a label outside [0, C) or a traced amount
  outside [0, 1]."""
  # A zero row is undefined where rows are normalized (0 / 0) and in the
  # log-sum (-log 0); as a soft target given as is, it is a zero target mixed
  # in with weight alpha (OLS's first epoch).
  zero_rows = zero_rows or (not normalize and mass is None and not log_sum)
  dtype = _check_inputs(logits, labels, similarity, where, zero_rows=zero_rows)
  check_amount(alpha=alpha, mass=mass)
  if mass is not None and not normalize:
    raise ValueError(
        "`mass` needs the row-normalized target: give `alpha` with normalize=False."
    )
  c = jnp.shape(logits)[-1]
  labels = jnp.asarray(labels)
  z = jnp.asarray(logits, dtype)
  sparse = _is_sparse(similarity)
  if not sparse and c <= ONEHOT_MAX_CLASSES:
    loss = _small_c_loss(
        z, labels, similarity, log_sum, alpha, mass, normalize, dtype
    )
    return _finish(loss, labels, c, alpha, mass, where)
  z_s, weights, diag = _support(z, labels, similarity, dtype)
  if not sparse:  # row reductions of (z, S_y): no target row is written
    if mass is not None:
      mode, amount = "mass", mass
    else:
      mode = "alpha" if normalize else "given"
      amount = 1.0 if alpha is None else alpha
    dense_loss = _log_sum_dense if log_sum else _soft_dense
    loss = dense_loss(z, labels, weights, jnp.asarray(amount, dtype), mode)
    return _finish(loss, labels, c, alpha, mass, where)
  # sparse: the targets on the k kept columns, log_softmax read there only
  t, fallback = _target_rows(
      weights,
      diag,
      c,
      alpha=alpha,
      mass=mass,
      normalize=normalize,
      dense=False,
  )
  shift = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
  lse = jnp.log(jnp.sum(jnp.exp(z - shift), axis=-1, keepdims=True))
  lp = (z_s - shift) - lse
  if log_sum:
    loss = -jax.nn.logsumexp(lp, axis=-1, b=t, where=t > 0)
  else:
    loss = -jnp.sum(t * lp, axis=-1)
  if fallback is not None:  # sparse rows with no off-diagonal mass: uniform Q
    m = jnp.asarray(mass, dtype)
    log_probs = (z - shift) - lse
    lp_y = jnp.sum(jnp.where(diag, lp, 0), axis=-1)
    if log_sum:
      others = jax.nn.logsumexp(
          log_probs, axis=-1, where=jnp.arange(c) != labels[..., None]
      )
      uniform = -jnp.logaddexp(
          jnp.log1p(-m) + lp_y, jnp.log(m / (c - 1)) + others
      )
    else:
      others = jnp.sum(log_probs, axis=-1) - lp_y
      uniform = -(1.0 - m) * lp_y - m * others / (c - 1)
    loss = jnp.where(fallback, uniform, loss)
  return _finish(loss, labels, c, alpha, mass, where)


def _amount_valid(alpha, mass) -> jax.Array | bool:
  """A traced alpha or mass lies in [0, 1] (False for NaN); concrete ones were
  checked eagerly (True)."""
  amount = alpha if mass is None else mass
  if not isinstance(amount, jax.core.Tracer):
    return True
  return (amount >= 0) & (amount <= 1)


def _finish(loss, labels, num_classes, alpha, mass, where) -> jax.Array:
  """NaN for a label outside [0, C) or a traced amount outside [0, 1]; then
  0 where `where` is False."""
  valid = _valid_labels(labels, num_classes) & _amount_valid(alpha, mass)
  return _apply_where(_nan_where_invalid(loss, valid), where)


def _apply_where(loss: jax.Array, where) -> jax.Array:
  if where is None:
    return loss
  return jnp.where(jnp.asarray(where, bool), loss, jnp.zeros_like(loss))


def _check_square(similarity, *, zero_rows: bool = False) -> int:
  if _is_sparse(similarity):
    raise TypeError(
        "this function needs a dense [C, C] `similarity`; convert a sparse one "
        "with simsoft.similarity.sparse.to_dense (or use the losses, which take both)."
    )
  shape = jnp.shape(similarity)
  if len(shape) != 2 or shape[0] != shape[1]:
    raise ValueError(
        f"`similarity` must be a square [C, C] matrix, got {shape}."
    )
  _check_similarity(similarity, shape[0], zero_rows=zero_rows)
  return shape[0]


def _check_fraction(value, name: str) -> None:
  """A real number: range-checked when concrete; a traced one passes (the
  losses turn it into NaN when outside [0, 1]). Bools and strings are refused.
  """
  if value is None:
    return
  if isinstance(value, (bool, np.bool_, str, bytes)) or not (
      isinstance(value, jax.core.Tracer)
      or isinstance(value, (int, float))
      or hasattr(value, "dtype")
  ):
    raise TypeError(
        f"`{name}` must be a real number in [0, 1], got {value!r} "
        f"({type(value).__name__})."
    )
  dtype = jnp.result_type(value)
  if not (
      jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
  ):
    raise TypeError(
        f"`{name}` must be a real number in [0, 1], got dtype {dtype}."
    )
  if isinstance(value, jax.core.Tracer):
    return
  v = np.asarray(value)
  if v.shape != () or not np.isfinite(v) or not 0.0 <= float(v) <= 1.0:
    raise ValueError(
        f"`{name}` must be a finite scalar in [0, 1], got {value!r}."
    )


def check_amount(
    *, alpha: ArrayLike | None = None, mass: ArrayLike | None = None
) -> None:
  """Checks a target amount: at most one of alpha and mass, each in [0, 1] when concrete.

  Raises:
    ValueError: both given, or a concrete value outside [0, 1] or not finite.
  """
  if alpha is not None and mass is not None:
    raise ValueError("give `alpha` or `mass`, not both.")
  _check_fraction(alpha, "alpha")
  _check_fraction(mass, "mass")


def off_target_distribution(similarity: ArrayLike) -> jax.Array:
  r"""Where each class's off-target mass goes: S without its diagonal, rows normalized.

  .. math::
    Q_{yj} = \frac{S_{yj}\,[j \ne y]}{\sum_{k \ne y} S_{yk}}

  A row with no off-diagonal mass (for example ``S = I``) becomes uniform over
  the other ``C - 1`` classes, so ``S = I`` and ``S`` all ones both give
  label smoothing.

  Args:
    similarity: [C, C] non-negative matrix ``S``, ``C >= 2``.

  Returns:
    float [C, C], zero diagonal, rows summing to one.

  Example:
    >>> import jax.numpy as jnp
    >>> off_target_distribution(jnp.array([[5., 3., 1.], [1., 1., 0.], [0., 0., 1.]]))
    Array([[0.  , 0.75, 0.25],
           [1.  , 0.  , 0.  ],
           [0.5 , 0.5 , 0.  ]], dtype=float32)
  """
  c = _check_square(similarity, zero_rows=True)  # a zero row: uniform
  if c < 2:
    raise ValueError("off_target_distribution needs at least 2 classes.")
  dtype = jnp.promote_types(jnp.result_type(similarity), jnp.float32)
  off = jnp.asarray(similarity, dtype) * (1 - jnp.eye(c, dtype=dtype))
  total = jnp.sum(off, axis=-1, keepdims=True)
  uniform = (1 - jnp.eye(c, dtype=dtype)) / (c - 1)
  return jnp.where(total > 0, off / jnp.where(total > 0, total, 1), uniform)


def similarity_target_matrix(
    similarity: ArrayLike,
    *,
    alpha: ArrayLike | None = None,
    mass: ArrayLike | None = None,
) -> jax.Array:
  r"""The target of every class at once: row ``y`` is the soft target of label ``y``.

  .. math::
    T = (1 - \alpha) I + \alpha R \quad (\texttt{alpha}), \qquad
    T = (1 - m) I + m Q \quad (\texttt{mass})

  with ``R`` the row-normalized ``S`` and ``Q`` = :func:`off_target_distribution`.
  Give at most one of ``alpha`` and ``mass``; neither means ``alpha = 1``.
  The off-target mass class ``y`` receives is ``1 - T[y, y]``: ``m`` for every
  class in the mass form, :math:`\alpha (1 - R_{yy})` in the alpha form.

  Args:
    similarity: [C, C] non-negative, no all-zero row.
    alpha: scalar in [0, 1] (may be traced).
    mass: scalar in [0, 1] (may be traced).

  Returns:
    float [C, C], each row a probability distribution.

  Example:
    >>> import jax.numpy as jnp
    >>> S = jnp.array([[2., 1., 1.], [0., 1., 0.], [1., 1., 2.]])
    >>> similarity_target_matrix(S, mass=0.2)[0]
    Array([0.8, 0.1, 0.1], dtype=float32)
  """
  check_amount(alpha=alpha, mass=mass)
  c = _check_square(similarity)
  dtype = jnp.promote_types(jnp.result_type(similarity), jnp.float32)
  similarity = jnp.asarray(similarity, dtype)
  eye = jnp.eye(c, dtype=dtype)
  valid = _amount_valid(alpha, mass)
  if mass is not None:
    m = jnp.asarray(mass, dtype)
    matrix = (1.0 - m) * eye + m * off_target_distribution(similarity)
  else:
    a = jnp.asarray(1.0 if alpha is None else alpha, dtype)
    rows = similarity / jnp.sum(similarity, axis=-1, keepdims=True)
    matrix = (1.0 - a) * eye + a * rows
  return matrix if valid is True else jnp.where(valid, matrix, jnp.nan)


def similarity_targets(
    labels: ArrayLike,
    similarity: ArrayLike,
    *,
    alpha: ArrayLike | None = None,
    mass: ArrayLike | None = None,
) -> jax.Array:
  r"""Soft targets built from a class-similarity matrix.

  .. math::
    t_i = (1 - \alpha)\,\mathrm{onehot}(y_i) + \alpha\, R_{y_i}, \qquad
    R_{yj} = \frac{S_{yj}}{\sum_k S_{yk}}

  or, with ``mass``, :math:`t_i = (1-m)\,\mathrm{onehot}(y_i) + m\, Q_{y_i}`
  (see :func:`similarity_target_matrix`).

  Args:
    labels: int [...], class indices in ``[0, C)``; concrete labels outside it
      raise ValueError, traced ones get a NaN row.
    similarity: [C, C] non-negative matrix ``S``; no row may sum to zero.
    alpha: weight of the similarity row (scalar, may be traced). ``alpha = 0``
      gives one-hot targets; ``S = 1`` (all ones) gives label smoothing.
    mass: off-target mass instead of ``alpha`` (scalar in [0, 1], may be traced).

  Returns:
    float [..., C], each row a probability distribution.

  Example:
    >>> import jax.numpy as jnp
    >>> S = jnp.array([[2., 1., 1.], [0., 1., 0.], [1., 1., 2.]])
    >>> similarity_targets(jnp.array([0]), S, alpha=0.5)
    Array([[0.75 , 0.125, 0.125]], dtype=float32)
  """
  _check_labels(labels)
  check_amount(alpha=alpha, mass=mass)
  if _is_sparse(similarity):
    return _sparse_targets(labels, similarity, alpha=alpha, mass=mass)
  c = _check_square(similarity)
  _check_label_range(labels, c)
  dtype = jnp.promote_types(jnp.result_type(similarity), jnp.float32)
  labels = jnp.asarray(labels)
  if c <= ONEHOT_MAX_CLASSES:
    rows = _onehot_rows(
        labels, similarity_target_matrix(similarity, alpha=alpha, mass=mass)
    )
    return _nan_where_invalid(
        rows, _valid_labels(labels, c) & _amount_valid(alpha, mass)
    )
  rows, _ = _target_rows(
      _rows_of(labels, jnp.asarray(similarity, dtype)),
      jnp.arange(c) == labels[..., None],
      c,
      alpha=alpha,
      mass=mass,
      normalize=True,
      dense=True,
  )
  return _nan_where_invalid(
      rows, _valid_labels(labels, c) & _amount_valid(alpha, mass)
  )


def _sparse_targets(labels, similarity, *, alpha, mass) -> jax.Array:
  """similarity_targets for a sparse S: the targets on the kept columns,
  scattered into [..., C] (plus the uniform part of rows without off-diagonal mass).
  """
  c = jnp.shape(similarity.indices)[0]
  _check_sparse(similarity, c)
  _check_label_range(labels, c)
  labels = jnp.asarray(labels)
  dtype = jnp.promote_types(jnp.result_type(similarity.values), jnp.float32)
  cols = _rows_of(labels, jnp.asarray(similarity.indices, jnp.int32))
  diag = cols == labels[..., None]
  t, fallback = _target_rows(
      _rows_of(labels, jnp.asarray(similarity.values, dtype)),
      diag,
      c,
      alpha=alpha,
      mass=mass,
      normalize=True,
      dense=False,
  )
  flat = jax.vmap(lambda i, v: jnp.zeros((c,), dtype).at[i].add(v))(
      cols.reshape(-1, cols.shape[-1]), t.reshape(-1, t.shape[-1])
  )
  rows = flat.reshape(labels.shape + (c,))
  if fallback is not None:
    onehot = (jnp.arange(c) == labels[..., None]).astype(dtype)
    m = jnp.asarray(mass, dtype)
    uniform = (1.0 - m) * onehot + m * (1 - onehot) / (c - 1)
    rows = jnp.where(fallback[..., None], uniform, rows)
  return _nan_where_invalid(
      rows, _valid_labels(labels, c) & _amount_valid(alpha, mass)
  )


def similarity_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    similarity: ArrayLike,
    *,
    alpha: ArrayLike | None = None,
    mass: ArrayLike | None = None,
    normalize: bool = True,
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""Cross-entropy against similarity-dependent soft targets.

  .. math::
    \ell_i = -\sum_{j=1}^{C} t_{ij} \log \mathrm{softmax}(x_i)_j, \qquad
    t_i = (1 - \alpha)\,\mathrm{onehot}(y_i) + \alpha\, R_{y_i}

  with ``R`` the row-normalized ``S`` (see :func:`similarity_targets`).
  ``S = I`` or ``alpha = 0`` gives
  ``optax.softmax_cross_entropy_with_integer_labels``; ``S`` all ones gives
  cross-entropy against ``optax.smooth_labels(onehot, alpha)``.

  Only the rows :math:`S_{y_i}` of the batch's labels are read (a gather):
  cost O(B C) for a dense S, and O(B k) beyond the log-softmax for a top-k
  sparse S (:class:`simsoft.similarity.sparse.SparseSimilarity`), whose kept
  entries are normalized as a dense row is.

  Args:
    logits: float [..., C] unnormalized log-probabilities (float32 or bfloat16).
    labels: int [...] class indices in ``[0, C)`` (concrete ones are checked;
      under jit one outside gets a NaN loss).
    similarity: [C, C] non-negative, no all-zero row; or a SparseSimilarity
      (indices and values [C, k]).
    alpha: weight of the similarity target, scalar in [0, 1] (may be traced);
      neither ``alpha`` nor ``mass`` means ``alpha = 1``.
    mass: off-target mass instead of ``alpha``: the target is
      :math:`(1-m)\,\mathrm{onehot}(y) + m\, Q_y` (scalar in [0, 1]).
    normalize: False uses S as given, :math:`t = (1-\alpha)\,\mathrm{onehot}(y)
      + \alpha S_y` (:func:`weighted_cross_entropy` of that W; no ``mass``).
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
  return _row_loss(
      logits,
      labels,
      similarity,
      log_sum=False,
      alpha=alpha,
      mass=mass,
      normalize=normalize,
      where=where,
  )


def similarity_log_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    similarity: ArrayLike,
    *,
    alpha: ArrayLike | None = None,
    mass: ArrayLike | None = None,
    normalize: bool = False,
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""SimLoss (Kobs et al. 2020): log of the similarity-weighted probability mass.

  .. math::
    \ell_i = -\log \sum_{j=1}^{C} S_{y_i j}\, \mathrm{softmax}(x_i)_j
           = -\operatorname{logsumexp}_{j:\,S_{y_i j} > 0}
               \bigl(\log \mathrm{softmax}(x_i)_j + \log S_{y_i j}\bigr)

  computed from log-probabilities with a weighted logsumexp over the classes
  with non-zero weight, so it stays finite where the probabilities underflow.
  ``S`` is used as given (not row-normalized); the usual choice has
  ``S_{yy} = 1`` and off-diagonal entries in [0, 1]. ``S = I`` gives plain
  cross-entropy. With ``alpha``, the weights are
  :math:`W_y = (1-\alpha)\,\mathrm{onehot}(y) + \alpha S_y`; with
  ``normalize=True`` they are the soft targets of
  :func:`similarity_target_matrix` (``alpha`` or ``mass``), computed from the
  batch's rows only. Cost as :func:`similarity_cross_entropy` (dense or sparse S).

  Args:
    logits: float [..., C] unnormalized log-probabilities (float32 or bfloat16).
    labels: int [...] class indices in ``[0, C)`` (concrete ones are checked;
      under jit one outside gets a NaN loss).
    similarity: [C, C] non-negative, no all-zero row; or a SparseSimilarity.
    alpha: scalar in [0, 1] (may be traced); None: 1.
    mass: with ``normalize=True`` only: the mass target's amount.
    normalize: weights from the row-normalized target (see above).
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
  return _row_loss(
      logits,
      labels,
      similarity,
      log_sum=True,
      alpha=alpha,
      mass=mass,
      normalize=normalize,
      where=where,
  )


def validate_similarity(
    similarity: ArrayLike, num_classes: int | None = None
) -> np.ndarray:
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
    raise ValueError(
        f"similarity must be a square [C, C] matrix, got shape {matrix.shape}."
    )
  if num_classes is not None and matrix.shape[0] != num_classes:
    raise ValueError(
        f"similarity is {matrix.shape[0]} x {matrix.shape[1]} but there are "
        f"{num_classes} classes."
    )
  if not (
      np.issubdtype(matrix.dtype, np.floating)
      or np.issubdtype(matrix.dtype, np.integer)
  ):
    raise ValueError(
        f"similarity must be real-valued, got dtype {matrix.dtype}."
    )
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


def weighted_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    weights: ArrayLike,
    *,
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""Cross-entropy against row ``y`` of ``W`` used as given (not normalized).

  .. math::
    \ell_i = -\sum_{j=1}^{C} W_{y_i j} \log \mathrm{softmax}(x_i)_j

  Online Label Smoothing's loss (zhangchbin/OnlineLabelSmoothing,
  ``cifar/scripts/train_cifar_all_methods.py``: ``0.5 * CE + 0.5 *
  soft_cross_entropy`` with the epoch's soft-label matrix ``S``) is ``W =
  0.5 I + 0.5 S``; its first epoch, ``S = 0``, gives ``0.5`` times
  cross-entropy. Rows that sum to one make this
  :func:`similarity_cross_entropy` against that row.

  Args:
    logits: float [..., C] unnormalized log-probabilities (float32 or bfloat16).
    labels: int [...] class indices in ``[0, C)`` (under jit one outside
      gets a NaN loss).
    weights: [C, C], finite and non-negative, or a SparseSimilarity; a zero
      row gives loss 0.
    where: optional bool [...]; examples where it is False get loss 0.

  Returns:
    float32 [...], one loss per example.
  """
  return _row_loss(
      logits,
      labels,
      weights,
      log_sum=False,
      alpha=None,
      mass=None,
      normalize=False,
      where=where,
      zero_rows=True,
  )


def hierarchical_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    node_leaves: ArrayLike,
    path_weights: ArrayLike,
    *,
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""Hierarchical cross-entropy, HXE (Bertinetto et al. 2020, "Making Better Mistakes").

  With :math:`P(n) = \sum_{c \text{ under } n} \mathrm{softmax}(x)_c` the
  probability of tree node ``n`` and the path :math:`y = n_0, \dots, n_{d-1}`
  from the label's leaf up to the root (excluded, :math:`P = 1`):

  .. math::
    \ell_i = \sum_{j=0}^{d-1} \lambda(n_j) \log \frac{P(n_{j+1})}{P(n_j)}
           = -\sum_{n} K_{y_i n} \log P(n)

  the second form (``K`` telescopes the weights :math:`\lambda`, see
  :func:`simsoft.similarity.hierarchy.hxe_arrays`) is what runs: each
  :math:`\log P(n)` is a logsumexp of log-probabilities, finite where the
  probabilities underflow (the peer, fiveai/making-better-mistakes
  ``HierarchicalLLLoss``, divides sums of probabilities and drops a term whose
  numerator is exactly 0). Cost O(B N C) for N nodes.

  Args:
    logits: float [..., C] unnormalized log-probabilities.
    labels: int [...] class indices in ``[0, C)`` (under jit one outside
      gets a NaN loss).
    node_leaves: [N, C], 1 where class c lies under node n (leaves included,
      root excluded); every node needs a class.
    path_weights: [C, N], K.
    where: optional bool [...]; examples where it is False get loss 0.

  Returns:
    float32 [...], one loss per example.

  Example:
    >>> import jax.numpy as jnp
    >>> leaves = jnp.array([[1., 1.], [1., 0.], [0., 1.]])  # node 0 above leaves 1, 2
    >>> K = jnp.array([[0., 1., 0.], [0., 0., 1.]])         # lambda = 1 at the leaf only
    >>> hierarchical_cross_entropy(jnp.zeros((1, 2)), jnp.array([0]), leaves, K)  # -log 1/2
    Array([0.6931472], dtype=float32)
  """
  n = jnp.shape(node_leaves)[0]
  c = jnp.shape(logits)[-1]
  if jnp.shape(node_leaves) != (n, c) or jnp.shape(path_weights) != (c, n):
    raise ValueError(
        f"`node_leaves` must be [N, C] and `path_weights` [C, N] with C = {c}, got "
        f"{jnp.shape(node_leaves)} and {jnp.shape(path_weights)}."
    )
  dtype = _check_inputs(logits, labels, None, where)
  log_probs = jax.nn.log_softmax(jnp.asarray(logits, dtype), axis=-1)
  inside = jnp.asarray(node_leaves) > 0
  log_nodes = jax.nn.logsumexp(
      log_probs[..., None, :],
      axis=-1,
      where=jnp.broadcast_to(inside, log_probs.shape[:-1] + (n, c)),
  )
  if c <= ONEHOT_MAX_CLASSES:
    k = _onehot_rows(labels, jnp.asarray(path_weights, dtype))
  else:
    k = _rows_of(labels, jnp.asarray(path_weights, dtype))
  loss = -jnp.sum(jnp.where(k != 0, k * log_nodes, 0.0), axis=-1)
  return _finish(loss, labels, c, None, None, where)
