"""glass_blur, elastic_transform, jpeg_compression, spatter against the CIFAR-10-C script.

Each script function below is make_cifar_c.py's (hendrycks/robustness), as
written there except: skimage's ``multichannel=True`` is now
``channel_axis=-1``, and the random draws are the ones the JAX code made
(passed in), so both sides see the same noise. Every check runs the five
severities through one compiled program (traced severity), compiled cheaply
as the evaluators do on CPU. Without OpenCV and scikit-image (outside CI) the
script comparisons skip; in CI a missing library fails the file.
"""

import functools
import importlib
from io import BytesIO
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import scipy.ndimage
from scipy.ndimage import map_coordinates

from simsoft import corruptions as C
from simsoft.corruptions import digital
from simsoft.corruptions import glass

# The package re-exports the function spatter under the module's name.
spatter_lib = importlib.import_module("simsoft.corruptions.spatter")

try:  # requirements-dev.txt
  import cv2
  from skimage.filters import gaussian

  MISSING = ""
except ImportError as error:
  if os.environ.get("CI"):
    raise
  MISSING = f"the script's libraries (bash launch/setup.sh): {error}"
needs_script = pytest.mark.skipif(bool(MISSING), reason=MISSING)

NEW = ("glass_blur", "elastic_transform", "jpeg_compression", "spatter")
# simsoft.robustness._FAST_COMPILE: these programs take far longer to compile
# than to run on test-sized batches.
_FAST = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}


def _jit(fn):
  return jax.jit(fn, compiler_options=_FAST)


def _uint8_images(shape, n=4, seed=0):
  """Smooth random images plus fine texture, as uint8 (what the script reads)."""
  rng = np.random.default_rng(seed)
  h, w, c = shape
  coarse = rng.random((n, 4, 4, c))
  smooth = scipy.ndimage.zoom(coarse, (1, h / 4, w / 4, 1), order=1)
  x = np.clip(0.8 * smooth + 0.2 * rng.random((n, h, w, c)), 0, 1)
  return np.round(x * 255).astype(np.uint8)


# ------------------------------------------------------------------ script


def script_glass_blur(x, severity, draws):
  # sigma, max_delta, iterations
  c = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][
      severity - 1
  ]

  x = np.uint8(gaussian(np.array(x) / 255.0, sigma=c[0], channel_axis=-1) * 255)

  # locally shuffle pixels
  draws = iter(draws)
  for i in range(c[2]):
    for h in range(32 - c[1], c[1], -1):
      for w in range(32 - c[1], c[1], -1):
        dx, dy = next(draws)  # np.random.randint(-c[1], c[1], size=(2,))
        h_prime, w_prime = h + dy, w + dx
        # swap
        x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]

  return np.clip(gaussian(x / 255.0, sigma=c[0], channel_axis=-1), 0, 1) * 255


def script_elastic_transform(image, severity, moves, dx_noise, dy_noise):
  IMSIZE = 32
  c = [
      (IMSIZE * 0, IMSIZE * 0, IMSIZE * 0.08),
      (IMSIZE * 0.05, IMSIZE * 0.2, IMSIZE * 0.07),
      (IMSIZE * 0.08, IMSIZE * 0.06, IMSIZE * 0.06),
      (IMSIZE * 0.1, IMSIZE * 0.04, IMSIZE * 0.05),
      (IMSIZE * 0.1, IMSIZE * 0.03, IMSIZE * 0.03),
  ][severity - 1]

  image = np.array(image, dtype=np.float32) / 255.0
  shape = image.shape
  shape_size = shape[:2]

  # random affine
  center_square = np.float32(shape_size) // 2
  square_size = min(shape_size) // 3
  pts1 = np.float32(
      [
          center_square + square_size,
          [center_square[0] + square_size, center_square[1] - square_size],
          center_square - square_size,
      ]
  )
  # np.random.uniform(-c[2], c[2], size=pts1.shape).astype(np.float32)
  pts2 = pts1 + moves.astype(np.float32)
  M = cv2.getAffineTransform(pts1, pts2)
  image = cv2.warpAffine(
      image, M, shape_size[::-1], borderMode=cv2.BORDER_REFLECT_101
  )

  # np.random.uniform(-1, 1, size=shape[:2]), twice
  dx = (gaussian(dx_noise, c[1], mode="reflect", truncate=3) * c[0]).astype(
      np.float32
  )
  dy = (gaussian(dy_noise, c[1], mode="reflect", truncate=3) * c[0]).astype(
      np.float32
  )
  dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]

  x, y, z = np.meshgrid(
      np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2])
  )
  indices = (
      np.reshape(y + dy, (-1, 1)),
      np.reshape(x + dx, (-1, 1)),
      np.reshape(z, (-1, 1)),
  )
  return (
      np.clip(
          map_coordinates(image, indices, order=1, mode="reflect").reshape(
              shape
          ),
          0,
          1,
      )
      * 255
  )


def script_jpeg_compression(x, severity=1):
  c = [80, 65, 58, 50, 40][severity - 1]

  output = BytesIO()
  x.save(output, "JPEG", quality=c)
  x = Image.open(output)

  return x


