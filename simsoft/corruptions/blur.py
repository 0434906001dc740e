"""Loss of fine detail: Gaussian, defocus and zoom blur, pixelate."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from simsoft.corruptions._ops import _filter1d
from simsoft.corruptions._ops import _filter2d
from simsoft.corruptions._ops import _gaussian_taps
from simsoft.corruptions._ops import _param
from simsoft.corruptions._ops import _table
from simsoft.corruptions._ops import box_resize_matrix
from simsoft.corruptions._ops import clipped_zoom_matrix
from simsoft.corruptions._ops import SEVERITIES

GAUSSIAN_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)
DEFOCUS_BLUR_RADIUS_ALIAS = (
    (0.3, 0.4),
    (0.4, 0.5),
    (0.5, 0.6),
    (1.0, 0.2),
    (1.5, 0.1),
)
PIXELATE_FACTOR = (0.95, 0.9, 0.85, 0.75, 0.65)
# zoom_blur: the script's zoom factors, np.arange(1, stop, 0.01) per severity.
ZOOM_BLUR_STOPS = (1.06, 1.11, 1.16, 1.21, 1.26)


def gaussian_blur_taps() -> np.ndarray:
  """[5, 9] float64: row s-1 the 1-D Gaussian of sigma ``GAUSSIAN_BLUR_SIGMA[s-1]``
  truncated at ``int(4 sigma + 0.5)`` px, centred and zero-padded to radius 4.
  """
  width = 2 * int(4.0 * max(GAUSSIAN_BLUR_SIGMA) + 0.5) + 1
  out = np.zeros((len(GAUSSIAN_BLUR_SIGMA), width))
  for row, sigma in enumerate(GAUSSIAN_BLUR_SIGMA):
    g = _gaussian_taps(sigma, int(4.0 * sigma + 0.5))
    start = (width - g.size) // 2
    out[row, start : start + g.size] = g
  return out


def gaussian_blur(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Gaussian blur of sigma c px, truncated at 4 sigma, edge padding (separable).

  Matches the script's ``skimage.filters.gaussian(..., mode='nearest', truncate=4)``.
  """
  del key
  g = _table(gaussian_blur_taps(), severity)
  return _filter1d(_filter1d(x, g, 1, "edge"), g, 2, "edge")


def defocus_kernel(severity: int) -> np.ndarray:
  """The script's defocus kernel, a [5, 5] float64 array summing to 1.

  A disk :math:`\\{(u,v): u^2+v^2 \\le r^2\\}` on the integer grid, normalized,
  then smoothed by a 3x3 Gaussian of sigma ``alias`` (OpenCV's
  ``GaussianBlur(ksize=(3, 3))``). Radii here are at most 1.5, so the result
  fits in 5x5.
  """
  radius, alias = DEFOCUS_BLUR_RADIUS_ALIAS[severity - 1]
  t = np.arange(-2, 3)
  u, v = np.meshgrid(t, t)
  disk = (u**2 + v**2 <= radius**2).astype(np.float64)
  disk /= disk.sum()
  g = _gaussian_taps(alias, 1)
  out = np.zeros_like(disk)
  for i in range(3):
    for j in range(3):
      out += g[i] * g[j] * np.roll(disk, (i - 1, j - 1), axis=(0, 1))
  return out


def defocus_blur(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Correlation with :func:`defocus_kernel`, reflect-101 border (OpenCV's default)."""
  del key
  kernels = [defocus_kernel(s) for s in SEVERITIES]
  return _filter2d(x, _table(kernels, severity), "reflect")


def pixelate_matrix(n: int, c: float) -> np.ndarray:
  """[n, n]: box-resize an axis of n pixels to ``int(n c)`` and back (PIL's BOX)."""
  m = int(n * c)
  return box_resize_matrix(m, n) @ box_resize_matrix(n, m)


def pixelate(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Box-downsample each axis to ``int(n c)`` pixels, then box-upsample back."""
  del key
  h, w = x.shape[1], x.shape[2]
  mh = _table([pixelate_matrix(h, c) for c in PIXELATE_FACTOR], severity)
  mw = _table([pixelate_matrix(w, c) for c in PIXELATE_FACTOR], severity)
  return jnp.einsum(
      "hH,bHWc,wW->bhwc", mh, x, mw, precision=jax.lax.Precision.HIGHEST
  )


@functools.lru_cache(maxsize=None)
def zoom_blur_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
  """([5, Z, n, n] clipped-zoom matrices per severity, zero-padded to the
  largest count Z; [5] the number of images averaged, zooms + 1)."""
  factors = [np.arange(1, stop, 0.01) for stop in ZOOM_BLUR_STOPS]
  z = max(len(f) for f in factors)
  mats = np.zeros((len(factors), z, n, n))
  for s, fs in enumerate(factors):
    for k, factor in enumerate(fs):
      mats[s, k] = clipped_zoom_matrix(n, factor)
  return mats, np.array([len(f) + 1.0 for f in factors])


def zoom_blur(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """The mean of the image and its clipped zooms by 1, 1.01, ... (up to 1.05
  at severity 1, 1.25 at 5), each axis zoomed on its own length (the script
  squares crops by the height; the same for square images)."""
  del key
  h, w = x.shape[1], x.shape[2]
  mh, counts = zoom_blur_tables(h)
  mw, _ = zoom_blur_tables(w)
  zoomed = jnp.einsum(
      "zhH,bHWc,zwW->bhwc",
      _table(mh, severity),
      x,
      _table(mw, severity),
      precision=jax.lax.Precision.HIGHEST,
  )
  return (x + zoomed) / _param(tuple(counts), severity)
