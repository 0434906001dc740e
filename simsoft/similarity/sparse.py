r"""A top-k sparse S for large label spaces: padded (C, k) index and value arrays.

A dense S costs :math:`4 C^2` bytes (1.9 GB at ImageNet-21k's 21,843
classes). :class:`SparseSimilarity` keeps each row's ``k`` largest entries,
:math:`8 C k` bytes (11 MB at C = 21,843, k = 64):

* ``indices`` int32 [C, k]: the columns kept in row ``y``, distinct, with
  ``indices[y, 0] = y`` (the diagonal is always kept, first);
* ``values`` float32 [C, k]: ``S[y, indices[y, j]]``.

A row with fewer than ``k`` non-zero entries is padded with zero values at
other distinct columns, so every row has exactly ``k`` distinct columns and a
zero value contributes nothing. The losses (:mod:`simsoft.losses`) take it in
place of the dense matrix and normalize the kept entries as they normalize a
dense row (:math:`R_y = S_y / \sum_j S_{yj}` over the kept ``j``), so
``k = C`` gives the dense losses exactly. Reading the rows of a batch is
O(B k) beyond the logsumexp of the logits.

:func:`to_sparse` / :func:`to_dense` convert; :func:`kept_mass` says how much
of each row's mass the top-k keeps. No TensorFlow.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

__all__ = [
    "SparseSimilarity",
    "is_sparse",
    "to_sparse",
    "to_dense",
    "kept_mass",
    "kept_off_diagonal_mass",
    "validate_sparse",
    "sparse_identity",
    "truncate",
    "permute_sparse",
    "device_put",
]

# Rows converted at a time by to_sparse: bounds the temporary memory to
# _CHUNK x C floats besides the dense input.
_CHUNK = 1024


@flax.struct.dataclass
class SparseSimilarity:
  """S as each row's top-k entries (a pytree: jit, Orbax and device_put take it).

  Attributes:
    indices: int32 [C, k], distinct columns per row, ``indices[y, 0] == y``.
    values: float32 [C, k], ``S[y, indices[y, j]]``, non-negative.
  """

  indices: jax.Array
  values: jax.Array

  @property
  def num_classes(self) -> int:
    return self.indices.shape[0]

  @property
  def k(self) -> int:
    return self.indices.shape[1]

  @property
  def shape(self) -> tuple[int, int]:
    """The dense shape (C, C), so code that asks S for its class count works."""
    c = self.indices.shape[0]
    return (c, c)

  @property
  def nbytes(self) -> int:
    return int(
        np.dtype(self.indices.dtype).itemsize * np.prod(self.indices.shape)
        + np.dtype(self.values.dtype).itemsize * np.prod(self.values.shape)
    )


def is_sparse(similarity) -> bool:
  """True for a :class:`SparseSimilarity` (or anything with indices and values)."""
  return hasattr(similarity, "indices") and hasattr(similarity, "values")


def to_sparse(similarity: ArrayLike, k: int) -> SparseSimilarity:
  """Keeps the diagonal and the ``k - 1`` largest off-diagonal entries of each row.

  Ties are broken towards the lower column. ``k`` larger than C is taken as C.
  Memory: the dense input plus 1,024 x C temporaries (rows are converted in
  chunks).

  Args:
    similarity: concrete [C, C], finite, non-negative.
    k: entries kept per row, ``k >= 1``.

  Returns:
    SparseSimilarity with numpy int32 [C, k'] / float32 [C, k'],
    k' = min(k, C); within a row the kept off-diagonal entries are in
    decreasing order.
  """
  s = np.asarray(similarity, np.float32)
  if s.ndim != 2 or s.shape[0] != s.shape[1]:
    raise ValueError(f"similarity must be [C, C], got shape {s.shape}.")
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"`k` must be a positive int, got {k!r}.")
  c = s.shape[0]
  k = min(int(k), c)
  indices = np.empty((c, k), np.int32)
  values = np.empty((c, k), np.float32)
  for start in range(0, c, _CHUNK):
    rows = np.arange(start, min(start + _CHUNK, c))
    block = s[rows].copy()
    block[np.arange(len(rows)), rows] = -np.inf  # the diagonal goes first
    indices[rows, 0] = rows
    indices[rows, 1:] = _top_columns(block, k - 1)
    values[rows] = np.take_along_axis(s[rows], indices[rows], axis=1)
  return SparseSimilarity(indices=indices, values=values)


def _top_columns(block: np.ndarray, m: int) -> np.ndarray:
  """int [R, m]: each row's m largest columns by value (ties to the lower column),
  in decreasing order; O(R C) (a partition, not a sort of the whole row)."""
  r, c = block.shape
  if m == 0:
    return np.zeros((r, 0), np.int64)
  # the m-th largest value of each row, then everything above it and the
  # lowest columns equal to it
  threshold = -np.partition(-block, m - 1, axis=1)[:, m - 1 : m]
  above = block > threshold
  at = block == threshold
  need = m - above.sum(axis=1, keepdims=True)
  chosen = above | (at & (np.cumsum(at, axis=1) <= need))
  cols = np.nonzero(chosen)[1].reshape(r, m)  # row-major: ascending columns
  order = np.argsort(
      -np.take_along_axis(block, cols, axis=1), axis=1, kind="stable"
  )
  return np.take_along_axis(cols, order, axis=1)


def to_dense(sparse: SparseSimilarity) -> np.ndarray:
  """float32 [C, C] with the kept entries and zeros elsewhere (numpy)."""
  indices = np.asarray(sparse.indices)
  values = np.asarray(sparse.values, np.float32)
  c = indices.shape[0]
  dense = np.zeros((c, c), np.float32)
  np.put_along_axis(dense, indices.astype(np.int64), values, axis=1)
  return dense


def kept_mass(similarity: ArrayLike, sparse: SparseSimilarity) -> np.ndarray:
  r"""float64 [C]: the share of each row's mass the top-k keeps.

  .. math:: \frac{\sum_{j \in \mathrm{kept}(y)} S_{yj}}{\sum_j S_{yj}}

  and, as the loss sees it, the share of the off-diagonal mass:
  see :func:`kept_off_diagonal_mass`.
  """
  s = np.asarray(similarity, np.float64)
  kept = np.asarray(sparse.values, np.float64).sum(axis=1)
  return kept / s.sum(axis=1)


def kept_off_diagonal_mass(
    similarity: ArrayLike, sparse: SparseSimilarity
) -> np.ndarray:
  """float64 [C]: kept off-diagonal mass / all off-diagonal mass (1 where there is none)."""
  s = np.asarray(similarity, np.float64)
  off = s.sum(axis=1) - np.diag(s)
  values = np.asarray(sparse.values, np.float64)
  kept = values.sum(axis=1) - values[:, 0]
  return np.where(off > 0, kept / np.where(off > 0, off, 1.0), 1.0)


def sparse_identity(num_classes: int) -> SparseSimilarity:
  """S = I with k = 1 (model A's plain cross-entropy at O(C) memory)."""
  return SparseSimilarity(
      indices=np.arange(num_classes, dtype=np.int32)[:, None],
      values=np.ones((num_classes, 1), np.float32),
  )


def validate_sparse(
    sparse: SparseSimilarity, num_classes: int | None = None
) -> SparseSimilarity:
  """Checks a concrete sparse S; returns it as numpy int32 / float32 arrays.

  Rules: indices int [C, k] and values real [C, k] with 1 <= k <= C, C ==
  num_classes when given; indices in [0, C), distinct within a row, column 0
  the diagonal; values finite, non-negative, no all-zero row.

  Raises:
    ValueError: naming the failed rule and the first offending row.
  """
  if isinstance(sparse.indices, jax.core.Tracer) or isinstance(
      sparse.values, jax.core.Tracer
  ):
    raise TypeError(
        "validate_sparse needs concrete arrays; call it outside jit."
    )
  indices, values = np.asarray(sparse.indices), np.asarray(sparse.values)
  if indices.ndim != 2 or values.shape != indices.shape:
    raise ValueError(
        "sparse similarity needs indices and values of one shape [C, k], got "
        f"{indices.shape} and {values.shape}."
    )
  c, k = indices.shape
  if not 1 <= k <= c:
    raise ValueError(
        f"sparse similarity has k = {k} for C = {c}; need 1 <= k <= C."
    )
  if num_classes is not None and c != num_classes:
    raise ValueError(
        f"sparse similarity has {c} rows but there are {num_classes} classes."
    )
  if not np.issubdtype(indices.dtype, np.integer):
    raise ValueError(f"sparse indices must be integers, got {indices.dtype}.")
  if not (
      np.issubdtype(values.dtype, np.floating)
      or np.issubdtype(values.dtype, np.integer)
  ):
    raise ValueError(f"sparse values must be real, got {values.dtype}.")
  bad = np.flatnonzero(((indices < 0) | (indices >= c)).any(axis=1))
  if bad.size:
    raise ValueError(f"sparse row {bad[0]} has a column outside [0, {c}).")
  bad = np.flatnonzero(indices[:, 0] != np.arange(c))
  if bad.size:
    raise ValueError(
        f"sparse row {bad[0]} does not keep its diagonal first "
        f"(indices[{bad[0]}, 0] = {indices[bad[0], 0]})."
    )
  ordered = np.sort(indices, axis=1)
  bad = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
  if bad.size:
    raise ValueError(f"sparse row {bad[0]} repeats a column.")
  values = values.astype(np.float32)
  bad = np.argwhere(~np.isfinite(values) | (values < 0))
  if bad.size:
    r, j = bad[0]
    raise ValueError(
        f"sparse similarity has a non-finite or negative value at row {r}, "
        f"column {indices[r, j]}: {values[r, j]}."
    )
  zero = np.flatnonzero(values.sum(axis=1) == 0)
  if zero.size:
    raise ValueError(
        f"sparse similarity row {zero[0]} is all zeros; every class needs some "
        "similarity mass (at least itself)."
    )
  return SparseSimilarity(indices=indices.astype(np.int32), values=values)


def truncate(sparse: SparseSimilarity, k: int) -> SparseSimilarity:
  """The top-k of a sparse S with more entries per row (diagonal kept first);
  O(C k') for k' entries per row, never the dense form."""
  indices, values = np.asarray(sparse.indices), np.asarray(sparse.values)
  if k >= indices.shape[1]:
    return SparseSimilarity(indices=indices, values=values)
  if k < 1:
    raise ValueError(f"`k` must be a positive int, got {k!r}.")
  off = values[:, 1:]
  # decreasing value, ties towards the lower column (as to_sparse)
  order = np.lexsort((indices[:, 1:], -off), axis=1)[:, : k - 1] + 1
  keep = np.concatenate([np.zeros((len(order), 1), order.dtype), order], 1)
  return SparseSimilarity(
      indices=np.take_along_axis(indices, keep, 1),
      values=np.take_along_axis(values, keep, 1),
  )


def permute_sparse(
    sparse: SparseSimilarity, permutation: ArrayLike
) -> SparseSimilarity:
  """The sparse form of ``S[perm][:, perm]`` (simsoft.similarity.permute_classes):
  row i is old row perm[i] with its columns renamed by the inverse permutation,
  so the diagonal stays first."""
  perm = np.asarray(permutation)
  inverse = np.empty_like(perm)
  inverse[perm] = np.arange(len(perm))
  indices = np.asarray(sparse.indices)[perm]
  return SparseSimilarity(
      indices=inverse[indices].astype(np.int32),
      values=np.asarray(sparse.values)[perm],
  )


def device_put(sparse: SparseSimilarity, sharding=None) -> SparseSimilarity:
  """jax arrays (optionally placed with `sharding`) for the jitted losses."""
  return jax.tree.map(
      lambda x: jax.device_put(jnp.asarray(x), sharding), sparse
  )
