"""The streaming reader: grain over ArrayRecord, for data that does not fit in memory.

    ds = load(config.dataset)          # a Dataset whose splits are StreamSplits
    it = iter(train_dataset(ds.split('train'), global_batch_size=B, seed=s,
                            num_steps=n, workers=w))
    for batch in eval_batches(ds.split('test'), global_batch_size=B): ...

A StreamSplit reads one example at a time, by index, from prepared
ArrayRecord shards (simsoft.data.records, written by simsoft.data.prepare)
or from a TFDS dataset's `tfds.data_source` (ArrayRecord files prepared by
TFDS); only the labels of prepared shards are held in memory.

Order. The batches are those of the in-memory iterators
(simsoft.data.iterators), defined on indices alone: step s of epoch
e = s // S (S = N // B steps per epoch) reads the examples
perm_e[b B : (b + 1) B], b = s mod S, perm_e = default_rng([seed, e]).permutation(N),
and process p of P (grain.sharding.ShardByJaxProcess) reads only the rows
[p B/P, (p + 1) B/P) of each global batch: its own shard, disjoint from the
other processes', whose union is the global batch. So a prepared copy of a
split trains on exactly the batches its in-memory form does, and the result
depends on (seed, step) only, not on the number of grain workers.

Per-example randomness (the host train transform) draws from
default_rng([seed, 0x5151, s, r]) for global row r of step s, so it too is a
function of (seed, step) and independent of workers and processes.

Work. Reading, JPEG decoding and the transforms of simsoft.data.image_ops
run in `workers` grain processes (mp_prefetch; 0: in this process, with
`threads` reader threads); batches leave as uint8 and are scaled to [0, 1]
on the device (the train step) or just before it (evaluation). The
iterator's state (grain's get_state, small JSON) is saved beside the model
in the same Orbax checkpoint, so a resumed run continues the same stream.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from simsoft import errors
from simsoft.data import image_ops, records
from simsoft.data.dataset import Dataset

# Train transforms: image_ops.TRAIN_TRANSFORMS on the host, or 'device': none
# on the host and the dataset's own augmentation in the train step (fixed-size
# images only; trains exactly as the in-memory path).
TRAIN_TRANSFORMS = ("device",) + image_ops.TRAIN_TRANSFORMS
RECORD_DATASETS = ("image_folder", "cifar10_jpeg")
# TFDS datasets whose labelled held-out split is not called 'test'.
TFDS_TEST_SPLIT = {"imagenet2012": "validation", "imagenette": "validation"}
_AUGMENT_SEED_TAG = 0x5151


# ----------------------------------------------------------------------------
# Readers: index -> (uint8 [h, w, c] image, int label). Picklable (grain
# sends them to its worker processes), each opening its files lazily.
# ----------------------------------------------------------------------------


class RecordReader:
  """Examples of prepared ArrayRecord shards (simsoft.data.records)."""

  def __init__(self, paths: list[str], num_examples: int, channels: int):
    self.paths, self.num_examples, self.channels = paths, num_examples, channels
    self._source = None

  def __getstate__(self):
    return dict(self.__dict__, _source=None)

  def __len__(self) -> int:
    return self.num_examples

  def __call__(self, index: int) -> tuple[np.ndarray, int]:
    if self._source is None:
      import grain  # pylint: disable=g-import-not-at-top

      self._source = grain.sources.ArrayRecordDataSource(self.paths)
    label, data = records.decode(self._source[index])
    return image_ops.decode(data, self.channels), label


class TfdsReader:
  """Examples of a TFDS dataset's `tfds.data_source` (ArrayRecord), at `indices`."""

  def __init__(
      self, name: str, split: str, data_dir: str | None, indices: np.ndarray
  ):
    self.name, self.split, self.data_dir = name, split, data_dir
    self.indices = np.asarray(indices, np.int64)
    self._source = None

  def __getstate__(self):
    return dict(self.__dict__, _source=None)

  def __len__(self) -> int:
    return len(self.indices)

  def __call__(self, index: int) -> tuple[np.ndarray, int]:
    if self._source is None:
      self._source = _tfds_source(self.name, self.split, self.data_dir)
    example = self._source[int(self.indices[index])]
    image = np.asarray(example["image"], np.uint8)
    return image, int(example["label"])


