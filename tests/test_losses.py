"""Tests of simsoft.losses against hand-computed numpy values and optax."""

import doctest
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from jax.test_util import check_grads

from simsoft import losses
from simsoft.losses import (
    similarity_cross_entropy,
    similarity_target_matrix,
    similarity_log_loss,
    similarity_targets,
    validate_similarity,
)

C = 5


def _problem(batch=8, seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(batch, C)).astype(np.float32) * 2
  labels = rng.integers(0, C, size=batch).astype(np.int32)
  similarity = rng.uniform(0.0, 1.0, size=(C, C)).astype(np.float32)
  similarity[np.arange(C), np.arange(C)] = 1.0
  return logits, labels, similarity


def _np_log_softmax(x):
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def test_targets_hand_computed():
  s = np.array([[2.0, 1.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 2.0]])
  got = similarity_targets(jnp.array([0, 1, 2]), s, alpha=0.5)
  want = np.array([[0.75, 0.125, 0.125], [0.0, 1.0, 0.0], [0.125, 0.125, 0.75]])
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-6)


def test_cross_entropy_hand_computed():
  logits, labels, s = _problem()
  rows = s / s.sum(1, keepdims=True)
  alpha = 0.3
  targets = (1 - alpha) * np.eye(C)[labels] + alpha * rows[labels]
  want = -(targets * _np_log_softmax(logits)).sum(-1)
  got = similarity_cross_entropy(logits, labels, s, alpha=alpha)
  assert got.shape == (8,) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_log_loss_hand_computed():
  logits, labels, s = _problem()
  probs = np.exp(_np_log_softmax(logits))
  want = -np.log((s[labels] * probs).sum(-1))
  np.testing.assert_allclose(
      similarity_log_loss(logits, labels, s), want, rtol=1e-5
  )


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_identity_equals_optax_cross_entropy(alpha):
  logits, labels, _ = _problem()
  want = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  np.testing.assert_allclose(
      similarity_cross_entropy(logits, labels, jnp.eye(C), alpha=alpha),
      want,
      rtol=1e-6,
  )
  np.testing.assert_allclose(
      similarity_log_loss(logits, labels, jnp.eye(C)), want, rtol=1e-6
  )


def test_alpha_zero_equals_optax_for_any_similarity():
  logits, labels, s = _problem()
  want = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  np.testing.assert_allclose(
      similarity_cross_entropy(logits, labels, s, alpha=0.0), want, rtol=1e-6
  )


@pytest.mark.parametrize("alpha", [0.1, 0.5])
def test_all_ones_equals_label_smoothing(alpha):
  logits, labels, _ = _problem()
  smoothed = optax.smooth_labels(jax.nn.one_hot(labels, C), alpha)
  want = optax.softmax_cross_entropy(logits, smoothed)
  got = similarity_cross_entropy(logits, labels, jnp.ones((C, C)), alpha=alpha)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_where_masks_examples_like_optax():
  logits, labels, s = _problem()
  where = np.array([1, 0, 1, 1, 0, 1, 0, 1], bool)
  got = similarity_cross_entropy(logits, labels, jnp.eye(C), where=where)
  want = optax.softmax_cross_entropy_with_integer_labels(
      logits, labels, where=where
  )
  np.testing.assert_allclose(got, want, rtol=1e-6)
  full = similarity_log_loss(logits, labels, s)
  masked = similarity_log_loss(logits, labels, s, where=where)
  np.testing.assert_allclose(masked, np.where(where, full, 0.0), rtol=1e-6)


@pytest.mark.parametrize("form", ["soft", "log"])
def test_gradients(form):
  logits, labels, s = _problem(batch=4)
  logits = logits.astype(np.float64)
  with jax.enable_x64(True):
    if form == "soft":
      fn = lambda x: similarity_cross_entropy(
          x, labels, s.astype(np.float64), alpha=0.7
      )
    else:
      fn = lambda x: similarity_log_loss(x, labels, s.astype(np.float64))
    check_grads(fn, (logits,), order=2, modes=("rev",), atol=1e-5, rtol=1e-5)


