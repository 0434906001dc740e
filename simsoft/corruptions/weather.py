"""Weather: snow (motion-blurred flakes over a brightened image) and fog
(a diamond-square plasma fractal added to the image).

Both follow the CIFAR-10-C script, split into the random draws (from the
key, per image: ``snow_draws``, ``fog_draws``) and a deterministic core that
takes them, so that the tests feed the same draws to the script's code.

Sizes other than 32x32: snow's noise layer is per pixel and zoomed by the
script's relative factors, each axis on its own length; its flakes are
motion-blurred by the script's radius and sigma in pixels, as motion_blur.
Fog's fractal is drawn on the smallest power-of-two square covering the
image (32 for 28x28, 8 for 8x8) and cropped to it, as the script crops its
32x32 map (ImageNet-C draws 256 for 224): the coarsest fractal level spans
the image at every size, and a smaller map has fewer fine levels.

Hendrycks and Dietterich group snow and fog with frost and brightness as
weather. Not in ``FAMILIES``, which holds ``DEFAULT_SUITE``'s members only
(as for zoom_blur and saturate).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from simsoft.corruptions._ops import _param
from simsoft.corruptions._ops import _table
from simsoft.corruptions._ops import clipped_zoom_matrix
from simsoft.corruptions.motion import line_blur
from simsoft.corruptions.motion import motion_blur_taps

# The script's c per severity: (mean, std, zoom, threshold, blur radius,
# blur sigma, image weight).
SNOW_PARAMS = (
    (0.1, 0.2, 1.0, 0.6, 8, 3.0, 0.95),
    (0.1, 0.2, 1.0, 0.5, 10, 4.0, 0.9),
    (0.15, 0.3, 1.75, 0.55, 10, 4.0, 0.9),
    (0.25, 0.3, 2.25, 0.6, 12, 6.0, 0.85),
    (0.3, 0.3, 1.25, 0.65, 14, 12.0, 0.8),
)
# Degrees, uniform per image: the flakes' streaks point up and down.
SNOW_ANGLE = (-135.0, -45.0)
# (fog amount, wibble decay) per severity.
FOG_PARAMS = ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75))
PLASMA_WIBBLE = 100.0
# Fractal sides up to this are one matrix product (a 4 MB matrix at 32),
# larger ones are built level by level (the matrix grows as side**4).
PLASMA_MATRIX_MAX = 32
# cv2.cvtColor(..., COLOR_RGB2GRAY): ITU-R BT.601 luma.
_GRAY_WEIGHTS = (0.299, 0.587, 0.114)


def _sev(table, index, severity):
  return _param(tuple(row[index] for row in table), severity)


@functools.lru_cache(maxsize=None)
def snow_zoom_tables(n: int) -> np.ndarray:
  """[5, n, n]: the script's ``clipped_zoom`` by each severity's snow zoom."""
  return np.stack([clipped_zoom_matrix(n, p[2]) for p in SNOW_PARAMS])


def snow_draws(key: jax.Array, batch: int, h: int, w: int):
  """(noise [B, H, W] standard normal, angle [B] degrees in ``SNOW_ANGLE``)."""
  k_noise, k_angle = jax.random.split(key)
  lo, hi = SNOW_ANGLE
  return (
      # Drawn flat: on CPU, XLA compiles a 3-D draw several times slower.
      jax.random.normal(k_noise, (batch, h * w), jnp.float32).reshape(
          batch, h, w
      ),
      jax.random.uniform(k_angle, (batch,), jnp.float32, lo, hi),
  )


def snow_from_draws(
    x: jax.Array, severity: int | jax.Array, noise: jax.Array, angle: jax.Array
) -> jax.Array:
  """The script's snow given its draws (``noise`` [B, H, W] N(0, 1), ``angle`` [B]).

  Layer :math:`L = \\mathrm{zoom}(m + s\\,z)`, zeroed below the threshold,
  clipped to [0, 1] and truncated to 8 bits (the script stores it as a
  uint8 PNG for ImageMagick), motion-blurred along ``angle``. The image is
  brightened towards :math:`\\max(x, 1.5\\,\\mathrm{gray}(x) + 0.5)` with
  weight 1 - w, and the layer and its 180-degree rotation are added:
  :math:`w x + (1 - w) \\max(x, 1.5 g + 0.5) + L + \\mathrm{rot}_{180}(L)`
  (g: BT.601 luma; the channel itself for one-channel images).
  """
  h, w = x.shape[1], x.shape[2]
  mean, std, threshold = (_sev(SNOW_PARAMS, i, severity) for i in (0, 1, 3))
  layer = jnp.einsum(
      "hH,bHW,wW->bhw",
      _table(snow_zoom_tables(h), severity),
      mean + std * noise,
      _table(snow_zoom_tables(w), severity),
      precision=jax.lax.Precision.HIGHEST,
  )
  layer = jnp.where(layer < threshold, 0.0, layer)
  layer = jnp.floor(jnp.clip(layer, 0.0, 1.0) * 255.0) / 255.0
  taps = _table(
      motion_blur_taps(tuple((p[4], p[5]) for p in SNOW_PARAMS)), severity
  )
  layer = line_blur(layer[..., None], taps, angle)
  if x.shape[-1] == 3:  # a weighted sum, not a matmul: no TF32 on GPUs
    gray = jnp.sum(x * jnp.asarray(_GRAY_WEIGHTS), axis=-1, keepdims=True)
  else:
    gray = x
  weight = _sev(SNOW_PARAMS, 6, severity)
  x = weight * x + (1.0 - weight) * jnp.maximum(x, gray * 1.5 + 0.5)
  return x + layer + layer[:, ::-1, ::-1, :]


@jax.jit
def snow(x: jax.Array, severity: int | jax.Array, key: jax.Array) -> jax.Array:
  """:func:`snow_from_draws` with :func:`snow_draws` from ``key`` (jitted, the
  severity traced, as motion_blur)."""
  return snow_from_draws(x, severity, *snow_draws(key, *x.shape[:3]))


def plasma_size(h: int, w: int) -> int:
  """The side of fog's fractal: the smallest power of two >= max(H, W)."""
  return 1 << (max(h, w) - 1).bit_length()