def _tfds_source(name: str, split: str, data_dir: str | None):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  return tfds.data_source(name, split=split, data_dir=data_dir)


@dataclasses.dataclass(frozen=True, eq=False)
class StreamSplit:
  """One split read example by example.

  Attributes:
    reader: index -> (uint8 [h, w, c], label); len(reader) examples.
    image_shape: (H, W, C) of every transformed image.
    train_transform: TRAIN_TRANSFORMS; eval_transform: image_ops.EVAL_TRANSFORMS.
    image_size: the transforms' output size (0: the images' own, fixed, size).
    labels: int32 [N] when known (prepared shards), else None.
    limit: > 0 reads only the first `limit` examples.
    eval_workers: grain worker processes of its evaluation passes.
  """

  reader: Any
  image_shape: tuple[int, int, int]
  train_transform: str
  eval_transform: str
  image_size: int
  labels: np.ndarray | None = None
  limit: int = 0
  eval_workers: int = 0

  def __len__(self) -> int:
    return min(self.limit or len(self.reader), len(self.reader))

  def head(self, n: int) -> "StreamSplit":
    """The first n examples (all when n is 0 or at least len)."""
    return dataclasses.replace(self, limit=n if 0 < n < len(self) else 0)

  def read_train(self, index: int, rng: np.random.Generator) -> np.ndarray:
    image, label = self.reader(index)
    kind = "none" if self.train_transform == "device" else self.train_transform
    return image_ops.train_transform(kind, image, rng, self.image_size), label

  def read_eval(self, index: int) -> tuple[np.ndarray, int]:
    image, label = self.reader(index)
    return (
        image_ops.eval_transform(self.eval_transform, image, self.image_size),
        label,
    )


def is_stream(split: Any) -> bool:
  return isinstance(split, StreamSplit)


# ----------------------------------------------------------------------------
# Batches.
# ----------------------------------------------------------------------------


