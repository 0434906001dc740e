"""Prepared ArrayRecord copies of a dataset: the record format and the directory layout.

A prepared directory (written by `python -m simsoft.data.prepare`) holds

    meta.json                          what the splits are (below)
    <split>-<i>-of-<k>.array_record     the records of each split, k shards
    <split>_labels.npy                  int32 [N]: every record's label, in order

for the splits 'train', 'validation' and 'test'. A record is one example:
b'SIM1' + int32 little-endian label + the image file's bytes as they were
(JPEG, PNG, ...; not decoded, not re-encoded), so preparing costs no
decode beyond the channel statistics. meta.json holds the dataset's name,
class names (label = index), channel count, image shape (None when the
images differ in size), per-channel mean and std of the train split in
[0, 1] units, the hold-out that made 'validation' (validation_fraction,
split_seed), the super-class groups, and per split its files and example
count. No pickle anywhere.

Reading needs `array_record` (the `streaming` extra: grain, array_record);
writing and this module's other functions need numpy only.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

MAGIC = b"SIM1"
META = "meta.json"
FORMAT = "simsoft-records"
VERSION = 1
_HEADER = struct.Struct("<4si")


def encode(label: int, image_bytes: bytes) -> bytes:
  """One record: MAGIC, int32 little-endian label, the encoded image."""
  return _HEADER.pack(MAGIC, int(label)) + image_bytes


def decode(record: bytes) -> tuple[int, bytes]:
  """(label, encoded image bytes) of a record written by `encode`."""
  magic, label = _HEADER.unpack_from(record)
  if magic != MAGIC:
    raise ValueError(
        f"not a simsoft record (starts with {bytes(record[:4])!r}, not {MAGIC!r})"
    )
  return label, bytes(record[_HEADER.size :])


def shard_names(split: str, num_shards: int) -> list[str]:
  return [
      f"{split}-{i:05d}-of-{num_shards:05d}.array_record"
      for i in range(num_shards)
  ]


def write_split(
    directory: str,
    split: str,
    examples: Iterable[tuple[int, bytes]],
    num_examples: int,
    *,
    shard_size: int = 10_000,
) -> dict[str, Any]:
  """Writes `examples` ((label, image bytes), in order) as ArrayRecord shards.

  Returns the split's meta.json entry {'files', 'num_examples'}. Records are
  written with group_size 1, so each one is read on its own (random access).
  """
  from array_record.python.array_record_module import (  # pylint: disable=g-import-not-at-top
      ArrayRecordWriter,
  )

  num_shards = max(1, -(-num_examples // shard_size))
  names = shard_names(split, num_shards)
  labels = np.zeros(num_examples, np.int32)
  examples = iter(examples)
  count = 0
  for i, name in enumerate(names):
    writer = ArrayRecordWriter(os.path.join(directory, name), "group_size:1")
    try:
      for _ in range(min(shard_size, num_examples - i * shard_size)):
        label, data = next(examples)
        writer.write(encode(label, data))
        labels[count] = label
        count += 1
    finally:
      writer.close()
  np.save(
      os.path.join(directory, f"{split}_labels.npy"), labels, allow_pickle=False
  )
  return {"files": names, "num_examples": num_examples}


def write_meta(directory: str, meta: dict[str, Any]) -> None:
  """meta.json, written last (atomically): a directory without it is incomplete."""
  tmp = os.path.join(directory, META + ".tmp")
  with open(tmp, "w") as f:
    json.dump({"format": FORMAT, "version": VERSION, **meta}, f, indent=2)
  os.replace(tmp, os.path.join(directory, META))


def read_meta(directory: str) -> dict[str, Any]:
  """meta.json of a prepared directory, checked (ValueError / FileNotFoundError naming it)."""
  path = os.path.join(directory, META)
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path} not found: {directory} is not a prepared record directory "
        "(write one with `python -m simsoft.data.prepare`)"
    )
  try:
    with open(path) as f:
      meta = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    raise ValueError(f"{path}: not a {FORMAT} meta.json")
  if meta.get("version") != VERSION:
    raise ValueError(
        f"{path}: format version {meta.get('version')}, this simsoft reads "
        f"{VERSION}; prepare the directory again"
    )
  for split, entry in meta["splits"].items():
    for name in entry["files"]:
      if not os.path.isfile(os.path.join(directory, name)):
        raise FileNotFoundError(
            f"{os.path.join(directory, name)} (split {split!r} of {path}) is missing"
        )
  return meta


def split_paths(directory: str, meta: dict[str, Any], split: str) -> list[str]:
  return [os.path.join(directory, n) for n in meta["splits"][split]["files"]]


def read_labels(directory: str, split: str, num_examples: int) -> np.ndarray:
  path = os.path.join(directory, f"{split}_labels.npy")
  labels = np.load(path, allow_pickle=False)
  if labels.dtype != np.int32 or labels.shape != (num_examples,):
    raise ValueError(
        f"{path}: expected int32 [{num_examples}], got {labels.dtype} {labels.shape}"
    )
  return labels


class RecordStats:
  """Per-channel sums of pixels in [0, 1] units, accumulated image by image.

  Chunks of fixed-size images are summed as simsoft.data.channel_stats sums
  them (float64, chunks of 4096 images), so a prepared copy of a
  fixed-size dataset normalizes exactly as its in-memory form.
  """

  def __init__(self, channels: int = 3):
    self.total = np.zeros(channels)
    self.total_sq = np.zeros(channels)
    self.count = 0

  def add(self, images: Sequence[np.ndarray] | np.ndarray) -> None:
    for image in images if isinstance(images, list) else [images]:
      x = image.astype(np.float64).reshape(-1, image.shape[-1]) * (1.0 / 255.0)
      self.total += x.sum(0)
      self.total_sq += np.square(x).sum(0)
      self.count += x.shape[0]

  def mean_std(self, channels: int) -> tuple[list[float], list[float]]:
    mean = self.total[:channels] / self.count
    std = np.sqrt(
        np.maximum(self.total_sq[:channels] / self.count - np.square(mean), 0)
    )
    std = np.where(std > 0, std, 1.0)
    return (
        [float(np.float32(m)) for m in mean],
        [float(np.float32(s)) for s in std],
    )
