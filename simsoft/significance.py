r"""Paired comparisons across seeds: mean difference, 95 % interval, t-test, Holm.

Two runs of one seed share their initialization and batch order, so a
setting is compared with a baseline through the per-seed differences
:math:`d_s = b_s - a_s`, :math:`s = 1..n`:

.. math::
  \bar d = \frac{1}{n}\sum_s d_s, \quad
  \mathrm{se} = \frac{\mathrm{sd}(d)}{\sqrt n}, \quad
  t = \frac{\bar d}{\mathrm{se}}, \quad
  \mathrm{CI}_{95} = \bar d \pm t_{0.975,\,n-1}\,\mathrm{se}

and the two-sided p-value :math:`2\,P(T_{n-1} > |t|)` (paired t-test).
Across the k settings of one experiment the p-values are corrected with
Holm's step-down method (controls the family-wise error rate at 0.05).

"No effect" is bounded, not inferred from a large p (:func:`bounds`): the
one-sided 95 % upper bound :math:`\bar d + t_{0.95,\,n-1}\,\mathrm{se}` is the
largest gain the seeds leave plausible, and two one-sided tests (TOST)
against an equivalence margin :math:`\delta` fixed before the run declare
equivalence when the 90 % interval lies inside :math:`(-\delta, \delta)`,
:math:`p_\mathrm{TOST} = \max(P(T_{n-1} > (\bar d + \delta)/\mathrm{se}),
P(T_{n-1} < (\bar d - \delta)/\mathrm{se})) < 0.05`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["bounds", "holm", "paired_difference"]


def paired_difference(
    deltas: Iterable[float | None], *, confidence: float = 0.95
) -> dict[str, Any]:
  """Summary of per-seed differences [n]: mean, sd, CI, t and p (paired t-test, two-sided).

  With n < 2 the interval and p are None. Zero spread gives p = 0 for a
  non-zero mean (1 for a zero mean) and a zero-width interval.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top

  d = np.asarray(
      [x for x in deltas if x is not None and np.isfinite(x)], np.float64
  )
  n = d.size
  out: dict[str, Any] = {
      "n": int(n),
      "mean": float(d.mean()) if n else None,
      "sd": None,
      "ci": None,
      "t": None,
      "p": None,
      "wins": int(np.sum(d > 0)),
  }
  if n < 2:
    return out
  sd = float(d.std(ddof=1))
  if sd <= 1e-12 * max(
      1.0, abs(out["mean"])
  ):  # equal differences up to rounding
    sd = 0.0
  se = sd / np.sqrt(n)
  half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
  out |= {
      "sd": sd,
      "ci": [float(out["mean"] - half), float(out["mean"] + half)],
  }
  if se == 0:
    out |= {"t": None, "p": 0.0 if out["mean"] != 0 else 1.0}
  else:
    t = out["mean"] / se
    out |= {"t": float(t), "p": float(2 * stats.t.sf(abs(t), n - 1))}
  return out


def holm(
    pvalues: Sequence[float | None], *, level: float = 0.05
) -> tuple[list[float | None], list[bool | None]]:
  r"""Holm step-down correction of k p-values (None entries are left out).

  Sorted ascending, :math:`p_{(i)}` gets :math:`\tilde p_{(i)} =
  \max_{j \le i} \min(1, (k - j + 1)\, p_{(j)})`; a hypothesis is rejected
  when :math:`\tilde p \le` level.

  Returns:
    (adjusted p-values, rejected flags), both in the input order; None where
    the input was None.
  """
  index = [i for i, p in enumerate(pvalues) if p is not None]
  k = len(index)
  adjusted: list[float | None] = [None] * len(pvalues)
  running = 0.0
  for rank, i in enumerate(sorted(index, key=lambda i: pvalues[i])):
    running = max(running, min(1.0, (k - rank) * pvalues[i]))
    adjusted[i] = running
  rejected = [None if a is None else a <= level for a in adjusted]
  return adjusted, rejected


def bounds(
    deltas: Iterable[float | None], *, margin: float | None = None
) -> dict[str, Any]:
  """One-sided 95 % bounds of the mean difference and, with `margin`, the TOST.

  Returns:
    {'upper_95', 'lower_95': one-sided 95 % bounds (the ends of the 90 %
    interval), 'margin', 'p_tost', 'equivalent' (p_tost < 0.05)}; bounds
    and p None with fewer than 2 finite values, TOST keys None without a
    margin.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top

  d = np.asarray(
      [x for x in deltas if x is not None and np.isfinite(x)], np.float64
  )
  out: dict[str, Any] = {
      "upper_95": None,
      "lower_95": None,
      "margin": margin,
      "p_tost": None,
      "equivalent": None,
  }
  n = d.size
  if n < 2:
    return out
  mean, se = float(d.mean()), float(d.std(ddof=1)) / np.sqrt(n)
  half = float(stats.t.ppf(0.95, n - 1)) * se
  out |= {"upper_95": float(mean + half), "lower_95": float(mean - half)}
  if margin is not None:
    if se == 0:
      p = 0.0 if abs(mean) < margin else 1.0
    else:
      p = max(
          float(stats.t.sf((mean + margin) / se, n - 1)),
          float(stats.t.cdf((mean - margin) / se, n - 1)),
      )
    out |= {"p_tost": p, "equivalent": p < 0.05}
  return out
