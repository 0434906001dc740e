"""Where data comes from: in-memory datasets and deterministic batch iterators.

The only simsoft package that touches TensorFlow / TFDS / scikit-learn, and
only lazily, inside the loaders that need them ('digits' needs
scikit-learn, the TFDS datasets TensorFlow; 'fashion_mnist_local' needs
neither).

    ds = get_dataset('digits', validation_fraction=0.1, split_seed=0)
    for batch in train_batches(ds.splits['train'], global_batch_size=128, seed=0):
        ...  # batch['image'] float32 [128, 8, 8, 1] in [0, 1], batch['label'] int32 [128]

Loaders (name -> Dataset) are kept apart from iterators (ArraySplit ->
batches) so a streaming source can be added later beside them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from simsoft.data import (
    cifar10_jpeg,
    digits,
    fashion_mnist_local,
    image_folder,
    label_noise,
    tfds_sources,
)
from simsoft.data.dataset import SPLITS, ArraySplit, Dataset, channel_stats, subset_train
from simsoft.data import iterators
from simsoft.data.iterators import steps_per_epoch, train_batches, train_indices
from simsoft.data.splits import stratified_holdout
from simsoft.data.tfds_sources import (
    CIFAR10_C_CORRUPTIONS,
    CIFAR10_C_EXTRA_CORRUPTIONS,
    CIFAR10_C_SEVERITIES,
    load_cifar10_corrupted,
)

Loader = Callable[..., Dataset]

# name -> loader(*, data_dir, validation_fraction, split_seed) -> Dataset
DATASETS: dict[str, Loader] = {
    "digits": digits.load,
    "fashion_mnist_local": fashion_mnist_local.load,
    "image_folder": image_folder.load,
    "cifar10_jpeg": cifar10_jpeg.load,
    **{
        name: functools.partial(tfds_sources.load, name)
        for name in tfds_sources.SOURCES
    },
}


def get_dataset(
    name: str,
    *,
    data_dir: str | None = None,
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    train_examples: int = 0,
    label_flips: tuple[str, ...] = (),
    label_noise_rate: float = 0.0,
) -> Dataset:
  """Load dataset `name` (a key of DATASETS) into memory.

  Args:
    name: registry name.
    data_dir: where the source lives (TFDS data_dir, local or gs://; the IDX
      directory for 'fashion_mnist_local'); None for each source's default.
    validation_fraction: share of the source's train split held out, per
      class, as 'validation' (0 <= f < 1).
    split_seed: seed of that hold-out.
    train_examples: > 0 keeps a class-stratified subset of that many
      examples of the remaining train split (drawn with split_seed; see
      `subset_train`), for low-data runs and budgets; 0 keeps all.
    label_flips, label_noise_rate: pair-flip noise on 'train' and
      'validation' ('a->b' class names; simsoft.data.label_noise), seeded by
      split_seed; none by default.
  """
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(
        f"validation_fraction must satisfy 0 <= validation_fraction < 1, got "
        f"{validation_fraction}"
    )
  ds = DATASETS[name](
      data_dir=data_dir,
      validation_fraction=validation_fraction,
      split_seed=split_seed,
  )
  ds = (
      subset_train(ds, train_examples, seed=split_seed)
      if train_examples
      else ds
  )
  return label_noise.apply(
      ds, flips=label_flips, rate=label_noise_rate, seed=split_seed
  )


def eval_batches(split, **kwargs):
  """iterators.eval_batches, or streaming.eval_batches for a streamed split (same batches)."""
  if isinstance(split, ArraySplit):
    return iterators.eval_batches(split, **kwargs)
  from simsoft.data import streaming  # pylint: disable=g-import-not-at-top

  return streaming.eval_batches(split, **kwargs)


def from_config(dataset_config: Any) -> Dataset:
  """get_dataset with config.dataset's fields (name, data_dir, validation_fraction,
  split_seed, train_examples, label_noise); an empty data_dir is each source's default.
  With dataset.reader='grain', simsoft.data.streaming.load (splits read on demand).
  """
  if dataset_config.get("reader", "memory") == "grain":
    from simsoft.data import streaming  # pylint: disable=g-import-not-at-top

    return streaming.load(dataset_config)
  if dataset_config.get("reader", "memory") != "memory":
    raise ValueError(
        f"unknown dataset.reader {dataset_config.reader!r}; known: ['memory', 'grain']"
    )
  return get_dataset(
      dataset_config.name,
      data_dir=dataset_config.data_dir or None,
      validation_fraction=dataset_config.validation_fraction,
      split_seed=dataset_config.split_seed,
      train_examples=dataset_config.train_examples,
      label_flips=tuple(dataset_config.label_noise.flips),
      label_noise_rate=dataset_config.label_noise.rate,
  )


__all__ = [
    "ArraySplit",
    "CIFAR10_C_CORRUPTIONS",
    "CIFAR10_C_EXTRA_CORRUPTIONS",
    "CIFAR10_C_SEVERITIES",
    "DATASETS",
    "Dataset",
    "SPLITS",
    "channel_stats",
    "eval_batches",
    "from_config",
    "get_dataset",
    "load_cifar10_corrupted",
    "steps_per_epoch",
    "stratified_holdout",
    "subset_train",
    "train_batches",
    "train_indices",
]
