"""The image-folder dataset (simsoft.data.image_folder) and the CIFAR-10 JPEG copy."""

import io
import os
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from simsoft import data as data_lib
from simsoft.data import cifar10_jpeg, image_folder, label_noise
from simsoft.errors import ConfigError

CLASSES = ("ant", "bee", "cow")


def _pixels(label: int, index: int, size=(6, 5), grey=False) -> np.ndarray:
  """A deterministic image that PNG stores exactly: [H, W, 3] (or [H, W])."""
  h, w = size
  x = (np.arange(h * w * 3).reshape(h, w, 3) * 7 + 40 * label + index) % 256
  x = x.astype(np.uint8)
  return x[..., 0] if grey else x


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format=fmt, quality=95)
  return buf.getvalue()


def _write_folder(
    root,
    *,
    fmt="PNG",
    per_class=(4, 3, 5),
    test_per_class=2,
    as_zip=False,
    size=(6, 5),
    grey=False,
):
  """root/{train,test}/<class>/NNN.<ext> (or train.zip, test.zip); returns
  {split: (images [N, H, W, 3] in sorted-file order, labels)}."""
  ext = "png" if fmt == "PNG" else "jpg"
  expected = {}
  for split, counts in (
      ("train", per_class),
      ("test", (test_per_class,) * len(CLASSES)),
  ):
    files, images, labels = {}, [], []
    for label, (cls, n) in enumerate(zip(CLASSES, counts)):
      for i in range(n):
        px = _pixels(label, i, size, grey)
        files[f"{split}/{cls}/{i:03d}.{ext}"] = _encode(px, fmt)
        images.append(px if not grey else px[..., None])
        labels.append(label)
    if as_zip:
      with zipfile.ZipFile(os.path.join(root, f"{split}.zip"), "w") as z:
        for name, blob in files.items():
          z.writestr(name, blob)
    else:
      for name, blob in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
          f.write(blob)
    expected[split] = (np.stack(images), np.array(labels, np.int32))
  return expected


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv(image_folder.CACHE_ENV, str(tmp_path / "cache"))


@pytest.mark.parametrize("as_zip", [False, True])
def test_png_folder_decodes_exactly(tmp_path, as_zip):
  root = tmp_path / "data"
  root.mkdir()
  expected = _write_folder(root, as_zip=as_zip)
  classes, splits = image_folder.read_splits(str(root))
  assert classes == CLASSES
  for split in ("train", "test"):
    images, labels = expected[split]
    order = np.random.default_rng(image_folder.ORDER_SEED).permutation(
        len(labels)
    )
    assert splits[split].images.dtype == np.uint8
    np.testing.assert_array_equal(splits[split].images, images[order])
    np.testing.assert_array_equal(splits[split].labels, labels[order])


def test_jpeg_folder_close_to_source_and_zip_equals_directory(tmp_path):
  (tmp_path / "dir").mkdir()
  (tmp_path / "zip").mkdir()
  expected = _write_folder(tmp_path / "dir", fmt="JPEG", size=(16, 16))
  _write_folder(tmp_path / "zip", fmt="JPEG", size=(16, 16), as_zip=True)
  _, from_dir = image_folder.read_splits(str(tmp_path / "dir"))
  _, from_zip = image_folder.read_splits(str(tmp_path / "zip"))
  np.testing.assert_array_equal(
      from_dir["train"].images, from_zip["train"].images
  )
  order = np.random.default_rng(0).permutation(12)
  err = np.abs(
      from_dir["train"].images.astype(int) - expected["train"][0][order]
  )
  assert from_dir["train"].images.shape == (12, 16, 16, 3)
  assert err.mean() < 20  # lossy, but the same images


def test_greyscale_folder_keeps_one_channel(tmp_path):
  expected = _write_folder(tmp_path, grey=True)
  _, splits = image_folder.read_splits(str(tmp_path))
  assert splits["train"].images.shape[-1] == 1
  order = np.random.default_rng(0).permutation(12)
  np.testing.assert_array_equal(
      splits["train"].images, expected["train"][0][order]
  )


def test_cache_is_used_and_follows_changes(tmp_path, monkeypatch):
  root = tmp_path / "data"
  root.mkdir()
  _write_folder(root)
  first = image_folder.read_splits(str(root))[1]["train"].images
  decodes = []
  real = image_folder._decode
  monkeypatch.setattr(
      image_folder, "_decode", lambda f: decodes.append(f.split) or real(f)
  )
  again = image_folder.read_splits(str(root))[1]["train"].images
  np.testing.assert_array_equal(first, again)
  assert decodes == []  # both splits from the cache
  # A changed file (new size and mtime) is decoded again.
  path = root / "train" / "ant" / "000.png"
  path.write_bytes(_encode(np.zeros((6, 5, 3), np.uint8), "PNG"))
  os.utime(path, ns=(1, 1))
  changed = image_folder.read_splits(str(root))[1]["train"].images
  assert decodes == ["train"]
  where = np.flatnonzero(np.random.default_rng(0).permutation(12) == 0)[0]
  assert changed[where].sum() == 0 and first[where].sum() > 0
  np.testing.assert_array_equal(
      np.delete(changed, where, 0), np.delete(first, where, 0)
  )