def test_gradient_of_soft_targets_is_softmax_minus_targets():
  logits, labels, s = _problem(batch=4)
  grad = jax.grad(
      lambda x: similarity_cross_entropy(x, labels, s, alpha=0.6).sum()
  )(logits)
  targets = similarity_targets(labels, s, alpha=0.6)
  np.testing.assert_allclose(grad, jax.nn.softmax(logits) - targets, atol=1e-6)


def test_bfloat16_logits():
  logits, labels, s = _problem()
  low = jnp.asarray(logits, jnp.bfloat16)
  for fn in (
      lambda x: similarity_cross_entropy(x, labels, s, alpha=0.5),
      lambda x: similarity_log_loss(x, labels, s),
  ):
    got = fn(low)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, fn(low.astype(jnp.float32)), rtol=1e-6)
    np.testing.assert_allclose(got, fn(logits), rtol=2e-2, atol=2e-2)
    assert jax.grad(lambda x: fn(x).sum())(low).dtype == jnp.bfloat16


@pytest.mark.parametrize("form", ["soft", "log"])
def test_huge_logits_are_finite(form):
  logits = np.array(
      [[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0], [1e4, 0.0, 0.0]], np.float32
  )
  labels = np.array([1, 0, 2], np.int32)
  s = np.eye(3, dtype=np.float32)
  s[0, 1] = s[1, 0] = 0.5
  if form == "soft":
    fn = lambda x: similarity_cross_entropy(x, labels, s, alpha=0.5)
  else:
    fn = lambda x: similarity_log_loss(x, labels, s)
  loss = fn(logits)
  grad = jax.grad(lambda x: fn(x).sum())(logits)
  assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
  if form == "log":
    # Rows 0, 1: the label shares weight 0.5 with the class holding all the
    # mass, so -log(0.5). Row 2: all mass on a class of weight 0, so -log p_2.
    np.testing.assert_allclose(loss, [np.log(2.0), np.log(2.0), 1e4], rtol=1e-6)


def test_jit_equals_eager_and_vmap():
  logits, labels, s = _problem()
  for fn in (similarity_cross_entropy, similarity_log_loss):
    eager = fn(logits, labels, s)
    np.testing.assert_allclose(jax.jit(fn)(logits, labels, s), eager, rtol=1e-6)
    per_example = jax.vmap(lambda x, y: fn(x[None], y[None], s)[0])(
        logits, labels
    )
    np.testing.assert_allclose(per_example, eager, rtol=1e-6)


def test_sharded_mean_equals_unsharded():
  assert jax.device_count() == 4, "conftest sets 4 simulated devices"
  mesh = jax.make_mesh(
      (4,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,)
  )
  logits, labels, s = _problem(batch=16)
  batch = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())
  x = jax.device_put(logits, batch)
  y = jax.device_put(labels, batch)
  s_rep = jax.device_put(s, replicated)
  for fn in (similarity_cross_entropy, similarity_log_loss):
    mean = jax.jit(lambda x, y, s: fn(x, y, s).mean())
    sharded = mean(x, y, s_rep)
    np.testing.assert_allclose(sharded, fn(logits, labels, s).mean(), rtol=1e-6)
    grad = jax.jit(jax.grad(lambda x, y, s: fn(x, y, s).mean()))(x, y, s_rep)
    assert grad.sharding.spec[0] == "data"


def test_new_similarity_does_not_retrace():
  logits, labels, s = _problem()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def loss(x, y, sim):
    return (
        similarity_cross_entropy(x, y, sim, alpha=0.5).mean()
        + similarity_log_loss(x, y, sim).mean()
    )

  first = loss(logits, labels, s)
  second = loss(logits, labels, s * 0.5 + 0.1)
  assert first != second