def fog_draws(key: jax.Array, batch: int, size: int) -> jax.Array:
  """[B, size**2 - 1] U[0, 1): the diamond-square draws, in the order the
  script makes them: per level n = 1, 2, 4, ..., size / 2, three n x n
  arrays (squares, then the two diamond sets), each row-major."""
  return jax.random.uniform(key, (batch, size * size - 1))


def _refine(grid, v, xp=np):
  """One diamond-square level: grid [..., n, n] (points s apart) and its noise
  v [..., 3, n, n] (squares, then the two diamond sets) -> [..., 2n, 2n]
  (points s/2 apart); ``xp`` numpy or jax.numpy."""
  sq = grid + xp.roll(grid, -1, axis=-2)
  centre = (sq + xp.roll(sq, -1, axis=-1)) / 4 + v[..., 0, :, :]
  row_mid = (
      centre + xp.roll(centre, 1, axis=-2) + grid + xp.roll(grid, -1, axis=-1)
  ) / 4 + v[..., 1, :, :]
  col_mid = (
      centre + xp.roll(centre, 1, axis=-1) + grid + xp.roll(grid, -1, axis=-2)
  ) / 4 + v[..., 2, :, :]
  out = xp.stack(
      [xp.stack([grid, row_mid], -1), xp.stack([col_mid, centre], -1)], -3
  )  # [..., n, 2, n, 2]
  n = grid.shape[-1]
  return out.reshape(grid.shape[:-2] + (2 * n, 2 * n))


