"""Corruptions: shape/dtype/range, determinism, growth with severity, numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from matplotlib import colors as mcolors
from PIL import Image

from simsoft import corruptions as C

SHAPES = [(8, 8, 1), (28, 28, 1), (32, 32, 3)]
RANDOM = {
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "occlusion",
}


def _images(shape, n=12, seed=0):
  """Smooth random images plus fine texture, in [0, 1], like natural images."""
  rng = np.random.default_rng(seed)
  h, w, c = shape
  coarse = rng.random((n, 4, 4, c))
  smooth = scipy.ndimage.zoom(coarse, (1, h / 4, w / 4, 1), order=1)
  x = 0.8 * smooth + 0.2 * rng.random((n, h, w, c))
  return np.clip(x, 0, 1).astype(np.float32)


@pytest.fixture(
    scope="module", params=SHAPES, ids=lambda s: "x".join(map(str, s))
)
def images(request):
  return _images(request.param)


# Checked in tests/test_corruptions_weather.py and
# tests/test_corruptions_digital.py (against the script at 32x32x3, and at one
# small shape): each compiles for seconds per shape.
ELSEWHERE = {
    "motion_blur",
    "snow",
    "fog",
    "glass_blur",
    "elastic_transform",
    "jpeg_compression",
    "spatter",
}


@pytest.mark.parametrize("name", sorted(set(C.CORRUPTIONS) - ELSEWHERE))
def test_shape_range_determinism_and_growth(name, images):
  key = jax.random.key(0)
  x = jnp.asarray(images)
  dists = []
  for severity in C.SEVERITIES:
    y = C.corrupt(name, x, severity, key)
    assert y.shape == x.shape and y.dtype == x.dtype
    y = np.asarray(y)
    assert np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0
    dists.append(float(np.mean(np.abs(y - images))))
  np.testing.assert_array_equal(np.asarray(C.corrupt(name, x, 5, key)), y)
  if name in RANDOM:
    assert not np.array_equal(
        np.asarray(C.corrupt(name, x, 5, jax.random.key(1))), y
    )
  if name == "saturate":
    # Severities 1-2 desaturate, 3-5 saturate (the script's order): every one
    # changes an RGB image, not by growing amounts; grey images have nothing.
    assert (
        all(d > 0 for d in dists)
        if images.shape[-1] == 3
        else dists == [0.0] * 5
    )
    return
  # Mean distance from the clean image grows with severity (same key throughout).
  assert np.all(np.diff(dists) >= -1e-3 * dists[-1]), dists
  if name == "zoom_blur" and images.shape[1] == 8:
    assert dists[0] == 0.0  # zooms up to 1.05 of 8 pixels round to none
    dists = dists[1:]
  assert dists[-1] > dists[0] > 0.0, dists


def test_jit_static_and_traced_severity_match_eager():
  x = jnp.asarray(_images((8, 8, 3), n=4))
  key = jax.random.key(3)
  static = jax.jit(C.corrupt, static_argnames=("name", "severity"))
  for name in ("gaussian_blur", "pixelate"):
    np.testing.assert_allclose(
        np.asarray(static(name=name, images=x, severity=2, key=key)),
        np.asarray(C.corrupt(name, x, 2, key)),
        atol=1e-6,
    )
  # One compiled function per corruption serves every severity (kernels and
  # resize matrices looked up in per-severity tables).
  assert C.TRACEABLE_SEVERITY == frozenset(C.CORRUPTIONS)
  # (The blurs' traced severities are checked against scipy below.)
  for name in ("gaussian_noise", "contrast", "occlusion"):
    traced = jax.jit(lambda im, k, s: C.corrupt(name, im, s, k))
    for severity in (1, 3, 5):
      np.testing.assert_allclose(
          np.asarray(traced(x, key, jnp.int32(severity))),
          np.asarray(C.corrupt(name, x, severity, key)),
          atol=1e-6,
      )
  with pytest.raises(ValueError, match="scalar integer"):
    C.corrupt("contrast", x, jnp.float32(2), key)


def test_bad_arguments_raise():
  x = jnp.zeros((2, 8, 8, 1))
  with pytest.raises(ValueError, match="known: .*gaussian_noise"):
    C.corrupt("snowstorm", x, 1, jax.random.key(0))
  for severity in (0, 6, 2.0, True):
    with pytest.raises(ValueError, match="severity"):
      C.corrupt("contrast", x, severity, jax.random.key(0))
  with pytest.raises(ValueError, match="channels"):
    C.corrupt("contrast", jnp.zeros((2, 8, 8, 2)), 1, jax.random.key(0))
  with pytest.raises(ValueError, match="at least 8x8"):
    C.corrupt("contrast", jnp.zeros((2, 4, 4, 1)), 1, jax.random.key(0))
  with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
    C.corrupt("contrast", jnp.zeros((8, 8, 1)), 1, jax.random.key(0))
  with pytest.raises(TypeError, match="floating"):
    C.corrupt(
        "contrast", jnp.zeros((2, 8, 8, 1), jnp.uint8), 1, jax.random.key(0)
    )


@pytest.mark.parametrize("size", [8, 28, 32])
def test_pixelate_matches_pil_box_resize(size):
  x = _images((size, size, 1), n=2)
  for severity, c in enumerate(C.PIXELATE_FACTOR, start=1):
    m = int(size * c)
    ref = np.stack(
        [
            np.asarray(
                Image.fromarray(img[..., 0], mode="F")
                .resize((m, m), Image.BOX)
                .resize((size, size), Image.BOX)
            )
            for img in x
        ]
    )[..., None]
    np.testing.assert_allclose(
        np.asarray(C.corrupt("pixelate", x, severity, None)), ref, atol=1e-5
    )


def test_gaussian_blur_matches_scipy():
  blur = jax.jit(lambda x, s: C.corrupt("gaussian_blur", x, s, None))
  for shape in ((8, 8, 1), (32, 32, 3)):
    x = _images(shape, n=2)
    for severity, sigma in enumerate(C.GAUSSIAN_BLUR_SIGMA, start=1):
      ref = scipy.ndimage.gaussian_filter(
          x, sigma=(0, sigma, sigma, 0), mode="nearest", truncate=4.0
      )
      np.testing.assert_allclose(
          np.asarray(blur(x, jnp.int32(severity))),
          ref,
          atol=1e-5,
      )


def test_defocus_kernels_by_hand_and_filter_matches_scipy():
  g = np.exp(-0.5 * np.array([1.0, 0.0, 1.0]) / 0.4**2)
  g /= g.sum()
  k1 = np.zeros((5, 5))
  k1[1:4, 1:4] = np.outer(
      g, g
  )  # radius 0.3: the disk is the centre pixel alone
  np.testing.assert_allclose(C.defocus_kernel(1), k1, atol=1e-12)
  k5 = np.zeros((5, 5))
  k5[1:4, 1:4] = (
      1 / 9
  )  # radius 1.5: the full 3x3 square; alias sigma 0.1 ~ identity
  np.testing.assert_allclose(C.defocus_kernel(5), k5, atol=1e-12)
  x = _images((28, 28, 1), n=2)
  for severity in C.SEVERITIES:
    ref = scipy.ndimage.correlate(
        x, C.defocus_kernel(severity)[None, :, :, None], mode="mirror"
    )
    np.testing.assert_allclose(
        np.asarray(C.corrupt("defocus_blur", x, severity, None)),
        ref,
        atol=1e-5,
    )


def test_brightness_equals_hsv_value_shift():
  x = _images((8, 8, 3), n=3)
  x[0, 0, 0] = 0.0  # black pixel: V = 0, S = 0
  for severity, c in ((1, 0.05), (5, 0.3)):
    hsv = mcolors.rgb_to_hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    ref = mcolors.hsv_to_rgb(hsv)
    np.testing.assert_allclose(
        np.asarray(C.corrupt("brightness", x, severity, None)), ref, atol=1e-5
    )
  gray = _images((8, 8, 1), n=2)
  np.testing.assert_allclose(
      np.asarray(C.corrupt("brightness", gray, 3, None)),
      np.clip(gray + 0.15, 0, 1),
      atol=1e-6,
  )


def test_contrast_and_occlusion_by_hand():
  x = _images((32, 32, 3), n=2)
  mean = x.mean(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(
      np.asarray(C.corrupt("contrast", x, 2, None)),
      np.clip((x - mean) * 0.5 + mean, 0, 1),
      atol=1e-6,
  )
  y = np.asarray(C.corrupt("occlusion", x, 5, jax.random.key(0)))
  changed = np.any(y != x, axis=-1)
  for b in range(2):  # a 16x16 grey square, clipped at the border
    rows, cols = np.nonzero(changed[b])
    assert rows.max() - rows.min() < 16 and cols.max() - cols.min() < 16
    box = y[b, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    np.testing.assert_array_equal(box, 0.5)


def test_impulse_noise_fraction():
  x = jnp.full((12, 32, 32, 3), 0.5)  # the fixture's shape: compiled already
  y = np.asarray(C.corrupt("impulse_noise", x, 5, jax.random.key(0)))
  flipped = y != 0.5
  assert set(np.unique(y[flipped])) <= {0.0, 1.0}
  assert abs(flipped.mean() - 0.07) < 0.01
  assert abs((y[flipped] == 1.0).mean() - 0.5) < 0.05


def _clipped_zoom(img, zoom_factor):
  """make_cifar_c.py's clipped_zoom, as written there (square images)."""
  h = img.shape[0]
  ch = int(np.ceil(h / zoom_factor))
  top = (h - ch) // 2
  img = scipy.ndimage.zoom(
      img[top : top + ch, top : top + ch],
      (zoom_factor, zoom_factor, 1),
      order=1,
  )
  trim_top = (img.shape[0] - h) // 2
  return img[trim_top : trim_top + h, trim_top : trim_top + h]


