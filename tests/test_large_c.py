"""Large label spaces: losses by row gather (sharded, C = 1,000) and the top-k sparse S.

References are float64 numpy: the target rows written out in full, then
-sum t log p (soft target) or -log sum t p (log-sum), and their gradients
softmax * sum(t) - t and p - t p / <t, p>.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from simsoft import losses
from simsoft import sharding
from simsoft import similarity as sim
from simsoft import train_step as step_lib
from simsoft.similarity import sparse as sparse_lib

# (name, loss keywords, form, target mode, amount)
FORMS = [
    ("soft_alpha", "soft", "alpha", 0.3),
    ("soft_mass", "soft", "mass", 0.2),
    ("soft_given", "soft", "given", 0.4),
    ("log_alpha", "log", "alpha", 0.3),
    ("log_mass", "log", "mass", 0.2),
    ("log_given", "log", "given", 1.0),
]


def _loss(form, mode, amount):
  """The simsoft loss of a (form, mode, amount) as fn(logits, labels, S)."""
  if mode == "alpha":
    kw = {"alpha": amount, "normalize": True}
  elif mode == "mass":
    kw = {"mass": amount, "normalize": True}
  else:
    kw = {"alpha": amount, "normalize": False}
  fn = (
      losses.similarity_cross_entropy
      if form == "soft"
      else losses.similarity_log_loss
  )
  return lambda z, y, s: fn(z, y, s, **kw)


def _np_targets(s, y, mode, amount):
  s = np.asarray(s, np.float64)
  c = s.shape[0]
  rows, onehot = s[y], np.eye(c)[y]
  if mode == "alpha":
    return (1 - amount) * onehot + amount * rows / rows.sum(1, keepdims=True)
  if mode == "mass":
    off = rows * (1 - onehot)
    total = off.sum(1, keepdims=True)
    q = np.where(total > 0, off / np.where(total > 0, total, 1), 0)
    q = np.where(total > 0, q, (1 - onehot) / (c - 1))
    return (1 - amount) * onehot + amount * q
  return (1 - amount) * onehot + amount * rows


def _np_loss_and_grad(z, t, form):
  """Per-example losses and the gradient of their mean w.r.t. the logits."""
  z = np.asarray(z, np.float64)
  lp = z - z.max(1, keepdims=True)
  lp = lp - np.log(np.exp(lp).sum(1, keepdims=True))
  p = np.exp(lp)
  if form == "soft":
    loss = -(t * lp).sum(1)
    grad = p * t.sum(1, keepdims=True) - t
  else:
    mass = (t * p).sum(1, keepdims=True)
    loss = -np.log(mass[:, 0])
    grad = p - t * p / mass
  return loss, grad / len(z)


def _problem(c, batch, seed=0, *, zero_off_rows=(0,)):
  """Logits, labels (every zero-off-diagonal row's class included) and a
  non-negative S with diagonal 1, some zero entries, and rows with no
  off-diagonal mass (the mass form's uniform fallback)."""
  rng = np.random.default_rng(seed)
  z = (3 * rng.normal(size=(batch, c))).astype(np.float32)
  y = rng.integers(0, c, size=batch).astype(np.int32)
  y[: len(zero_off_rows)] = zero_off_rows
  s = rng.random((c, c)).astype(np.float32) ** 4
  s[s < 0.05] = 0
  np.fill_diagonal(s, 1.0)
  for r in zero_off_rows:
    s[r] = 0
    s[r, r] = 1
  return z, y, s


def _check(fn, z, y, s, t, form, rtol=2e-5):
  want_loss, want_grad = _np_loss_and_grad(z, t, form)
  got = jax.jit(fn)(z, y, s)
  np.testing.assert_allclose(got, want_loss, rtol=rtol, atol=1e-5)
  grad = jax.jit(jax.grad(lambda z: fn(z, y, s).mean()))(z)
  np.testing.assert_allclose(grad, want_grad, rtol=1e-3, atol=2e-7)


@pytest.mark.parametrize("name,form,mode,amount", FORMS)
def test_thousand_classes_match_dense_numpy_reference(name, form, mode, amount):
  z, y, s = _problem(1000, 24)
  t = _np_targets(s, y, mode, amount)
  fn = _loss(form, mode, amount)
  _check(fn, z, y, s, t, form)
  # the top-k sparse form with k = C is the same S: the same losses
  _check(fn, z, y, sim.to_sparse(s, 1000), t, form)


@pytest.mark.parametrize("name,form,mode,amount", FORMS)
def test_sparse_loss_equals_dense_loss_of_the_kept_entries(
    name, form, mode, amount
):
  """k < C: the sparse loss is the dense loss of S with the dropped entries zeroed
  (rows renormalized over the kept entries, as the dense form normalizes)."""
  z, y, s = _problem(300, 16, seed=1, zero_off_rows=(0, 5))
  sparse = sim.to_sparse(s, 12)
  kept = sim.to_dense(sparse)
  assert (kept > 0).sum(1).max() <= 12 and not np.array_equal(kept, s)
  t = _np_targets(kept, y, mode, amount)
  _check(_loss(form, mode, amount), z, y, sparse, t, form)


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
@pytest.mark.parametrize("sparse", [False, True])
def test_gather_under_batch_sharded_mesh(axis_type, sparse):
  assert jax.device_count() == 4, "conftest sets 4 simulated devices"
  mesh = jax.make_mesh((4,), ("data",), axis_types=(axis_type,))
  batch, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  z, y, s = _problem(160, 16, seed=2)  # > ONEHOT_MAX_CLASSES: the gather
  s_in = sim.to_sparse(s, 9) if sparse else s
  dense = sim.to_dense(s_in) if sparse else s
  zs, ys = jax.device_put(z, batch), jax.device_put(y, batch)
  s_rep = jax.device_put(
      jax.tree.map(jnp.asarray, s_in) if sparse else jnp.asarray(s), replicated
  )
  for _, form, mode, amount in FORMS:
    fn = _loss(form, mode, amount)
    t = _np_targets(dense, y, mode, amount)
    want_loss, want_grad = _np_loss_and_grad(z, t, form)
    got = jax.jit(fn)(zs, ys, s_rep)
    assert got.sharding.spec[0] == "data" or axis_type == AxisType.Auto
    np.testing.assert_allclose(got, want_loss, rtol=2e-5, atol=1e-5)
    grad = jax.jit(jax.grad(lambda z, y, s, fn=fn: fn(z, y, s).mean()))(
        zs, ys, s_rep
    )
    assert grad.sharding.spec[0] == "data"
    np.testing.assert_allclose(grad, want_grad, rtol=1e-3, atol=2e-7)
  # the train step's loss function too, and plain CE for S = I
  ce = step_lib.make_loss_fn("soft_target", 0.0)
  np.testing.assert_allclose(
      jax.jit(ce)(zs, ys, s_rep),
      optax.softmax_cross_entropy_with_integer_labels(z, y),
      rtol=1e-5,
  )


@pytest.mark.parametrize("c", [50, 200])  # one-hot product, gather
def test_rows_are_float32_exact_and_out_of_range_labels_are_masked(c):
  z, y, s = _problem(c, 8, seed=3)
  s = s + np.float32(1e-7)  # digits a bf16 pass would lose
  mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Explicit,))
  ys = jax.device_put(y, NamedSharding(mesh, P("data")))
  rows = jax.jit(losses._rows_of)(
      ys, jax.device_put(s, NamedSharding(mesh, P()))
  )
  np.testing.assert_array_equal(rows, s[y])  # a gather copies: bit-exact
  got = losses.similarity_targets(y, s, alpha=1.0)
  np.testing.assert_allclose(got, s[y] / s[y].sum(1, keepdims=True), rtol=1e-6)
  bad = y.copy()
  bad[1], bad[2] = -1, c
  for fn in (
      losses.similarity_cross_entropy,
      losses.similarity_log_loss,
  ):
    for sim_ in (s, sim.to_sparse(s, 5)):
      out = jax.jit(fn)(z, bad, sim_)  # traced labels: NaN, never a value
      assert np.isnan(out[1]) and np.isnan(out[2])
      assert np.all(np.isfinite(np.delete(np.asarray(out), [1, 2])))
      grad = jax.jit(
          jax.grad(
              lambda z, y, fn=fn, s=sim_: jnp.sum(
                  jnp.where(jnp.isfinite(fn(z, y, s)), fn(z, y, s), 0)
              )
          )
      )(z, bad)
      grad = np.asarray(grad)
      assert np.all(np.isfinite(grad)) and not np.any(grad[[1, 2]])
  w = jax.jit(losses.weighted_cross_entropy)(z, bad, s)  # NaN too (issue 24)
  assert np.isnan(w[1]) and np.isnan(w[2])
  assert np.all(np.isfinite(np.delete(np.asarray(w), [1, 2])))


