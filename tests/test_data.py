"""simsoft.data: loaders (real digits, real Fashion-MNIST files, TFDS under
mock_data), the stratified hold-out, and the deterministic host-sharded iterators.
"""

import gzip
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from simsoft import data
from simsoft.data import ArraySplit, stratified_holdout
from simsoft.data.fashion_mnist_local import DEFAULT_DIR as FASHION_DIR
from simsoft.data.fashion_mnist_local import FILES as FASHION_FILES

# --------------------------------------------------------------------- helpers


def _id_split(n, shape=(2, 2, 1)):
  """labels = example ids, images uint8 filled with id % 256."""
  ids = np.arange(n, dtype=np.int32)
  images = np.broadcast_to(
      (ids % 256).astype(np.uint8)[:, None, None, None], (n,) + shape
  ).copy()
  return ArraySplit(images, ids)


def _check_batch_images(batch):
  """image rows must be id % 256 / 255 of their label (the id)."""
  expected = ((batch["label"] % 256) / 255.0).astype(np.float32)
  assert batch["image"].dtype == np.float32
  np.testing.assert_allclose(batch["image"][:, 0, 0, 0], expected, rtol=1e-6)


def _rows(images):
  """Images as sorted rows, to compare splits as multisets."""
  flat = images.reshape(len(images), -1)
  return flat[np.lexsort(flat.T[::-1])]


def _write_idx(path, array, magic_type=0x08, extra=b"", cut=None):
  header = (
      bytes([0, 0, magic_type, array.ndim])
      + np.asarray(array.shape, ">u4").tobytes()
  )
  raw = header + array.astype(np.uint8).tobytes() + extra
  with gzip.open(path, "wb") as f:
    f.write(raw if cut is None else raw[:cut])


def _small_fashion_dir(root, n_train=30, n_test=10):
  rng = np.random.default_rng(0)
  os.makedirs(root, exist_ok=True)
  arrays = {
      "train_images": rng.integers(0, 256, (n_train, 28, 28)),
      "train_labels": np.arange(n_train) % 10,
      "test_images": rng.integers(0, 256, (n_test, 28, 28)),
      "test_labels": np.arange(n_test) % 10,
  }
  for key, array in arrays.items():
    _write_idx(os.path.join(root, FASHION_FILES[key]), array)
  return arrays


# ------------------------------------------------------------ stratified hold-out


def test_holdout_hand_computed_largest_remainder():
  labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
  kept, held = stratified_holdout(labels, fraction=0.5, seed=0)
  # quotas 2.5, 1.5, 1.0 -> floors 2, 1, 1; the one left over goes to the
  # first of the tied largest fractional parts: class 0.
  assert np.bincount(labels[held], minlength=3).tolist() == [3, 1, 1]
  assert len(held) == 5


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.37])
def test_holdout_partition_stratified_deterministic(fraction):
  labels = np.random.default_rng(0).integers(0, 7, 1001)
  kept, held = stratified_holdout(labels, fraction=fraction, seed=3)
  assert len(held) == int(np.floor(fraction * 1001 + 0.5))
  assert np.intersect1d(kept, held).size == 0
  np.testing.assert_array_equal(
      np.sort(np.concatenate([kept, held])), np.arange(1001)
  )
  counts = np.bincount(labels, minlength=7)
  taken = np.bincount(labels[held], minlength=7)
  assert np.all(np.abs(taken - fraction * counts) < 1)
  again = stratified_holdout(labels, fraction=fraction, seed=3)
  np.testing.assert_array_equal(again[1], held)
  if fraction:
    assert not np.array_equal(
        stratified_holdout(labels, fraction=fraction, seed=4)[1], held
    )


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_holdout_bad_fraction(fraction):
  with pytest.raises(ValueError, match="fraction"):
    stratified_holdout(np.zeros(10, int), fraction=fraction, seed=0)