@pytest.mark.parametrize("fn", [similarity_cross_entropy, similarity_log_loss])
def test_bad_inputs(fn):
  logits, labels, s = _problem()
  with pytest.raises(TypeError, match="logits"):
    fn(logits.astype(np.int32), labels, s)
  with pytest.raises(TypeError, match="labels"):
    fn(logits, labels.astype(np.float32), s)
  with pytest.raises(ValueError, match=r"labels \(7,\)"):
    fn(logits, labels[:7], s)
  with pytest.raises(ValueError, match=r"similarity.*C = 5.*\(4, 4\)"):
    fn(logits, labels, s[:4, :4])
  with pytest.raises(ValueError, match="similarity"):
    fn(logits, labels, s[:, :4])
  with pytest.raises(ValueError, match="where"):
    fn(logits, labels, s, where=np.ones((8, C), bool))
  with pytest.raises(ValueError, match="similarity"):
    jax.jit(fn)(logits, labels, s[:3])


def test_targets_bad_inputs():
  with pytest.raises(ValueError, match="square"):
    similarity_targets(jnp.array([0]), jnp.ones((3, 4)))
  with pytest.raises(TypeError, match="labels"):
    similarity_targets(jnp.array([0.0]), jnp.ones((3, 3)))


def test_validate_similarity_rules():
  good = np.eye(3) + 0.1
  assert validate_similarity(good, 3).dtype == np.float32
  cases = [
      (np.ones((3, 4)), "square"),
      (np.ones((4, 4)), "4 x 4 but there are 3 classes"),
      (
          np.where(np.eye(3) > 0, np.nan, 1.0),
          "non-finite entry at row 0, column 0: nan",
      ),
      (
          np.array([[1, 0, 0], [0, 1, -0.5], [0, 0, 1.0]]),
          "negative entry at row 1, column 2: -0.5",
      ),
      (np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1.0]]), "row 1 is all zeros"),
  ]
  for matrix, message in cases:
    with pytest.raises(ValueError, match=message):
      validate_similarity(matrix, 3)
  with pytest.raises(TypeError, match="concrete"):
    jax.jit(validate_similarity)(good)


def test_docstring_examples():
  failures, tried = doctest.testmod(losses)
  assert tried >= 3 and failures == 0


def test_import_without_tensorflow():
  code = (
      "import sys, simsoft, simsoft.losses; "
      "bad = [m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules]; "
      "assert not bad, bad"
  )
  subprocess.run([sys.executable, "-c", code], check=True)


def test_core_modules_import_without_tensorflow():
  code = (
      "import sys, simsoft.losses, simsoft.similarity, simsoft.models, simsoft.train_step, "
      "simsoft.input_pipeline, simsoft.corruptions, simsoft.metrics, simsoft.augment; "
      "bad = [m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules]; "
      "assert not bad, bad"
  )
  subprocess.run([sys.executable, "-c", code], check=True)


# --- The mass form: (1 - m) onehot + m Q, Q = S off its diagonal, rows normalized.


def _mass_targets_numpy(labels, s, m):
  s = np.asarray(s, np.float64)
  c = s.shape[0]
  off = s * (1 - np.eye(c))
  q = np.empty_like(off)
  for y in range(c):
    total = off[y].sum()
    q[y] = off[y] / total if total > 0 else (1 - np.eye(c)[y]) / (c - 1)
  return (1 - m) * np.eye(c)[labels] + m * q[labels]


def test_mass_targets_match_numpy_and_hand_values():
  s = np.array([[5.0, 3.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 4.0]], np.float32)
  labels = np.array([0, 1, 2, 0])
  got = similarity_targets(jnp.asarray(labels), jnp.asarray(s), mass=0.2)
  np.testing.assert_allclose(
      got, _mass_targets_numpy(labels, s, 0.2), atol=1e-6
  )
  # By hand: row 0 gives 0.2 * (3/4, 1/4); row 1 all to class 0; row 2 (no off-diagonal
  # mass) uniform over the other two classes.
  np.testing.assert_allclose(
      got[:3], [[0.8, 0.15, 0.05], [0.2, 0.8, 0.0], [0.1, 0.1, 0.8]], atol=1e-6
  )


