"""In-memory dataset containers and the one builder every loader ends with.

`ArraySplit` holds one split as arrays; `Dataset` holds the three splits
('train', 'validation', 'test') plus what a model and an evaluator need to know
(classes, image shape, per-channel statistics, augmentation kind).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from simsoft.data import splits as splits_lib

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySplit:
  """One split held in memory.

  Attributes:
    images: [N, H, W, C], either uint8 with values in {0..255} (every
      TFDS / IDX source: pixel = value / 255) or float32 already in [0, 1]
      (sources that are not 8-bit, e.g. sklearn digits). The iterators turn
      both into float32 in [0, 1].
    labels: int32 [N], class indices.
  """

  images: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    images, labels = self.images, self.labels
    if not isinstance(images, np.ndarray) or images.ndim != 4:
      raise ValueError(
          f"images must be a numpy array [N, H, W, C], got "
          f"{type(images).__name__} with shape {getattr(images, 'shape', None)}"
      )
    if images.dtype not in (np.uint8, np.float32):
      raise TypeError(f"images must be uint8 or float32, got {images.dtype}")
    if (
        not isinstance(labels, np.ndarray)
        or labels.dtype != np.int32
        or labels.ndim != 1
    ):
      raise TypeError(
          f"labels must be an int32 numpy array [N], got "
          f"{getattr(labels, 'dtype', type(labels).__name__)} with shape "
          f"{getattr(labels, 'shape', None)}"
      )
    if len(images) != len(labels):
      raise ValueError(
          f"images and labels differ in length: {len(images)} vs {len(labels)}"
      )

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(int(d) for d in self.images.shape[1:])

  def take(self, indices: np.ndarray) -> "ArraySplit":
    """The sub-split at `indices` (int array), in that order."""
    return ArraySplit(self.images[indices], self.labels[indices])


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A classification dataset held in memory.

  Attributes:
    name: registry name.
    num_classes: C.
    class_names: C names, index = label.
    image_shape: (H, W, C).
    mean, std: per-channel float32 statistics of the 'train' split in [0, 1]
      units, for normalizing inside the jitted step: x' = (x - mean) / std.
    augmentation: kind for `simsoft.augment.augment` ('crop_flip' or 'none').
    splits: 'train', 'validation', 'test' -> ArraySplit.
    coarse_labels: split -> int32 [N] coarse labels aligned with `splits`
      (CIFAR-100 superclasses), or None.
    coarse_class_names: names of the coarse classes, or None.
    class_groups: int [C], each class's super-class (from the coarse labels,
      or a documented grouping such as Fashion-MNIST's), or None: what
      superclass accuracy and the default mistake-severity reference use.
    group_names: names of the super-classes, or None.
  """

  name: str
  num_classes: int
  class_names: tuple[str, ...]
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  augmentation: str
  splits: Mapping[str, ArraySplit]
  coarse_labels: Mapping[str, np.ndarray] | None = None
  coarse_class_names: tuple[str, ...] | None = None
  class_groups: tuple[int, ...] | None = None
  group_names: tuple[str, ...] | None = None

  def split(self, split: str) -> ArraySplit:
    if split not in self.splits:
      raise ValueError(f"unknown split {split!r}; known: {sorted(self.splits)}")
    return self.splits[split]

  def num_examples(self, split: str) -> int:
    return len(self.split(split))


