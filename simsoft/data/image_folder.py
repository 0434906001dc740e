"""Image folders: one class folder per class, per split, as a directory or a zip.

    DATA_DIR/train/<class>/*.jpg|png     or  DATA_DIR/train.zip  (train/<class>/... or <class>/...)
    DATA_DIR/test/<class>/*.jpg|png      or  DATA_DIR/test.zip

Class names are the folder names, sorted (label = index in that order), and
must be the same in every split; the examples of a split come in one fixed
pseudo-random order (so any prefix mixes the classes). Every image is
decoded once with Pillow to uint8 [H, W, 3] (or [H, W, 1] when every image
of the folder is greyscale); all must share one size. The decoded arrays are cached as .npy files (no
pickle) under `cache_dir()`, keyed by the source files' names, sizes and
modification times, so a second load costs a memory copy, not a decode.
'validation' is carved from 'train' (stratified, seeded) by `build_dataset`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Sequence

import numpy as np

from simsoft.data.dataset import ArraySplit, Dataset, build_dataset

SPLIT_SOURCES = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
CACHE_ENV = "SIMSOFT_CACHE_DIR"
CACHE_VERSION = 1
# Each split is served in one fixed pseudo-random order, not class by class,
# so that "the first N test images" (an evaluator's `examples`) mix the classes.
ORDER_SEED = 0


def cache_dir() -> str:
  """$SIMSOFT_CACHE_DIR, else $XDG_CACHE_HOME/simsoft, else ~/.cache/simsoft."""
  if os.environ.get(CACHE_ENV):
    return os.environ[CACHE_ENV]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
      os.path.expanduser("~"), ".cache"
  )
  return os.path.join(base, "simsoft")


class _Folder:
  """The image files of one split: (class, member name) pairs and a reader."""

  def __init__(self, data_dir: str, split: str):
    directory = os.path.join(data_dir, split)
    archive = directory + ".zip"
    self.split = split
    if os.path.isdir(directory):
      self.path, self._zip = directory, None
      self.classes = sorted(
          c
          for c in os.listdir(directory)
          if os.path.isdir(os.path.join(directory, c))
      )
      self.files = sorted(
          (c, os.path.join(c, f))
          for c in self.classes
          for f in os.listdir(os.path.join(directory, c))
          if f.lower().endswith(IMAGE_SUFFIXES)
      )
    elif os.path.isfile(archive):
      self.path = archive
      try:
        self._zip = zipfile.ZipFile(archive)
      except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{archive}: not a readable zip file ({e})") from None
      self.files, self.classes = _zip_members(self._zip, split)
    else:
      raise FileNotFoundError(
          f"image folder split {split!r} not found: neither {directory}/ nor "
          f"{archive} exists"
      )

  def fingerprint(self) -> str:
    """What the cache key needs: the member names and the source's size and mtime."""
    h = hashlib.sha256()
    if self._zip is None:
      for _, name in self.files:
        st = os.stat(os.path.join(self.path, name))
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
      st = os.stat(self.path)
      h.update(f"{self.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
      for _, name in self.files:
        h.update(name.encode() + b"\n")
    return h.hexdigest()

  def read(self, name: str) -> bytes:
    if self._zip is None:
      with open(os.path.join(self.path, name), "rb") as f:
        return f.read()
    return self._zip.read(name)

  def where(self, name: str) -> str:
    return os.path.join(self.path, name)


def _zip_members(
    archive: zipfile.ZipFile, split: str
) -> tuple[list[tuple[str, str]], list[str]]:
  """(class, member) pairs of a zip laid out as split/<class>/f or <class>/f."""
  files, classes = [], set()
  for name in archive.namelist():
    parts = [p for p in name.split("/") if p]
    if parts and parts[0] == split:
      parts = parts[1:]
    if not parts:
      continue
    if name.endswith("/"):
      if len(parts) == 1:
        classes.add(parts[0])
      continue
    if len(parts) == 2 and parts[1].lower().endswith(IMAGE_SUFFIXES):
      classes.add(parts[0])
      files.append((parts[0], name))
  return sorted(files), sorted(classes)


def _decode(folder: _Folder) -> tuple[np.ndarray, np.ndarray]:
  """Every image of `folder` as uint8 [N, H, W, 3 or 1] and labels int32 [N]."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  index = {c: i for i, c in enumerate(folder.classes)}
  images, grey, shape = [], True, None
  for cls, name in folder.files:
    try:
      with Image.open(io.BytesIO(folder.read(name))) as im:
        im.load()
        grey = grey and im.mode in ("L", "1", "I;16")
        array = np.asarray(im.convert("RGB"), np.uint8)
    except Exception as e:  # pylint: disable=broad-except  # Pillow raises many kinds
      raise ValueError(
          f"{folder.where(name)}: unreadable image ({type(e).__name__}: {e})"
      ) from None
    if shape is None:
      shape, first = array.shape, name
    elif array.shape != shape:
      raise ValueError(
          f"{folder.where(name)} is {array.shape[1]}x{array.shape[0]} but "
          f"{folder.where(first)} is {shape[1]}x{shape[0]}: every image of an "
          "image folder must have one size (resize them first)"
      )
    images.append(array)
  out = np.stack(images)
  if grey:
    out = np.ascontiguousarray(out[..., :1])
  labels = np.array([index[c] for c, _ in folder.files], np.int32)
  return out, labels


def _save_atomic(path: str, array: np.ndarray) -> None:
  directory = os.path.dirname(path)
  fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp.npy")
  try:
    with os.fdopen(fd, "wb") as f:
      np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _cached(folder: _Folder, use_cache: bool) -> ArraySplit:
  """The decoded split, from the cache when the source is unchanged."""
  key = hashlib.sha256(
      f"v{CACHE_VERSION}\0{os.path.abspath(folder.path)}\0{folder.fingerprint()}".encode()
  ).hexdigest()[:24]
  where = os.path.join(cache_dir(), "image_folder", key)
  paths = {k: os.path.join(where, f"{k}.npy") for k in ("images", "labels")}
  if use_cache and all(os.path.isfile(p) for p in paths.values()):
    try:
      return ArraySplit(
          np.load(paths["images"], allow_pickle=False),
          np.load(paths["labels"], allow_pickle=False),
      )
    except (OSError, ValueError, TypeError):
      pass  # a damaged cache entry is decoded again and rewritten
  images, labels = _decode(folder)
  if use_cache:
    try:
      os.makedirs(where, exist_ok=True)
      for k, v in (("labels", labels), ("images", images)):
        _save_atomic(paths[k], v)
      with open(os.path.join(where, "source.json"), "w") as f:
        json.dump({"source": os.path.abspath(folder.path)}, f)
    except OSError:
      pass  # an unwritable cache only costs the next load a decode
  return ArraySplit(images, labels)


def _check_classes(folders: Sequence[_Folder]) -> list[str]:
  train, *others = folders
  if not train.classes:
    raise ValueError(f"{train.path}: no class folders")
  for other in others:
    if other.classes != train.classes:
      only_train = sorted(set(train.classes) - set(other.classes))
      only_other = sorted(set(other.classes) - set(train.classes))
      raise ValueError(
          f"the classes of {train.path} and {other.path} differ: only in "
          f"{train.split}: {only_train}, only in {other.split}: {only_other}"
      )
  for folder in folders:
    present = {c for c, _ in folder.files}
    empty = [c for c in folder.classes if c not in present]
    if empty:
      raise ValueError(
          f"{folder.path}: class folder(s) {empty} hold no image "
          f"({', '.join(IMAGE_SUFFIXES)})"
      )
  return train.classes


def read_splits(
    data_dir: str, *, use_cache: bool = True
) -> tuple[tuple[str, ...], dict[str, ArraySplit]]:
  """(class names, {'train': ArraySplit, 'test': ArraySplit}) of an image folder.

  Each split's examples come in the order of a permutation drawn from
  np.random.default_rng(ORDER_SEED) over the files sorted by (class, name).
  """
  if not data_dir:
    raise FileNotFoundError(
        "an image folder needs config.dataset.data_dir (a directory holding "
        "train/ and test/ class folders or train.zip and test.zip)"
    )
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"image folder directory not found: {data_dir}")
  folders = [_Folder(data_dir, split) for split in SPLIT_SOURCES]
  classes = _check_classes(folders)
  splits = {}
  for folder in folders:
    split = _cached(folder, use_cache)
    splits[folder.split] = split.take(
        np.random.default_rng(ORDER_SEED).permutation(len(split))
    )
  return tuple(classes), splits


def load(
    *,
    data_dir: str | None = None,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    name: str = "image_folder",
    augmentation: str = "crop_flip",
    expected_classes: tuple[str, ...] | None = None,
    class_groups: tuple[int, ...] | None = None,
    group_names: tuple[str, ...] | None = None,
) -> Dataset:
  """An image folder as a Dataset: uint8 images, 'validation' carved from 'train'.

  Args:
    data_dir: the directory holding train/ and test/ (or train.zip, test.zip).
    validation_fraction, split_seed: the stratified hold-out (build_dataset).
    name: the Dataset's name.
    augmentation: 'crop_flip' (natural images) or 'none'.
    expected_classes: when given, the folder names must be exactly these (a
      named dataset such as 'cifar10_jpeg'); labels follow the sorted names.
    class_groups, group_names: each class's super-class, for super-class
      accuracy and mistake severity (in the sorted class order).
  """
  classes, splits = read_splits(data_dir or "")
  if expected_classes is not None and classes != tuple(
      sorted(expected_classes)
  ):
    raise ValueError(
        f"{data_dir}: dataset {name!r} expects the class folders "
        f"{sorted(expected_classes)}, found {list(classes)}"
    )
  return build_dataset(
      name=name,
      class_names=classes,
      train=splits["train"],
      test=splits["test"],
      augmentation=augmentation,
      validation_fraction=validation_fraction,
      split_seed=split_seed,
      class_groups=class_groups,
      group_names=group_names,
  )
