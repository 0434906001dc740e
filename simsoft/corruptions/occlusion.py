"""Missing content: a grey square at a random place (Cutout in pixel space)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from simsoft.corruptions._ops import _param

OCCLUSION_FRACTION = (0.1, 0.2, 0.3, 0.4, 0.5)
OCCLUSION_FILL = 0.5


def occlusion(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Grey square of side ``round(f min(H, W))`` at a random centre per image.

  For a fixed key, the square at a higher severity contains the one at a
  lower severity (same centre), so the damage grows monotonically.
  """
  b, h, w = x.shape[:3]
  side = _param(
      [max(1, math.floor(f * min(h, w) + 0.5)) for f in OCCLUSION_FRACTION],
      severity,
  )
  ky, kx = jax.random.split(key)
  top = jax.random.randint(ky, (b, 1, 1, 1), 0, h) - side // 2
  left = jax.random.randint(kx, (b, 1, 1, 1), 0, w) - side // 2
  rows = jnp.arange(h)[None, :, None, None]
  cols = jnp.arange(w)[None, None, :, None]
  inside = (
      (rows >= top)
      & (rows < top + side)
      & (cols >= left)
      & (cols < left + side)
  )
  return jnp.where(inside, OCCLUSION_FILL, x)