def script_spatter(x, severity, noise):
  c = [
      (0.62, 0.1, 0.7, 0.7, 0.5, 0),
      (0.65, 0.1, 0.8, 0.7, 0.5, 0),
      (0.65, 0.3, 1, 0.69, 0.5, 0),
      (0.65, 0.1, 0.7, 0.69, 0.6, 1),
      (0.65, 0.1, 0.5, 0.68, 0.6, 1),
  ][severity - 1]
  x = np.array(x, dtype=np.float32) / 255.0

  # np.random.normal(size=x.shape[:2], loc=c[0], scale=c[1])
  liquid_layer = c[0] + c[1] * noise

  liquid_layer = gaussian(liquid_layer, sigma=c[2])
  liquid_layer[liquid_layer < c[3]] = 0
  if c[5] == 0:
    liquid_layer = (liquid_layer * 255).astype(np.uint8)
    dist = 255 - cv2.Canny(liquid_layer, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    dist = cv2.filter2D(dist, cv2.CV_8U, ker)
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)

    m = cv2.cvtColor(liquid_layer * dist, cv2.COLOR_GRAY2BGRA)
    m /= np.max(m, axis=(0, 1))
    m *= c[4]

    # water is pale turqouise
    color = np.concatenate(
        (
            175 / 255.0 * np.ones_like(m[..., :1]),
            238 / 255.0 * np.ones_like(m[..., :1]),
            238 / 255.0 * np.ones_like(m[..., :1]),
        ),
        axis=2,
    )

    color = cv2.cvtColor(color, cv2.COLOR_BGR2BGRA)
    x = cv2.cvtColor(x, cv2.COLOR_BGR2BGRA)

    return cv2.cvtColor(np.clip(x + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255
  else:
    m = np.where(liquid_layer > c[3], 1, 0)
    m = gaussian(m.astype(np.float32), sigma=c[4])
    m[m < 0.8] = 0

    # mud brown
    color = np.concatenate(
        (
            63 / 255.0 * np.ones_like(x[..., :1]),
            42 / 255.0 * np.ones_like(x[..., :1]),
            20 / 255.0 * np.ones_like(x[..., :1]),
        ),
        axis=2,
    )

    color *= m[..., np.newaxis]
    x *= 1 - m[..., np.newaxis]

    return np.clip(x + color, 0, 1) * 255


# ------------------------------------------------------------------- tests


@functools.lru_cache(maxsize=None)
def _program(name):
  """corrupt(name, ...) with a traced severity: one program per name and shape."""
  return _jit(lambda x, s, k: C.corrupt(name, x, s, k))


def _run(name, x, severity, key):
  return np.asarray(_program(name)(x, jnp.int32(severity), key))


@needs_script
def test_glass_blur_matches_the_script_at_every_severity():
  u8 = _uint8_images((32, 32, 3))
  x = jnp.asarray(u8 / 255.0, jnp.float32)
  key = jax.random.key(0)
  offsets = np.asarray(glass.swap_offsets(key, *u8.shape[:3]))
  for severity in C.SEVERITIES:
    ours = _run("glass_blur", x, severity, key)
    ref = np.stack(
        [
            script_glass_blur(img, severity, d.reshape(-1, 2))
            for img, d in zip(u8, offsets)
        ]
    )
    err = np.abs(ours - ref / 255.0)
    # The script truncates the first blur to uint8: where float32 and float64
    # blurs straddle an integer, one pixel is 1/255 apart before the second
    # blur (none at sigma 0.05, where the blur is the identity).
    assert err.max() <= 1 / 255 + 1e-6, (severity, err.max())
    assert np.mean(err > 1e-5) < 0.005, (severity, np.mean(err > 1e-5))
    if severity == 1:
      assert err.max() < 1e-6


@needs_script
def test_elastic_transform_matches_the_script_at_every_severity():
  u8 = _uint8_images((32, 32, 3))
  x = jnp.asarray(u8 / 255.0, jnp.float32)
  key = jax.random.key(0)
  draws = _jit(lambda k, s: digital.elastic_draws(k, *u8.shape[:3], s))
  for severity in C.SEVERITIES:
    moves, fields = draws(key, jnp.int32(severity))
    ours = _run("elastic_transform", x, severity, key)
    ref = np.stack(
        [
            script_elastic_transform(
                img, severity, np.asarray(m), *np.asarray(f, np.float64)
            )
            for img, m, f in zip(u8, moves, fields)
        ]
    )
    # float32 here; float32 images and float64 fields there.
    np.testing.assert_allclose(ours, ref / 255.0, atol=1e-5)


@pytest.mark.parametrize("shape", [(32, 32, 3), (12, 20, 3), (12, 20, 1)])
def test_jpeg_compression_equals_pil_at_every_quality(shape):
  # 12 x 20: libjpeg pads the right edge before the chroma averaging and the
  # bottom after it, and upsamples from the 6 x 10 real chroma samples.
  u8 = _uint8_images(shape)
  x = jnp.asarray(u8 / 255.0, jnp.float32)
  prev = None
  for severity in C.SEVERITIES:
    ours = _run("jpeg_compression", x, severity, jax.random.key(0))
    ref = np.stack(
        [
            np.asarray(script_jpeg_compression(Image.fromarray(img), severity))
            for img in (u8[..., 0] if shape[-1] == 1 else u8)
        ]
    ).reshape(u8.shape)
    # The same integer codec: the same bytes (errors below 1e-6 are the
    # float32 division by 255).
    np.testing.assert_array_equal(np.round(ours * 255).astype(np.uint8), ref)
    np.testing.assert_allclose(ours, ref / 255.0, atol=1e-6)
    if prev is not None:  # adjacent qualities differ by >= 1 level on average
      assert np.mean(np.abs(ref.astype(int) - prev)) > 1.0
    prev = ref.astype(int)


def test_jpeg_quant_tables_by_hand():
  # libjpeg: quality 50 is the base table; 80 scales by 40 %, 40 by 125 %.
  np.testing.assert_array_equal(
      digital.quant_table(50), np.array(digital._LUMA_TABLE)
  )
  assert digital.quant_table(80)[0, 0] == (16 * 40 + 50) // 100 == 6
  assert digital.quant_table(40, chroma=True)[7, 7] == (99 * 125 + 50) // 100


@needs_script
def test_spatter_matches_the_script_at_every_severity():
  u8 = _uint8_images((32, 32, 3))
  x = jnp.asarray(u8 / 255.0, jnp.float32)
  key = jax.random.key(0)
  noise = np.asarray(jax.random.normal(key, u8.shape[:3]), np.float64)
  for severity in C.SEVERITIES:
    ours = _run("spatter", x, severity, key)
    ref = np.stack(
        [script_spatter(img, severity, n) for img, n in zip(u8, noise)]
    )
    # Float32 against float64, the uint8 steps landing alike for these draws.
    np.testing.assert_allclose(ours, ref / 255.0, atol=1e-6)
    assert np.abs(ours - u8 / 255.0).max() > 0.1  # drops or mud were added


@needs_script
def test_canny_and_chamfer_distance_on_a_square():
  # An 8x8 bright square on black: OpenCV's Canny outline and distances.
  img = np.zeros((1, 16, 16), np.uint8)
  img[0, 4:12, 4:12] = 200
  edges, dist = _jit(
      lambda u8: (e := spatter_lib.canny(u8), spatter_lib.chamfer_distance(e))
  )(jnp.asarray(img, jnp.int32))
  edges, dist = np.asarray(edges), np.asarray(dist)[0]
  np.testing.assert_array_equal(edges[0], cv2.Canny(img[0], 50, 150) > 0)
  ref = cv2.distanceTransform(
      np.where(edges[0], 0, 255).astype(np.uint8), cv2.DIST_L2, 5
  )
  np.testing.assert_allclose(dist, np.minimum(ref, 20), atol=1e-6)
  assert dist[8, 8] == 3.0  # 4 px inside the square, the outline 1 px in


@pytest.mark.parametrize("name", NEW)
def test_one_channel_non_square_range_and_determinism(name):
  # Any H, W >= 8 and C in {1, 3}: here 12 x 20 grey.
  u8 = _uint8_images((12, 20, 1))
  x = jnp.asarray(u8 / 255.0, jnp.float32)
  key = jax.random.key(0)
  out = {s: _run(name, x, s, key) for s in C.SEVERITIES}
  for y in out.values():
    assert y.shape == x.shape and y.dtype == x.dtype
    assert np.all(np.isfinite(y)) and y.min() >= 0 and y.max() <= 1
    assert np.abs(y - x).max() > 0  # every severity changes the images
  np.testing.assert_array_equal(_run(name, x, 5, key), out[5])
  if name != "jpeg_compression":  # the others draw from the key
    assert not np.array_equal(_run(name, x, 5, jax.random.key(1)), out[5])
  assert name in C.TRACEABLE_SEVERITY and name not in C.DEFAULT_SUITE


def test_spatter_static_severity_takes_the_scripts_branch():
  # Static severities pick the liquid or mud branch in Python (traced: lax.cond).
  x = jnp.asarray(_uint8_images((12, 20, 1)) / 255.0, jnp.float32)
  key = jax.random.key(0)
  static = _jit(lambda x, k: C.corrupt("spatter", x, 4, k))
  np.testing.assert_allclose(
      np.asarray(static(x, key)), _run("spatter", x, 4, key), atol=1e-6
  )


@pytest.mark.parametrize("name", NEW)
def test_batch_sharded_on_an_explicit_mesh(name):
  # The evaluators shard batches over a mesh: no reshape or gather may
  # need the batch axis whole. The same images as unsharded.
  mesh = jax.make_mesh((4,), ("data",), (jax.sharding.AxisType.Explicit,))
  shape = (12, 20, 3 if name == "jpeg_compression" else 1)  # JPEG: chroma too
  x = jnp.asarray(_uint8_images(shape) / 255.0, jnp.float32)
  key = jax.random.key(0)
  sharded = jax.device_put(
      x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  )
  y = _run(name, sharded, 3, key)
  np.testing.assert_allclose(y, _run(name, x, 3, key), atol=1e-6)
