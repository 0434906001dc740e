"""Datasets read through TensorFlow Datasets (local or gs:// data_dir).

TensorFlow is imported here lazily, on the first TFDS load, so the other
sources work on machines without it; before any TF op it is told to see no
GPU, so it never takes accelerator memory from JAX.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import logging

import numpy as np

from simsoft.data.dataset import ArraySplit, Dataset, build_dataset
from simsoft.data.digits import CLASS_NAMES as DIGIT_CLASS_NAMES
from simsoft.data import fashion_mnist_local

CIFAR10_CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR100_CLASS_NAMES = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)
CIFAR100_COARSE_CLASS_NAMES = (
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
)

# The 15 corruptions of the CIFAR-10-C benchmark (Hendrycks & Dietterich
# 2019), by their TFDS names ('frosted_glass_blur' is glass blur, 'elastic'
# elastic transform).
CIFAR10_C_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "frosted_glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic",
    "pixelate",
    "jpeg_compression",
)
# The 4 held-out extras that TFDS also ships; accepted by load_cifar10_corrupted.
CIFAR10_C_EXTRA_CORRUPTIONS = (
    "gaussian_blur",
    "saturate",
    "spatter",
    "speckle_noise",
)
CIFAR10_C_SEVERITIES = (1, 2, 3, 4, 5)

_CHUNK = 8192


@dataclasses.dataclass(frozen=True)
class _Source:
  class_names: tuple[str, ...]
  augmentation: str
  coarse_class_names: tuple[str, ...] | None = None
  class_groups: tuple[int, ...] | None = (
      None  # without per-example coarse labels
  )
  group_names: tuple[str, ...] | None = None


SOURCES = {
    "mnist": _Source(DIGIT_CLASS_NAMES, "none"),
    "fashion_mnist": _Source(
        fashion_mnist_local.CLASS_NAMES,
        "none",
        class_groups=fashion_mnist_local.CLASS_GROUPS,
        group_names=fashion_mnist_local.GROUP_NAMES,
    ),
    "cifar10": _Source(CIFAR10_CLASS_NAMES, "crop_flip"),
    "cifar100": _Source(
        CIFAR100_CLASS_NAMES, "crop_flip", CIFAR100_COARSE_CLASS_NAMES
    ),
    "svhn_cropped": _Source(DIGIT_CLASS_NAMES, "crop_flip"),
}


@functools.cache
def _tfds():
  """tensorflow_datasets, with TensorFlow kept off every GPU."""
  import tensorflow as tf

  try:
    tf.config.set_visible_devices([], "GPU")
  except (
      RuntimeError
  ) as e:  # TF initialized its devices before simsoft.data did
    logging.warning("could not hide GPUs from TensorFlow: %s", e)
  import tensorflow_datasets as tfds

  return tfds


# SIMSOFT_TFDS_DOWNLOAD=0: read prepared data only, never download or build it
# (pod workers: one `launch/tpu_pod.sh prepare` builds it, every worker reads).
DOWNLOAD_ENV = "SIMSOFT_TFDS_DOWNLOAD"


def downloads_allowed() -> bool:
  return os.environ.get(DOWNLOAD_ENV, "1").strip().lower() not in (
      "0",
      "false",
      "no",
  )


def _read(
    name: str, split: str, data_dir: str | None, keys: tuple[str, ...]
) -> tuple[dict[str, np.ndarray], object]:
  """Every example of TFDS `name`/`split` as numpy arrays, in file order."""
  tfds = _tfds()
  download = downloads_allowed()
  if not download and not tfds.builder(name, data_dir=data_dir).is_prepared():
    raise FileNotFoundError(
        f"TFDS {name!r} is not prepared in data_dir={data_dir!r} and {DOWNLOAD_ENV}=0 "
        f"forbids downloading it; build it once first: `tfds build {name} "
        f"--data_dir={data_dir}` (launch/tpu_pod.sh prepare does this on one worker)"
    )
  ds, info = tfds.load(
      name,
      split=split,
      data_dir=data_dir,
      shuffle_files=False,
      with_info=True,
      download=download,
  )
  ds = ds.map(lambda ex: {k: ex[k] for k in keys})
  chunks = list(tfds.as_numpy(ds.batch(_CHUNK)))
  if not chunks:
    raise ValueError(
        f"TFDS {name!r} split {split!r} in data_dir={data_dir!r} is empty"
    )
  return {k: np.concatenate([c[k] for c in chunks]) for k in keys}, info


def _check_classes(name: str, info, key: str, names: tuple[str, ...]) -> None:
  found = info.features[key].num_classes
  if found != len(names):
    raise ValueError(
        f"TFDS {name!r} feature {key!r} has {found} classes; expected {len(names)}"
    )


def _split(arrays: dict[str, np.ndarray]) -> ArraySplit:
  return ArraySplit(
      arrays["image"].astype(np.uint8, copy=False),
      arrays["label"].astype(np.int32),
  )


def load(
    name: str,
    *,
    data_dir: str | None = None,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
) -> Dataset:
  """TFDS dataset `name` (a key of SOURCES), images uint8 [N, H, W, C].

  'train' and 'validation' come from the TFDS 'train' split, 'test' is the
  TFDS 'test' split. For cifar100 the training label is the fine label and
  'coarse_label' is kept in Dataset.coarse_labels.
  """
  source = SOURCES[name]
  keys = ("image", "label") + (
      ("coarse_label",) if source.coarse_class_names else ()
  )
  train, info = _read(name, "train", data_dir, keys)
  test, _ = _read(name, "test", data_dir, keys)
  _check_classes(name, info, "label", source.class_names)
  coarse = {}
  if source.coarse_class_names:
    _check_classes(name, info, "coarse_label", source.coarse_class_names)
    coarse = dict(
        train_coarse=train["coarse_label"].astype(np.int32),
        test_coarse=test["coarse_label"].astype(np.int32),
        coarse_class_names=source.coarse_class_names,
    )
  return build_dataset(
      name=name,
      class_names=source.class_names,
      train=_split(train),
      test=_split(test),
      augmentation=source.augmentation,
      validation_fraction=validation_fraction,
      split_seed=split_seed,
      class_groups=source.class_groups,
      group_names=source.group_names,
      **coarse,
  )


def load_cifar10_corrupted(
    corruption: str, severity: int, *, data_dir: str | None = None
) -> ArraySplit:
  """CIFAR-10-C test images for one corruption and severity (evaluation only).

  Reads TFDS 'cifar10_corrupted/{corruption}_{severity}', split 'test':
  uint8 [10000, 32, 32, 3] with the CIFAR-10 test labels. `corruption` is
  one of CIFAR10_C_CORRUPTIONS or CIFAR10_C_EXTRA_CORRUPTIONS, severity 1..5.
  """
  known = CIFAR10_C_CORRUPTIONS + CIFAR10_C_EXTRA_CORRUPTIONS
  if corruption not in known:
    raise ValueError(
        f"unknown CIFAR-10-C corruption {corruption!r}; known: {list(known)}"
    )
  if (
      isinstance(severity, bool)
      or not isinstance(severity, (int, np.integer))
      or severity not in CIFAR10_C_SEVERITIES
  ):
    raise ValueError(f"severity must be an int in 1..5, got {severity!r}")
  arrays, _ = _read(
      f"cifar10_corrupted/{corruption}_{int(severity)}",
      "test",
      data_dir,
      ("image", "label"),
  )
  return _split(arrays)