def test_mass_form_gives_every_class_the_same_off_target_mass():
  rng = np.random.default_rng(0)
  s = rng.uniform(0.0, 1.0, (6, 6)).astype(np.float32) + 5 * np.eye(
      6, dtype=np.float32
  )
  for m in (0.0, 0.1, 0.45, 1.0):
    t = np.asarray(similarity_target_matrix(jnp.asarray(s), mass=m))
    np.testing.assert_allclose(1 - np.diag(t), m, atol=1e-6)
    np.testing.assert_allclose(t.sum(axis=1), 1.0, atol=1e-6)
  # The alpha form's off-target mass depends on the diagonal: alpha * (1 - R_yy).
  t = np.asarray(similarity_target_matrix(jnp.asarray(s), alpha=0.5))
  r = s / s.sum(axis=1, keepdims=True)
  np.testing.assert_allclose(1 - np.diag(t), 0.5 * (1 - np.diag(r)), atol=1e-6)


def test_mass_label_smoothing_and_cross_entropy_equivalences():
  logits = jnp.asarray(
      np.random.default_rng(1).normal(size=(5, 4)), jnp.float32
  )
  labels = jnp.array([0, 3, 1, 2, 2])
  ones, eye = jnp.ones((4, 4)), jnp.eye(4)
  m = 0.3
  # Label smoothing over the other C - 1 classes = optax.smooth_labels with eps = m C / (C - 1).
  smooth = optax.smooth_labels(jax.nn.one_hot(labels, 4), m * 4 / 3)
  expect = optax.softmax_cross_entropy(logits, smooth)
  np.testing.assert_allclose(
      similarity_cross_entropy(logits, labels, ones, mass=m), expect, rtol=1e-5
  )
  np.testing.assert_allclose(
      similarity_cross_entropy(logits, labels, eye, mass=m), expect, rtol=1e-5
  )
  np.testing.assert_allclose(
      similarity_cross_entropy(logits, labels, ones, mass=0.0),
      optax.softmax_cross_entropy_with_integer_labels(logits, labels),
      rtol=1e-5,
  )


def test_log_sum_with_mass_weights_matches_numpy():
  from simsoft.train_step import make_loss_fn

  rng = np.random.default_rng(2)
  s = rng.uniform(0.0, 1.0, (4, 4)).astype(np.float32)
  logits = rng.normal(size=(6, 4)).astype(np.float32)
  labels = np.array([0, 1, 2, 3, 0, 1])
  w = _mass_targets_numpy(np.arange(4), s, 0.1)
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  expect = -np.log(np.sum(w[labels] * p, axis=1))
  got = make_loss_fn("log_sum", mass=0.1)(
      jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(s)
  )
  np.testing.assert_allclose(got, expect, rtol=1e-5)
  soft = make_loss_fn("soft_target", mass=0.1)(
      jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(s)
  )
  np.testing.assert_allclose(
      soft, -np.sum(w[labels] * np.log(p), axis=1), rtol=1e-5
  )


def test_mass_is_traceable_and_checked_when_concrete():
  s = jnp.array([[2.0, 1.0], [1.0, 3.0]])
  f = jax.jit(lambda m: similarity_target_matrix(s, mass=m))
  np.testing.assert_allclose(f(0.25), [[0.75, 0.25], [0.25, 0.75]], atol=1e-6)
  for bad in (-0.1, 1.5, float("nan")):
    with pytest.raises(
        ValueError, match="`mass` must be a finite scalar in \\[0, 1\\]"
    ):
      similarity_target_matrix(s, mass=bad)
  with pytest.raises(ValueError, match="not both"):
    similarity_targets(jnp.array([0]), s, alpha=0.1, mass=0.1)