@pytest.mark.parametrize("name,form,mode,amount", FORMS)
def test_small_c_one_hot_path_equals_the_gather_path(
    name, form, mode, amount, monkeypatch
):
  """Up to ONEHOT_MAX_CLASSES classes the rows are read as before issue 23 (a
  one-hot product, bit for bit the earlier runs); the gather gives the same."""
  z, y, s = _problem(10, 32, seed=8)
  fn = jax.jit(_loss(form, mode, amount))
  grad = jax.jit(jax.grad(lambda z, y, s, fn=fn: fn(z, y, s).mean()))
  assert losses.ONEHOT_MAX_CLASSES >= 10
  small, small_grad = fn(z, y, s), grad(z, y, s)
  monkeypatch.setattr(losses, "ONEHOT_MAX_CLASSES", 0)
  fn = jax.jit(_loss(form, mode, amount))
  grad = jax.jit(jax.grad(lambda z, y, s, fn=fn: fn(z, y, s).mean()))
  np.testing.assert_allclose(fn(z, y, s), small, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(grad(z, y, s), small_grad, rtol=1e-5, atol=1e-8)
  t = _np_targets(s, y, mode, amount)
  _check(fn, z, y, s, t, form)


@pytest.mark.parametrize("c", [4, 200])  # one-hot product, gather
def test_huge_logits_stay_exact_with_dense_and_sparse_s(c):
  """The weighted classes' probabilities underflow: the log-sum form shifts by
  their largest logit (-log p_2 = 1e4, -log(p_0 + p_3 / 2) = 1e4 - log 1.5
  here), and the gradient stays finite."""
  z = np.zeros((2, c), np.float32)
  z[0, 0], z[0, 3], z[1, 1] = 1e4, -1e4, 1e4
  y = np.array([2, 0], np.int32)
  s = np.eye(c, dtype=np.float32)
  s[0, 3] = 0.5
  for sim_ in (s, sim.to_sparse(s, 2)):
    loss = losses.similarity_log_loss(z, y, sim_)
    np.testing.assert_allclose(loss, [1e4, 1e4 - np.log(1.5)], rtol=1e-7)
    grad = jax.grad(
        lambda z, s=sim_: losses.similarity_log_loss(z, y, s).sum()
    )(z)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad[0, :4], [1, 0, -1, 0], atol=1e-6)


