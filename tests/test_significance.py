"""Paired t-intervals, p-values, Holm's correction and the shuffled-S derangement, by hand."""

import numpy as np
import pytest

from simsoft import significance
from simsoft.similarity import derangement, permute_classes


def test_paired_difference_hand_values():
  # d = 1..5: mean 3, sd sqrt(2.5) = 1.58114, se = 0.70711, t = 4.24264 on 4 df;
  # t_{0.975, 4} = 2.77645 (t table) -> CI 3 -/+ 1.96324; two-sided p = 0.013236.
  out = significance.paired_difference([1.0, 2.0, 3.0, 4.0, 5.0])
  assert out["n"] == 5 and out["wins"] == 5
  assert out["mean"] == pytest.approx(3.0)
  assert out["sd"] == pytest.approx(1.5811388, rel=1e-6)
  assert out["t"] == pytest.approx(4.2426407, rel=1e-6)
  assert out["ci"] == pytest.approx([3 - 1.9632432, 3 + 1.9632432], rel=1e-6)
  assert out["p"] == pytest.approx(0.0132356, rel=1e-4)


def test_paired_difference_edges():
  one = significance.paired_difference([0.2])
  assert (
      one["ci"] is None
      and one["p"] is None
      and one["mean"] == pytest.approx(0.2)
  )
  flat = significance.paired_difference([0.1, 0.1, 0.1])
  assert flat["p"] == 0.0 and flat["ci"] == pytest.approx([0.1, 0.1])
  assert significance.paired_difference([0.0, 0.0])["p"] == 1.0
  # Negative mean: the interval is below zero, p is symmetric.
  neg = significance.paired_difference([-1.0, -2.0, -3.0, -4.0, -5.0])
  assert (
      neg["p"] == pytest.approx(0.0132356, rel=1e-4)
      and neg["ci"][1] < 0
      and neg["wins"] == 0
  )


def test_bounds_hand_values():
  # d = 1..5: mean 3, se = 0.70711; t_{0.95, 4} = 2.13185 (t table) ->
  # one-sided bounds 3 -/+ 1.507443.
  out = significance.bounds([1.0, 2.0, 3.0, 4.0, 5.0], margin=5.0)
  assert out["upper_95"] == pytest.approx(4.507443, abs=1e-5)
  assert out["lower_95"] == pytest.approx(1.492557, abs=1e-5)
  # TOST at margin 5: max(P(T4 > 8/0.70711), P(T4 < -2/0.70711)); the second,
  # t = -2.82843 on 4 df, is 0.023710 (t table): equivalent at 0.05.
  assert out["p_tost"] == pytest.approx(0.023710, abs=2e-6)
  assert out["equivalent"] is True
  # Margin 3.5: t = 0.5 / 0.70711 = -0.70711 -> p = 0.25926, not equivalent.
  out = significance.bounds([1.0, 2.0, 3.0, 4.0, 5.0], margin=3.5)
  assert out["p_tost"] == pytest.approx(0.259259, abs=2e-6)
  assert out["equivalent"] is False
  # No margin: bounds only; one value: nothing.
  out = significance.bounds([1.0, 2.0, 3.0, 4.0, 5.0])
  assert out["p_tost"] is None and out["equivalent"] is None
  assert significance.bounds([1.0])["upper_95"] is None
  # Zero spread: equivalent exactly when |mean| < margin.
  assert significance.bounds([0.1, 0.1], margin=0.2)["equivalent"] is True
  assert significance.bounds([0.3, 0.3], margin=0.2)["equivalent"] is False


def test_holm_hand_values():
  # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (monotone).
  adjusted, rejected = significance.holm([0.01, 0.04, 0.03, 0.005, None])
  assert (
      adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
      and adjusted[4] is None
  )
  assert rejected == [True, False, False, True, None]
  assert significance.holm([0.6, 0.9])[0] == pytest.approx([1.0, 1.0])


def test_derangement_is_fixed_by_seed_and_moves_every_class():
  for seed in range(20):
    perm = derangement(10, seed)
    assert sorted(perm.tolist()) == list(range(10)) and np.all(
        perm != np.arange(10)
    )
    np.testing.assert_array_equal(perm, derangement(10, seed))
  assert not np.array_equal(derangement(10, 0), derangement(10, 1))
  np.testing.assert_array_equal(derangement(2, 5), [1, 0])


def test_permute_classes_by_hand():
  s = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 1.0]])
  perm = [2, 0, 1]  # S'[i, j] = S[perm[i], perm[j]]
  expect = np.array([[1.0, 0.0, 0.2], [0.0, 1.0, 0.5], [0.2, 0.5, 1.0]])
  np.testing.assert_array_equal(permute_classes(s, perm), expect)
  with pytest.raises(ValueError, match="not a permutation"):
    permute_classes(s, [0, 0, 1])
