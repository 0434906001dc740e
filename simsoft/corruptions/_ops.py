"""Shared building blocks of the corruptions: severity lookups, padded
filters and the linear resize matrices of PIL and scipy.ndimage."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

SEVERITIES = (1, 2, 3, 4, 5)


def _param(table: Sequence[float], severity):
  """``table[severity - 1]``; a traced severity gives a traced (clamped) lookup."""
  if isinstance(severity, jax.Array):
    return jnp.asarray(table)[severity - 1]
  return table[severity - 1]


def _table(tables, severity) -> jax.Array:
  """``tables[severity - 1]`` as float32 (``tables`` [5, ...]); static or traced severity."""
  return jnp.asarray(np.asarray(tables), jnp.float32)[severity - 1]


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
