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
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from simsoft.similarity.stats import SimilarityStats

__all__ = ["online_initial", "online_update"]


def online_initial(num_classes: int, *, smoothing: float = 0.1) -> jax.Array:
  r""":math:`S^0 = (1 - \varepsilon) I + \varepsilon / C`; float32 [C, C], rows sum to 1."""
  if not 0.0 <= smoothing <= 1.0:
    raise ValueError(f"`smoothing` must be in [0, 1], got {smoothing!r}.")
  c = num_classes
  return (1.0 - smoothing) * jnp.eye(c, dtype=jnp.float32) + smoothing / c


def online_update(
    similarity_prev: jax.Array, stats: SimilarityStats, *, correct_only: bool = True
) -> jax.Array:
  """One epoch-end update :math:`S^{t-1} \\to S^t` (module docstring); pure, jit-able.

  Args:
    similarity_prev: float [C, C], the matrix used during the finished epoch.
    stats: that epoch's statistics (any feature width).
    correct_only: average only correctly classified samples (the paper's rule).

  Returns:
    float32 [C, C].
  """
  c = stats.num_classes
  if jnp.shape(similarity_prev) != (c, c):
    raise ValueError(
        f"`similarity_prev` must be [C, C] = [{c}, {c}] (C from stats), got "
        f"{jnp.shape(similarity_prev)}."
    )
  sums = stats.prob_sum_correct if correct_only else stats.prob_sum
  counts = stats.count_correct if correct_only else stats.count
  seen = counts > 0
  mean = sums / jnp.where(seen, counts, 1.0)[:, None]
  return jnp.where(seen[:, None], mean, jnp.asarray(similarity_prev, jnp.float32))
