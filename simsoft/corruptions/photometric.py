"""Global intensity and colour: contrast, brightness, saturate."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from simsoft.corruptions._ops import _param

CONTRAST_FACTOR = (0.75, 0.5, 0.4, 0.3, 0.15)
BRIGHTNESS_SHIFT = (0.05, 0.1, 0.15, 0.2, 0.3)
# saturate: HSV saturation S -> clip(S a + b, 0, 1), (a, b) per severity.
SATURATE_SCALE_SHIFT = (
    (0.3, 0.0),
    (0.1, 0.0),
    (1.5, 0.0),
    (2.0, 0.1),
    (2.5, 0.2),
)


def contrast(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """:math:`(x - \\mu) c + \\mu`, :math:`\\mu` the per-image, per-channel mean."""
  del key
  c = _param(CONTRAST_FACTOR, severity)
  mean = jnp.mean(x, axis=(1, 2), keepdims=True)
  return (x - mean) * c + mean


def brightness(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Adds c to the HSV value channel :math:`V = \\max_k x_k`, clipped to [0, 1].

  Hue and saturation fixed, every RGB channel scales with V, so this is
  :math:`x \\cdot V'/V` (and :math:`V'` in each channel where V = 0, which
  has S = 0), identical to the script's rgb2hsv / hsv2rgb round trip. For one
  channel V is the intensity and this is :math:`\\mathrm{clip}(x + c)`.
  """
  del key
  c = _param(BRIGHTNESS_SHIFT, severity)
  v = jnp.max(x, axis=-1, keepdims=True)
  v_new = jnp.clip(v + c, 0.0, 1.0)
  ratio = v_new / jnp.where(v > 0, v, 1.0)
  return jnp.where(v > 0, x * ratio, v_new)


def saturate(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """HSV saturation S -> clip(S a + b, 0, 1), hue and value kept (RGB only).

  For fixed hue and value V every channel is :math:`V (1 - S k_c)`, so the
  new pixel is :math:`V - (V - x) S'/S`; a grey pixel (S = 0, hue 0 as in
  skimage's rgb2hsv) becomes :math:`(V, V (1 - S'), V (1 - S'))`. One-channel
  images have no saturation and are returned unchanged.
  """
  del key
  if x.shape[-1] != 3:
    return x
  a = _param(tuple(c[0] for c in SATURATE_SCALE_SHIFT), severity)
  b = _param(tuple(c[1] for c in SATURATE_SCALE_SHIFT), severity)
  v = jnp.max(x, axis=-1, keepdims=True)
  delta = v - jnp.min(x, axis=-1, keepdims=True)
  sat = jnp.where(delta > 0, delta / jnp.where(v > 0, v, 1.0), 0.0)
  new = jnp.clip(sat * a + b, 0.0, 1.0)
  coloured = v - (v - x) * new / jnp.where(sat > 0, sat, 1.0)
  grey = v * jnp.concatenate(
      [jnp.ones_like(new), 1.0 - new, 1.0 - new], axis=-1
  )
  return jnp.where(sat > 0, coloured, grey)
