r"""Controls that keep S's values but break its class structure.

A shuffled-S control retrains with :math:`S'_{ij} = S_{\pi(i)\pi(j)}` for one
random permutation :math:`\pi` of the classes: the same entries (the same
amount and spread of smoothing), each assigned to the wrong pair of classes.
If S helps only as much as S', its gain is not class structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # numpy only at run time
  from jax.typing import ArrayLike

__all__ = ["derangement", "permute_classes"]


def derangement(num_classes: int, seed: int) -> np.ndarray:
  """A random permutation of range(num_classes) with no fixed point, fixed by `seed`.

  No class keeps its own row, so no class pair (i, j) keeps S[i, j] unless
  pi(i) = i' and pi(j) = j' happen to land on an equally similar pair. Drawn by
  rejection from numpy's PCG64 stream seeded with `seed` (~e tries on average).

  Returns:
    int64 [num_classes].
  """
  if num_classes < 2:
    raise ValueError(
        f"a derangement needs at least 2 classes, got {num_classes}"
    )
  rng = np.random.default_rng(seed)
  while True:
    perm = rng.permutation(num_classes)
    if np.all(perm != np.arange(num_classes)):
      return perm


def permute_classes(
    similarity: ArrayLike, permutation: ArrayLike | Sequence[int]
) -> np.ndarray:
  """S'[i, j] = S[perm[i], perm[j]]: rows and columns permuted together. [C, C] -> [C, C]."""
  s = np.asarray(similarity)
  perm = np.asarray(permutation)
  if (
      s.ndim != 2
      or s.shape[0] != s.shape[1]
      or sorted(perm.tolist()) != list(range(s.shape[0]))
  ):
    raise ValueError(
        f"permutation {perm.tolist()} is not a permutation of the {s.shape} matrix's classes"
    )
  return s[np.ix_(perm, perm)]