def test_zoom_blur_matches_the_script_at_every_severity():
  corrupt = jax.jit(lambda x, s: C.corrupt("zoom_blur", x, s, None))
  for shape in ((8, 8, 1), (32, 32, 3)):
    x = _images(shape, n=2)
    for severity, stop in enumerate(C.ZOOM_BLUR_STOPS, start=1):
      factors = np.arange(1, stop, 0.01)
      ref = []
      for img in x:
        out = np.zeros_like(img)
        for z in factors:
          out += _clipped_zoom(img, z)
        ref.append(np.clip((img + out) / (len(factors) + 1), 0, 1))
      np.testing.assert_allclose(
          np.asarray(corrupt(x, jnp.int32(severity))), np.stack(ref), atol=1e-5
      )


def test_saturate_matches_the_scripts_hsv_round_trip():
  x = _images((8, 8, 3), n=3)
  x[0, 0, 0] = 0.0  # black
  x[0, 1, 1] = 0.4  # grey: S = 0, hue 0 (red) once saturated
  corrupt = jax.jit(lambda x, s: C.corrupt("saturate", x, s, None))
  for severity, (a, b) in enumerate(C.SATURATE_SCALE_SHIFT, start=1):
    hsv = mcolors.rgb_to_hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * a + b, 0, 1)
    np.testing.assert_allclose(
        np.asarray(corrupt(x, jnp.int32(severity))),
        mcolors.hsv_to_rgb(hsv),
        atol=1e-5,
    )
