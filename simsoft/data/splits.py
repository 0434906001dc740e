"""Deterministic stratified hold-out of one split from another."""

from __future__ import annotations

import numpy as np


def stratified_holdout(
    labels: np.ndarray, *, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Split example indices into (kept, held_out), stratified by class.

  The held-out set has exactly round(fraction * N) examples. Class c, with
  n_c examples, contributes floor(fraction * n_c) of them, and the
  remaining few go one each to the classes with the largest fractional
  parts fraction * n_c - floor(fraction * n_c) (ties: lower class index).
  Within class c the held-out examples are the first k_c of a permutation
  drawn from np.random.default_rng(seed), visiting classes in increasing
  order, so the split depends only on (labels, fraction, seed).

  Args:
    labels: int [N] class labels.
    fraction: held-out share, 0 <= fraction < 1.
    seed: seed of the permutation.

  Returns:
    kept, held_out: sorted int64 index arrays; disjoint, union = range(N).
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"fraction must satisfy 0 <= fraction < 1, got {fraction}")
  labels = np.asarray(labels)
  classes, counts = np.unique(labels, return_counts=True)
  quota = fraction * counts
  take = np.floor(quota).astype(np.int64)
  remainder = int(np.floor(fraction * len(labels) + 0.5)) - int(take.sum())
  by_fraction = np.argsort(-(quota - take), kind="stable")
  take[by_fraction[:remainder]] += 1
  rng = np.random.default_rng(seed)
  held_out = [
      rng.permutation(np.flatnonzero(labels == c))[:k]
      for c, k in zip(classes, take)
  ]
  held_out = np.sort(np.concatenate(held_out + [np.zeros(0, np.int64)])).astype(
      np.int64
  )
  mask = np.ones(len(labels), bool)
  mask[held_out] = False
  return np.flatnonzero(mask).astype(np.int64), held_out
