"""Glass blur: Gaussian blur, local pixel swaps, Gaussian blur again.

Family: loss of fine detail (with ``blur.py``); not in ``FAMILIES``, whose
families are of ``DEFAULT_SUITE`` only.

The script (``glass_blur`` of ``make_cifar_c.py``) blurs with sigma c px
(``skimage.filters.gaussian``: edge padding, truncated at 4 sigma), truncates
to uint8, then, ``iterations`` times, visits the pixels ``(h, w)`` for
``h = H - d, ..., d + 1`` and, within each row, ``w = W - d, ..., d + 1``
(both descending; d = max_delta = 1) and "swaps" each with the pixel at
``(h + dy, w + dx)``, ``dx, dy`` uniform integers in ``[-d, d)``, and blurs
again. The swap is a tuple assignment of numpy views of the [H, W, 3] array,
``x[h, w], x[h', w'] = x[h', w'], x[h, w]``, which copies pixel (h', w') onto
(h, w) and leaves (h', w') as it was; CIFAR-10-C was made so, and so does
this (for every C). The copies are sequential (a pixel copied up a row is
copied again when that row is visited), so they run in order in a
``lax.fori_loop``; as they move pixels without reading them, they are
composed into one index map of the pixel positions, applied by one gather.
The script's loops bound both axes by 32; here by H and W. Sigma, d and the
number of iterations stay in pixels for every size (the copies move pixels
by one pixel; the blurs are like ``gaussian_blur``'s).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from simsoft.corruptions._ops import _filter1d
from simsoft.corruptions._ops import _gaussian_taps
from simsoft.corruptions._ops import _param
from simsoft.corruptions._ops import _table

# (sigma, max_delta, iterations) per severity.
GLASS_BLUR_SIGMA_DELTA_ITERATIONS = (
    (0.05, 1, 1),
    (0.25, 1, 1),
    (0.4, 1, 1),
    (0.25, 1, 2),
    (0.4, 1, 2),
)
_DELTA = 1  # max_delta, the same at every severity
_MAX_ITERATIONS = max(it for _, _, it in GLASS_BLUR_SIGMA_DELTA_ITERATIONS)


def glass_blur_taps() -> np.ndarray:
  """[5, 5] float64: row s-1 the 1-D Gaussian of the severity's sigma,
  truncated at ``int(4 sigma + 0.5)`` px (scipy's rule), zero-padded to radius 2.
  """
  sigmas = [s for s, _, _ in GLASS_BLUR_SIGMA_DELTA_ITERATIONS]
  width = 2 * int(4.0 * max(sigmas) + 0.5) + 1
  out = np.zeros((len(sigmas), width))
  for row, sigma in enumerate(sigmas):
    g = _gaussian_taps(sigma, int(4.0 * sigma + 0.5))
    start = (width - g.size) // 2
    out[row, start : start + g.size] = g
  return out


def swap_positions(h: int, w: int) -> np.ndarray:
  """[(H - 2d) (W - 2d)] flat indices ``h W + w`` of the pixels the script
  visits, in its order (rows then columns, both descending)."""
  rows = np.arange(h - _DELTA, _DELTA, -1)
  cols = np.arange(w - _DELTA, _DELTA, -1)
  return (rows[:, None] * w + cols[None, :]).reshape(-1)


def swap_offsets(key: jax.Array, b: int, h: int, w: int) -> jax.Array:
  """[B, iterations, (H - 2d) (W - 2d), 2] int32 (dx, dy) in [-d, d): the
  script's ``np.random.randint(-d, d, size=(2,))`` per visited pixel."""
  n = swap_positions(h, w).size
  return jax.random.randint(
      key, (b, _MAX_ITERATIONS, n, 2), -_DELTA, _DELTA, jnp.int32
  )


def swap_sources(
    offsets: jax.Array, h: int, w: int, iterations: int | jax.Array
) -> jax.Array:
  """[B, H W] int32: position ``i`` of the output holds input pixel ``src[i]``.

  Runs the first ``iterations`` rows of ``offsets`` [B, I, n, 2]
  (:func:`swap_offsets`) in order: step t copies the content of position
  ``p_t + dy W + dx`` to position ``p_t``.
  """
  b, max_iter, n, _ = offsets.shape
  positions = jnp.asarray(swap_positions(h, w), jnp.int32)
  flat = offsets.reshape(b, max_iter * n, 2)

  def step(t, src):
    p = positions[t % n]
    q = p + flat[:, t, 1] * w + flat[:, t, 0]  # [B]
    at_q = jnp.take_along_axis(src, q[:, None], axis=1)  # [B, 1]
    return jax.lax.dynamic_update_slice_in_dim(src, at_q, p, axis=1)

  src = jnp.broadcast_to(jnp.arange(h * w, dtype=jnp.int32), (b, h * w))
  return jax.lax.fori_loop(0, iterations * n, step, src)


def glass_blur_core(
    x: jax.Array, severity: int | jax.Array, offsets: jax.Array
) -> jax.Array:
  """:func:`glass_blur` with the random offsets given ([B, 2, n, 2], :func:`swap_offsets`)."""
  b, h, w, c = x.shape
  g = _table(glass_blur_taps(), severity)
  blur = lambda y: _filter1d(_filter1d(y, g, 1, "edge"), g, 2, "edge")
  # The script truncates the first blur to uint8.
  y = jnp.floor(jnp.clip(blur(x), 0.0, 1.0) * 255.0) / 255.0
  iterations = _param(
      tuple(it for _, _, it in GLASS_BLUR_SIGMA_DELTA_ITERATIONS), severity
  )
  src = swap_sources(offsets, h, w, iterations)
  y = jnp.take_along_axis(y.reshape(b, h * w, c), src[..., None], axis=1)
  return blur(y.reshape(b, h, w, c))


def glass_blur(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Blur (sigma 0.05-0.4 px), one or two passes of sequential copies onto
  each pixel from a neighbour up to one pixel up/left, blur. [B, H, W, C] -> same.
  """
  b, h, w, _ = x.shape
  return glass_blur_core(x, severity, swap_offsets(key, b, h, w))
