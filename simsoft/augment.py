"""Training-time image augmentation in JAX, run on device inside the jitted step.

Pure functions of (key, images [B, H, W, C]); the batch axis may be sharded
across devices. Each example draws its own crop offset and flip from `key`,
so a fixed key gives a fixed result however the batch is sharded.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def _check_images(images: jax.Array) -> None:
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")


def crop_flip(
    images: jax.Array, offsets: jax.Array, flips: jax.Array, *, padding: int
) -> jax.Array:
  r"""Crop each zero-padded image at a given offset, then mirror it if asked.

  With P the images zero-padded by `padding` pixels on each spatial side,
  (o_b^y, o_b^x) = offsets[b] and f_b = flips[b]:

  $$ \mathrm{out}[b, i, j] = P[b,\ o_b^y + i,\ o_b^x + (W - 1 - j \text{ if } f_b \text{ else } j)] $$

  Args:
    images: [B, H, W, C], any dtype (kept).
    offsets: int [B, 2], (row, column) offsets in [0, 2 * padding].
    flips: bool [B], True mirrors the image left-right.
    padding: pixels of zero padding, >= 0.

  Returns:
    [B, H, W, C], dtype of `images`.
  """
  _check_images(images)
  batch, height, width, _ = images.shape
  if offsets.shape != (batch, 2):
    raise ValueError(
        f"offsets must be [B, 2] = [{batch}, 2], got {offsets.shape}"
    )
  if flips.shape != (batch,):
    raise ValueError(f"flips must be [B] = [{batch}], got {flips.shape}")
  padded = jnp.pad(
      images, ((0, 0), (padding, padding), (padding, padding), (0, 0))
  )
  rows = offsets[:, :1] + jnp.arange(height)  # [B, H]
  cols = jnp.where(flips[:, None], jnp.arange(width)[::-1], jnp.arange(width))
  cols = offsets[:, 1:] + cols  # [B, W]
  out = jnp.take_along_axis(padded, rows[:, :, None, None], axis=1)
  return jnp.take_along_axis(out, cols[:, None, :, None], axis=2)


def random_crop_flip(
    key: jax.Array, images: jax.Array, *, padding: int = 4, flip: bool = True
) -> jax.Array:
  """Random crop of the zero-padded image and random left-right flip, per example.

  Offsets are uniform over the (2 * padding + 1)^2 positions, flips
  Bernoulli(1/2) (none when flip=False). padding=0, flip=False is the identity.

  Args:
    key: PRNG key.
    images: [B, H, W, C], any dtype (kept).
    padding: pixels of zero padding on each side, >= 0.
    flip: whether to flip.

  Returns:
    [B, H, W, C], dtype of `images`.
  """
  _check_images(images)
  if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
    raise ValueError(f"padding must be an int >= 0, got {padding!r}")
  batch = images.shape[0]
  crop_key, flip_key = jax.random.split(key)
  offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * padding + 1)
  if flip:
    flips = jax.random.bernoulli(flip_key, 0.5, (batch,))
  else:
    flips = jnp.zeros((batch,), bool)
  return crop_flip(images, offsets, flips, padding=padding)


def _none(key: jax.Array, images: jax.Array) -> jax.Array:
  del key
  return images


AUGMENTATIONS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "none": _none,
    "crop_flip": random_crop_flip,
}


def augment(key: jax.Array, images: jax.Array, kind: str) -> jax.Array:
  """Apply augmentation `kind` (a key of AUGMENTATIONS) to images [B, H, W, C]."""
  if kind not in AUGMENTATIONS:
    raise ValueError(
        f"unknown augmentation {kind!r}; known: {sorted(AUGMENTATIONS)}"
    )
  return AUGMENTATIONS[kind](key, images)
