"""Per-element noise: Gaussian, shot (Poisson), impulse (salt and pepper), speckle."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from simsoft.corruptions._ops import _param

GAUSSIAN_NOISE_SCALE = (0.04, 0.06, 0.08, 0.09, 0.10)
SHOT_NOISE_RATE = (500.0, 250.0, 100.0, 75.0, 50.0)
IMPULSE_NOISE_AMOUNT = (0.01, 0.02, 0.03, 0.05, 0.07)
SPECKLE_NOISE_SCALE = (0.06, 0.10, 0.12, 0.16, 0.20)


def gaussian_noise(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """:math:`x + \\mathcal{N}(0, c^2)`, c in ``GAUSSIAN_NOISE_SCALE``."""
  c = _param(GAUSSIAN_NOISE_SCALE, severity)
  return x + c * jax.random.normal(key, x.shape, jnp.float32)


def shot_noise(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Poisson photon noise :math:`\\mathrm{Poisson}(c x) / c`, c in ``SHOT_NOISE_RATE``."""
  c = _param(SHOT_NOISE_RATE, severity)
  return jax.random.poisson(key, x * c, x.shape).astype(jnp.float32) / c


def impulse_noise(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Salt and pepper: a fraction c of elements set to 0 or 1 with equal odds."""
  c = _param(IMPULSE_NOISE_AMOUNT, severity)
  k_flip, k_salt = jax.random.split(key)
  flipped = jax.random.uniform(k_flip, x.shape) < c
  salt = jax.random.uniform(k_salt, x.shape) < 0.5
  return jnp.where(flipped, salt.astype(jnp.float32), x)


def speckle_noise(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Multiplicative noise :math:`x + x\\,\\mathcal{N}(0, c^2)`."""
  c = _param(SPECKLE_NOISE_SCALE, severity)
  return x + x * c * jax.random.normal(key, x.shape, jnp.float32)
