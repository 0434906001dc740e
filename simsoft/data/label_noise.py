"""Class-dependent label noise on the training side of a dataset (a positive control).

Pair flipping (Patrini et al. 2017; Han et al. 2018): each example of class
`a` in the 'train' and 'validation' splits is relabelled `b` with probability
`rate`, independently, for each flip a -> b; 'test' keeps its true labels.
With rate > 0.5 the majority training label of class a is b, so a model
trained to match its labels predicts b for images of a, unless its target
puts back on a the mass that the flip took away (a similarity S whose row b
points to a: configs/sweep.py's positive control).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from simsoft.data.dataset import ArraySplit, Dataset
from simsoft.errors import ConfigError

# The noise draws are seeded by split_seed and this offset, apart from the hold-out's.
SEED_OFFSET = 7919


def parse_flips(
    flips: Sequence[str], class_names: Sequence[str]
) -> list[tuple[int, int]]:
  """'cat->dog' strings as (source, target) class indices; names must be classes."""
  out = []
  for flip in flips:
    parts = [p.strip() for p in str(flip).split("->")]
    if len(parts) != 2 or not all(parts):
      raise ConfigError(
          f"config.dataset.label_noise.flips: {flip!r} is not 'SOURCE->TARGET' "
          "(class names, e.g. 'cat->dog')"
      )
    unknown = [p for p in parts if p not in class_names]
    if unknown:
      raise ConfigError(
          f"config.dataset.label_noise.flips: {flip!r} names {unknown}, not "
          f"classes of the dataset ({list(class_names)})"
      )
    if parts[0] == parts[1]:
      raise ConfigError(
          f"config.dataset.label_noise.flips: {flip!r} flips a class to itself"
      )
    out.append((class_names.index(parts[0]), class_names.index(parts[1])))
  sources = [a for a, _ in out]
  if len(set(sources)) != len(sources):
    raise ConfigError(
        "config.dataset.label_noise.flips: a class is flipped twice "
        f"({list(flips)})"
    )
  return out


def flip_labels(
    labels: np.ndarray, flips: Sequence[tuple[int, int]], rate: float, seed: int
) -> np.ndarray:
  """int32 [N] labels with each example of class a relabelled b w.p. `rate`.

  One uniform draw per example from np.random.default_rng(seed), so the
  flipped examples depend only on (labels, flips, rate, seed).
  """
  u = np.random.default_rng(seed).random(len(labels))
  out = labels.copy()
  for a, b in flips:
    out[(labels == a) & (u < rate)] = b
  return out.astype(np.int32)


def apply(
    ds: Dataset, *, flips: Sequence[str], rate: float, seed: int
) -> Dataset:
  """`ds` with pair-flip noise on 'train' and 'validation'; 'test' untouched."""
  if not flips or rate == 0.0:
    return ds
  pairs = parse_flips(flips, ds.class_names)
  splits = dict(ds.splits)
  for i, name in enumerate(("train", "validation")):
    split = ds.split(name)
    noisy = flip_labels(split.labels, pairs, rate, seed + SEED_OFFSET + i)
    splits[name] = ArraySplit(split.images, noisy)
  return dataclasses.replace(ds, splits=splits)