def _levels(size: int) -> list[tuple[int, int]]:
  """(first draw, grid side n) per level: n = 1, 2, ..., size / 2, 3 n**2 draws each."""
  out, start, n = [], 0, 1
  while n < size:
    out.append((start, n))
    start, n = start + 3 * n * n, 2 * n
  return out


@functools.lru_cache(maxsize=None)
def plasma_matrix(size: int) -> np.ndarray:
  """[size**2 - 1, size**2] float64: the diamond-square map as a linear
  function of its noise.

  Each point is the mean of 4 earlier points plus its own noise, and the map
  starts at 0, so the (unnormalized) map of noise v is ``v @ L``: L's row j
  is the map of the unit noise e_j.
  """
  count = size * size - 1
  basis, grid = np.eye(count), np.zeros((count, 1, 1))
  for start, n in _levels(size):
    grid = _refine(
        grid, basis[:, start : start + 3 * n * n].reshape(count, 3, n, n)
    )
  return grid.reshape(count, size * size)


def plasma_fractal(draws: jax.Array, wibbledecay) -> jax.Array:
  """The script's ``plasma_fractal`` (diamond-square) on a batch: [B, N, N] in [0, 1].

  ``draws`` [B, N**2 - 1] U[0, 1) as :func:`fog_draws`. At step size s = N,
  N/2, ..., 2 with wibble :math:`w_k = 100 / d^k` (d the decay, level
  k = 0, 1, ...) the centres of the s-squares get the mean of their 4
  corners plus :math:`w_k U(-w_k, w_k)`, then the edge midpoints the mean of
  their 4 diamond neighbours (periodic) plus the same; the map is min-max
  normalized. Linear in the noise: for N <= ``PLASMA_MATRIX_MAX`` one
  matrix product (:func:`plasma_matrix`), else level by level.
  """
  b, size = draws.shape[0], math.isqrt(draws.shape[1] + 1)
  levels = np.concatenate(
      [np.full(3 * n * n, k) for k, (_, n) in enumerate(_levels(size))]
  )
  wibble = PLASMA_WIBBLE / jnp.asarray(wibbledecay, jnp.float32) ** jnp.asarray(
      levels, jnp.float32
  )
  noise = wibble * (-wibble + 2.0 * wibble * draws)  # the script's wibbledmean
  if size <= PLASMA_MATRIX_MAX:
    m = jnp.matmul(
        noise,
        jnp.asarray(plasma_matrix(size), jnp.float32),
        precision=jax.lax.Precision.HIGHEST,
    ).reshape(b, size, size)
  else:
    m = jnp.zeros((b, 1, 1), jnp.float32)
    for start, n in _levels(size):
      v = noise[:, start : start + 3 * n * n].reshape(b, 3, n, n)
      m = _refine(m, v, jnp)
  m = m - jnp.min(m, axis=(1, 2), keepdims=True)
  return m / jnp.max(m, axis=(1, 2), keepdims=True)


def fog_from_draws(
    x: jax.Array, severity: int | jax.Array, draws: jax.Array
) -> jax.Array:
  """:math:`(x + a F) M / (M + a)`: F the plasma fractal cropped to [H, W],
  M the image's maximum (over pixels and channels), a the fog amount."""
  amount = _sev(FOG_PARAMS, 0, severity)
  fractal = plasma_fractal(draws, _sev(FOG_PARAMS, 1, severity))
  fractal = fractal[:, : x.shape[1], : x.shape[2], None]
  peak = jnp.max(x, axis=(1, 2, 3), keepdims=True)
  return (x + amount * fractal) * peak / (peak + amount)


@jax.jit
def fog(x: jax.Array, severity: int | jax.Array, key: jax.Array) -> jax.Array:
  """:func:`fog_from_draws` with :func:`fog_draws` from ``key`` (jitted, the
  severity traced, as motion_blur)."""
  b, h, w = x.shape[:3]
  return fog_from_draws(x, severity, fog_draws(key, b, plasma_size(h, w)))