def test_sparse_targets_and_second_order_gradients():
  z, y, s = _problem(40, 6, seed=4, zero_off_rows=(0,))
  sparse = sim.to_sparse(s, 40)
  for kw in ({"alpha": 0.5}, {"mass": 0.3}):
    np.testing.assert_allclose(
        losses.similarity_targets(y, sparse, **kw),
        losses.similarity_targets(y, s, **kw),
        atol=1e-7,
    )
  with jax.enable_x64(True):
    from jax.test_util import check_grads

    z64 = z[:3].astype(np.float64) / 3
    for mode in ({"alpha": 0.5, "normalize": True}, {"alpha": 0.7}):
      check_grads(
          lambda x: losses.similarity_log_loss(
              x, y[:3], s.astype(np.float64), **mode
          ),
          (z64,),
          order=2,
          modes=("rev",),
          atol=1e-5,
          rtol=1e-5,
      )


# ------------------------------------------------------------- sparse S


def test_to_sparse_keeps_diagonal_and_top_entries():
  s = np.array(
      [
          [0.1, 0.5, 0.5, 0.2, 0.0],
          [0.3, 0.0, 0.0, 0.0, 0.0],
          [1.0, 2.0, 3.0, 4.0, 5.0],
          [0.0, 0.0, 0.0, 1.0, 0.0],
          [9.0, 1.0, 1.0, 1.0, 1.0],
      ],
      np.float32,
  )
  sp = sim.to_sparse(s, 3)
  # diagonal first (even when it is small or zero), then the largest others,
  # ties towards the lower column
  np.testing.assert_array_equal(
      sp.indices,
      [[0, 1, 2], [1, 0, 2], [2, 4, 3], [3, 0, 1], [4, 0, 1]],
  )
  np.testing.assert_array_equal(sp.values, np.take_along_axis(s, sp.indices, 1))
  assert sp.indices.dtype == np.int32 and sp.values.dtype == np.float32
  np.testing.assert_array_equal(sim.to_dense(sim.to_sparse(s, 5)), s)
  assert sim.to_sparse(s, 99).k == 5  # k > C keeps every entry
  np.testing.assert_allclose(
      sim.kept_mass(s, sp), [1.1 / 1.3, 1.0, 12 / 15, 1.0, 11 / 13], rtol=1e-6
  )
  np.testing.assert_allclose(
      sparse_lib.kept_off_diagonal_mass(s, sp),
      [1.0 / 1.2, 1.0, 9 / 12, 1.0, 10 / 12],
      rtol=1e-6,
  )