def test_subset_train_stratified_and_only_train():
  from simsoft.data import get_dataset

  full = get_dataset("digits", validation_fraction=0.1, split_seed=0)
  small = get_dataset(
      "digits", validation_fraction=0.1, split_seed=0, train_examples=300
  )
  train, sub = full.split("train"), small.split("train")
  assert len(sub) == 300
  counts = np.bincount(train.labels, minlength=10)
  assert np.all(
      np.abs(np.bincount(sub.labels, minlength=10) - 300 * counts / len(train))
      < 1
  )
  # Every kept example is one of the full split's (images and labels together).
  full_rows = {
      (img.tobytes(), int(lab)) for img, lab in zip(train.images, train.labels)
  }
  assert all(
      (img.tobytes(), int(lab)) in full_rows
      for img, lab in zip(sub.images, sub.labels)
  )
  for name in ("validation", "test"):
    np.testing.assert_array_equal(
        small.split(name).images, full.split(name).images
    )
  expected_mean = sub.images.astype(np.float64).mean() / (
      255.0 if sub.images.dtype == np.uint8 else 1.0
  )
  assert small.mean[0] == pytest.approx(expected_mean, rel=1e-5)
  again = get_dataset(
      "digits", validation_fraction=0.1, split_seed=0, train_examples=300
  )
  np.testing.assert_array_equal(again.split("train").labels, sub.labels)
  with pytest.raises(
      ValueError, match=r"config.dataset.train_examples.*got 5000"
  ):
    get_dataset("digits", train_examples=5000)


# ---------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
  return data.get_dataset("digits")


def test_digits_real(digits):
  from sklearn.datasets import load_digits

  source = load_digits()
  sizes = {k: digits.num_examples(k) for k in data.SPLITS}
  assert sizes == {
      "train": 1294,
      "validation": 144,
      "test": 359,
  }  # 1797 = 1438 + 359
  assert digits.num_classes == 10 and digits.class_names == tuple("0123456789")
  assert digits.image_shape == (8, 8, 1) and digits.augmentation == "none"
  assert digits.coarse_labels is None
  # Super-classes: Ward linkage of the class-mean images outside the test
  # split, cut into four groups (simsoft.data.digits).
  from scipy.cluster.hierarchy import fcluster, linkage

  rest = [digits.split("train"), digits.split("validation")]
  x = np.concatenate([s.images for s in rest]).reshape(-1, 64)
  y = np.concatenate([s.labels for s in rest])
  means = np.stack([x[y == c].mean(0) for c in range(10)])
  cut = fcluster(linkage(means, "ward"), 4, "maxclust")
  groups = np.asarray(digits.class_groups)
  assert np.array_equal(cut[:, None] == cut, groups[:, None] == groups)
  assert digits.group_names[groups[5]] == "3 5 9"
  for split in digits.splits.values():
    assert split.images.dtype == np.float32 and split.images.shape[1:] == (
        8,
        8,
        1,
    )
    assert split.labels.dtype == np.int32
    assert split.images.min() == 0.0 and split.images.max() == 1.0
  everything = np.concatenate([s.images for s in digits.splits.values()])
  np.testing.assert_array_equal(
      _rows(everything), _rows(source.images[..., None] / 16.0)
  )
  counts = np.bincount(source.target, minlength=10)
  test_counts = np.bincount(digits.splits["test"].labels, minlength=10)
  assert np.all(np.abs(test_counts - 0.2 * counts) < 1)
  rest = counts - test_counts
  val_counts = np.bincount(digits.splits["validation"].labels, minlength=10)
  assert np.all(np.abs(val_counts - 0.1 * rest) < 1)
  train = digits.splits["train"].images
  np.testing.assert_allclose(digits.mean, [train.mean()], rtol=1e-5)
  np.testing.assert_allclose(digits.std, [train.std()], rtol=1e-5)


def test_digits_split_seed(digits):
  same = data.get_dataset("digits", split_seed=0)
  other = data.get_dataset("digits", split_seed=1)
  for split in data.SPLITS:
    np.testing.assert_array_equal(
        same.splits[split].images, digits.splits[split].images
    )
  np.testing.assert_array_equal(
      other.splits["test"].images, digits.splits["test"].images
  )
  assert not np.array_equal(
      other.splits["validation"].images, digits.splits["validation"].images
  )
  # Moving the validation split keeps train + validation the same set.
  np.testing.assert_array_equal(
      _rows(
          np.concatenate(
              [other.splits["train"].images, other.splits["validation"].images]
          )
      ),
      _rows(
          np.concatenate(
              [
                  digits.splits["train"].images,
                  digits.splits["validation"].images,
              ]
          )
      ),
  )


