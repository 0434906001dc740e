"""Per-element noise: Gaussian, shot (Poisson), impulse (salt and pepper), speckle."""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from simsoft.corruptions._ops import _param

GAUSSIAN_NOISE_SCALE = (0.04, 0.06, 0.08, 0.09, 0.10)
SHOT_NOISE_RATE = (500.0, 250.0, 100.0, 75.0, 50.0)
IMPULSE_NOISE_AMOUNT = (0.01, 0.02, 0.03, 0.05, 0.07)
SPECKLE_NOISE_SCALE = (0.06, 0.10, 0.12, 0.16, 0.20)


def _per_image(
    draw: Callable[[tuple[int, int]], jax.Array], shape
) -> jax.Array:
  """``draw`` of shape [B, H W C], reshaped to ``shape`` [B, H, W, C].

  The same numbers as drawing ``shape`` directly (threefry counts elements in
  row-major order), but XLA on CPU compiles a 2-D draw two to three times
  faster than a 4-D one; the batch axis, which a mesh may shard, stays first.
  """
  return draw((shape[0], math.prod(shape[1:]))).reshape(shape)


def gaussian_noise(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """:math:`x + \\mathcal{N}(0, c^2)`, c in ``GAUSSIAN_NOISE_SCALE``."""
  c = _param(GAUSSIAN_NOISE_SCALE, severity)
  noise = _per_image(lambda s: jax.random.normal(key, s, jnp.float32), x.shape)
  return x + c * noise


def shot_noise(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Poisson photon noise :math:`\\mathrm{Poisson}(c x) / c`, c in ``SHOT_NOISE_RATE``."""
  c = _param(SHOT_NOISE_RATE, severity)
  rate = (x * c).reshape(x.shape[0], -1)
  counts = _per_image(lambda s: jax.random.poisson(key, rate, s), x.shape)
  return counts.astype(jnp.float32) / c


def impulse_noise(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Salt and pepper: a fraction c of elements set to 0 or 1 with equal odds."""
  c = _param(IMPULSE_NOISE_AMOUNT, severity)
  k_flip, k_salt = jax.random.split(key)
  flipped = _per_image(lambda s: jax.random.uniform(k_flip, s), x.shape) < c
  salt = _per_image(lambda s: jax.random.uniform(k_salt, s), x.shape) < 0.5
  return jnp.where(flipped, salt.astype(jnp.float32), x)


def speckle_noise(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Multiplicative noise :math:`x + x\\,\\mathcal{N}(0, c^2)`."""
  c = _param(SPECKLE_NOISE_SCALE, severity)
  noise = _per_image(lambda s: jax.random.normal(key, s, jnp.float32), x.shape)
  return x + x * c * noise
