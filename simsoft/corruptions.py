"""Image corruptions with five severities, in JAX (Hendrycks and Dietterich 2019).

``corrupt(name, images, severity, key)`` maps float images ``[B, H, W, C]`` in
``[0, 1]`` (``C`` = 1 or 3, ``H, W >= 8``) to corrupted images of the same
shape and dtype, clipped to ``[0, 1]``. It is a pure function: jit it with
``name`` and ``severity`` static; the same key gives the same output.

Parameters are those of the CIFAR-10-C generation script
(hendrycks/robustness, ``ImageNet-C/create_c/make_cifar_c.py``), which are
defined for 32x32 images. Other sizes (8x8 digits, 28x28 Fashion-MNIST):

- ``gaussian_blur`` and ``defocus_blur``: sigma and disk radius stay in
  pixels, as in the script, for every size. They are already sub-pixel to
  one-pixel blurs (sigma 0.4-1, radius 0.3-1.5) that act on the pixel grid;
  shrinking them for small images makes the low severities the identity
  (on smooth 8x8 test images, mean absolute change at severities 1..5:
  unscaled 0.009-0.059; sigma scaled by sqrt(8/32) 1e-6, 9e-4, ..., 0.022;
  scaled linearly by 8/32 below 1e-4 at every severity) and collapses the
  discrete defocus disks, breaking their order. 28x28 is within the spacing
  between severities of 32x32. Above 32 px these values understate the blur
  (ImageNet-C uses sigma 1-6 at 224 px).
- ``pixelate``: the script's factor c is already a fraction of the side: each
  axis is box-resized to ``int(n * c)`` pixels and back (PIL's BOX filter).
- ``zoom_blur``: the script's zoom factors (1 to 1.25) are relative, and
  each axis of n pixels is cropped and zoomed on its own length; at 8x8 the
  smallest zooms round to the identity (severity 1 changes nothing there).
- ``saturate``: RGB only (one-channel images have no saturation: unchanged).
  Neither is in ``DEFAULT_SUITE``, which the configs run.
- ``occlusion`` (not in the script): a square of side ``round(f * min(H, W))``,
  f = 0.1 ... 0.5, at a uniformly random centre, clipped at the border,
  filled with middle grey 0.5 (Cutout, DeVries and Taylor 2017, in pixel space).

Noise is drawn per element (per pixel and channel), as in the script.
"""

from __future__ import annotations

import functools
import math
import types
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

GAUSSIAN_NOISE_SCALE = (0.04, 0.06, 0.08, 0.09, 0.10)
SHOT_NOISE_RATE = (500.0, 250.0, 100.0, 75.0, 50.0)
IMPULSE_NOISE_AMOUNT = (0.01, 0.02, 0.03, 0.05, 0.07)
SPECKLE_NOISE_SCALE = (0.06, 0.10, 0.12, 0.16, 0.20)
GAUSSIAN_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)
DEFOCUS_BLUR_RADIUS_ALIAS = (
    (0.3, 0.4),
    (0.4, 0.5),
    (0.5, 0.6),
    (1.0, 0.2),
    (1.5, 0.1),
)
CONTRAST_FACTOR = (0.75, 0.5, 0.4, 0.3, 0.15)
BRIGHTNESS_SHIFT = (0.05, 0.1, 0.15, 0.2, 0.3)
PIXELATE_FACTOR = (0.95, 0.9, 0.85, 0.75, 0.65)
OCCLUSION_FRACTION = (0.1, 0.2, 0.3, 0.4, 0.5)
OCCLUSION_FILL = 0.5
# zoom_blur: the script's zoom factors, np.arange(1, stop, 0.01) per severity.
ZOOM_BLUR_STOPS = (1.06, 1.11, 1.16, 1.21, 1.26)
# saturate: HSV saturation S -> clip(S a + b, 0, 1), (a, b) per severity.
SATURATE_SCALE_SHIFT = (
    (0.3, 0.0),
    (0.1, 0.0),
    (1.5, 0.0),
    (2.0, 0.1),
    (2.5, 0.2),
)


def _param(table: Sequence[float], severity):
  """``table[severity - 1]``; a traced severity gives a traced (clamped) lookup."""
  if isinstance(severity, jax.Array):
    return jnp.asarray(table)[severity - 1]
  return table[severity - 1]


def _table(tables, severity) -> jax.Array:
  """``tables[severity - 1]`` as float32 (``tables`` [5, ...]); static or traced severity."""
  return jnp.asarray(np.asarray(tables), jnp.float32)[severity - 1]


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