def test_load_builds_stratified_validation_and_stats(tmp_path):
  _write_folder(tmp_path, per_class=(10, 10, 10))
  ds = data_lib.get_dataset(
      "image_folder", data_dir=str(tmp_path), validation_fraction=0.2
  )
  assert ds.class_names == CLASSES and ds.num_classes == 3
  assert [len(ds.split(s)) for s in ("train", "validation", "test")] == [
      24,
      6,
      6,
  ]
  np.testing.assert_array_equal(
      np.bincount(ds.split("validation").labels), [2, 2, 2]
  )
  x = ds.split("train").images.astype(np.float64) / 255
  np.testing.assert_allclose(ds.mean, x.reshape(-1, 3).mean(0), rtol=1e-5)
  assert ds.augmentation == "crop_flip" and ds.image_shape == (6, 5, 3)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: shutil.rmtree(root / "test"), "not found: neither"),
        (
            lambda root: os.rename(
                root / "test" / "cow", root / "test" / "pig"
            ),
            "classes of",
        ),
        (
            lambda root: [
                os.remove(p) for p in (root / "train" / "bee").iterdir()
            ],
            "hold no image",
        ),
        (
            lambda root: (root / "train" / "ant" / "000.png").write_bytes(
                b"not an image"
            ),
            "unreadable image",
        ),
        (
            lambda root: (root / "train" / "bee" / "000.png").write_bytes(
                _encode(np.zeros((9, 9, 3), np.uint8), "PNG")
            ),
            "one size",
        ),
    ],
    ids=[
        "missing split",
        "classes differ",
        "empty class",
        "unreadable",
        "mixed sizes",
    ],
)
def test_bad_folders_name_the_problem(tmp_path, make, message):
  root = tmp_path / "data"
  root.mkdir()
  _write_folder(root)
  make(root)
  with pytest.raises((ValueError, FileNotFoundError), match=message) as e:
    image_folder.read_splits(str(root))
  assert "\n" not in str(e.value)


def test_missing_directory_and_bad_zip(tmp_path):
  with pytest.raises(FileNotFoundError, match="directory not found: .*nowhere"):
    image_folder.read_splits(str(tmp_path / "nowhere"))
  (tmp_path / "train.zip").write_bytes(b"garbage")
  with pytest.raises(ValueError, match="train.zip: not a readable zip"):
    image_folder.read_splits(str(tmp_path))


def test_named_dataset_checks_its_classes(tmp_path):
  _write_folder(tmp_path)
  with pytest.raises(ValueError, match="expects the class folders"):
    cifar10_jpeg.load(data_dir=str(tmp_path))


def test_pipeline_error_is_one_line(tmp_path, capsys):
  from simsoft import config as config_lib, errors, train

  c = config_lib.base_config()
  c.dataset.name = "cifar10_jpeg"
  c.dataset.data_dir = str(tmp_path / "absent")
  with pytest.raises(errors.MissingInputError, match="absent") as e:
    train.load_dataset(c)
  assert "\n" not in str(e.value)


# ---- pair-flip label noise (the positive control's data) ----


def test_flip_labels_rate_and_seed():
  labels = np.repeat(np.arange(3, dtype=np.int32), 20000)
  noisy = label_noise.flip_labels(labels, [(0, 2)], 0.55, seed=3)
  assert np.all(noisy[labels != 0] == labels[labels != 0])
  share = np.mean(noisy[labels == 0] == 2)
  assert abs(share - 0.55) < 0.01
  assert set(np.unique(noisy[labels == 0])) == {0, 2}
  np.testing.assert_array_equal(
      noisy, label_noise.flip_labels(labels, [(0, 2)], 0.55, seed=3)
  )
  assert not np.array_equal(
      noisy, label_noise.flip_labels(labels, [(0, 2)], 0.55, seed=4)
  )


def test_label_noise_touches_train_and_validation_only(tmp_path):
  _write_folder(tmp_path, per_class=(40, 40, 40), test_per_class=10)
  clean = data_lib.get_dataset("image_folder", data_dir=str(tmp_path))
  noisy = data_lib.get_dataset(
      "image_folder",
      data_dir=str(tmp_path),
      label_flips=("ant->cow",),
      label_noise_rate=1.0,
  )
  for split in ("train", "validation"):
    expect = clean.split(split).labels.copy()
    expect[expect == 0] = 2
    np.testing.assert_array_equal(noisy.split(split).labels, expect)
    np.testing.assert_array_equal(
        noisy.split(split).images, clean.split(split).images
    )
  np.testing.assert_array_equal(
      noisy.split("test").labels, clean.split("test").labels
  )


@pytest.mark.parametrize(
    "flips, message",
    [
        (("ant>cow",), "not 'SOURCE->TARGET'"),
        (("ant->pig",), "'pig'"),
        (("ant->ant",), "to itself"),
        (("ant->cow", "ant->bee"), "flipped twice"),
    ],
)
def test_bad_flips_are_config_errors(flips, message):
  with pytest.raises(ConfigError, match=message):
    label_noise.parse_flips(flips, CLASSES)


# ---- the real CIFAR-10 (JPEG q75 copy), where ../shared holds it ----

REAL = cifar10_jpeg.default_dir()


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(REAL, "test.zip")),
    reason=f"CIFAR-10 JPEG copy not at {REAL}",
)
def test_real_cifar10_jpeg_copy():
  """The test split of the shared copy: 10,000 32x32 RGB images, 1,000 a class."""
  folder = image_folder._Folder(REAL, "test")
  assert folder.classes == list(data_lib.tfds_sources.CIFAR10_CLASS_NAMES)
  split = image_folder._cached(folder, use_cache=False)
  assert split.images.shape == (10000, 32, 32, 3)
  np.testing.assert_array_equal(np.bincount(split.labels), [1000] * 10)
  # Spot check: one file decoded by Pillow directly is the same image.
  cls, name = folder.files[1234]
  with zipfile.ZipFile(os.path.join(REAL, "test.zip")) as z:
    direct = np.asarray(Image.open(io.BytesIO(z.read(name))).convert("RGB"))
  np.testing.assert_array_equal(split.images[1234], direct)
  assert split.labels[1234] == folder.classes.index(cls)