def test_validate_sparse_rules():
  good = sim.to_sparse(np.eye(4, dtype=np.float32) + 0.1, 2)
  sim.validate_sparse(good, 4)
  cases = [
      (good.indices[:, ::-1], "diagonal first"),
      (np.where(good.indices == 0, 7, good.indices), "outside"),
      (np.stack([np.arange(4)] * 2, 1), "repeats a column"),
  ]
  for indices, match in cases:
    with pytest.raises(ValueError, match=match):
      sim.validate_sparse(sim.SparseSimilarity(indices, good.values))
  with pytest.raises(ValueError, match="negative"):
    sim.validate_sparse(sim.SparseSimilarity(good.indices, -good.values))
  with pytest.raises(ValueError, match="all zeros"):
    sim.validate_sparse(sim.SparseSimilarity(good.indices, 0 * good.values))
  with pytest.raises(ValueError, match="3 classes"):
    sim.validate_sparse(good, 3)
  with pytest.raises(ValueError, match="sparse `similarity`"):
    losses.similarity_cross_entropy(
        np.zeros((2, 5), np.float32), np.array([0, 1]), good
    )
  with pytest.raises(TypeError, match="dense"):
    losses.similarity_target_matrix(good)


def test_truncate_and_permute_match_the_dense_operations():
  rng = np.random.default_rng(5)
  s = rng.random((30, 30)).astype(np.float32)
  np.testing.assert_array_equal(
      sim.truncate(sim.to_sparse(s, 20), 6).indices, sim.to_sparse(s, 6).indices
  )
  perm = sim.derangement(30, seed=0)
  sp = sim.to_sparse(s, 30)
  np.testing.assert_array_equal(
      sim.to_dense(sim.permute_sparse(sp, perm)), sim.permute_classes(s, perm)
  )


def test_sparse_memory_at_imagenet_21k_is_under_20_mb():
  c, k = 21843, 64
  sp = sim.SparseSimilarity(
      indices=np.zeros((c, k), np.int32), values=np.zeros((c, k), np.float32)
  )
  assert sp.nbytes == 8 * c * k < 20e6


def test_sparse_record_save_load_and_file_round_trip(tmp_path):
  z, y, s = _problem(200, 8, seed=6)
  sp = sim.to_sparse(s, 16)
  record = sim.make_record(sp, source="confusion", dataset="synthetic")
  assert record.sparse and record.num_classes == 200
  path = sim.save_record(tmp_path / "ckpt", record)
  back = sim.load_record(path)
  assert back.sparse and back.metadata == record.metadata
  np.testing.assert_array_equal(back.similarity.indices, sp.indices)
  np.testing.assert_array_equal(back.similarity.values, sp.values)
  npz, _ = sim.export_plain(record, tmp_path / "plain")
  assert npz.endswith("similarity.npz")
  read, _ = sim.read_similarity_file(npz, num_classes=200)
  np.testing.assert_array_equal(read.indices, sp.indices)
  from_file = sim.build_similarity(
      "file", num_classes=200, path=npz, options={}
  )
  fn = _loss("soft", "alpha", 0.5)
  np.testing.assert_array_equal(fn(z, y, from_file), fn(z, y, sp))
  with pytest.raises(ValueError, match="post-processing"):
    sim.build_similarity(
        "file", num_classes=200, path=npz, options={"symmetrize": True}
    )
  bad = tmp_path / "bad.npz"
  np.savez(bad, indices=sp.indices)
  with pytest.raises(ValueError, match="'values'"):
    sim.read_similarity_file(bad)


