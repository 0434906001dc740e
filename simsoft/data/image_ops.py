"""Host-side image pipeline of the streaming reader: decode, crop, flip, resize.

Runs in grain's worker processes on one example at a time, with numpy and
Pillow only. Every function returns uint8 [H, W, C]; the train transforms
take a np.random.Generator (seeded per example by the caller, so the result
does not depend on which worker ran it).

  decode(data, channels)                      encoded bytes -> [h, w, channels]
  random_resized_crop(image, rng, size)       Inception crop: area in [0.08, 1]
                                              of the image, aspect ratio in [3/4, 4/3]
                                              (log-uniform), resized to size x size
  resize_center_crop(image, size, fraction)   shorter side -> size / fraction,
                                              then the central size x size
  pad_crop_flip(image, rng, padding)          simsoft.augment.random_crop_flip on
                                              the host: zero padding, a uniform
                                              offset, a flip with probability 1/2
  flip(image, rng)                            left-right with probability 1/2
"""

from __future__ import annotations

import io
import math

import numpy as np

TRAIN_TRANSFORMS = ("none", "pad_crop_flip", "random_resized_crop")
EVAL_TRANSFORMS = ("none", "resize_center_crop")


def decode(data: bytes, channels: int = 3) -> np.ndarray:
  """Encoded image bytes (JPEG, PNG, ...) -> uint8 [h, w, channels] (1 or 3)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  with Image.open(io.BytesIO(data)) as im:
    array = np.asarray(im.convert("RGB"), np.uint8)
  return np.ascontiguousarray(array[..., :1]) if channels == 1 else array


def _resize(image: np.ndarray, box, size: tuple[int, int]) -> np.ndarray:
  """The region box = (left, top, right, bottom) of `image`, resized (bilinear) to size=(w, h)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  grey = image.shape[-1] == 1
  im = Image.fromarray(image[..., 0] if grey else image)
  out = np.asarray(im.resize(size, Image.BILINEAR, box=box), np.uint8)
  return out[..., None] if grey else out


def random_resized_crop(
    image: np.ndarray,
    rng: np.random.Generator,
    size: int,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> np.ndarray:
  """Inception-style crop (as torchvision's RandomResizedCrop), resized to size x size.

  Up to `attempts` draws of area a ~ U(scale) * h * w and aspect ratio
  r = exp(U(log ratio)); the first crop (sqrt(a r) wide, sqrt(a / r) high)
  that fits is placed uniformly. If none fits, the central crop of the
  image with its aspect ratio clipped to `ratio`.
  """
  h, w = image.shape[:2]
  area = h * w
  for _ in range(attempts):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    cw = int(round(math.sqrt(target * aspect)))
    ch = int(round(math.sqrt(target / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      top = int(rng.integers(0, h - ch + 1))
      left = int(rng.integers(0, w - cw + 1))
      return _resize(image, (left, top, left + cw, top + ch), (size, size))
  aspect = w / h
  if aspect < ratio[0]:
    cw, ch = w, int(round(w / ratio[0]))
  elif aspect > ratio[1]:
    ch, cw = h, int(round(h * ratio[1]))
  else:
    cw, ch = w, h
  top, left = (h - ch) // 2, (w - cw) // 2
  return _resize(image, (left, top, left + cw, top + ch), (size, size))


def resize_center_crop(
    image: np.ndarray, size: int, fraction: float = 0.875
) -> np.ndarray:
  """Shorter side resized to round(size / fraction), then the central size x size."""
  h, w = image.shape[:2]
  short = int(round(size / fraction))
  if h <= w:
    nh, nw = short, max(short, int(round(w * short / h)))
  else:
    nw, nh = short, max(short, int(round(h * short / w)))
  resized = _resize(image, (0, 0, w, h), (nw, nh))
  top, left = (nh - size) // 2, (nw - size) // 2
  return resized[top : top + size, left : left + size]


def flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Mirrored left-right with probability 1/2."""
  return image[:, ::-1] if rng.integers(0, 2) else image


def pad_crop_flip(
    image: np.ndarray, rng: np.random.Generator, padding: int = 4
) -> np.ndarray:
  """The zero-padded image cropped at a uniform offset in [0, 2 padding]^2, then flipped
  with probability 1/2 (simsoft.augment.crop_flip's formula, on the host)."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  dy, dx = (int(v) for v in rng.integers(0, 2 * padding + 1, size=2))
  return flip(padded[dy : dy + h, dx : dx + w], rng)


def train_transform(
    kind: str, image: np.ndarray, rng: np.random.Generator, size: int
) -> np.ndarray:
  """The train transform `kind` (TRAIN_TRANSFORMS); size 0 keeps the image's size."""
  if kind == "random_resized_crop":
    return flip(random_resized_crop(image, rng, size), rng)
  if kind == "pad_crop_flip":
    image = pad_crop_flip(image, rng)
  elif kind != "none":
    raise ValueError(
        f"unknown train transform {kind!r}; known: {list(TRAIN_TRANSFORMS)}"
    )
  return _fit(image, size)


def eval_transform(kind: str, image: np.ndarray, size: int) -> np.ndarray:
  """The evaluation transform `kind` (EVAL_TRANSFORMS); size 0 keeps the image's size."""
  if kind == "resize_center_crop":
    return resize_center_crop(image, size)
  if kind != "none":
    raise ValueError(
        f"unknown eval transform {kind!r}; known: {list(EVAL_TRANSFORMS)}"
    )
  return _fit(image, size)


def _fit(image: np.ndarray, size: int) -> np.ndarray:
  """`image` as it is when size is 0 or its size; else resized to size x size."""
  h, w = image.shape[:2]
  if not size or (h, w) == (size, size):
    return image
  return _resize(image, (0, 0, w, h), (size, size))
