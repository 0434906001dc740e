r"""Post-processing shared by every similarity source (numpy, float64 inside).

A source hands over a non-negative affinity matrix :math:`A` ([C, C]); then, in
this order:

1. ``temperature`` :math:`T` (default 1, no-op): :math:`A_{yk} \leftarrow
   A_{yk}^{1/T}`, i.e. row ``softmax(log A / T)`` once normalized; ``T < 1``
   sharpens, ``T > 1`` flattens. (The cosine sources ``centroid`` and
   ``weights`` use ``T`` inside their own row softmax instead.)
2. ``symmetrize`` (default False): :math:`A \leftarrow (A + A^\top) / 2`.
3. ``diagonal`` (default ``'keep'``): ``'remove'`` zeroes :math:`A_{yy}`, so a
   row says how the *other* classes relate to ``y``. A row left all zero
   becomes uniform over the other classes (no evidence = label smoothing).
4. ``top_k`` (default 0, off): keep the ``k`` largest entries of each row
   (ties broken towards the lower class index), zero the rest.
5. ``normalize`` (default True): divide each row by its sum, so rows are
   distributions.
6. ``identity_mix`` :math:`m \in [0, 1]` (default 0): :math:`S \leftarrow
   (1 - m) S + m I`; keeps rows summing to one.
"""

from __future__ import annotations

from collections.abc import Mapping
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # numpy only at run time
  from jax.typing import ArrayLike

__all__ = ["POSTPROCESS_DEFAULTS", "check_postprocess_options", "postprocess"]

POSTPROCESS_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0,
    "symmetrize": False,
    "diagonal": "keep",
    "top_k": 0,
    "identity_mix": 0.0,
    "normalize": True,
}


def _is_number(x) -> bool:
  return isinstance(
      x, (int, float, np.integer, np.floating)
  ) and not isinstance(x, bool)


def check_postprocess_options(
    options: Mapping[str, Any], num_classes: int
) -> dict[str, Any]:
  """Validates the post-processing entries of `options`; returns them with defaults."""
  opts = {
      **POSTPROCESS_DEFAULTS,
      **{k: options[k] for k in POSTPROCESS_DEFAULTS if k in options},
  }
  t = opts["temperature"]
  if not _is_number(t) or not math.isfinite(t) or t <= 0:
    raise ValueError(
        f"option `temperature` must be a finite number > 0, got {t!r}."
    )
  for name in ("symmetrize", "normalize"):
    if not isinstance(opts[name], (bool, np.bool_)):
      raise ValueError(f"option `{name}` must be a bool, got {opts[name]!r}.")
  if opts["diagonal"] not in ("keep", "remove"):
    raise ValueError(
        f"option `diagonal` must be 'keep' or 'remove', got {opts['diagonal']!r}."
    )
  k = opts["top_k"]
  if (
      not isinstance(k, (int, np.integer))
      or isinstance(k, bool)
      or not 0 <= k <= num_classes
  ):
    raise ValueError(
        f"option `top_k` must be an int in [0, {num_classes}], got {k!r}."
    )
  m = opts["identity_mix"]
  if not _is_number(m) or not 0 <= m <= 1:
    raise ValueError(
        f"option `identity_mix` must be a number in [0, 1], got {m!r}."
    )
  return opts


def _top_k(a: np.ndarray, k: int) -> np.ndarray:
  order = np.argsort(-a, axis=1, kind="stable")[:, :k]
  keep = np.zeros_like(a, dtype=bool)
  np.put_along_axis(keep, order, True, axis=1)
  return np.where(keep, a, 0.0)


def postprocess(
    affinity: ArrayLike,
    options: Mapping[str, Any] | None = None,
    *,
    apply_temperature: bool = True,
) -> np.ndarray:
  """Applies the shared options (module docstring) to `affinity`.

  Args:
    affinity: non-negative, finite [C, C].
    options: any subset of :data:`POSTPROCESS_DEFAULTS`; other keys ignored
      here (the caller checks for unknown keys).
    apply_temperature: False when the source already used the temperature.

  Returns:
    np.ndarray float32 [C, C], non-negative; rows sum to 1 when `normalize`.
  """
  a = np.array(affinity, dtype=np.float64)
  c = a.shape[0]
  opts = check_postprocess_options(options or {}, c)
  if a.shape != (c, c) or not np.all(np.isfinite(a)) or np.any(a < 0):
    raise ValueError(
        f"affinity must be a finite, non-negative [C, C] matrix, got shape {a.shape}."
    )
  if apply_temperature and opts["temperature"] != 1.0:
    # Scale each row by its max first so 1/T powers cannot overflow.
    row_max = a.max(axis=1, keepdims=True)
    a = np.where(row_max > 0, a / np.where(row_max > 0, row_max, 1.0), 0.0) ** (
        1.0 / opts["temperature"]
    )
  if opts["symmetrize"]:
    a = 0.5 * (a + a.T)
  if opts["diagonal"] == "remove":
    np.fill_diagonal(a, 0.0)
    empty = a.sum(axis=1) == 0
    if c > 1:
      a[empty] = 1.0
      a[np.flatnonzero(empty), np.flatnonzero(empty)] = 0.0
  if opts["top_k"]:
    a = _top_k(a, opts["top_k"])
  if opts["normalize"]:
    sums = a.sum(axis=1, keepdims=True)
    if np.any(sums == 0):
      raise ValueError(
          f"similarity row {int(np.flatnonzero(sums == 0)[0])} is all zero; cannot normalize."
      )
    a = a / sums
  m = opts["identity_mix"]
  if m:
    a = (1.0 - m) * a + m * np.eye(c)
  return a.astype(np.float32)