def _pad_axis(x: jax.Array, axis: int, width: int, mode: str) -> jax.Array:
  """Pads one spatial axis by concatenation ('edge' or reflect-101 'reflect').

  Unlike ``jnp.pad`` this never slices the batch axis, which an Explicit-axis
  mesh may shard.
  """
  n = x.shape[axis]
  if mode == "edge":
    before, after = [0] * width, [n - 1] * width
  else:
    before, after = list(range(width, 0, -1)), list(
        range(n - 2, n - 2 - width, -1)
    )
  take = lambda idx: jax.lax.slice_in_dim(x, idx, idx + 1, axis=axis)
  return jnp.concatenate(
      [take(i) for i in before] + [x] + [take(i) for i in after], axis=axis
  )


def _filter2d(x: jax.Array, kernel: jax.Array, pad_mode: str) -> jax.Array:
  """Correlate each channel of ``x`` [B,H,W,C] with a small 2-D kernel [kh, kw]
  (its values may be traced: one program serves every severity)."""
  kh, kw = kernel.shape
  padded = _pad_axis(_pad_axis(x, 1, kh // 2, pad_mode), 2, kw // 2, pad_mode)
  h, w = x.shape[1], x.shape[2]
  out = jnp.zeros_like(x)
  for i in range(kh):
    for j in range(kw):
      out = out + kernel[i, j] * padded[:, i : i + h, j : j + w, :]
  return out


def _filter1d(x: jax.Array, taps: jax.Array, axis: int, pad_mode: str):
  """Correlate ``x`` along one spatial axis with taps [k] (k odd, values may be traced)."""
  k, n = taps.shape[0], x.shape[axis]
  padded = _pad_axis(x, axis, k // 2, pad_mode)
  out = jnp.zeros_like(x)
  for j in range(k):
    out = out + taps[j] * jax.lax.slice_in_dim(padded, j, j + n, axis=axis)
  return out


def _gaussian_taps(sigma: float, radius: int) -> np.ndarray:
  t = np.arange(-radius, radius + 1, dtype=np.float64)
  g = np.exp(-0.5 * t**2 / sigma**2)
  return g / g.sum()


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


def box_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] linear map of PIL's ``Image.resize(..., BOX)`` on one axis.

  Follows ``precompute_coeffs`` in Pillow's Resample.c: output pixel ``o``
  averages the input pixels whose centres fall in its footprint
  ``[(o) s, (o + 1) s)``, ``s = in/out``; upsampling copies the nearest one.
  """
  scale = in_size / out_size
  filterscale = max(scale, 1.0)
  support = 0.5 * filterscale
  m = np.zeros((out_size, in_size))
  for o in range(out_size):
    center = (o + 0.5) * scale
    lo = max(int(center - support + 0.5), 0)
    hi = min(int(center + support + 0.5), in_size)
    for i in range(lo, hi):
      t = (i - center + 0.5) / filterscale
      if -0.5 < t <= 0.5:
        m[o, i] = 1.0
    m[o] /= m[o].sum()
  return m


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


def linear_zoom_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in]: ``scipy.ndimage.zoom(..., order=1)`` along one axis
  (``grid_mode=False``: output o samples input o (n_in - 1) / (n_out - 1),
  linearly interpolated)."""
  m = np.zeros((n_out, n_in))
  step = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
  for o in range(n_out):
    t = o * step
    i = min(int(np.floor(t)), n_in - 1)
    f = t - i
    m[o, i] += 1.0 - f
    if f > 0 and i + 1 < n_in:
      m[o, i + 1] += f
  return m


def clipped_zoom_matrix(n: int, zoom: float) -> np.ndarray:
  """[n, n]: the script's ``clipped_zoom`` along an axis of n pixels.

  The central ``ceil(n / zoom)`` pixels (from ``(n - ch) // 2``), zoomed
  linearly to ``round(ch zoom)``, and the central n of those kept.
  """
  ch = int(np.ceil(n / zoom))
  top = (n - ch) // 2
  out = round(ch * zoom)
  trim = (out - n) // 2
  crop = np.eye(n)[top : top + ch]
  return (linear_zoom_matrix(ch, out) @ crop)[trim : trim + n]


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


# (images [B, H, W, C], severity, key) -> images. The severity is an int in
# 1..5, or a scalar int jax.Array for the names in TRACEABLE_SEVERITY.
Corruption = Callable[[jax.Array, Any, jax.Array], jax.Array]

CORRUPTIONS: types.MappingProxyType[str, Corruption] = types.MappingProxyType(
    {
        "gaussian_noise": gaussian_noise,
        "shot_noise": shot_noise,
        "impulse_noise": impulse_noise,
        "speckle_noise": speckle_noise,
        "gaussian_blur": gaussian_blur,
        "defocus_blur": defocus_blur,
        "contrast": contrast,
        "brightness": brightness,
        "pixelate": pixelate,
        "occlusion": occlusion,
        "zoom_blur": zoom_blur,
        "saturate": saturate,
    }
)
# The suite the configs run by default: the corruptions of before zoom_blur
# and saturate were added, so default runs stay comparable with RESULTS.md
# (name them, or 'all', to run the others).
DEFAULT_SUITE = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "gaussian_blur",
    "defocus_blur",
    "contrast",
    "brightness",
    "pixelate",
    "occlusion",
)
SEVERITIES = (1, 2, 3, 4, 5)
# Families of corruptions that act alike (a family's accuracy is the mean over
# its members): per-pixel noise, loss of fine detail, global intensity, and
# missing content. Of DEFAULT_SUITE only: a family missing a member in a
# run's results drops out of a sweep's summary (simsoft.sweep).
FAMILIES: types.MappingProxyType[str, tuple[str, ...]] = types.MappingProxyType(
    {
        "noise": (
            "gaussian_noise",
            "shot_noise",
            "impulse_noise",
            "speckle_noise",
        ),
        "blur": ("gaussian_blur", "defocus_blur", "pixelate"),
        "photometric": ("contrast", "brightness"),
        "occlusion": ("occlusion",),
    }
)
TRACEABLE_SEVERITY = frozenset(CORRUPTIONS)
"""Corruptions whose ``severity`` may be a traced int, so one compiled function
serves all five severities: scalar parameters, or kernels and resize matrices
looked up in a [5, ...] table of one shape (blurs padded to the widest)."""


def check_severity(severity: object) -> int:
  """Returns ``severity`` as an int, or raises ValueError unless it is in 1..5."""
  if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)):
    raise ValueError(f"severity must be an int in 1..5, got {severity!r}")
  if not 1 <= int(severity) <= 5:
    raise ValueError(f"severity must be in 1..5, got {severity}")
  return int(severity)


