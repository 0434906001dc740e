"""Digital corruptions: elastic transform and JPEG compression.

Family: CIFAR-10-C's "digital" group (with contrast and pixelate); not in
``FAMILIES``, whose families are of ``DEFAULT_SUITE`` only.

``elastic_transform`` (the script's, after Simard et al. 2003): a random
affine warp (three control points moved by up to ``a`` px, ``cv2.warpAffine``,
bilinear, reflect-101 border), then a displacement of ``alpha`` times two
fields of uniform(-1, 1) noise smoothed by a Gaussian of sigma ``s`` px
(truncated at 3 sigma, symmetric border), sampled bilinearly
(``scipy.ndimage.map_coordinates(order=1, mode='reflect')``). The script's
(alpha, s, a) are fractions of its IMSIZE = 32; here of ``min(H, W)`` (the
control points, at the centre +- ``min(H, W) // 3``, as the script's). So the
affine part and the fields' smoothness scale with the image; the fields'
amplitude relative to the image does not quite (smoothed noise shrinks as
1/s), as with the script's own IMSIZE.

``jpeg_compression``: the image rounded to 8 bits, through baseline JPEG at the
script's quality (PIL's ``save(..., 'JPEG', quality=q)``: libjpeg(-turbo),
4:2:0 chroma subsampling for RGB, one component for grey) and decoded again,
in integer arithmetic as libjpeg does it: RGB -> YCbCr (16-bit fixed point),
2x2 chroma averaging, the islow forward DCT on 8x8 blocks, quantization by the
IJG tables scaled for q, dequantization, the islow inverse DCT, "fancy"
(triangular) chroma upsampling and YCbCr -> RGB. Sizes that are not
multiples of the block (8, or 16 for subsampled RGB) are padded by edge
replication, as libjpeg pads. The output is a multiple of 1/255.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from simsoft.corruptions._ops import _param
from simsoft.corruptions._ops import _table

# (alpha, sigma, affine) as fractions of the image side (the script's IMSIZE).
ELASTIC_ALPHA_SIGMA_AFFINE = (
    (0.0, 0.0, 0.08),
    (0.05, 0.2, 0.07),
    (0.08, 0.06, 0.06),
    (0.1, 0.04, 0.05),
    (0.1, 0.03, 0.03),
)
JPEG_QUALITY = (80, 65, 58, 50, 40)

_HI = jax.lax.Precision.HIGHEST


# ---------------------------------------------------------------- elastic


def _reflect101(i: jax.Array, n: int) -> jax.Array:
  """Index i folded into [0, n) by reflection about the end pixels (OpenCV's
  BORDER_REFLECT_101: ... 2 1 | 0 1 2 ... n-1 | n-2 ...)."""
  if n == 1:
    return jnp.zeros_like(i)
  i = jnp.mod(i, 2 * n - 2)
  return jnp.where(i >= n, 2 * n - 2 - i, i)


def _reflect(i, n: int):
  """Index i folded into [0, n) by reflection about the edges (scipy's
  'reflect': ... 1 0 | 0 1 ... n-1 | n-1 n-2 ...); numpy or jax ints."""
  mod = np if isinstance(i, np.ndarray) else jnp
  i = mod.mod(i, 2 * n)
  return mod.where(i >= n, 2 * n - 1 - i, i)


def _bilinear(
    x: jax.Array, rows: jax.Array, cols: jax.Array, fold
) -> jax.Array:
  """Samples ``x`` [B, H, W, C] at float coordinates ``rows``, ``cols`` [B, H, W]
  bilinearly; ``fold(index, n)`` maps each of the four taps into range."""
  b, h, w, c = x.shape
  flat = x.reshape(b, h * w, c)
  r0, c0 = jnp.floor(rows), jnp.floor(cols)
  fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
  r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)

  def tap(r, col):
    idx = (fold(r, h) * w + fold(col, w)).reshape(b, h * w, 1)
    return jnp.take_along_axis(flat, idx, axis=1).reshape(b, h, w, c)

  top = (1 - fc) * tap(r0, c0) + fc * tap(r0, c0 + 1)
  bottom = (1 - fc) * tap(r0 + 1, c0) + fc * tap(r0 + 1, c0 + 1)
  return (1 - fr) * top + fr * bottom


def _smoothing_matrix(n: int, sigma: float) -> np.ndarray:
  """[n, n]: 1-D Gaussian filter of sigma px, truncated at 3 sigma, scipy 'reflect' border."""
  if sigma <= 0:
    return np.eye(n)
  radius = int(3.0 * sigma + 0.5)
  t = np.arange(-radius, radius + 1)
  g = np.exp(-0.5 * t**2 / sigma**2)
  g /= g.sum()
  m = np.zeros((n, n))
  for o in range(n):
    np.add.at(m[o], _reflect(o + t, n), g)
  return m


@functools.lru_cache(maxsize=None)
def elastic_tables(h: int, w: int):
  """Per-severity tables for an H x W image: ([5] alpha px, [5] affine px,
  [5, H, H] and [5, W, W] smoothing matrices, :func:`_smoothing_matrix`)."""
  side = min(h, w)
  alpha = np.array([side * a for a, _, _ in ELASTIC_ALPHA_SIGMA_AFFINE])
  affine = np.array([side * f for _, _, f in ELASTIC_ALPHA_SIGMA_AFFINE])
  smooth_h = np.stack(
      [_smoothing_matrix(h, side * s) for _, s, _ in ELASTIC_ALPHA_SIGMA_AFFINE]
  )
  smooth_w = np.stack(
      [_smoothing_matrix(w, side * s) for _, s, _ in ELASTIC_ALPHA_SIGMA_AFFINE]
  )
  return alpha, affine, smooth_h, smooth_w


def control_points(h: int, w: int) -> np.ndarray:
  """[3, 2] float32 (x, y): the script's affine control points, the centre
  (W // 2, H // 2) plus (s, s), (s, -s), (-s, -s), s = min(H, W) // 3."""
  s = min(h, w) // 3
  cx, cy = w // 2, h // 2
  return np.float32([[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]])


def elastic_draws(key: jax.Array, b: int, h: int, w: int, severity):
  """The random draws of :func:`elastic_transform`: ([B, 3, 2] control point
  moves, uniform in (-a, a) px; [B, 2, H, W] uniform(-1, 1) fields for dx, dy).
  """
  _, affine, _, _ = elastic_tables(h, w)
  a = _param(tuple(affine), severity)
  k_affine, k_fields = jax.random.split(key)
  moves = jax.random.uniform(k_affine, (b, 3, 2), jnp.float32, -1.0, 1.0) * a
  fields = jax.random.uniform(k_fields, (b, 2, h, w), jnp.float32, -1.0, 1.0)
  return moves, fields


def elastic_core(
    x: jax.Array, severity: int | jax.Array, moves: jax.Array, fields: jax.Array
) -> jax.Array:
  """:func:`elastic_transform` with its draws given (:func:`elastic_draws`)."""
  b, h, w, _ = x.shape
  alpha, _, smooth_h, smooth_w = elastic_tables(h, w)
  # Forward affine M [B, 2, 3] taking the control points p to p + moves:
  # M^T = [I; 0] + inv(Q) moves, Q = [p | 1] (exact on the host).
  q_inv = np.linalg.inv(
      np.concatenate([control_points(h, w), np.ones((3, 1))], axis=1)
  )
  m = jnp.einsum(
      "ij,bjk->bki", jnp.asarray(q_inv, jnp.float32), moves, precision=_HI
  ) + jnp.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  # warpAffine samples the source at M^-1 (x, y, 1) for each output (x, y).
  a, bb, c = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
  d, e, f = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
  det = a * e - bb * d
  i00, i01, i10, i11 = e / det, -bb / det, -d / det, a / det
  t0, t1 = -(i00 * c + i01 * f), -(i10 * c + i11 * f)
  ys, xs = jnp.meshgrid(
      jnp.arange(h, dtype=jnp.float32),
      jnp.arange(w, dtype=jnp.float32),
      indexing="ij",
  )
  ex = lambda v: v[:, None, None]
  src_x = ex(i00) * xs + ex(i01) * ys + ex(t0)
  src_y = ex(i10) * xs + ex(i11) * ys + ex(t1)
  x = _bilinear(x, src_y, src_x, _reflect101)
  # Smoothed displacement fields, then map_coordinates (scipy 'reflect').
  disp = jnp.einsum(
      "hH,bkHW,wW->bkhw",
      _table(smooth_h, severity),
      fields,
      _table(smooth_w, severity),
      precision=_HI,
  ) * _param(tuple(alpha), severity)
  return _bilinear(x, ys + disp[:, 1], xs + disp[:, 0], _reflect)


def elastic_transform(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Random affine warp, then a smooth random displacement. [B, H, W, C] -> same."""
  b, h, w, _ = x.shape
  return elastic_core(x, severity, *elastic_draws(key, b, h, w, severity))


# ------------------------------------------------------------------- JPEG

# The IJG example quantization tables (JPEG standard, Annex K), natural order.
_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
) + ((99,) * 8,) * 4


def quant_table(quality: int, chroma: bool = False) -> np.ndarray:
  """[8, 8] int: libjpeg's ``jpeg_set_quality`` table: the base table times
  5000/q (q < 50) or 200 - 2q percent, rounded, clamped to 1..255."""
  scale = 5000 // quality if quality < 50 else 200 - 2 * quality
  base = np.array(_CHROMA_TABLE if chroma else _LUMA_TABLE, np.int64)
  return np.clip((base * scale + 50) // 100, 1, 255)


def _fix(v: float) -> int:
  """libjpeg's FIX(): v in 16-bit (colour) fixed point, rounded."""
  return int(v * 65536 + 0.5)


# jfdctint.c / jidctint.c constants: FIX(c) with CONST_BITS = 13.
_C = {
    k: int(v * 8192 + 0.5)
    for k, v in {
        "0_298": 0.298631336,
        "0_390": 0.390180644,
        "0_541": 0.541196100,
        "0_765": 0.765366865,
        "0_899": 0.899976223,
        "1_175": 1.175875602,
        "1_501": 1.501321110,
        "1_847": 1.847759065,
        "1_961": 1.961570560,
        "2_053": 2.053119869,
        "2_562": 2.562915447,
        "3_072": 3.072711026,
    }.items()
}
_CONST_BITS, _PASS1_BITS = 13, 2


def _descale(v: jax.Array, n: int) -> jax.Array:
  return (v + (1 << (n - 1))) >> n


def _lanes(d: jax.Array, axis: int) -> list[jax.Array]:
  """The k-th samples of every 8-sample block along ``axis``, k = 0..7
  (strided slices: no reshape of a batch-sharded array)."""
  return [jax.lax.slice_in_dim(d, k, None, 8, axis) for k in range(8)]


def _interleave(vals: list[jax.Array], axis: int) -> jax.Array:
  """Inverse of :func:`_lanes`."""
  shape = list(vals[0].shape)
  shape[axis] *= 8
  return jnp.stack(vals, axis=axis + 1).reshape(shape)


def _fdct_1d(d, shift_even, shift_odd, axis):
  """One pass of libjpeg's jpeg_fdct_islow along ``axis`` (size 8) of int32 ``d``.

  ``shift_even`` is applied to outputs 0 and 4 (a left shift if negative),
  ``shift_odd`` descales the others.
  """
  s = _lanes(d, axis)
  tmp0, tmp7 = s[0] + s[7], s[0] - s[7]
  tmp1, tmp6 = s[1] + s[6], s[1] - s[6]
  tmp2, tmp5 = s[2] + s[5], s[2] - s[5]
  tmp3, tmp4 = s[3] + s[4], s[3] - s[4]
  tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
  tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
  out = [None] * 8
  if shift_even < 0:
    out[0] = (tmp10 + tmp11) << -shift_even
    out[4] = (tmp10 - tmp11) << -shift_even
  else:
    out[0] = _descale(tmp10 + tmp11, shift_even)
    out[4] = _descale(tmp10 - tmp11, shift_even)
  z1 = (tmp12 + tmp13) * _C["0_541"]
  out[2] = _descale(z1 + tmp13 * _C["0_765"], shift_odd)
  out[6] = _descale(z1 - tmp12 * _C["1_847"], shift_odd)
  z1, z2 = tmp4 + tmp7, tmp5 + tmp6
  z3, z4 = tmp4 + tmp6, tmp5 + tmp7
  z5 = (z3 + z4) * _C["1_175"]
  tmp4, tmp5 = tmp4 * _C["0_298"], tmp5 * _C["2_053"]
  tmp6, tmp7 = tmp6 * _C["3_072"], tmp7 * _C["1_501"]
  z1, z2 = z1 * -_C["0_899"], z2 * -_C["2_562"]
  z3, z4 = z3 * -_C["1_961"] + z5, z4 * -_C["0_390"] + z5
  out[7] = _descale(tmp4 + z1 + z3, shift_odd)
  out[5] = _descale(tmp5 + z2 + z4, shift_odd)
  out[3] = _descale(tmp6 + z2 + z3, shift_odd)
  out[1] = _descale(tmp7 + z1 + z4, shift_odd)
  return _interleave(out, axis)


def _idct_1d(d, shift, axis):
  """One pass of libjpeg's jpeg_idct_islow along ``axis`` (size 8), descaled by ``shift``."""
  s = _lanes(d, axis)
  z1 = (s[2] + s[6]) * _C["0_541"]
  tmp2 = z1 - s[6] * _C["1_847"]
  tmp3 = z1 + s[2] * _C["0_765"]
  tmp0 = (s[0] + s[4]) << _CONST_BITS
  tmp1 = (s[0] - s[4]) << _CONST_BITS
  tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
  tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
  tmp0, tmp1, tmp2, tmp3 = s[7], s[5], s[3], s[1]
  z1, z2 = tmp0 + tmp3, tmp1 + tmp2
  z3, z4 = tmp0 + tmp2, tmp1 + tmp3
  z5 = (z3 + z4) * _C["1_175"]
  tmp0, tmp1 = tmp0 * _C["0_298"], tmp1 * _C["2_053"]
  tmp2, tmp3 = tmp2 * _C["3_072"], tmp3 * _C["1_501"]
  z1, z2 = z1 * -_C["0_899"], z2 * -_C["2_562"]
  z3, z4 = z3 * -_C["1_961"] + z5, z4 * -_C["0_390"] + z5
  tmp0 += z1 + z3
  tmp1 += z2 + z4
  tmp2 += z2 + z3
  tmp3 += z1 + z4
  out = [
      tmp10 + tmp3,
      tmp11 + tmp2,
      tmp12 + tmp1,
      tmp13 + tmp0,
      tmp13 - tmp0,
      tmp12 - tmp1,
      tmp11 - tmp2,
      tmp10 - tmp3,
  ]
  return _interleave([_descale(v, shift) for v in out], axis)


def _codec(p: jax.Array, tables: jax.Array) -> jax.Array:
  """8-bit planes [B, R, W] (R, W multiples of 8) through the islow DCT of
  each 8x8 block, quantization by ``tables`` [R, W] (each block's table),
  dequantization and the islow IDCT."""
  p = p - 128
  # Forward: rows then columns; the result is 8 times the DCT.
  coef = _fdct_1d(p, -_PASS1_BITS, _CONST_BITS - _PASS1_BITS, axis=2)
  coef = _fdct_1d(coef, _PASS1_BITS, _CONST_BITS + _PASS1_BITS, axis=1)
  div = tables << 3
  q = jnp.sign(coef) * ((jnp.abs(coef) + (div >> 1)) // div)
  # Inverse: columns then rows, + 128, clamped to 8 bits.
  ws = _idct_1d(q * tables, _CONST_BITS - _PASS1_BITS, axis=1)
  out = _idct_1d(ws, _CONST_BITS + _PASS1_BITS + 3, axis=2)
  return jnp.clip(out + 128, 0, 255)


def _pad_edge(p: jax.Array, rows: int, cols: int) -> jax.Array:
  """[B, H, W] padded at the bottom and right by edge replication to multiples
  of ``rows`` and ``cols``."""
  _, h, w = p.shape
  if h % rows:
    last = jnp.repeat(p[:, -1:], rows - h % rows, axis=1)
    p = jnp.concatenate([p, last], axis=1)
  if w % cols:
    last = jnp.repeat(p[:, :, -1:], cols - w % cols, axis=2)
    p = jnp.concatenate([p, last], axis=2)
  return p


def _fancy_upsample(p: jax.Array) -> jax.Array:
  """libjpeg's h2v2_fancy_upsample: [B, h, w] -> [B, 2h, 2w] (triangular
  weights 3/4, 1/4 per axis, edges replicated)."""
  b, h, w = p.shape
  up = jnp.concatenate([p[:, :1], p[:, :-1]], axis=1)
  down = jnp.concatenate([p[:, 1:], p[:, -1:]], axis=1)
  # Column sums of the upper and lower output row of each input row.
  sums = jnp.stack([3 * p + up, 3 * p + down], axis=2).reshape(b, 2 * h, w)
  left = jnp.concatenate([sums[..., :1], sums[..., :-1]], axis=-1)
  right = jnp.concatenate([sums[..., 1:], sums[..., -1:]], axis=-1)
  out = jnp.stack([(3 * sums + left + 8) >> 4, (3 * sums + right + 7) >> 4], -1)
  return out.reshape(b, 2 * h, 2 * w)


def jpeg_tables() -> tuple[np.ndarray, np.ndarray]:
  """([5, 8, 8] luma, [5, 8, 8] chroma) quantization tables per severity."""
  return (
      np.stack([quant_table(q) for q in JPEG_QUALITY]),
      np.stack([quant_table(q, chroma=True) for q in JPEG_QUALITY]),
  )


def jpeg_compression(
    x: jax.Array, severity: int | jax.Array, key: jax.Array
) -> jax.Array:
  """Baseline JPEG at quality 80, 65, 58, 50, 40, encoded and decoded as
  libjpeg does (module docstring). [B, H, W, C] -> same, multiples of 1/255."""
  del key
  b, h, w, c = x.shape
  luma_tables, chroma_tables = jpeg_tables()
  luma = jnp.asarray(luma_tables, jnp.int32)[severity - 1]
  chroma = jnp.asarray(chroma_tables, jnp.int32)[severity - 1]
  v = jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.int32)
  tile = lambda t, p: jnp.tile(t, (p.shape[1] // 8, p.shape[2] // 8))
  if c == 1:
    y = _pad_edge(v[..., 0], 8, 8)
    out = _codec(y, tile(luma, y))[:, :h, :w, None]
    return out.astype(jnp.float32) / 255.0
  # libjpeg pads the right edge before the 2x2 averaging, the bottom after it.
  r, g, bl = (_pad_edge(v[..., i], 2, 16) for i in range(3))
  half = 1 << 15
  y = (_fix(0.299) * r + _fix(0.587) * g + _fix(0.114) * bl + half) >> 16
  off = (128 << 16) + half - 1
  cb = (-_fix(0.16874) * r - _fix(0.33126) * g + _fix(0.5) * bl + off) >> 16
  cr = (_fix(0.5) * r - _fix(0.41869) * g - _fix(0.08131) * bl + off) >> 16

  def down(p):  # 2x2 means, rounding bias 1, 2, 1, 2, ... along each row
    s = (
        p[:, 0::2, 0::2]
        + p[:, 0::2, 1::2]
        + p[:, 1::2, 0::2]
        + p[:, 1::2, 1::2]
    )
    bias = 1 + (jnp.arange(s.shape[-1]) % 2)
    return _pad_edge((s + bias) >> 2, 8, 8)

  # One program for all planes: Y above Cb | Cr (each half as wide as Y).
  y, cbcr = _pad_edge(y, 8, 8), jnp.concatenate([down(cb), down(cr)], axis=2)
  tables = jnp.concatenate([tile(luma, y), tile(chroma, cbcr)], axis=0)
  out = _codec(jnp.concatenate([y, cbcr], axis=1), tables)
  ny, half_w = y.shape[1], y.shape[2] // 2
  ch, cw = -(-h // 2), -(-w // 2)
  cb, cr = (
      _fancy_upsample(out[:, ny:, k : k + half_w][:, :ch, :cw])
      for k in (0, half_w)
  )
  y = out[:, :ny][:, :h, :w]
  cb, cr = cb[:, :h, :w] - 128, cr[:, :h, :w] - 128
  half_fix = lambda v, k: (_fix(k) * v + half) >> 16
  rgb = jnp.stack(
      [
          y + half_fix(cr, 1.402),
          y + ((-_fix(0.34414) * cb + half - _fix(0.71414) * cr) >> 16),
          y + half_fix(cb, 1.772),
      ],
      axis=-1,
  )
  return jnp.clip(rgb, 0, 255).astype(jnp.float32) / 255.0