def test_digits_batches_pass_float_through(digits):
  batch = next(
      data.train_batches(digits.splits["train"], global_batch_size=32, seed=0)
  )
  perm = np.random.default_rng([0, 0]).permutation(1294)[:32]
  np.testing.assert_array_equal(
      batch["image"], digits.splits["train"].images[perm]
  )


# ----------------------------------------------------------- fashion_mnist_local


@pytest.fixture(scope="module")
def fashion():
  if not os.path.isdir(FASHION_DIR):
    pytest.skip(f"{FASHION_DIR} missing: apt-get install dataset-fashion-mnist")
  return data.get_dataset("fashion_mnist_local")


def test_fashion_mnist_local_real_files(fashion):
  assert {k: fashion.num_examples(k) for k in data.SPLITS} == {
      "train": 54000,
      "validation": 6000,
      "test": 10000,
  }
  assert fashion.image_shape == (28, 28, 1) and fashion.num_classes == 10
  # Super-classes come with the dataset: Shirt (6) is a top, Ankle boot (9) footwear.
  assert fashion.group_names[fashion.class_groups[6]] == "tops"
  assert fashion.group_names[fashion.class_groups[9]] == "footwear"
  assert (
      fashion.class_names[0] == "T-shirt/top"
      and fashion.class_names[9] == "Ankle boot"
  )
  for split in fashion.splits.values():
    assert split.images.dtype == np.uint8 and split.images.shape[1:] == (
        28,
        28,
        1,
    )
  # 6,000 train images per class: a 10% stratified hold-out takes exactly 600 of each.
  assert np.bincount(fashion.splits["validation"].labels).tolist() == [600] * 10
  # The test split keeps the file order (first labels of t10k: 9 2 1 1 6 1 4 6 5 7).
  assert fashion.splits["test"].labels[:10].tolist() == [
      9,
      2,
      1,
      1,
      6,
      1,
      4,
      6,
      5,
      7,
  ]
  # The well-known Fashion-MNIST statistics (0.2860, 0.3530), here of 90% of train.
  assert (
      abs(fashion.mean[0] - 0.2860) < 2e-3
      and abs(fashion.std[0] - 0.3530) < 2e-3
  )


def test_fashion_local_small_files_roundtrip(tmp_path):
  arrays = _small_fashion_dir(tmp_path)
  ds = data.get_dataset("fashion_mnist_local", data_dir=str(tmp_path))
  np.testing.assert_array_equal(
      ds.splits["test"].images[..., 0], arrays["test_images"]
  )
  np.testing.assert_array_equal(ds.splits["test"].labels, arrays["test_labels"])
  train = np.concatenate(
      [ds.splits["train"].images, ds.splits["validation"].images]
  )
  np.testing.assert_array_equal(
      _rows(train), _rows(arrays["train_images"][..., None])
  )
  assert ds.num_examples("validation") == 3


def test_fashion_local_missing_dir_and_file(tmp_path):
  missing = tmp_path / "nowhere"
  with pytest.raises(
      FileNotFoundError, match="nowhere.*apt-get install dataset-fashion-mnist"
  ):
    data.get_dataset("fashion_mnist_local", data_dir=str(missing))
  _small_fashion_dir(tmp_path)
  os.remove(tmp_path / FASHION_FILES["test_labels"])
  with pytest.raises(
      FileNotFoundError, match="t10k-labels-idx1-ubyte.gz.*fashion_mnist"
  ):
    data.get_dataset("fashion_mnist_local", data_dir=str(tmp_path))