def channel_stats(
    images: np.ndarray, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std of images [N, H, W, C] in [0, 1] units.

  uint8 is read as value / 255. Accumulated in float64 over chunks so
  CIFAR-sized arrays need no float copy of the whole split.
  """
  if len(images) == 0:
    raise ValueError("channel_stats needs at least one image")
  scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
  channels = images.shape[-1]
  total = np.zeros(channels)
  total_sq = np.zeros(channels)
  for start in range(0, len(images), chunk):
    x = (
        images[start : start + chunk].astype(np.float64).reshape(-1, channels)
        * scale
    )
    total += x.sum(0)
    total_sq += np.square(x).sum(0)
  count = images.size // channels
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
  std = np.where(std > 0, std, 1.0)  # a constant channel would divide by zero
  return (
      tuple(float(np.float32(m)) for m in mean),
      tuple(float(np.float32(s)) for s in std),
  )


def build_dataset(
    *,
    name: str,
    class_names: tuple[str, ...],
    train: ArraySplit,
    test: ArraySplit,
    augmentation: str,
    validation_fraction: float,
    split_seed: int,
    train_coarse: np.ndarray | None = None,
    test_coarse: np.ndarray | None = None,
    coarse_class_names: tuple[str, ...] | None = None,
    class_groups: tuple[int, ...] | None = None,
    group_names: tuple[str, ...] | None = None,
) -> Dataset:
  """Hold out a stratified validation split from `train` and assemble a Dataset.

  The validation split always comes from the source's train split (even
  where the source ships its own validation split) so every dataset follows
  one rule; see `splits.stratified_holdout`. mean/std come from the
  remaining 'train' split. With coarse labels, `class_groups` is each fine
  class's coarse label and `group_names` the coarse class names.
  """
  num_classes = len(class_names)
  for split_name, split in (("train", train), ("test", test)):
    if len(split) and (
        split.labels.min() < 0 or split.labels.max() >= num_classes
    ):
      raise ValueError(
          f"{name}: {split_name} labels must lie in [0, {num_classes}), got "
          f"[{split.labels.min()}, {split.labels.max()}]"
      )
  if train.image_shape != test.image_shape:
    raise ValueError(
        f"{name}: train and test image shapes differ: {train.image_shape} vs {test.image_shape}"
    )
  train_idx, val_idx = splits_lib.stratified_holdout(
      train.labels, fraction=validation_fraction, seed=split_seed
  )
  splits = {
      "train": train.take(train_idx),
      "validation": train.take(val_idx),
      "test": test,
  }
  coarse = None
  if train_coarse is not None:
    groups = np.zeros(num_classes, np.int64)
    groups[train.labels] = train_coarse
    class_groups = tuple(int(g) for g in groups)
    group_names = coarse_class_names
    coarse = {
        "train": train_coarse[train_idx],
        "validation": train_coarse[val_idx],
        "test": test_coarse,
    }
  mean, std = channel_stats(splits["train"].images)
  return Dataset(
      name=name,
      num_classes=num_classes,
      class_names=tuple(class_names),
      image_shape=train.image_shape,
      mean=mean,
      std=std,
      augmentation=augmentation,
      splits=splits,
      coarse_labels=coarse,
      coarse_class_names=tuple(coarse_class_names)
      if coarse_class_names
      else None,
      class_groups=None if class_groups is None else tuple(class_groups),
      group_names=None if group_names is None else tuple(group_names),
  )


def subset_train(ds: Dataset, train_examples: int, *, seed: int) -> Dataset:
  """`ds` with its 'train' split cut to a class-stratified subset of `train_examples`.

  The subset is the held-out part of `splits.stratified_holdout` at fraction
  train_examples / N (so exactly that many examples, per-class shares as in
  the full split), drawn with `seed`; validation and test are unchanged and
  mean/std are recomputed on the subset.
  """
  train = ds.split("train")
  if not 0 < train_examples <= len(train):
    raise ValueError(
        f"train_examples (config.dataset.train_examples) must lie in "
        f"[1, {len(train)}] (the size of {ds.name}'s train split), "
        f"got {train_examples}"
    )
  if train_examples == len(train):
    return ds
  _, keep = splits_lib.stratified_holdout(
      train.labels, fraction=train_examples / len(train), seed=seed
  )
  splits = dict(ds.splits, train=train.take(keep))
  coarse = (
      None
      if ds.coarse_labels is None
      else dict(ds.coarse_labels, train=ds.coarse_labels["train"][keep])
  )
  mean, std = channel_stats(splits["train"].images)
  return dataclasses.replace(
      ds, splits=splits, coarse_labels=coarse, mean=mean, std=std
  )
