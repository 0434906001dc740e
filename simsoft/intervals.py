r"""95 % intervals for one test set: an accuracy, and the paired difference of two models.

An accuracy k/n gets Wilson's score interval

.. math::
  \frac{\hat p + \frac{z^2}{2n} \pm z\sqrt{\frac{\hat p(1-\hat p)}{n} + \frac{z^2}{4n^2}}}
       {1 + \frac{z^2}{n}},

which stays inside [0, 1] and keeps its coverage near 0 and 1 (the normal
interval does not). Models A and B are tested on the same images, so their
difference is paired: with a = both right, b = only B right, c = only A
right, d = both wrong, B - A = (b - c)/n, and its interval is Newcombe's
hybrid score interval for paired proportions (Newcombe 1998, Statistics in
Medicine 17:2635-2650, method 10), built from the two Wilson intervals and
the correlation phi of the 2x2 table with Newcombe's correction: when
ad > bc its numerator ad - bc becomes max(ad - bc - n/2, 0) (without it
this is his method 8). Both describe test-set sampling only (which images were drawn), not
the spread over training seeds (simsoft.significance does that, across runs).

Per-image correctness travels in results.json as packed bits
(`pack_correct` / `unpack_correct`).
"""

from __future__ import annotations

import base64
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # numpy only at run time
  from jax.typing import ArrayLike

Z95 = 1.959963984540054


def wilson(k: float, n: float, *, z: float = Z95) -> tuple[float, float]:
  """Wilson score interval of the proportion k/n (95 % by default)."""
  if n <= 0:
    raise ValueError(f"n must be positive, got {n}")
  if not 0 <= k <= n:
    raise ValueError(f"k must lie in [0, n={n}], got {k}")
  p = k / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(
    a_correct: ArrayLike, b_correct: ArrayLike, *, z: float = Z95
) -> dict[str, Any]:
  """B - A in accuracy on the same images, with Newcombe's paired score interval.

  Args:
    a_correct, b_correct: bool [n], whether model A (B) classified image i right.

  Returns:
    {'n', 'both', 'only_b', 'only_a', 'neither', 'difference', 'ci': [lo, hi],
     'method'}.
  """
  a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
  if a.shape != b.shape or a.ndim != 1 or a.size == 0:
    raise ValueError(
        f"need two non-empty [n] vectors of the same images, got {a.shape} and {b.shape}"
    )
  n = a.size
  both, only_b = int(np.sum(a & b)), int(np.sum(b & ~a))
  only_a, neither = int(np.sum(a & ~b)), int(np.sum(~a & ~b))
  p1, p2 = (both + only_b) / n, (both + only_a) / n
  l1, u1 = wilson(both + only_b, n, z=z)
  l2, u2 = wilson(both + only_a, n, z=z)
  den = math.sqrt(
      float(both + only_b)
      * (only_a + neither)
      * (both + only_a)
      * (only_b + neither)
  )
  num = float(both * neither - only_b * only_a)
  if num > 0:  # Newcombe's method 10 corrects a positive correlation
    num = max(num - n / 2, 0.0)
  phi = num / den if den > 0 else 0.0
  theta = p1 - p2
  lower = math.sqrt(
      max(
          (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0
      )
  )
  upper = math.sqrt(
      max(
          (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0
      )
  )
  return {
      "n": n,
      "both": both,
      "only_b": only_b,
      "only_a": only_a,
      "neither": neither,
      "difference": theta,
      "ci": [max(-1.0, theta - lower), min(1.0, theta + upper)],
      "method": "Newcombe (1998) paired score interval, method 10",
  }


def pack_correct(correct: ArrayLike) -> str:
  """bool [n] -> base64 text of the packed bits (n/8 bytes)."""
  return base64.b64encode(
      np.packbits(np.asarray(correct, bool)).tobytes()
  ).decode("ascii")


def unpack_correct(text: str, n: int) -> np.ndarray:
  """pack_correct's text -> bool [n]."""
  bits = np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))
  return bits[: int(n)].astype(bool)