def get_corruption(name: str) -> Corruption:
  """The corruption registered as ``name``; ValueError listing known names otherwise."""
  if name not in CORRUPTIONS:
    raise ValueError(
        f"unknown corruption {name!r}; known: {sorted(CORRUPTIONS)}"
    )
  return CORRUPTIONS[name]


def corrupt(
    name: str,
    images: ArrayLike,
    severity: int | jax.Array,
    key: jax.Array,
) -> jax.Array:
  """Applies corruption ``name`` at ``severity`` to a batch of images.

  Args:
    name: a key of ``CORRUPTIONS`` (static under jit).
    images: float array [B, H, W, C] in [0, 1], C in {1, 3}, H, W >= 8.
    severity: int in 1..5, static under jit; for names in
      ``TRACEABLE_SEVERITY`` also a scalar integer jax array (may be traced;
      the caller keeps it in 1..5, out-of-range values are clamped).
    key: PRNG key; deterministic corruptions ignore it.

  Returns:
    [B, H, W, C], dtype of ``images``, clipped to [0, 1].
  """
  fn = get_corruption(name)
  if isinstance(severity, jax.Array):
    if name not in TRACEABLE_SEVERITY:
      raise ValueError(
          f"severity of {name!r} must be a static int in 1..5; a traced severity "
          f"works only for {sorted(TRACEABLE_SEVERITY)}"
      )
    if severity.shape != () or not jnp.issubdtype(severity.dtype, jnp.integer):
      raise ValueError(
          f"severity must be a scalar integer, got {severity.dtype}{severity.shape}"
      )
  else:
    severity = check_severity(severity)
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
  if images.shape[-1] not in (1, 3):
    raise ValueError(
        f"images must have 1 or 3 channels, got shape {images.shape}"
    )
  if min(images.shape[1], images.shape[2]) < 8:
    raise ValueError(f"images must be at least 8x8, got shape {images.shape}")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(
        f"images must be floating point in [0, 1], got {images.dtype}"
    )
  out = fn(images.astype(jnp.float32), severity, key)
  return jnp.clip(out, 0.0, 1.0).astype(images.dtype)
