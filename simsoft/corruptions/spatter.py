"""Spatter: liquid drops (severities 1-3) or mud (4-5) on the image.

Family: CIFAR-10-C's "weather"-like occluders (closest here: ``occlusion``);
not in ``FAMILIES``, whose families are of ``DEFAULT_SUITE`` only.

The script's ``spatter``: a layer of N(loc, scale^2) noise per pixel,
Gaussian-blurred (sigma px, edge border, 4 sigma), values below a threshold
set to 0. Liquid: the layer as uint8, its Canny edges (OpenCV, thresholds
50 and 150, 3x3 Sobel, L1 magnitude), the distance of each pixel to the
nearest edge (``cv2.distanceTransform(DIST_L2, 5)``: the 5x5 chamfer metric
1, 1.4, 2.1969, in 16-bit fixed point) truncated at 20, a 3x3 box blur (to
uint8), histogram equalization, the emboss kernel [[-2, -1, 0], [-1, 1, 1],
[0, 1, 2]] (to uint8), a 3x3 box blur; the layer times that, scaled to a
maximum of ``intensity``, times pale turquoise (175, 238, 238)/255 is added to
the image. Mud: a mask of the layer above the threshold, blurred (sigma
``intensity``), values below 0.8 set to 0, blends in mud brown (63, 42, 20)/255.
Here in integer arithmetic where OpenCV uses it; Canny's hysteresis grows the
strong edges through the weak ones until nothing changes (a while loop), and
the chamfer distance is the 20-step min-plus relaxation (distances above 20
are truncated, and a path of cost <= 20 has at most 20 steps).

Sizes: every parameter is in pixels, as in the script, for every size (drops
keep their pixel size; an 8x8 image holds fewer of them). One-channel images
get the luma (ITU-R 601) of each colour. Where the script divides by a zero
maximum (no liquid at all: NaN), the image is left unchanged. The script's
uint8 cast of the layer wraps values above 255 (a layer above 1; numpy's
cast on x86), and so does this.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from simsoft.corruptions._ops import _filter1d
from simsoft.corruptions._ops import _gaussian_taps
from simsoft.corruptions._ops import _pad_axis
from simsoft.corruptions._ops import _param
from simsoft.corruptions._ops import _table

# (loc, scale, sigma, threshold, intensity, mud) per severity.
SPATTER_PARAMS = (
    (0.62, 0.1, 0.7, 0.7, 0.5, 0),
    (0.65, 0.1, 0.8, 0.7, 0.5, 0),
    (0.65, 0.3, 1.0, 0.69, 0.5, 0),
    (0.65, 0.1, 0.7, 0.69, 0.6, 1),
    (0.65, 0.1, 0.5, 0.68, 0.6, 1),
)
LIQUID_RGB = (175, 238, 238)
MUD_RGB = (63, 42, 20)
_LUMA = (0.299, 0.587, 0.114)
# distanceTransform's DIST_L2 5x5 mask (float32 costs), by dy^2 + dx^2.
_CHAMFER = {1: 1.0, 2: 1.4, 5: 2.1969}
_TRUNC = 20


def _taps(sigmas) -> np.ndarray:
  """[5, k] Gaussian taps (radius ``int(4 sigma + 0.5)``), zero-padded to the widest."""
  width = 2 * int(4.0 * max(sigmas) + 0.5) + 1
  out = np.zeros((len(sigmas), width))
  for row, sigma in enumerate(sigmas):
    g = _gaussian_taps(sigma, int(4.0 * sigma + 0.5))
    start = (width - g.size) // 2
    out[row, start : start + g.size] = g
  return out


def _blur(p: jax.Array, taps: jax.Array) -> jax.Array:
  """Separable blur of planes [B, H, W], edge border (skimage's default)."""
  p = p[..., None]
  return _filter1d(_filter1d(p, taps, 1, "edge"), taps, 2, "edge")[..., 0]


def _neighbours(p: jax.Array, r: int, fill):
  """``at(dy, dx)[i, j] = p[i + dy, j + dx]`` for |dy|, |dx| <= r, ``fill``
  outside. [B, H, W]."""
  b, h, w = p.shape
  big = jnp.full((b, h + 2 * r, w + 2 * r), fill, p.dtype)
  big = jax.lax.dynamic_update_slice(big, p, (0, r, r))
  return lambda dy, dx: big[:, r + dy : r + dy + h, r + dx : r + dx + w]


def _box3(p: jax.Array) -> jax.Array:
  """3x3 sum, reflect-101 border (OpenCV's default). [B, H, W] ints."""
  q = _pad_axis(_pad_axis(p, 1, 1, "reflect"), 2, 1, "reflect")
  h, w = p.shape[1:]
  return sum(q[:, i : i + h, j : j + w] for i in range(3) for j in range(3))


def canny(u8: jax.Array, low: int = 50, high: int = 150) -> jax.Array:
  """``cv2.Canny(u8, low, high)`` (3x3 Sobel, L1 gradient) as bool [B, H, W]."""
  q = _pad_axis(_pad_axis(u8, 1, 1, "edge"), 2, 1, "edge")
  h, w = u8.shape[1:]
  at = lambda i, j: q[:, 1 + i : 1 + i + h, 1 + j : 1 + j + w]
  dx = (
      at(-1, 1) - at(-1, -1) + 2 * (at(0, 1) - at(0, -1)) + at(1, 1) - at(1, -1)
  )
  dy = (
      at(1, -1)
      + 2 * at(1, 0)
      + at(1, 1)
      - at(-1, -1)
      - 2 * at(-1, 0)
      - at(-1, 1)
  )
  mag = jnp.abs(dx) + jnp.abs(dy)
  nb = _neighbours(mag, 1, 0)
  ax, ay = jnp.abs(dx), jnp.abs(dy) << 15
  tg22x = ax * 13573  # tan(22.5 deg) in 15-bit fixed point
  tg67x = tg22x + (ax << 16)
  same_sign = (dx ^ dy) >= 0
  diag = jnp.where(
      same_sign,
      (mag > nb(-1, -1)) & (mag > nb(1, 1)),
      (mag > nb(-1, 1)) & (mag > nb(1, -1)),
  )
  keep = jnp.where(
      ay < tg22x,
      (mag > nb(0, -1)) & (mag >= nb(0, 1)),
      jnp.where(ay > tg67x, (mag > nb(-1, 0)) & (mag >= nb(1, 0)), diag),
  )
  weak = keep & (mag > low)
  strong = weak & (mag > high)

  def grow(state):
    edges, _ = state
    at = _neighbours(edges, 1, False)
    near = edges
    for i in (-1, 0, 1):
      for j in (-1, 0, 1):
        near = near | at(i, j)
    new = edges | (weak & near)
    return new, jnp.any(new != edges)

  edges, _ = jax.lax.while_loop(lambda s: s[1], grow, (strong, jnp.array(True)))
  return edges


def chamfer_distance(zero: jax.Array) -> jax.Array:
  """Distance to the nearest True pixel of ``zero`` [B, H, W] (float32),
  truncated at 20 px: ``cv2.distanceTransform(DIST_L2, 5)`` then
  ``cv2.threshold(THRESH_TRUNC)``."""
  big = jnp.float32(2 * _TRUNC)
  d = jnp.where(zero, 0.0, big).astype(jnp.float32)
  steps = [
      (i, j, jnp.float32(_CHAMFER[i * i + j * j]))
      for i in range(-2, 3)
      for j in range(-2, 3)
      if i * i + j * j in _CHAMFER
  ]

  def relax(_, d):
    at = _neighbours(d, 2, big)
    for i, j, cost in steps:
      d = jnp.minimum(d, at(i, j) + cost)
    return d

  return jnp.minimum(jax.lax.fori_loop(0, _TRUNC, relax, d), _TRUNC)


def equalize_hist(v: jax.Array, levels: int) -> jax.Array:
  """``cv2.equalizeHist`` of uint8 images [B, H, W] whose values are < ``levels``."""
  b, h, w = v.shape
  hist = jnp.sum(v[..., None] == jnp.arange(levels), axis=(1, 2))  # [B, L]
  cum = jnp.cumsum(hist, axis=1)
  lo = jnp.argmax(hist > 0, axis=1)  # the smallest value present
  h_lo = jnp.take_along_axis(hist, lo[:, None], axis=1)
  total = h * w
  scale = jnp.float32(255.0) / jnp.maximum(total - h_lo, 1).astype(jnp.float32)
  lut = jnp.round((cum - h_lo).astype(jnp.float32) * scale)
  lut = jnp.where(h_lo == total, lo[:, None].astype(jnp.float32), lut)
  return jnp.take_along_axis(lut, v.reshape(b, h * w), axis=1).reshape(b, h, w)


def liquid_mask(layer: jax.Array) -> jax.Array:
  """The liquid branch's mask before scaling, [B, H, W] float32 (>= 0), from the
  thresholded layer [B, H, W]."""
  # The script's astype(uint8) wraps values above 255 (a layer above 1), as
  # numpy's cast does on x86.
  u8 = jnp.mod(jnp.floor(layer * 255.0).astype(jnp.int32), 256)
  dist = chamfer_distance(canny(u8))
  dist = jnp.floor(_box3(dist) / 9.0).astype(jnp.int32)  # blur, astype(uint8)
  dist = equalize_hist(dist, _TRUNC + 1).astype(jnp.int32)
  kernel = ((-2, -1, 0), (-1, 1, 1), (0, 1, 2))
  q = _pad_axis(_pad_axis(dist, 1, 1, "reflect"), 2, 1, "reflect")
  h, w = dist.shape[1:]
  emboss = sum(
      kernel[i][j] * q[:, i : i + h, j : j + w]
      for i in range(3)
      for j in range(3)
      if kernel[i][j]
  )
  emboss = jnp.clip(emboss, 0, 255)
  dist = (2 * _box3(emboss) + 9) // 18  # uint8 box blur, rounded
  return u8.astype(jnp.float32) * dist.astype(jnp.float32)


def spatter_core(
    x: jax.Array, severity: int | jax.Array, noise: jax.Array
) -> jax.Array:
  """:func:`spatter` with its N(0, 1) draws ``noise`` [B, H, W] given."""
  col = lambda k: tuple(p[k] for p in SPATTER_PARAMS)
  loc, scale = _param(col(0), severity), _param(col(1), severity)
  thresh, intensity = _param(col(3), severity), _param(col(4), severity)
  layer = _blur(loc + scale * noise, _table(_taps(col(2)), severity))
  layer = jnp.where(layer < thresh, 0.0, layer)
  c = x.shape[-1]

  def colour(rgb):
    rgb = np.asarray(rgb) / 255.0
    return jnp.asarray(rgb if c == 3 else [np.dot(_LUMA, rgb)], jnp.float32)

  def liquid():
    m = liquid_mask(layer)
    top = jnp.max(m, axis=(1, 2), keepdims=True)
    m = jnp.where(top > 0, m / jnp.where(top > 0, top, 1.0), 0.0) * intensity
    return x + m[..., None] * colour(LIQUID_RGB)

  def mud():
    m = jnp.where(layer > thresh, 1.0, 0.0)
    m = _blur(m, _table(_taps(col(4)), severity))
    m = jnp.where(m < 0.8, 0.0, m)[..., None]
    return x * (1 - m) + colour(MUD_RGB) * m

  if isinstance(severity, jax.Array):
    return jax.lax.cond(_param(col(5), severity) == 1, mud, liquid)
  return mud() if col(5)[severity - 1] else liquid()


def spatter(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Liquid (severities 1-3) or mud (4-5) splashes. [B, H, W, C] -> same."""
  b, h, w, _ = x.shape
  return spatter_core(x, severity, jax.random.normal(key, (b, h, w)))
