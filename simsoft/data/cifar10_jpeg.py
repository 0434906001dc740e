"""CIFAR-10 (JPEG q75 copy): the image folder in ../shared/datasets/cifar10-jpeg.

All 60,000 CIFAR-10 images (50,000 train, 10,000 test) as 32x32 JPEG at
quality 75, class folders in train.zip and test.zip. Not the original pixels,
so accuracies are not comparable with published CIFAR-10 figures; comparisons
between losses trained and tested on it are fair. Name it "CIFAR-10 (JPEG q75
copy)" wherever a result uses it.
"""

from __future__ import annotations

import os

from simsoft.data import image_folder
from simsoft.data.dataset import Dataset
from simsoft.data.tfds_sources import CIFAR10_CLASS_NAMES

PATH_ENV = "SIMSOFT_CIFAR10_JPEG"
# vehicles = {airplane, automobile, ship, truck}, animals = the other six
# (the super-classes of super-class accuracy and mistake severity).
GROUP_NAMES = ("vehicles", "animals")
CLASS_GROUPS = (0, 0, 1, 1, 1, 1, 1, 1, 0, 0)


def default_dir() -> str:
  """$SIMSOFT_CIFAR10_JPEG, else shared/datasets/cifar10-jpeg beside the checkout."""
  if os.environ.get(PATH_ENV):
    return os.environ[PATH_ENV]
  checkout = os.path.dirname(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  )
  return os.path.normpath(
      os.path.join(checkout, "..", "shared", "datasets", "cifar10-jpeg")
  )


def load(
    *,
    data_dir: str | None = None,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
) -> Dataset:
  """CIFAR-10 (JPEG q75 copy), uint8 [N, 32, 32, 3]; data_dir defaults to default_dir()."""
  return image_folder.load(
      data_dir=data_dir or default_dir(),
      validation_fraction=validation_fraction,
      split_seed=split_seed,
      name="cifar10_jpeg",
      augmentation="crop_flip",
      expected_classes=CIFAR10_CLASS_NAMES,
      class_groups=CLASS_GROUPS,
      group_names=GROUP_NAMES,
  )
