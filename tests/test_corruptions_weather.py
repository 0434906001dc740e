"""motion_blur, snow and fog against the CIFAR-10-C script's own code.

The script's functions are copied below as written in hendrycks/robustness
``ImageNet-C/create_c/make_cifar_c.py`` (NumPy 2 spellings: ``np.float_`` ->
``np.float64``, ``np.fromstring`` -> ``np.frombuffer``; Wand's set-up
skipped where Wand is missing, outside CI), run with Wand
(ImageMagick 6), OpenCV, SciPy and PIL, and fed the random draws that the
JAX code made from its key (``np.random.uniform`` and ``normal`` stand-ins).
Each corruption runs through the evaluator's own jitted program (traced
severity, CPU fast-compile options), one compilation for all five severities.

Tolerances. ImageMagick works in 16-bit quanta and writes the 8-bit PNG by
truncation, so the script's motion blur is ``floor(255 y)`` of the exact
result y, up to half a 16-bit quantum: script - JAX lies in
[-1/255, 0.5/(255 * 257)] (one-sided), and re-quantizing the JAX result the
same way reproduces ImageMagick's bytes. Snow adds the truncated blur twice
(the layer and its rotation): [-2/255, 1e-5]. Fog has no 8-bit step: float32
against float64, 1e-6 (seen: 2.5e-7).
"""

import ctypes
from io import BytesIO
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
from PIL import Image as PILImage
import pytest
from scipy.ndimage import zoom as scizoom

from simsoft import corruptions as C
from simsoft import robustness
from simsoft.corruptions import motion
from simsoft.corruptions import weather

try:  # requirements-dev.txt; wand loads libmagickwand-6.q16-6 (launch/setup.sh)
  import cv2
  from wand.api import library as wandlibrary
  from wand.image import Image as WandImage

  MISSING = ""
except ImportError as error:
  if os.environ.get("CI"):
    raise
  MISSING = f"the script's libraries (bash launch/setup.sh): {error}"
  WandImage = object
needs_script = pytest.mark.skipif(bool(MISSING), reason=MISSING)

# ---- make_cifar_c.py, as written there --------------------------------------

# Tell Python about the C method
if not MISSING:
  wandlibrary.MagickMotionBlurImage.argtypes = (
      ctypes.c_void_p,  # wand
      ctypes.c_double,  # radius
      ctypes.c_double,  # sigma
      ctypes.c_double,
  )  # angle


# Extend wand.image.Image class to include method signature
class MotionImage(WandImage):

  def motion_blur(self, radius=0.0, sigma=0.0, angle=0.0):
    wandlibrary.MagickMotionBlurImage(self.wand, radius, sigma, angle)


# modification of https://github.com/FLHerne/mapgen/blob/master/diamondsquare.py
def plasma_fractal(mapsize=32, wibbledecay=3):
  """
  Generate a heightmap using diamond-square algorithm.
  Return square 2d array, side length 'mapsize', of floats in range 0-255.
  'mapsize' must be a power of two.
  """
  assert mapsize & (mapsize - 1) == 0
  maparray = np.empty((mapsize, mapsize), dtype=np.float64)
  maparray[0, 0] = 0
  stepsize = mapsize
  wibble = 100

  def wibbledmean(array):
    return array / 4 + wibble * np.random.uniform(-wibble, wibble, array.shape)

  def fillsquares():
    """For each square of points stepsize apart,
    calculate middle value as mean of points + wibble"""
    cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
    squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
    squareaccum += np.roll(squareaccum, shift=-1, axis=1)
    maparray[
        stepsize // 2 : mapsize : stepsize, stepsize // 2 : mapsize : stepsize
    ] = wibbledmean(squareaccum)

  def filldiamonds():
    """For each diamond of points stepsize apart,
    calculate middle value as mean of points + wibble"""
    mapsize = maparray.shape[0]
    drgrid = maparray[
        stepsize // 2 : mapsize : stepsize, stepsize // 2 : mapsize : stepsize
    ]
    ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
    ldrsum = drgrid + np.roll(drgrid, 1, axis=0)
    lulsum = ulgrid + np.roll(ulgrid, -1, axis=1)
    ltsum = ldrsum + lulsum
    maparray[0:mapsize:stepsize, stepsize // 2 : mapsize : stepsize] = (
        wibbledmean(ltsum)
    )
    tdrsum = drgrid + np.roll(drgrid, 1, axis=1)
    tulsum = ulgrid + np.roll(ulgrid, -1, axis=0)
    ttsum = tdrsum + tulsum
    maparray[stepsize // 2 : mapsize : stepsize, 0:mapsize:stepsize] = (
        wibbledmean(ttsum)
    )

  while stepsize >= 2:
    fillsquares()
    filldiamonds()
    stepsize //= 2
    wibble /= wibbledecay

  maparray -= maparray.min()
  return maparray / maparray.max()


