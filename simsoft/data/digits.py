"""sklearn's 8x8 handwritten digits (1,797 real images, shipped in the wheel)."""

from __future__ import annotations

import numpy as np

from simsoft.data import splits as splits_lib
from simsoft.data.dataset import ArraySplit, Dataset, build_dataset

TEST_FRACTION = 0.2
# Fixed, independent of split_seed, so test numbers compare across split seeds.
TEST_SEED = 0
CLASS_NAMES = tuple(str(d) for d in range(10))
# Super-classes for super-class accuracy and the default mistake-severity
# reference (simsoft.evaluation): Ward linkage of the ten class-mean images
# (64 pixels) of the train and validation splits, never the test split or a
# model, cut into four groups (merge heights 1.32 ... 2.15 joined, 2.28 and
# above not). The cut is a choice: the tree's largest gap (2.29 -> 3.21) gives
# only {0, 4, 6} against the rest. tests/test_data.py recomputes it.
GROUP_NAMES = ("0", "1 2 7 8", "3 5 9", "4 6")
CLASS_GROUPS = (0, 1, 1, 2, 3, 2, 3, 1, 1, 2)


def load(
    *,
    data_dir: str | None = None,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
) -> Dataset:
  """Digits as float32 [N, 8, 8, 1] in [0, 1] (source values 0..16, divided by 16).

  The source has no test split: a stratified TEST_FRACTION of it
  (seed TEST_SEED) becomes 'test', then 'validation' is held out of the rest.
  `data_dir` is unused (the data ships with scikit-learn).
  """
  del data_dir
  try:
    from sklearn.datasets import load_digits
  except ImportError as e:
    raise ImportError(
        "dataset 'digits' needs scikit-learn: pip install scikit-learn"
    ) from e
  source = load_digits()
  images = (source.images.astype(np.float32) / np.float32(16.0))[..., None]
  labels = source.target.astype(np.int32)
  everything = ArraySplit(images, labels)
  train_idx, test_idx = splits_lib.stratified_holdout(
      labels, fraction=TEST_FRACTION, seed=TEST_SEED
  )
  return build_dataset(
      name="digits",
      class_names=CLASS_NAMES,
      train=everything.take(train_idx),
      test=everything.take(test_idx),
      augmentation="none",
      validation_fraction=validation_fraction,
      split_seed=split_seed,
      class_groups=CLASS_GROUPS,
      group_names=GROUP_NAMES,
  )