def test_synthetic_thousand_classes_estimate_save_load_retrain(tmp_path):
  """Estimate S from a synthetic 1,000-class held-out pass (sharded over 4
  devices), keep its top-64, save and load it, then train a linear model with
  the sparse loss: the loss equals the dense loss of the kept entries and falls.
  """
  c, d, k = 1000, 32, 64
  rng = np.random.default_rng(7)
  protos = rng.normal(size=(c, d)).astype(np.float32)
  groups = np.repeat(rng.normal(size=(c // 10, d)), 10, axis=0)
  protos = (0.6 * protos + groups).astype(np.float32)  # superclasses of 10

  def sample(n, seed):
    r = np.random.default_rng(seed)
    labels = r.integers(0, c, size=n).astype(np.int32)
    x = protos[labels] + 0.8 * r.normal(size=(n, d)).astype(np.float32)
    return x, labels

  mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Explicit,))
  batch = NamedSharding(mesh, P("data"))
  kernel = protos.T  # model A: nearest prototype by dot product
  update = jax.jit(sim.update_stats)
  stats = sim.init_stats(c)
  for i in range(5):
    x, labels = sample(4096, i)
    stats = update(
        stats,
        jax.device_put(x @ kernel, batch),
        jax.device_put(labels, batch),
    )
  assert float(stats.count.sum()) == 5 * 4096
  dense = sim.build_similarity("softmax", num_classes=c, stats=stats)
  sparse = sim.to_sparse(dense, k)
  kept = sim.kept_mass(dense, sparse)
  assert kept.mean() > 0.5  # the superclass structure is in the top-64
  path = sim.save_record(
      tmp_path / "s", sim.make_record(sparse, source="softmax")
  )
  loaded = sim.load_record(path).similarity
  loss_fn = step_lib.make_loss_fn("soft_target", mass=0.1)
  mesh = sharding.make_mesh()  # the pipeline's mesh for training
  batch = NamedSharding(mesh, P("data"))
  dense_kept = jnp.asarray(sim.to_dense(loaded))
  s_dev = jax.device_put(
      jax.tree.map(jnp.asarray, loaded), NamedSharding(mesh, P())
  )

  @jax.jit
  def step(w, x, y):
    loss, g = jax.value_and_grad(lambda w: loss_fn(x @ w, y, s_dev).mean())(w)
    return w - 2.0 * g, loss

  w = jnp.zeros((d, c), jnp.float32)
  x, labels = sample(512, 99)
  xs, ys = jax.device_put(x, batch), jax.device_put(labels, batch)
  np.testing.assert_allclose(
      loss_fn(x @ w + 0.1 * (x @ kernel), labels, loaded),
      loss_fn(x @ w + 0.1 * (x @ kernel), labels, dense_kept),
      rtol=1e-5,
  )
  first = None
  for _ in range(20):
    w, loss = step(w, xs, ys)
    first = float(loss) if first is None else first
  assert float(loss) < 0.8 * first


@pytest.mark.parametrize(
    "c", [10, 150]
)  # Q recorded in full, row statistics only
def test_target_record_statistics_of_a_sparse_s_match_the_dense(c):
  from simsoft import target

  rng = np.random.default_rng(9)
  s = (rng.random((c, c)) ** 3).astype(np.float32)
  s[2] = 0
  s[2, 2] = 1  # no off-diagonal mass: Q's row is uniform
  s[3, 5] = s[3, 7] = s[3].max() + 1  # a tie: the lower column
  dense = target.off_target_structure(s)
  sparse = target.off_target_structure(sim.to_sparse(s, c))
  assert set(dense) == set(sparse)
  for key, value in dense.items():
    np.testing.assert_allclose(sparse[key], value, atol=1e-6, err_msg=key)
  for amount in ({"alpha": 0.5}, {"mass": 0.2}):
    for as_given in (False, True):
      if as_given and "mass" in amount:
        continue
      np.testing.assert_allclose(
          target.off_target_mass(sim.to_sparse(s, c), amount, as_given),
          target.off_target_mass(s, amount, as_given),
          rtol=1e-5,
      )


def _online_retrain(workdir, shard_rows, devices):
  """Model B with the online source (S updated in the state every epoch) on
  digits, S's rows split over `devices` or replicated; its final state."""
  from simsoft import phases, train
  from simsoft.run import Run
  from tests.helpers.tiny import tiny_config

  config = tiny_config("epochs=2,phases=retrain,similarity=online")
  config.similarity.shard_rows = shard_rows
  train.train_and_evaluate(config, str(workdir), devices=devices)
  run = Run(
      config=config,
      workdir=str(workdir),
      mesh=sharding.make_mesh(devices),
      dataset=train.load_dataset(config),
  )
  return phases.restore_final(run, "retrain")[1]


def test_similarity_rows_sharded_over_the_mesh_train_the_same_model(tmp_path):
  """similarity.shard_rows: each of 2 devices holds 5 of S's 10 rows, through
  the train step, the online per-epoch update and the checkpoint, and model B
  (its parameters and its final S) equals the one trained with S replicated."""
  devices = jax.devices()[:2]
  got = _online_retrain(tmp_path / "rows", True, devices)
  want = _online_retrain(tmp_path / "whole", False, devices)
  s = got["similarity"]
  assert s.sharding.spec == P("data")
  assert [x.data.shape for x in s.addressable_shards] == [(5, 10), (5, 10)]
  assert want["similarity"].sharding.spec == P()
  np.testing.assert_allclose(
      np.asarray(s), np.asarray(want["similarity"]), rtol=1e-6, atol=1e-7
  )
  assert not np.allclose(np.asarray(s), np.eye(10))  # updated from predictions
  for a, b in zip(
      jax.tree.leaves(got["params"]), jax.tree.leaves(want["params"])
  ):
    np.testing.assert_allclose(
        np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6
    )


def test_sharded_rows_need_a_class_count_the_devices_divide():
  from simsoft import data as data_lib
  from simsoft import validate
  from tests.helpers.tiny import tiny_config

  config = tiny_config()
  config.similarity.shard_rows = True
  ds = data_lib.get_dataset("digits")
  validate.check_against_data(config, ds, 2)  # 10 rows over 2: fine
  with pytest.raises(
      ValueError,
      match=r"config.similarity.shard_rows=True.*" r"10 rows over 4 devices",
  ):
    validate.check_against_data(config, ds, 4)


@pytest.mark.parametrize("form", ["soft_target", "log_sum"])
def test_a_row_sharded_s_is_never_gathered_whole(form):
  """The compiled loss and gradient with S split by rows over 4 devices: no
  collective builds the whole [C, C] S on a device (only the labels and the
  [B, C] rows move), and the values equal the replicated-S loss."""
  c, b = 256, 32  # above 128 classes: the gather path
  mesh = sharding.make_mesh()
  z, y, s = _problem(c, b)
  loss_fn = step_lib.make_loss_fn(form, mass=0.2)
  fn = jax.jit(jax.value_and_grad(lambda z, y, s: loss_fn(z, y, s).mean()))
  batch = NamedSharding(mesh, P("data"))
  args = (jax.device_put(z, batch), jax.device_put(y, batch))
  split = jax.device_put(s, NamedSharding(mesh, P("data")))
  hlo = fn.lower(*args, split).compile().as_text()
  collectives = [
      line.split("=", 1)[1].strip()
      for line in hlo.splitlines()
      if "=" in line
      and any(
          op in line for op in ("all-gather(", "all-reduce(", "all-to-all(")
      )
  ]
  assert collectives  # the partitioned gather's own collectives, at least
  assert not [x for x in collectives if x.startswith(f"f32[{c},{c}]")]
  want = fn(*args, jax.device_put(s, NamedSharding(mesh, P())))
  got = fn(*args, split)
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-7)
