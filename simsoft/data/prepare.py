"""`prepare`: an image folder -> ArrayRecord shards that the streaming reader reads.

    python -m simsoft.data.prepare --data_dir DIR --out OUT [--name cifar10_jpeg]
        [--validation_fraction 0.1] [--split_seed 0] [--shard_size 10000]
        [--stats_examples 0]

DIR is an image folder (simsoft.data.image_folder: train/ and test/ class
folders, or train.zip and test.zip); OUT gets meta.json and the shards of
'train', 'validation' and 'test' (simsoft.data.records). The examples are
those of the in-memory loader, in its order: each split's files sorted by
(class, name) and permuted with image_folder.ORDER_SEED, 'validation' carved
from 'train' by the same stratified hold-out (validation_fraction,
split_seed), so the streaming path reads exactly the examples the in-memory
path holds. The image bytes are copied, not re-encoded; the train split's
images are decoded once for the per-channel statistics (all of them, or the
first --stats_examples of the permuted order).

Bad input: one line `simsoft: error: ...`, exit 2, nothing written (the
shards go to OUT.tmp-<pid> and are renamed to OUT at the end).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from simsoft import errors
from simsoft.data import cifar10_jpeg, image_folder, records
from simsoft.data.splits import stratified_holdout

_STATS_CHUNK = 4096  # as simsoft.data.channel_stats


def _ordered(folder) -> tuple[list[str], np.ndarray]:
  """(member names, int32 labels) of a split in the in-memory loader's order."""
  index = {c: i for i, c in enumerate(folder.classes)}
  names = [name for _, name in folder.files]
  labels = np.array([index[c] for c, _ in folder.files], np.int32)
  order = np.random.default_rng(image_folder.ORDER_SEED).permutation(len(names))
  return [names[i] for i in order], labels[order]


def _decode_rgb(data: bytes, where: str) -> tuple[np.ndarray, bool]:
  from PIL import Image  # pylint: disable=g-import-not-at-top

  try:
    with Image.open(io.BytesIO(data)) as im:
      im.load()
      return np.asarray(im.convert("RGB"), np.uint8), im.mode in (
          "L",
          "1",
          "I;16",
      )
  except Exception as e:  # pylint: disable=broad-except  # Pillow raises many kinds
    raise ValueError(
        f"{where}: unreadable image ({type(e).__name__}: {e})"
    ) from None


def _statistics(
    folder, names: Sequence[str], limit: int
) -> tuple[list[float], list[float], int, list[int] | None]:
  """(mean, std, channels, image shape or None) of the train split's first `limit` images."""
  names = names[: limit or None]
  stats = records.RecordStats()
  grey, shape, fixed = True, None, True
  chunk: list[np.ndarray] = []

  def flush():
    if fixed:
      stats.add(np.stack(chunk))
    else:
      stats.add(chunk)
    chunk.clear()

  for name in names:
    image, is_grey = _decode_rgb(folder.read(name), folder.where(name))
    grey = grey and is_grey
    if shape is None:
      shape = image.shape
    elif image.shape != shape and fixed:
      fixed = False
    chunk.append(image)
    if len(chunk) == _STATS_CHUNK:
      flush()
  if chunk:
    flush()
  channels = 1 if grey else 3
  mean, std = stats.mean_std(channels)
  image_shape = [shape[0], shape[1], channels] if fixed else None
  return mean, std, channels, image_shape


