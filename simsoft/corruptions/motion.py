"""Motion blur: ImageMagick's MotionBlurImage along a random direction.

The CIFAR-10-C script calls ``MagickMotionBlurImage(radius, sigma, angle)``
(Wand, ImageMagick 6) with ``angle ~ U(-45, 45)`` degrees per image. That
filter (``MotionBlurImageChannel`` in ImageMagick's ``magick/effect.c``) is a
one-sided line of ``K = 2 ceil(radius) + 1`` taps: output pixel (y, x) is

.. math:: \\sum_{i<K} k_i\\, x[y + d^y_i, x + d^x_i], \\quad
   k_i \\propto e^{-i^2 / 2\\sigma^2},\\ \\sum k_i = 1,

with integer offsets :math:`d^x_i = \\lceil i \\cos\\theta - 1/2 \\rceil`,
:math:`d^y_i = \\lceil i \\sin\\theta - 1/2 \\rceil` and pixels outside the
image read from the nearest edge pixel (its default virtual-pixel method).
The script then keeps ImageMagick's 8-bit PNG, which truncates; here the
result stays float (as the other corruptions, which the script truncates to
uint8 when it saves the data set).

Radius and sigma stay in pixels at every size, as gaussian_blur's sigma. Not
in ``FAMILIES``: it belongs with the blurs, but ``FAMILIES`` holds
``DEFAULT_SUITE``'s members only (a family missing a member drops out of a
sweep's summary), so adding it there would drop the blur family of default
runs.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from simsoft.corruptions._ops import _table

# (radius, sigma) in pixels per severity. Severities 3 and 4 blur alike: the
# longer kernel's extra taps weigh below exp(-13**2 / 8) = 7e-10.
MOTION_BLUR_RADIUS_SIGMA = ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5))
MOTION_BLUR_ANGLE = (-45.0, 45.0)  # degrees, uniform per image


def motion_blur_kernel(radius: float, sigma: float) -> np.ndarray:
  """[2 ceil(radius) + 1] float64: ImageMagick's one-sided motion kernel,
  :math:`k_i \\propto e^{-i^2 / 2 \\sigma^2}`, summing to 1."""
  i = np.arange(2 * math.ceil(radius) + 1, dtype=np.float64)
  k = np.exp(-(i**2) / (2.0 * sigma**2))
  return k / k.sum()


@functools.lru_cache(maxsize=None)
def motion_blur_taps(
    radius_sigma: tuple[tuple[float, float], ...],
) -> np.ndarray:
  """[5, K] float64: :func:`motion_blur_kernel` per severity, zero-padded to the
  longest (K = 2 ceil(max radius) + 1)."""
  kernels = [motion_blur_kernel(r, s) for r, s in radius_sigma]
  out = np.zeros((len(kernels), max(k.size for k in kernels)))
  for row, k in enumerate(kernels):
    out[row, : k.size] = k
  return out


def line_blur(x: jax.Array, taps: jax.Array, angle: jax.Array) -> jax.Array:
  """ImageMagick's motion blur of each image along its own direction.

  Args:
    x: [B, H, W, C].
    taps: [K] kernel weights (may be traced; zero taps add nothing).
    angle: [B] degrees, the direction of the blur (0: towards +x, 90: +y).

  Returns:
    [B, H, W, C]: :math:`\\sum_i k_i x[y + d^y_i, x + d^x_i]`, offsets
    :math:`\\lceil i (\\cos, \\sin)\\theta - 1/2 \\rceil`, edge pixels repeated.
  """
  b, h, w = x.shape[:3]
  theta = jnp.deg2rad(angle.astype(jnp.float32))
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  rows, cols = jnp.arange(h), jnp.arange(w)

  def tap(i, out):  # a loop, not unrolled: one small body to compile
    dx = jnp.ceil(i * cos - 0.5).astype(jnp.int32)
    dy = jnp.ceil(i * sin - 0.5).astype(jnp.int32)
    r = jnp.clip(rows[None, :] + dy[:, None], 0, h - 1)  # [B, H]
    c = jnp.clip(cols[None, :] + dx[:, None], 0, w - 1)  # [B, W]
    shifted = jnp.take_along_axis(x, r.reshape(b, h, 1, 1), axis=1)
    shifted = jnp.take_along_axis(shifted, c.reshape(b, 1, w, 1), axis=2)
    return out + taps[i] * shifted

  return jax.lax.fori_loop(0, taps.shape[0], tap, jnp.zeros_like(x))


def motion_blur_angle(key: jax.Array, batch: int) -> jax.Array:
  """[B] float32 degrees, uniform in ``MOTION_BLUR_ANGLE`` (the draws of
  :func:`motion_blur`)."""
  lo, hi = MOTION_BLUR_ANGLE
  return jax.random.uniform(key, (batch,), jnp.float32, lo, hi)


@jax.jit
def motion_blur(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Motion blur of (radius, sigma) ``MOTION_BLUR_RADIUS_SIGMA[severity - 1]``
  along an angle drawn per image (:func:`motion_blur_angle`).

  Jitted with the severity traced: one program per shape serves every
  severity, also called eagerly (op by op, it would compile each op)."""
  taps = _table(motion_blur_taps(MOTION_BLUR_RADIUS_SIGMA), severity)
  return line_blur(x, taps, motion_blur_angle(key, x.shape[0]))
