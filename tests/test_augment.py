"""simsoft.augment against numpy references, under jit and a 4-device sharded batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from simsoft import augment as aug


def _images(batch=8, height=16, width=12, channels=3, seed=0):
  return (
      np.random.default_rng(seed)
      .uniform(size=(batch, height, width, channels))
      .astype(np.float32)
  )


def _reference(images, offsets, flips, padding):
  """numpy: pad with zeros, slice, mirror."""
  _, h, w, _ = images.shape
  padded = np.pad(
      images, ((0, 0), (padding, padding), (padding, padding), (0, 0))
  )
  out = []
  for img, (oy, ox), f in zip(padded, offsets, flips):
    crop = img[oy : oy + h, ox : ox + w]
    out.append(np.flip(crop, axis=1) if f else crop)
  return np.stack(out)


def _all_candidates(image, padding):
  """Every crop/flip of one image: [(2p+1)^2 * 2, H, W, C]."""
  k = 2 * padding + 1
  offsets = np.array([(y, x) for y in range(k) for x in range(k)] * 2)
  flips = np.repeat([False, True], k * k)
  return _reference(
      np.repeat(image[None], len(offsets), 0), offsets, flips, padding
  )


def test_crop_flip_matches_numpy_for_given_offsets():
  images = _images()
  rng = np.random.default_rng(1)
  offsets = rng.integers(0, 9, size=(8, 2))
  flips = rng.integers(0, 2, size=8).astype(bool)
  got = jax.jit(aug.crop_flip, static_argnames="padding")(
      images, offsets, flips, padding=4
  )
  np.testing.assert_array_equal(got, _reference(images, offsets, flips, 4))


def test_shape_and_dtype_kept():
  for dtype in (np.float32, np.uint8, jnp.bfloat16):
    images = jnp.asarray(_images() * 255).astype(dtype)
    out = aug.random_crop_flip(jax.random.key(0), images)
    assert out.shape == images.shape and out.dtype == images.dtype


def test_each_output_is_one_valid_crop_flip():
  images = _images(batch=6)
  out = np.asarray(jax.jit(aug.random_crop_flip)(jax.random.key(3), images))
  for img, got in zip(images, out):
    candidates = _all_candidates(img, 4)
    assert np.any(np.all(candidates == got, axis=(1, 2, 3)))


def test_deterministic_per_key_and_keys_differ():
  images = _images()
  a = aug.random_crop_flip(jax.random.key(0), images)
  b = aug.random_crop_flip(jax.random.key(0), images)
  c = aug.random_crop_flip(jax.random.key(1), images)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_no_padding_no_flip_is_identity():
  images = _images()
  out = aug.random_crop_flip(jax.random.key(0), images, padding=0, flip=False)
  np.testing.assert_array_equal(out, images)


def test_flip_only_gives_image_or_np_flip_and_both_occur():
  images = _images(batch=64)
  out = np.asarray(aug.random_crop_flip(jax.random.key(0), images, padding=0))
  same = np.all(out == images, axis=(1, 2, 3))
  mirrored = np.all(out == np.flip(images, axis=2), axis=(1, 2, 3))
  assert np.all(same | mirrored)
  assert same.sum() > 10 and mirrored.sum() > 10


def test_crop_offsets_uniform_over_positions():
  padding, n = 2, 5000  # 25 positions, 200 expected each
  height = width = 9
  image = np.zeros((height, width, 1), np.float32)
  image[4, 4] = 1.0  # a marker at (4, 4) lands at (4 + p - oy, 4 + p - ox)
  images = np.repeat(image[None], n, 0)
  out = np.asarray(
      jax.jit(
          lambda k, x: aug.random_crop_flip(k, x, padding=padding, flip=False)
      )(jax.random.key(7), images)
  )
  flat = out.reshape(n, -1).argmax(1)
  assert np.all(out.reshape(n, -1).max(1) == 1.0)
  oy = 4 + padding - flat // width
  ox = 4 + padding - flat % width
  counts = np.zeros((2 * padding + 1,) * 2)
  np.add.at(counts, (oy, ox), 1)
  expected = n / counts.size
  assert counts.min() > 0.6 * expected and counts.max() < 1.4 * expected
  chi2 = np.sum((counts - expected) ** 2 / expected)
  assert chi2 < 60  # 24 degrees of freedom: P(chi2 > 60) < 1e-4


def test_sharded_over_4_devices_equals_unsharded():
  assert jax.device_count() == 4, "conftest sets 4 simulated devices"
  mesh = jax.make_mesh(
      (4,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,)
  )
  images = _images(batch=16)
  fn = jax.jit(lambda k, x: aug.augment(k, x, "crop_flip"))
  key = jax.random.key(5)
  sharded = fn(key, jax.device_put(images, NamedSharding(mesh, P("data"))))
  np.testing.assert_array_equal(sharded, fn(key, images))
  assert sharded.sharding.spec[0] == "data"


def test_augment_kinds():
  images = _images()
  key = jax.random.key(0)
  np.testing.assert_array_equal(aug.augment(key, images, "none"), images)
  np.testing.assert_array_equal(
      aug.augment(key, images, "crop_flip"), aug.random_crop_flip(key, images)
  )
  with pytest.raises(
      ValueError, match=r"unknown augmentation 'rotate'.*crop_flip.*none"
  ):
    aug.augment(key, images, "rotate")


def test_bad_inputs():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="images must be"):
    aug.random_crop_flip(key, np.zeros((4, 4, 3)))
  with pytest.raises(ValueError, match="padding"):
    aug.random_crop_flip(key, _images(), padding=-1)
  with pytest.raises(ValueError, match="offsets"):
    aug.crop_flip(
        _images(), np.zeros((3, 2), int), np.zeros(8, bool), padding=1
    )
