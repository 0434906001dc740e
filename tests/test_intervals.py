"""Intervals of one test set: Wilson for an accuracy, Newcombe's paired interval for B - A."""

import math

import numpy as np
import pytest

from simsoft import intervals


def _pairs(both, only_b, only_a, neither):
  a = np.array([1] * both + [0] * only_b + [1] * only_a + [0] * neither, bool)
  b = np.array([1] * both + [1] * only_b + [0] * only_a + [0] * neither, bool)
  return a, b


def test_wilson_published_value_and_edges():
  # Newcombe (1998, single proportions), 81/263: 0.2553 to 0.3662.
  lo, hi = intervals.wilson(81, 263)
  assert (lo, hi) == (
      pytest.approx(0.2553, abs=1e-4),
      pytest.approx(0.3662, abs=1e-4),
  )
  assert intervals.wilson(0, 10)[0] == 0.0 and intervals.wilson(10, 10)[
      1
  ] == pytest.approx(1.0)
  assert (
      0.0 < intervals.wilson(0, 10)[1] < 0.35
  )  # no zero-width interval at the edge
  with pytest.raises(ValueError, match="k must lie"):
    intervals.wilson(11, 10)


def test_paired_interval_matches_the_large_sample_normal_one():
  """For large n Newcombe's interval tends to the paired Wald interval
  (b - c)/n +- z sqrt(b + c - (b - c)^2 / n) / n, far narrower than the unpaired one.
  """
  n, only_b, only_a = 100_000, 3_000, 2_000
  d = intervals.paired_difference(
      *_pairs(n - 10_000 - only_b - only_a, only_b, only_a, 10_000)
  )
  diff = (only_b - only_a) / n
  half = (
      intervals.Z95
      * math.sqrt(only_b + only_a - (only_b - only_a) ** 2 / n)
      / n
  )
  assert d["difference"] == pytest.approx(diff)
  assert d["ci"] == [
      pytest.approx(diff - half, abs=2e-4),
      pytest.approx(diff + half, abs=2e-4),
  ]


@pytest.mark.parametrize(
    "both, only_b, only_a, neither, expected, decimals",
    [
        # Newcombe (1998, Stat Med 17:2635-2650), the example e, f, g, h =
        # 20, 12, 2, 16: method 10 gives 0.0562 to 0.3292 around 0.2 (method 8,
        # without the correction of phi, 0.0618 to 0.3242).
        (20, 12, 2, 16, (0.0562, 0.3292), 4),
        # Fagerland, Lydersen and Laake (2014, Stat Med 33:2850-2875), airway
        # hyper-responsiveness (Bentur et al.): 1, 1, 7, 12 -> -0.507 to -0.026.
        (1, 1, 7, 12, (-0.507, -0.026), 3),
        # Fagerland, Lydersen and Laake (2017, Statistical Analysis of
        # Contingency Tables, ch. 8; their R package contingencytables, test
        # of chapter 8), complete response before and after consolidation
        # therapy (Cavo et al.): 59, 6, 16, 80 -> -0.0621, -0.1186 to -0.0046.
        (59, 6, 16, 80, (-0.1186, -0.0046), 4),
    ],
)
def test_paired_interval_published_asymmetric_examples(
    both, only_b, only_a, neither, expected, decimals
):
  """Newcombe's method 10 against published values whose lower and upper half-widths
  differ, so swapped half-widths (or an uncorrected phi) show."""
  d = intervals.paired_difference(*_pairs(both, only_b, only_a, neither))
  assert d["difference"] == pytest.approx((only_b - only_a) / d["n"])
  assert [round(x, decimals) for x in d["ci"]] == list(expected)
  lower, upper = d["difference"] - d["ci"][0], d["ci"][1] - d["difference"]
  swapped = (d["difference"] - upper, d["difference"] + lower)
  # asymmetric: swapped half-widths would move both published ends
  assert all(round(x, decimals) != e for x, e in zip(swapped, expected))


def test_paired_interval_properties():
  a, b = _pairs(300, 12, 4, 43)  # 359 images, as the digits test split
  d = intervals.paired_difference(a, b)
  assert (d["n"], d["only_b"], d["only_a"]) == (359, 12, 4)
  assert d["ci"][0] < d["difference"] < d["ci"][1]
  swapped = intervals.paired_difference(b, a)  # A - B mirrors B - A
  assert swapped["ci"] == [
      pytest.approx(-d["ci"][1]),
      pytest.approx(-d["ci"][0]),
  ]
  same = intervals.paired_difference(a, a)
  assert same["difference"] == 0.0 and same["ci"][0] < 0 < same["ci"][1]
  with pytest.raises(ValueError, match="same images"):
    intervals.paired_difference(a, b[:-1])


def test_correct_bits_round_trip():
  correct = np.random.default_rng(0).random(359) < 0.9
  text = intervals.pack_correct(correct)
  assert len(text) < 70  # 45 bytes, base64
  np.testing.assert_array_equal(intervals.unpack_correct(text, 359), correct)