def prepare(
    data_dir: str,
    out: str,
    *,
    name: str = "image_folder",
    validation_fraction: float = 0.1,
    split_seed: int = 0,
    shard_size: int = 10_000,
    stats_examples: int = 0,
    class_groups: Sequence[int] | None = None,
    group_names: Sequence[str] | None = None,
    expected_classes: Sequence[str] | None = None,
) -> dict[str, Any]:
  """Writes the prepared copy of image folder `data_dir` to `out`; returns its meta.

  Raises:
    FileNotFoundError, ValueError: a bad folder or argument (naming it);
      FileExistsError: `out` already holds a prepared copy.
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(
        f"--validation_fraction must satisfy 0 <= f < 1, got {validation_fraction}"
    )
  if shard_size < 1 or stats_examples < 0:
    raise ValueError(
        f"--shard_size must be >= 1 and --stats_examples >= 0, got "
        f"{shard_size} and {stats_examples}"
    )
  if os.path.exists(os.path.join(out, records.META)):
    raise FileExistsError(
        f"{out} already holds a prepared copy ({records.META}); delete it or "
        "choose another --out"
    )
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"image folder directory not found: {data_dir}")
  folders = {
      s: image_folder._Folder(data_dir, s)  # pylint: disable=protected-access
      for s in image_folder.SPLIT_SOURCES
  }
  classes = image_folder._check_classes(  # pylint: disable=protected-access
      list(folders.values())
  )
  if expected_classes is not None and tuple(classes) != tuple(
      sorted(expected_classes)
  ):
    raise ValueError(
        f"{data_dir}: dataset {name!r} expects the class folders "
        f"{sorted(expected_classes)}, found {list(classes)}"
    )
  train_names, train_labels = _ordered(folders["train"])
  keep, held = stratified_holdout(
      train_labels, fraction=validation_fraction, seed=split_seed
  )
  test_names, test_labels = _ordered(folders["test"])
  splits = {
      "train": (
          folders["train"],
          [train_names[i] for i in keep],
          train_labels[keep],
      ),
      "validation": (
          folders["train"],
          [train_names[i] for i in held],
          train_labels[held],
      ),
      "test": (folders["test"], test_names, test_labels),
  }
  mean, std, channels, image_shape = _statistics(
      folders["train"], splits["train"][1], stats_examples
  )
  tmp = f"{out.rstrip('/')}.tmp-{os.getpid()}"
  os.makedirs(tmp)
  try:
    entries = {
        split: records.write_split(
            tmp,
            split,
            (
                (int(label), folder.read(member))
                for member, label in zip(members, labels)
            ),
            len(members),
            shard_size=shard_size,
        )
        for split, (folder, members, labels) in splits.items()
    }
    meta = {
        "name": name,
        "source": os.path.abspath(data_dir),
        "class_names": list(classes),
        "channels": channels,
        "image_shape": image_shape,
        "mean": mean,
        "std": std,
        "stats_examples": stats_examples or len(splits["train"][1]),
        "validation_fraction": validation_fraction,
        "split_seed": split_seed,
        "class_groups": None if class_groups is None else list(class_groups),
        "group_names": None if group_names is None else list(group_names),
        "splits": entries,
    }
    records.write_meta(tmp, meta)
    if os.path.isdir(out) and not os.listdir(out):
      os.rmdir(out)
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return records.read_meta(out)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m simsoft.data.prepare",
      description="An image folder -> ArrayRecord shards for the streaming reader.",
  )
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument(
      "--name",
      default="image_folder",
      help="image_folder, or cifar10_jpeg (checks its classes, adds its groups)",
  )
  parser.add_argument("--validation_fraction", type=float, default=0.1)
  parser.add_argument("--split_seed", type=int, default=0)
  parser.add_argument("--shard_size", type=int, default=10_000)
  parser.add_argument("--stats_examples", type=int, default=0)
  args = parser.parse_args(argv)
  groups = {}
  if args.name == "cifar10_jpeg":
    groups = dict(
        class_groups=cifar10_jpeg.CLASS_GROUPS,
        group_names=cifar10_jpeg.GROUP_NAMES,
        expected_classes=cifar10_jpeg.CIFAR10_CLASS_NAMES,
    )
  elif args.name != "image_folder":
    errors.report(
        f"--name {args.name!r}: known names are 'image_folder' and 'cifar10_jpeg'"
    )
    return 2
  try:
    meta = prepare(
        args.data_dir,
        args.out,
        name=args.name,
        validation_fraction=args.validation_fraction,
        split_seed=args.split_seed,
        shard_size=args.shard_size,
        stats_examples=args.stats_examples,
        **groups,
    )
  except (FileNotFoundError, FileExistsError, ValueError) as e:
    errors.report(str(e), exc=e)
    return 2
  counts = {s: e["num_examples"] for s, e in meta["splits"].items()}
  print(f"prepared {args.out}: {counts}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
