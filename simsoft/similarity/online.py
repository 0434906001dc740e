r"""Online Label Smoothing (Zhang et al. 2021, "Delving Deep into Label Smoothing").

The similarity matrix is re-estimated once per epoch from the model's own
predictions on the training data. During epoch :math:`t` the train loop adds
every batch to a :class:`~simsoft.similarity.stats.SimilarityStats` with
``update_stats``; at the end of the epoch

.. math::

  S^{t}_{y} = \begin{cases}
    \dfrac{1}{M^t_y} \sum_{i:\, y_i = y,\ \hat y_i = y} p_i
      & M^t_y > 0 \\
    S^{t-1}_{y} & M^t_y = 0
  \end{cases}

with :math:`M^t_y` the number of correctly classified class-:math:`y` samples
of epoch :math:`t` and :math:`p_i` their softmax outputs (``correct_only=False``
averages over all class-:math:`y` samples instead). Each row is a mean of
distributions, so it sums to one. :math:`S^{t}` supervises epoch :math:`t+1`;
:math:`S^0` is uniform label smoothing, :func:`online_initial`.

Options of :func:`online_update` (the online source's own options, with the
peer's behaviour named; zhangchbin/OnlineLabelSmoothing):

* ``fallback``: a class with no correct example keeps its previous row
  (``'keep'``, simsoft's default) or gets the uniform row :math:`1/C`
  (``'uniform'``, the peer: ``if cur_epoch_cnt[cls] < 0.5: loss_lams[cls] = 1/C``).
* ``freeze_threshold`` :math:`\tau` (default 0: off): a row whose maximum has
  reached :math:`\tau` is no longer updated (the peer's fine-grained script,
  ``fine-grained/solver.py``, with :math:`\tau = 0.88`; its CIFAR and ImageNet
  scripts do not freeze). The uniform fallback still applies to a frozen row,
  as in the peer.
* ``postprocess``: the row-wise post-processing options (temperature,
  diagonal, top_k, normalize, identity_mix;
  :mod:`~simsoft.similarity.postprocess`) applied to every renewed row (class
  mean or uniform fallback), exactly as :func:`postprocess` treats the rows of
  the initial S; a kept or frozen row is the processed row of before.
  ``symmetrize`` mixes rows and is not applied per epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from simsoft.similarity.postprocess import POSTPROCESS_DEFAULTS
from simsoft.similarity.stats import SimilarityStats

__all__ = ["online_initial", "online_update", "postprocess_rows"]


def online_initial(num_classes: int, *, smoothing: float = 0.1) -> jax.Array:
  r""":math:`S^0 = (1 - \varepsilon) I + \varepsilon / C`; float32 [C, C], rows sum to 1."""
  if not 0.0 <= smoothing <= 1.0:
    raise ValueError(f"`smoothing` must be in [0, 1], got {smoothing!r}.")
  c = num_classes
  return (1.0 - smoothing) * jnp.eye(c, dtype=jnp.float32) + smoothing / c


def postprocess_rows(a: ArrayLike, options: Mapping[str, Any]) -> jax.Array:
  """The row-wise steps of :func:`~simsoft.similarity.postprocess.postprocess` in JAX (jit-able).

  temperature, diagonal, top_k, normalize, identity_mix, in that order, with
  the numpy version's rules (ties in top_k towards the lower index; a row left
  without off-diagonal mass by ``diagonal='remove'`` becomes uniform over the
  other classes). A zero row stays zero instead of raising. [C, C] -> float32 [C, C].
  """
  opts = {
      **POSTPROCESS_DEFAULTS,
      **{k: options[k] for k in POSTPROCESS_DEFAULTS if k in options},
  }
  a = jnp.asarray(a, jnp.float32)
  c = a.shape[0]
  eye = jnp.eye(c, dtype=bool)
  if opts["temperature"] != 1.0:
    row_max = a.max(axis=1, keepdims=True)
    a = jnp.where(row_max > 0, a / jnp.where(row_max > 0, row_max, 1.0), 0.0)
    a = a ** (1.0 / opts["temperature"])
  if opts["diagonal"] == "remove":
    a = jnp.where(eye, 0.0, a)
    if c > 1:
      a = jnp.where((a.sum(axis=1, keepdims=True) == 0) & ~eye, 1.0, a)
  if opts["top_k"]:
    order = jnp.argsort(-a, axis=1, stable=True)[:, : opts["top_k"]]
    keep = jax.nn.one_hot(order, c, dtype=jnp.float32).sum(axis=1) > 0
    a = jnp.where(keep, a, 0.0)
  if opts["normalize"]:
    sums = a.sum(axis=1, keepdims=True)
    a = a / jnp.where(sums > 0, sums, 1.0)
  m = opts["identity_mix"]
  if m:
    a = (1.0 - m) * a + m * eye
  return a


def online_update(
    similarity_prev: ArrayLike,
    stats: SimilarityStats,
    *,
    correct_only: bool = True,
    fallback: str = "keep",
    freeze_threshold: float = 0.0,
    postprocess: Mapping[str, Any] | None = None,
) -> jax.Array:
  """One epoch-end update :math:`S^{t-1} \\to S^t` (module docstring); pure, jit-able.

  Args:
    similarity_prev: float [C, C], the matrix used during the finished epoch.
    stats: that epoch's statistics (any feature width).
    correct_only: average only correctly classified samples (the paper's rule).
    fallback: 'keep' (previous row) or 'uniform' (1/C, the peer) for a class
      without (correct) samples.
    freeze_threshold: > 0 keeps every row whose maximum is already >= it.
    postprocess: None, or post-processing options applied to renewed rows.

  Returns:
    float32 [C, C].
  """
  c = stats.num_classes
  if jnp.shape(similarity_prev) != (c, c):
    raise ValueError(
        f"`similarity_prev` must be [C, C] = [{c}, {c}] (C from stats), got "
        f"{jnp.shape(similarity_prev)}."
    )
  if fallback not in ("keep", "uniform"):
    raise ValueError(
        f"`fallback` must be 'keep' or 'uniform', got {fallback!r}."
    )
  prev = jnp.asarray(similarity_prev, jnp.float32)
  sums = stats.prob_sum_correct if correct_only else stats.prob_sum
  counts = stats.count_correct if correct_only else stats.count
  seen = counts > 0
  renewed = sums / jnp.where(seen, counts, 1.0)[:, None]
  if fallback == "uniform":
    renewed = jnp.where(seen[:, None], renewed, 1.0 / c)
  if postprocess is not None:
    renewed = postprocess_rows(renewed, postprocess)
  update = seen
  if freeze_threshold > 0:
    update = update & (prev.max(axis=1) < freeze_threshold)
  if fallback == "uniform":
    update = update | ~seen
  return jnp.where(update[:, None], renewed, prev)
