"""Fashion-MNIST from the four IDX .gz files on local disk (no TensorFlow)."""

from __future__ import annotations

import os

import numpy as np

from simsoft.data.dataset import ArraySplit, Dataset, build_dataset
from simsoft.data.idx import read_idx

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Super-classes (the mistake-severity and super-class accuracy reference):
# tops = {T-shirt/top, Pullover, Coat, Shirt}, trousers = {Trouser},
# dresses = {Dress}, footwear = {Sandal, Sneaker, Ankle boot}, bags = {Bag}.
GROUP_NAMES = ("tops", "trousers", "dresses", "footwear", "bags")
CLASS_GROUPS = (0, 1, 0, 2, 0, 3, 0, 3, 4, 3)
_HOW_TO_GET = (
    "install them with `apt-get install dataset-fashion-mnist` (into "
    f"{DEFAULT_DIR}), or use dataset 'fashion_mnist' (TFDS) with network access"
)


def _read_split(data_dir: str, prefix: str) -> ArraySplit:
  images_path = os.path.join(data_dir, FILES[f"{prefix}_images"])
  labels_path = os.path.join(data_dir, FILES[f"{prefix}_labels"])
  images = read_idx(images_path, ndim=3)
  labels = read_idx(labels_path, ndim=1)
  if images.shape[1:] != (28, 28):
    raise ValueError(
        f"{images_path}: expected 28x28 images, got {images.shape[1:]}"
    )
  if len(images) != len(labels):
    raise ValueError(
        f"{images_path} holds {len(images)} images but {labels_path} holds "
        f"{len(labels)} labels"
    )
  return ArraySplit(images[..., None], labels.astype(np.int32))


def load(
    *,
    data_dir: str | None = None,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
) -> Dataset:
  """Fashion-MNIST, uint8 [N, 28, 28, 1]: 60,000 train (less validation) + 10,000 test.

  `data_dir` (default DEFAULT_DIR) must hold the four files in FILES.
  """
  data_dir = DEFAULT_DIR if data_dir is None else os.fspath(data_dir)
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(
        f"Fashion-MNIST directory not found: {data_dir}; {_HOW_TO_GET}"
    )
  missing = [
      os.path.join(data_dir, f)
      for f in FILES.values()
      if not os.path.isfile(os.path.join(data_dir, f))
  ]
  if missing:
    raise FileNotFoundError(
        f"Fashion-MNIST file(s) missing: {', '.join(missing)}; {_HOW_TO_GET}"
    )
  return build_dataset(
      name="fashion_mnist_local",
      class_names=CLASS_NAMES,
      train=_read_split(data_dir, "train"),
      test=_read_split(data_dir, "test"),
      augmentation="none",
      validation_fraction=validation_fraction,
      split_seed=split_seed,
      class_groups=CLASS_GROUPS,
      group_names=GROUP_NAMES,
  )