@pytest.mark.parametrize(
    "damage",
    [
        "truncated_gzip",
        "not_gzip",
        "bad_magic",
        "short_payload",
        "long_payload",
        "wrong_size",
        "count_mismatch",
    ],
)
def test_fashion_local_corrupt_files(tmp_path, damage):
  arrays = _small_fashion_dir(tmp_path)
  target = tmp_path / FASHION_FILES["train_images"]
  if damage == "truncated_gzip":
    raw = target.read_bytes()
    target.write_bytes(raw[: len(raw) // 2])
  elif damage == "not_gzip":
    target.write_bytes(b"this is not gzip data at all")
  elif damage == "bad_magic":
    _write_idx(target, arrays["train_images"], magic_type=0x0D)
  elif damage == "short_payload":
    _write_idx(target, arrays["train_images"], cut=100)
  elif damage == "long_payload":
    _write_idx(target, arrays["train_images"], extra=b"\0" * 7)
  elif damage == "wrong_size":
    _write_idx(target, arrays["train_images"][:, :14, :14])
  elif damage == "count_mismatch":
    _write_idx(target, arrays["train_images"][:-1])
  with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
    data.get_dataset("fashion_mnist_local", data_dir=str(tmp_path))


# ------------------------------------------------------------------------ TFDS

_TFDS_SHAPES = {
    "mnist": (28, 28, 1),
    "fashion_mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "cifar100": (32, 32, 3),
    "svhn_cropped": (32, 32, 3),
}
_MOCK_N = 40


def _tfds_direct(name, split, data_dir):
  import tensorflow_datasets as tfds

  ds = tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False)
  return {
      k: np.stack([ex[k] for ex in tfds.as_numpy(ds)])
      for k in ds.element_spec
      if k != "id"
  }


@pytest.fixture(scope="module")
def mock_tfds(tmp_path_factory):
  tfds = pytest.importorskip("tensorflow_datasets")
  root = str(tmp_path_factory.mktemp("tfds"))
  with tfds.testing.mock_data(num_examples=_MOCK_N):
    yield root


@pytest.mark.parametrize("name", sorted(_TFDS_SHAPES))
def test_tfds_datasets_under_mock(mock_tfds, name):
  ds = data.get_dataset(
      name, data_dir=mock_tfds, validation_fraction=0.25, split_seed=2
  )
  source = _tfds_direct(name, "train", mock_tfds)
  sizes = {k: ds.num_examples(k) for k in data.SPLITS}
  assert sizes == {"train": 30, "validation": 10, "test": _MOCK_N}
  assert ds.image_shape == _TFDS_SHAPES[name]
  assert (
      len(ds.class_names)
      == ds.num_classes
      == (100 if name == "cifar100" else 10)
  )
  assert ds.augmentation == ("none" if "mnist" in name else "crop_flip")
  kept, held = stratified_holdout(source["label"], fraction=0.25, seed=2)
  np.testing.assert_array_equal(
      ds.splits["train"].images, source["image"][kept]
  )
  np.testing.assert_array_equal(
      ds.splits["validation"].labels, source["label"][held]
  )
  for split in ds.splits.values():
    assert split.images.dtype == np.uint8 and split.labels.dtype == np.int32
  stats = data.channel_stats(ds.splits["train"].images)
  assert len(ds.mean) == len(ds.std) == ds.image_shape[-1]
  np.testing.assert_allclose((ds.mean, ds.std), stats)
  np.testing.assert_allclose(
      ds.mean, (source["image"][kept] / 255.0).mean((0, 1, 2)), rtol=1e-5
  )
  if name == "cifar100":
    assert len(ds.coarse_class_names) == 20 and ds.class_names[-1] == "worm"
    np.testing.assert_array_equal(
        ds.coarse_labels["train"], source["coarse_label"][kept]
    )
    np.testing.assert_array_equal(
        ds.coarse_labels["validation"], source["coarse_label"][held]
    )
    assert ds.coarse_labels["test"].shape == (_MOCK_N,)
    assert all(c.dtype == np.int32 for c in ds.coarse_labels.values())
    # class_groups: fine class -> a coarse label it has in the examples (one
    # each in the real data; the mock draws them independently).
    pairs = set(zip(source["label"].tolist(), source["coarse_label"].tolist()))
    assert all(
        (c, g) in pairs
        for c, g in enumerate(ds.class_groups)
        if c in set(source["label"].tolist())
    )
    assert ds.group_names == ds.coarse_class_names
  else:
    assert ds.coarse_labels is None and ds.coarse_class_names is None


def test_tfds_class_name_tables():
  from simsoft.data import tfds_sources

  assert len(set(tfds_sources.CIFAR100_CLASS_NAMES)) == 100
  assert len(set(tfds_sources.CIFAR100_COARSE_CLASS_NAMES)) == 20
  assert tfds_sources.CIFAR100_CLASS_NAMES == tuple(
      sorted(tfds_sources.CIFAR100_CLASS_NAMES)
  )


def test_cifar10_corrupted_under_mock(mock_tfds):
  split = data.load_cifar10_corrupted("fog", 3, data_dir=mock_tfds)
  source = _tfds_direct("cifar10_corrupted/fog_3", "test", mock_tfds)
  assert (
      split.images.shape == (_MOCK_N, 32, 32, 3)
      and split.images.dtype == np.uint8
  )
  np.testing.assert_array_equal(split.images, source["image"])
  np.testing.assert_array_equal(split.labels, source["label"])
  assert len(data.CIFAR10_C_CORRUPTIONS) == 15
  extra = data.load_cifar10_corrupted("speckle_noise", 5, data_dir=mock_tfds)
  assert len(extra) == _MOCK_N


@pytest.mark.parametrize(
    "corruption,severity,match",
    [
        (
            "glass_blur",
            1,
            "unknown CIFAR-10-C corruption 'glass_blur'.*frosted_glass_blur",
        ),
        ("fog", 0, "severity"),
        ("fog", 6, "severity"),
        ("fog", "3", "severity"),
        ("fog", True, "severity"),
    ],
)
def test_cifar10_corrupted_bad_arguments(corruption, severity, match):
  with pytest.raises(ValueError, match=match):
    data.load_cifar10_corrupted(corruption, severity)


def test_tensorflow_is_imported_lazily_and_kept_off_gpus(mock_tfds):
  code = (
      "import sys, simsoft.data, simsoft.augment; "
      "assert 'tensorflow' not in sys.modules, 'tf imported'; "
      "assert 'sklearn' not in sys.modules, 'sklearn imported'"
  )
  subprocess.run([sys.executable, "-c", code], check=True)
  import tensorflow as tf

  data.get_dataset("mnist", data_dir=mock_tfds)
  assert tf.config.get_visible_devices("GPU") == []


# --------------------------------------------------------------------- registry


def test_registry_and_bad_names():
  assert {
      "digits",
      "fashion_mnist_local",
      "mnist",
      "fashion_mnist",
      "cifar10",
      "cifar100",
      "svhn_cropped",
  } <= set(data.DATASETS)
  with pytest.raises(
      ValueError, match=r"unknown dataset 'cifar11'.*cifar10.*digits"
  ):
    data.get_dataset("cifar11")
  with pytest.raises(ValueError, match="validation_fraction"):
    data.get_dataset("digits", validation_fraction=1.0)


def test_bad_split_name(digits):
  with pytest.raises(ValueError, match=r"unknown split 'val'.*validation"):
    digits.num_examples("val")


def test_array_split_validation():
  with pytest.raises(TypeError, match="labels"):
    ArraySplit(np.zeros((2, 1, 1, 1), np.uint8), np.zeros(2, np.int64))
  with pytest.raises(TypeError, match="images"):
    ArraySplit(np.zeros((2, 1, 1, 1), np.float64), np.zeros(2, np.int32))
  with pytest.raises(ValueError, match="images"):
    ArraySplit(np.zeros((2, 1, 1), np.uint8), np.zeros(2, np.int32))
  with pytest.raises(ValueError, match="length"):
    ArraySplit(np.zeros((2, 1, 1, 1), np.uint8), np.zeros(3, np.int32))


# -------------------------------------------------------------------- iterators


def test_train_batches_reference_and_epochs():
  split = _id_split(103)
  it = data.train_batches(split, global_batch_size=10, seed=5)
  assert data.steps_per_epoch(split, 10) == 10
  for epoch in range(3):
    perm = np.random.default_rng([5, epoch]).permutation(103)
    batches = list(itertools.islice(it, 10))
    labels = np.concatenate([b["label"] for b in batches])
    np.testing.assert_array_equal(labels, perm[:100])
    assert len(np.unique(labels)) == 100  # each kept example once per epoch
    for b in batches:
      assert b["image"].shape == (10, 2, 2, 1) and b["label"].dtype == np.int32
      _check_batch_images(b)


def test_train_batches_deterministic_and_seeded():
  split = _id_split(64)
  first = [
      b["label"]
      for b in itertools.islice(
          data.train_batches(split, global_batch_size=8, seed=1), 20
      )
  ]
  again = [
      b["label"]
      for b in itertools.islice(
          data.train_batches(split, global_batch_size=8, seed=1), 20
      )
  ]
  other = [
      b["label"]
      for b in itertools.islice(
          data.train_batches(split, global_batch_size=8, seed=2), 20
      )
  ]
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)