def clipped_zoom(img, zoom_factor):
  h = img.shape[0]
  # ceil crop height(= crop width)
  ch = int(np.ceil(h / zoom_factor))

  top = (h - ch) // 2
  img = scizoom(
      img[top : top + ch, top : top + ch],
      (zoom_factor, zoom_factor, 1),
      order=1,
  )
  # trim off any extra pixels
  trim_top = (img.shape[0] - h) // 2

  return img[trim_top : trim_top + h, trim_top : trim_top + h]


def motion_blur(x, severity=1):
  c = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]

  output = BytesIO()
  x.save(output, format="PNG")
  x = MotionImage(blob=output.getvalue())

  x.motion_blur(radius=c[0], sigma=c[1], angle=np.random.uniform(-45, 45))

  x = cv2.imdecode(np.frombuffer(x.make_blob(), np.uint8), cv2.IMREAD_UNCHANGED)

  if x.shape != (32, 32):
    return np.clip(x[..., [2, 1, 0]], 0, 255)  # BGR to RGB
  else:  # greyscale to RGB
    return np.clip(np.array([x, x, x]).transpose((1, 2, 0)), 0, 255)


def fog(x, severity=1):
  c = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]

  x = np.array(x) / 255.0
  max_val = x.max()
  x += c[0] * plasma_fractal(wibbledecay=c[1])[:32, :32][..., np.newaxis]
  return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def snow(x, severity=1):
  c = [
      (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
      (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
      (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
      (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
      (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
  ][severity - 1]

  x = np.array(x, dtype=np.float32) / 255.0
  snow_layer = np.random.normal(
      size=x.shape[:2], loc=c[0], scale=c[1]
  )  # [:2] for monochrome

  snow_layer = clipped_zoom(snow_layer[..., np.newaxis], c[2])
  snow_layer[snow_layer < c[3]] = 0

  snow_layer = PILImage.fromarray(
      (np.clip(snow_layer.squeeze(), 0, 1) * 255).astype(np.uint8), mode="L"
  )
  output = BytesIO()
  snow_layer.save(output, format="PNG")
  snow_layer = MotionImage(blob=output.getvalue())

  snow_layer.motion_blur(
      radius=c[4], sigma=c[5], angle=np.random.uniform(-135, -45)
  )

  snow_layer = (
      cv2.imdecode(
          np.frombuffer(snow_layer.make_blob(), np.uint8), cv2.IMREAD_UNCHANGED
      )
      / 255.0
  )
  snow_layer = snow_layer[..., np.newaxis]

  x = c[6] * x + (1 - c[6]) * np.maximum(
      x, cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(32, 32, 1) * 1.5 + 0.5
  )
  return np.clip(x + snow_layer + np.rot90(snow_layer, k=2), 0, 1) * 255


# ---- end of the script's code -----------------------------------------------

N = 6  # images per check
KEY = jax.random.key(27)


class _Draws:
  """Stands in for np.random.uniform / normal: hands out given draws in order
  (uniform: U[0, 1) values scaled to [low, high); normal: N(0, 1) values)."""

  def __init__(self, uniform=(), normal=()):
    self.pools = {
        "u": np.ravel(np.asarray(uniform, np.float64)),
        "z": np.ravel(np.asarray(normal, np.float64)),
    }
    self.used = {"u": 0, "z": 0}

  def _take(self, pool, size):
    count = int(np.prod(size)) if size is not None else 1
    start = self.used[pool]
    assert start + count <= self.pools[pool].size, "the script drew more"
    self.used[pool] += count
    out = self.pools[pool][start : start + count]
    return out.reshape(size) if size is not None else out[0]

  def uniform(self, low=0.0, high=1.0, size=None):
    return low + (high - low) * self._take("u", size)

  def normal(self, loc=0.0, scale=1.0, size=None):
    return loc + scale * self._take("z", size)

  def all_used(self):
    return all(self.used[p] == self.pools[p].size for p in self.pools)


def _script(fn, images_u8, severity, monkeypatch, draws):
  """[N, 32, 32, 3] in [0, 1]: the script's ``fn`` per image, draws[i] its _Draws."""
  out = []
  for img, d in zip(images_u8, draws):
    monkeypatch.setattr(np.random, "uniform", d.uniform)
    monkeypatch.setattr(np.random, "normal", d.normal)
    out.append(np.asarray(fn(Image.fromarray(img), severity), np.float64))
    assert d.all_used(), "the JAX code drew more than the script"
  monkeypatch.undo()
  return np.stack(out) / 255.0


def _images_u8(n=N, size=32, seed=0):
  """Smooth random RGB images plus texture, uint8 (the script's input)."""
  rng = np.random.default_rng(seed)
  coarse = rng.random((n, 4, 4, 3))
  smooth = scizoom(coarse, (1, size / 4, size / 4, 1), order=1)
  x = 0.8 * smooth + 0.2 * rng.random((n, size, size, 3))
  return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def _evaluator_program(name, x):
  """corrupt(name, x, s, fold_in(KEY, 0)) for s = 1..5 through the evaluator's
  jitted program (traced severity: one compilation)."""
  corrupt = robustness._corrupt_fn(True)  # pylint: disable=protected-access
  stacked = jnp.asarray(x)[None]
  return [
      np.asarray(corrupt(stacked, 0, KEY, jnp.int32(s), name=name))
      for s in C.SEVERITIES
  ]


def _unit(angle, lo_hi):
  lo, hi = lo_hi
  return (np.asarray(angle, np.float64) - lo) / (hi - lo)


def _imagemagick_bytes(y):
  """What ImageMagick (Q16) writes for the exact result y in [0, 1]: rounded
  to a 16-bit quantum, then truncated to 8 bits."""
  return np.floor(np.round(y * 255.0 * 257.0) / 257.0 + 1e-9)


@needs_script
def test_motion_blur_matches_the_script_at_every_severity(monkeypatch):
  u8 = _images_u8()
  x = u8.astype(np.float32) / 255.0
  got = _evaluator_program("motion_blur", x)
  angle = np.asarray(motion.motion_blur_angle(jax.random.fold_in(KEY, 0), N))
  assert np.all(np.abs(angle) < 45) and np.ptp(angle) > 10
  prev = None
  for severity in C.SEVERITIES:
    draws = [_Draws(uniform=_unit(a, motion.MOTION_BLUR_ANGLE)) for a in angle]
    ref = _script(motion_blur, u8, severity, monkeypatch, draws)
    y = got[severity - 1]
    diff = ref - y
    assert diff.min() >= -1 / 255 - 1e-6, diff.min()
    assert diff.max() <= 0.5 / (255 * 257) + 1e-6, diff.max()
    # ImageMagick's bytes (all of them here; a float32 result on a quantum's
    # edge could round the other way).
    same = _imagemagick_bytes(y) == np.round(ref * 255)
    assert same.mean() >= 0.999, same.mean()
    # The truncation (mean 0.5/255) is well below a severity step (>= 2/255),
    # but from 3 to 4: the script's kernels (6, 2) and (8, 2) differ by taps
    # 13..16 below exp(-169 / 8) = 7e-10, the same images in float32.
    if prev is not None and severity != 4:
      assert np.mean(np.abs(y - prev)) > 3 * np.mean(np.abs(diff))
    prev = y


@needs_script
def test_snow_matches_the_script_at_every_severity(monkeypatch):
  u8 = _images_u8(seed=1)
  x = u8.astype(np.float32) / 255.0
  got = _evaluator_program("snow", x)
  key = jax.random.fold_in(KEY, 0)
  noise, angle = (np.asarray(a) for a in weather.snow_draws(key, N, 32, 32))
  assert np.all((angle > -135) & (angle < -45))
  prev = None
  for severity in C.SEVERITIES:
    draws = [
        _Draws(uniform=_unit(a, weather.SNOW_ANGLE), normal=z)
        for a, z in zip(angle, noise)
    ]
    ref = _script(snow, u8, severity, monkeypatch, draws)
    y = got[severity - 1]
    diff = ref - y
    # Two truncated layers; the clip at 1 only shrinks the difference.
    assert diff.min() >= -2 / 255 - 1e-5, (severity, diff.min())
    assert diff.max() <= 1e-5, (severity, diff.max())
    assert np.mean(np.abs(diff)) < 1 / 255
    if prev is not None:  # a severity step is >= 10/255 on average
      assert np.mean(np.abs(y - prev)) > 10 * np.mean(np.abs(diff))
    prev = y


@needs_script
def test_fog_matches_the_script_at_every_severity(monkeypatch):
  u8 = _images_u8(seed=2)
  x = u8.astype(np.float32) / 255.0
  got = _evaluator_program("fog", x)
  units = np.asarray(weather.fog_draws(jax.random.fold_in(KEY, 0), N, 32))
  for severity in C.SEVERITIES:
    draws = [_Draws(uniform=u) for u in units]
    ref = _script(fog, u8, severity, monkeypatch, draws)
    np.testing.assert_allclose(got[severity - 1], ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["motion_blur", "snow", "fog"])
def test_small_non_square_grey_images(name):
  """Shape, range, determinism and growth with severity on [B, 8, 12, 1],
  through corrupt() with int severities (each corruption is jitted with the
  severity traced: one program for the five)."""
  rng = np.random.default_rng(3)
  x = jnp.asarray(
      scizoom(rng.random((4, 2, 3, 1)), (1, 4, 4, 1), order=1), jnp.float32
  )
  key = jax.random.key(5)
  outs = [np.asarray(C.corrupt(name, x, s, key)) for s in C.SEVERITIES]
  for y in outs:
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0
  np.testing.assert_array_equal(
      np.asarray(C.corrupt(name, x, 5, key)), outs[-1]
  )
  assert not np.array_equal(
      np.asarray(C.corrupt(name, x, 5, jax.random.key(6))), outs[-1]
  )
  dists = [float(np.mean(np.abs(y - np.asarray(x)))) for y in outs]
  assert dists[-1] > 1.5 * dists[0] > 0.0, dists
  if name != "snow":  # snow's 2 and 3 trade more flakes for bigger ones
    assert np.all(np.diff(dists) >= -1e-3 * dists[-1]), dists


@needs_script
def test_plasma_fractal_level_by_level(monkeypatch):
  """Fractals larger than PLASMA_MATRIX_MAX (images above 32 px) are built
  level by level; forced here at 16 (cheaper to compile than 64) against the
  script's plasma_fractal(mapsize=16) on the same draws."""
  size = 16
  monkeypatch.setattr(weather, "PLASMA_MATRIX_MAX", size // 2)
  units = np.random.default_rng(8).random((2, size * size - 1), np.float32)
  got = np.asarray(jax.jit(weather.plasma_fractal)(units, 1.75))
  for u, y in zip(units, got):
    d = _Draws(uniform=u)
    monkeypatch.setattr(np.random, "uniform", d.uniform)
    ref = plasma_fractal(mapsize=size, wibbledecay=1.75)
    assert d.all_used()
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6)
