"""Metric statistics: hand-computed cases, numpy reference, masks, 4-device sharding."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from simsoft import metrics as M
from simsoft.data import fashion_mnist_local


def _stats(probs, labels, mask=None, num_classes=None):
  probs = np.asarray(probs, np.float32)
  s = M.init_metric_stats(num_classes or probs.shape[1])
  m = None if mask is None else jnp.asarray(mask)
  return M.update_metric_stats(
      s, jnp.log(jnp.asarray(probs)), jnp.asarray(labels), m
  )


def test_accuracy_nll_ece_by_hand():
  # confidences 0.9 and 0.92 share bin 13 of 15; 0.75 -> bin 11; 0.62 -> bin 9.
  probs = [[0.9, 0.1], [0.08, 0.92], [0.25, 0.75], [0.62, 0.38]]
  labels = [0, 0, 1, 1]
  out = M.finalize_metrics(_stats(probs, labels))
  assert out["count"] == 4
  assert out["accuracy"] == pytest.approx(2 / 4)
  nll = -(math.log(0.9) + math.log(0.08) + math.log(0.75) + math.log(0.38)) / 4
  assert out["nll"] == pytest.approx(nll, rel=1e-5)
  # bin 13: |1 - (0.9 + 0.92)|; bin 11: |1 - 0.75|; bin 9: |0 - 0.62|.
  assert out["ece"] == pytest.approx((0.82 + 0.25 + 0.62) / 4, rel=1e-5)
  rel = out["reliability"]
  assert (
      rel["count"][13] == 2 and rel["count"][11] == 1 and rel["count"][9] == 1
  )
  assert sum(rel["count"]) == 4
  assert rel["accuracy"][13] == pytest.approx(0.5) and rel["confidence"][
      13
  ] == pytest.approx(0.91)
  assert len(rel["bin_edges"]) == 16
  # class 0: 1 of 2 right (0.9 yes, 0.08 no); class 1: 1 of 2 (0.75 yes, 0.38 no).
  assert out["per_class_accuracy"] == pytest.approx([0.5, 0.5])


def test_per_class_accuracy_is_recall_and_empty_class_is_zero():
  probs = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]]
  out = M.finalize_metrics(_stats(probs, [0, 0, 1, 1], num_classes=3))
  # class 0: predictions 0, 1 -> 1/2; class 1: 0, 1 -> 1/2; class 2: no sample.
  assert out["per_class_accuracy"] == pytest.approx([0.5, 0.5, 0.0])
  out = M.finalize_metrics(_stats(probs, [0, 1, 0, 1], num_classes=3))
  assert out["per_class_accuracy"] == pytest.approx([1.0, 1.0, 0.0])


def test_mistake_severity_and_superclass_by_hand():
  r = np.array([[2.0, 1.0, 0.0], [1.0, 1.0, 0.5], [0.0, 0.5, 1.0]])
  # (true, predicted): (0,1) (0,2) (1,0) (2,2) (1,1)
  labels = [0, 0, 1, 2, 1]
  preds = [1, 2, 0, 2, 1]
  probs = np.full((5, 3), 0.1)
  probs[np.arange(5), preds] = 0.8
  out = M.finalize_metrics(
      _stats(probs, labels), reference_similarity=r, class_to_group=[0, 0, 1]
  )
  assert out["accuracy"] == pytest.approx(2 / 5)
  # R / diag: R~[0,1] = 0.5, R~[0,2] = 0, R~[1,0] = 1 -> (0.5 + 1 + 0) / 3
  assert out["num_mistakes"] == 3
  assert out["mistake_severity"] == pytest.approx(0.5)
  # same group: (0,1) (1,0) (2,2) (1,1) yes, (0,2) no
  assert out["superclass_accuracy"] == pytest.approx(4 / 5)


def test_mistake_severity_reads_truth_row_of_asymmetric_matrix():
  # Only one kind of mistake: truth 0 predicted as 1. R[0, 1] = 0.9 but R[1, 0] = 0.2,
  # so reading R[prediction, truth] gives 0.8 instead of 0.1.
  r = np.array([[1.0, 0.9, 0.0], [0.2, 1.0, 0.0], [0.0, 0.0, 1.0]])
  labels, preds = [0, 0, 1, 2], [1, 1, 1, 2]
  probs = np.full((4, 3), 0.1)
  probs[np.arange(4), preds] = 0.8
  out = M.finalize_metrics(_stats(probs, labels), reference_similarity=r)
  assert out["num_mistakes"] == 2
  assert out["mistake_severity"] == pytest.approx(1 - 0.9)


def test_mistake_severity_without_mistakes_is_nan():
  out = M.finalize_metrics(
      _stats([[0.9, 0.1]], [0]), reference_similarity=np.eye(2)
  )
  assert out["num_mistakes"] == 0 and math.isnan(out["mistake_severity"])


def test_bad_reference_and_groups_raise():
  s = _stats([[0.9, 0.1]], [0])
  with pytest.raises(ValueError, match="R\\[j, k\\] <= R\\[j, j\\]"):
    M.finalize_metrics(s, reference_similarity=[[1.0, 2.0], [0.0, 1.0]])
  with pytest.raises(ValueError, match="positive diagonal"):
    M.finalize_metrics(s, reference_similarity=[[0.0, 0.0], [0.0, 1.0]])
  with pytest.raises(ValueError, match="\\[2, 2\\]"):
    M.finalize_metrics(s, reference_similarity=np.eye(3))
  with pytest.raises(ValueError, match="class_to_group"):
    M.finalize_metrics(s, class_to_group=[0, 1, 2])
  with pytest.raises(ValueError, match="no samples"):
    M.finalize_metrics(M.init_metric_stats(2))
  with pytest.raises(ValueError, match="logits must be"):
    M.update_metric_stats(
        M.init_metric_stats(3), jnp.zeros((2, 2)), jnp.zeros(2, jnp.int32)
    )


def _numpy_reference(logits, labels, mask, num_bins=15):
  z = logits - logits.max(1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(1, keepdims=True))
  p = np.exp(logp)
  pred, conf = p.argmax(1), p.max(1)
  keep = mask > 0
  pred, conf, y, logp = pred[keep], conf[keep], labels[keep], logp[keep]
  correct = pred == y
  ece = 0.0
  edges = np.linspace(0, 1, num_bins + 1)
  for lo, hi in zip(edges[:-1], edges[1:]):
    inb = (conf > lo) & (conf <= hi)
    if inb.any():
      ece += inb.mean() * abs(correct[inb].mean() - conf[inb].mean())
  return correct.mean(), -logp[np.arange(len(y)), y].mean(), ece


def test_matches_numpy_reference_with_mask_and_two_batches():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(50, 7)).astype(np.float32) * 3
  labels = rng.integers(0, 7, 50)
  mask = (rng.random(50) < 0.8).astype(np.float32)
  s = M.init_metric_stats(7)
  for sl in (slice(0, 20), slice(20, 50)):
    s = M.update_metric_stats(
        s,
        jnp.asarray(logits[sl]),
        jnp.asarray(labels[sl]),
        jnp.asarray(mask[sl]),
    )
  out = M.finalize_metrics(s)
  acc, nll, ece = _numpy_reference(logits, labels, mask)
  assert out["count"] == mask.sum()
  assert out["accuracy"] == pytest.approx(acc)
  assert out["nll"] == pytest.approx(nll, rel=1e-5)
  assert out["ece"] == pytest.approx(ece, abs=1e-6)
  conf = np.zeros((7, 7))
  np.add.at(conf, (labels[mask > 0], logits.argmax(1)[mask > 0]), 1)
  np.testing.assert_array_equal(np.asarray(s["confusion"]), conf)


@pytest.mark.parametrize("axis_type", ["Auto", "Explicit"])
def test_sharded_stats_equal_unsharded(axis_type):
  assert jax.device_count() == 4
  mesh = jax.make_mesh(
      (4,), ("data",), (getattr(jax.sharding.AxisType, axis_type),)
  )
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(32, 10)).astype(np.float32) * 2
  labels = rng.integers(0, 10, 32).astype(np.int32)
  mask = (np.arange(32) < 27).astype(np.float32)
  update = jax.jit(M.update_metric_stats)
  init = M.init_metric_stats(10)
  ref = update(
      init, jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask)
  )
  shard = NamedSharding(mesh, P("data"))
  args = [jax.device_put(a, shard) for a in (logits, labels, mask)]
  assert len(args[0].sharding.device_set) == 4
  out = update(init, *args)
  for k in ref:
    np.testing.assert_allclose(
        np.asarray(out[k]), np.asarray(ref[k]), rtol=1e-6, err_msg=k
    )
  assert float(out["count"]) == 27


def test_corruption_aggregates_by_hand():
  acc = {"a": {"1": 0.9, "2": 0.7}, "b": {"1": 0.8, "2": 0.6}}
  base = {"a": {1: 0.8, 2: 0.6}, "b": {1: 0.6, 2: 0.4}}
  assert M.mean_corrupted_accuracy(acc) == pytest.approx(0.75)
  assert M.mean_corruption_error(acc) == pytest.approx(0.25)
  # a: (0.1 + 0.3) / (0.2 + 0.4); b: (0.2 + 0.4) / (0.4 + 0.6)
  assert M.normalized_mce(acc, base) == pytest.approx(
      (0.4 / 0.6 + 0.6 / 1.0) / 2
  )
  # clean errors 0.05 and 0.1: a: (0.05 + 0.25) / (0.1 + 0.3); b: (0.15 + 0.35) / (0.3 + 0.5)
  assert M.relative_mce(acc, 0.95, base, 0.9) == pytest.approx(
      (0.75 + 0.625) / 2
  )
  with pytest.raises(ValueError, match="same corruptions"):
    M.normalized_mce(acc, {"a": base["a"]})
  with pytest.raises(ValueError, match="empty"):
    M.mean_corrupted_accuracy({})


def test_fashion_mnist_groups():
  g = np.asarray(fashion_mnist_local.CLASS_GROUPS)
  names = fashion_mnist_local.GROUP_NAMES
  # 0 T-shirt, 2 Pullover, 4 Coat, 6 Shirt are tops; 5 Sandal, 7 Sneaker, 9 Ankle boot footwear.
  assert [names[g[i]] for i in (0, 2, 4, 6)] == ["tops"] * 4
  assert [names[g[i]] for i in (5, 7, 9)] == ["footwear"] * 3
  assert (names[g[1]], names[g[3]], names[g[8]]) == (
      "trousers",
      "dresses",
      "bags",
  )
  r = M.similarity_from_groups(g)
  assert (
      r.shape == (10, 10)
      and r[0, 6] == 1
      and r[0, 5] == 0
      and np.all(np.diag(r) == 1)
  )