def _shard(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import grain  # pylint: disable=g-import-not-at-top

    options = grain.sharding.ShardByJaxProcess(drop_remainder=True)
    return options.shard_index, options.shard_count
  return process_index, process_count


class _TrainExample:
  """Element i of process p's stream: row i mod (B/P) of step i // (B/P)."""

  def __init__(self, split, seed, global_batch_size, offset, local):
    self.split, self.seed = split, seed
    self.global_batch_size, self.offset, self.local = (
        global_batch_size,
        offset,
        local,
    )
    self.steps = len(split) // global_batch_size
    self._cache = (
        None  # (epoch, its permutation): one tuple, as reader threads share it
    )

  def __getstate__(self):
    return dict(self.__dict__, _cache=None)

  def __call__(self, i: int, _) -> dict[str, np.ndarray]:
    step, r = divmod(int(i), self.local)
    epoch, b = divmod(step, self.steps)
    cache = self._cache
    if cache is None or cache[0] != epoch:
      perm = np.random.default_rng([self.seed, epoch]).permutation(
          len(self.split)
      )
      cache = self._cache = (epoch, perm)
    row = self.offset + r
    rng = np.random.default_rng([self.seed, _AUGMENT_SEED_TAG, step, row])
    image, label = self.split.read_train(
        int(cache[1][b * self.global_batch_size + row]), rng
    )
    return {"image": image, "label": np.int32(label)}


class _EvalExample:
  """Element i of process p's evaluation stream; rows past the split are masked padding."""

  def __init__(self, split, global_batch_size, offset, local):
    self.split, self.global_batch_size = split, global_batch_size
    self.offset, self.local = offset, local

  def __call__(self, i: int, _) -> dict[str, np.ndarray]:
    batch, r = divmod(int(i), self.local)
    row = batch * self.global_batch_size + self.offset + r
    if row >= len(self.split):
      return {
          "image": np.zeros(self.split.image_shape, np.uint8),
          "label": np.int32(0),
          "mask": np.float32(0.0),
      }
    image, label = self.split.read_eval(row)
    return {"image": image, "label": np.int32(label), "mask": np.float32(1.0)}


def _local(global_batch_size: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(
        f"global_batch_size={global_batch_size} must be a positive multiple "
        f"of the {process_count} processes"
    )
  return global_batch_size // process_count


def _to_iter(ds, workers: int, threads: int, buffer: int):
  import grain  # pylint: disable=g-import-not-at-top

  out = ds.to_iter_dataset(
      grain.ReadOptions(
          num_threads=max(threads, 1),
          prefetch_buffer_size=max(buffer, threads, 1),
      )
  )
  if workers > 0:
    from absl import flags  # pylint: disable=g-import-not-at-top

    if not flags.FLAGS.is_parsed():  # grain's workers read its absl flags
      flags.FLAGS.mark_as_parsed()
    out = out.mp_prefetch(
        grain.MultiprocessingOptions(
            num_workers=workers, per_worker_buffer_size=buffer
        )
    )
  return out


def train_dataset(
    split: StreamSplit,
    *,
    global_batch_size: int,
    seed: int,
    num_steps: int,
    process_index: int | None = None,
    process_count: int | None = None,
    workers: int = 0,
    threads: int = 2,
    buffer: int = 2,
):
  """A grain IterDataset of this process's rows of the first `num_steps` train batches.

  Yields {'image': uint8 [B/P, H, W, C], 'label': int32 [B/P]}; see the module
  docstring for the order. The process defaults to ShardByJaxProcess's.
  """
  import grain  # pylint: disable=g-import-not-at-top

  index, count = _shard(process_index, process_count)
  local = _local(global_batch_size, count)
  if len(split) < global_batch_size:
    raise ValueError(
        f"global_batch_size={global_batch_size} exceeds the split's {len(split)} examples"
    )
  example = _TrainExample(split, seed, global_batch_size, index * local, local)
  ds = (
      grain.MapDataset.range(num_steps * local)
      .map_with_index(example)
      .batch(local, drop_remainder=True)
  )
  return _to_iter(ds, workers, threads, buffer)


def eval_dataset(
    split: StreamSplit,
    *,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
    workers: int = 0,
    threads: int = 2,
    buffer: int = 2,
):
  """A grain IterDataset of every example once, in ceil(N / B) padded global batches.

  Yields this process's rows {'image': uint8 [B/P, H, W, C], 'label': int32,
  'mask': float32 (0 for padding)}, as simsoft.data.eval_batches does.
  """
  import grain  # pylint: disable=g-import-not-at-top

  index, count = _shard(process_index, process_count)
  local = _local(global_batch_size, count)
  num_batches = -(-len(split) // global_batch_size)
  example = _EvalExample(split, global_batch_size, index * local, local)
  ds = (
      grain.MapDataset.range(num_batches * local)
      .map_with_index(example)
      .batch(local, drop_remainder=True)
  )
  return _to_iter(ds, workers, threads, buffer)


def as_float(images: np.ndarray) -> np.ndarray:
  """uint8 -> float32 in [0, 1], as the in-memory iterators scale (x * float32(1/255))."""
  return images.astype(np.float32) * np.float32(1.0 / 255.0)


def eval_batches(
    split: StreamSplit,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    workers: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """simsoft.data.eval_batches for a StreamSplit: float32 images in [0, 1].

  `workers` defaults to the split's eval_workers.
  """
  workers = split.eval_workers if workers is None else workers
  it = iter(
      eval_dataset(
          split,
          global_batch_size=global_batch_size,
          process_index=process_index,
          process_count=process_count,
          workers=workers,
      )
  )
  try:
    for batch in it:
      yield dict(batch, image=as_float(batch["image"]))
  finally:
    it.close()


# ----------------------------------------------------------------------------
# Loading: config.dataset -> a Dataset of StreamSplits.
# ----------------------------------------------------------------------------


def default_records_dir(name: str, validation_fraction: float, split_seed: int):
  """Where `prepare` puts a named dataset's copy by default: under the image-folder cache."""
  from simsoft.data.image_folder import (  # pylint: disable=g-import-not-at-top
      cache_dir,
  )

  return os.path.join(
      cache_dir(), "records", f"{name}-v{validation_fraction:g}-s{split_seed}"
  )


def _check_options(name: str, options) -> None:
  if options.train_transform not in TRAIN_TRANSFORMS:
    raise ValueError(
        f"unknown dataset.grain.train_transform {options.train_transform!r}; "
        f"known: {list(TRAIN_TRANSFORMS)}"
    )
  if options.eval_transform not in image_ops.EVAL_TRANSFORMS:
    raise ValueError(
        f"unknown dataset.grain.eval_transform {options.eval_transform!r}; "
        f"known: {list(image_ops.EVAL_TRANSFORMS)}"
    )
  if options.image_size < 0:
    raise ValueError(
        f"dataset.grain.image_size must be >= 0, got {options.image_size}"
    )
  if options.train_transform == "device" and options.image_size:
    raise ValueError(
        "dataset.grain.train_transform='device' keeps the images' own size; "
        f"set dataset.grain.image_size=0 (got {options.image_size}) or a host transform"
    )
  del name


def with_eval_workers(ds: Dataset, workers: int) -> Dataset:
  """`ds` whose streamed splits run their evaluation passes in `workers` processes."""
  return dataclasses.replace(
      ds,
      splits={
          k: dataclasses.replace(v, eval_workers=workers)
          for k, v in ds.splits.items()
      },
  )


def load(dataset_config) -> Dataset:
  """config.dataset (reader 'grain') as a Dataset of StreamSplits.

  image_folder / cifar10_jpeg read the prepared copy in
  dataset.grain.records_dir (default `default_records_dir`); any other name
  is a TFDS dataset read through tfds.data_source from dataset.data_dir.
  """
  options = dataset_config.grain
  _check_options(dataset_config.name, options)
  if dataset_config.train_examples or dataset_config.label_noise.rate:
    raise ValueError(
        "dataset.train_examples and dataset.label_noise need the in-memory "
        "reader (dataset.reader='memory')"
    )
  if dataset_config.name in RECORD_DATASETS:
    return _load_records(dataset_config, options)
  return _load_tfds(dataset_config, options)


def _image_shape(fixed, channels: int, size: int) -> tuple[int, int, int]:
  if size:
    return (size, size, channels)
  if fixed is None:
    raise ValueError(
        "the images differ in size: set dataset.grain.image_size (> 0) and a "
        "cropping transform (train: random_resized_crop, eval: resize_center_crop)"
    )
  return (int(fixed[0]), int(fixed[1]), channels)


def _splits(readers, labels, image_shape, options):
  return {
      split: StreamSplit(
          reader=reader,
          image_shape=image_shape,
          train_transform=options.train_transform,
          eval_transform=options.eval_transform,
          image_size=options.image_size,
          labels=labels.get(split),
      )
      for split, reader in readers.items()
  }


def _load_records(dataset_config, options) -> Dataset:
  directory = options.records_dir or default_records_dir(
      dataset_config.name,
      dataset_config.validation_fraction,
      dataset_config.split_seed,
  )
  try:
    meta = records.read_meta(directory)
  except FileNotFoundError:
    source = dataset_config.data_dir or (
        "<the image folder>"
        if dataset_config.name == "image_folder"
        else "../shared/datasets/cifar10-jpeg"
    )
    raise errors.MissingInputError(
        f"no prepared records in {directory} (dataset.grain.records_dir): write them with "
        f"python -m simsoft.data.prepare --name {dataset_config.name} --data_dir {source} "
        f"--out {directory} --validation_fraction {dataset_config.validation_fraction} "
        f"--split_seed {dataset_config.split_seed}"
    ) from None
  for field in ("validation_fraction", "split_seed"):
    if meta[field] != dataset_config[field]:
      raise errors.ConfigError(
          f"{directory} was prepared with {field}={meta[field]}, the config has "
          f"dataset.{field}={dataset_config[field]}: prepare it again with "
          "that value, or set the field to match"
      )
  if meta["name"] != dataset_config.name:
    raise ValueError(
        f"{directory} holds dataset {meta['name']!r}, not {dataset_config.name!r}"
    )
  channels = meta["channels"]
  readers, labels = {}, {}
  for split, entry in meta["splits"].items():
    n = entry["num_examples"]
    readers[split] = RecordReader(
        records.split_paths(directory, meta, split), n, channels
    )
    labels[split] = records.read_labels(directory, split, n)
  shape = _image_shape(meta["image_shape"], channels, options.image_size)
  return _dataset(
      dataset_config.name,
      meta["class_names"],
      shape,
      meta["mean"],
      meta["std"],
      _splits(readers, labels, shape, options),
      options,
      class_groups=meta.get("class_groups"),
      group_names=meta.get("group_names"),
  )


def _dataset(
    name, class_names, shape, mean, std, splits, options, **groups
) -> Dataset:
  return Dataset(
      name=name,
      num_classes=len(class_names),
      class_names=tuple(class_names),
      image_shape=shape,
      mean=tuple(mean),
      std=tuple(std),
      # The step's own augmentation only where no host transform runs.
      augmentation="crop_flip"
      if options.train_transform == "device"
      else "none",
      splits=splits,
      class_groups=None
      if groups.get("class_groups") is None
      else tuple(groups["class_groups"]),
      group_names=None
      if groups.get("group_names") is None
      else tuple(groups["group_names"]),
  )


def _load_tfds(dataset_config, options) -> Dataset:
  """A TFDS dataset: 'validation' a seeded random hold-out of 'train' (no labels read)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  name, data_dir = dataset_config.name, dataset_config.data_dir or None
  info = tfds.builder(name, data_dir=data_dir).info
  label = info.features["label"]
  image = info.features["image"]
  channels = int(image.shape[-1] or 3)
  test_split = TFDS_TEST_SPLIT.get(name, "test")
  n_train = len(_tfds_source(name, "train", data_dir))
  n_test = len(_tfds_source(name, test_split, data_dir))
  order = np.random.default_rng(dataset_config.split_seed).permutation(n_train)
  held = int(np.floor(dataset_config.validation_fraction * n_train + 0.5))
  readers = {
      "train": TfdsReader(name, "train", data_dir, np.sort(order[held:])),
      "validation": TfdsReader(name, "train", data_dir, np.sort(order[:held])),
      "test": TfdsReader(
          name,
          test_split,
          data_dir,
          np.arange(n_test),
      ),
  }
  fixed = image.shape[:2] if None not in image.shape[:2] else None
  shape = _image_shape(fixed, channels, options.image_size)
  mean, std = _sample_stats(readers["train"], options.stats_examples, channels)
  return _dataset(
      name,
      label.names,
      shape,
      mean,
      std,
      _splits(readers, {}, shape, options),
      options,
  )


def _sample_stats(reader, count: int, channels: int):
  """Channel mean and std of the first `count` train examples (a random sample)."""
  stats = records.RecordStats(channels)
  for i in range(min(count, len(reader)) or len(reader)):
    stats.add(reader(i)[0])
  return stats.mean_std(channels)