@pytest.mark.parametrize("start_step", [0, 3, 7, 12, 29])
def test_train_batches_resume_equals_continuing(start_step):
  split = _id_split(50)  # 7 steps per epoch: resumes inside and across epochs
  full = list(
      itertools.islice(
          data.train_batches(split, global_batch_size=7, seed=0), 40
      )
  )
  resumed = list(
      itertools.islice(
          data.train_batches(
              split, global_batch_size=7, seed=0, start_step=start_step
          ),
          40 - start_step,
      )
  )
  for a, b in zip(full[start_step:], resumed):
    np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_array_equal(a["image"], b["image"])


@pytest.mark.parametrize("process_count", [2, 4])
def test_train_batches_host_sharding(process_count):
  split = _id_split(100)
  whole = list(
      itertools.islice(
          data.train_batches(split, global_batch_size=16, seed=3), 9
      )
  )
  shards = [
      list(
          itertools.islice(
              data.train_batches(
                  split,
                  global_batch_size=16,
                  seed=3,
                  process_index=p,
                  process_count=process_count,
              ),
              9,
          )
      )
      for p in range(process_count)
  ]
  for step, batch in enumerate(whole):
    parts = [s[step]["label"] for s in shards]
    assert all(len(p) == 16 // process_count for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), batch["label"])
    assert len(np.unique(np.concatenate(parts))) == 16  # disjoint
    for s in shards:
      _check_batch_images(s[step])


def test_eval_batches_padding_and_mask():
  split = _id_split(10)
  batches = list(data.eval_batches(split, global_batch_size=4))
  assert len(batches) == 3
  np.testing.assert_array_equal(batches[-1]["label"], [8, 9, 0, 0])
  np.testing.assert_array_equal(batches[-1]["mask"], [1, 1, 0, 0])
  assert np.all(batches[-1]["image"][2:] == 0.0)
  mask = np.concatenate([b["mask"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(labels[mask == 1], np.arange(10))
  for b in batches:
    assert b["mask"].dtype == np.float32 and b["image"].dtype == np.float32
    _check_batch_images(b)


@pytest.mark.parametrize("process_count", [2, 4])
def test_eval_batches_host_sharding(process_count):
  split = _id_split(21)
  whole = list(data.eval_batches(split, global_batch_size=8))
  shards = [
      list(
          data.eval_batches(
              split,
              global_batch_size=8,
              process_index=p,
              process_count=process_count,
          )
      )
      for p in range(process_count)
  ]
  assert all(len(s) == len(whole) == 3 for s in shards)
  for step, batch in enumerate(whole):
    for key in ("image", "label", "mask"):
      np.testing.assert_array_equal(
          np.concatenate([s[step][key] for s in shards]), batch[key]
      )
  real = np.concatenate(
      [
          s[step]["label"][s[step]["mask"] == 1]
          for s in shards
          for step in range(3)
      ]
  )
  np.testing.assert_array_equal(
      np.sort(real), np.arange(21)
  )  # disjoint, complete


def test_eval_batches_empty_split():
  empty = ArraySplit(np.zeros((0, 2, 2, 1), np.uint8), np.zeros(0, np.int32))
  assert list(data.eval_batches(empty, global_batch_size=4)) == []


def test_iterator_bad_arguments():
  split = _id_split(20)
  with pytest.raises(ValueError, match="global_batch_size=6.*process_count=4"):
    data.train_batches(split, global_batch_size=6, seed=0, process_count=4)
  with pytest.raises(ValueError, match="global_batch_size=6.*process_count=4"):
    data.eval_batches(split, global_batch_size=6, process_count=4)
  with pytest.raises(ValueError, match="process_index"):
    data.train_batches(
        split, global_batch_size=4, seed=0, process_index=2, process_count=2
    )
  with pytest.raises(ValueError, match="exceeds"):
    data.train_batches(split, global_batch_size=32, seed=0)
  with pytest.raises(ValueError, match="global_batch_size"):
    data.steps_per_epoch(split, 0)
  with pytest.raises(ValueError, match="start_step"):
    data.train_batches(split, global_batch_size=4, seed=0, start_step=-1)
