"""Seeds, splits and matrices reach where they should, checked by value (issue 25).

A second round of test_wiring.py: a run with a seed other than 0 whose batch
order, initial parameters and shuffle permutation are recomputed here from
the documented primitives (numpy's default_rng([seed, epoch]) permutation,
nnx.Rngs(seed), the seeded derangement by rejection), model B's start and
learning-rate schedule when its epochs differ from A's, the shuffled online
source's per-epoch S, the S the report draws, and the split and sample count
of every source family (data, features, kernel, per-epoch).
"""

import json
import os
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from flax import nnx

from simsoft import input_pipeline
from simsoft import loop
from simsoft import models as models_lib
from simsoft import report as report_lib
from simsoft import train
from tests import test_wiring as ref

C = 10
SEED = 3


def _fresh_params(ds, seed, hidden=(32,)):
  """The MLP's initial parameters drawn with nnx.Rngs(seed), as a raw numpy tree."""
  model = models_lib.create_model(
      "mlp",
      num_classes=C,
      input_shape=ds.image_shape,
      rngs=nnx.Rngs(seed),
      hidden=hidden,
  )
  return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _batch(n, batch_size, seed, step):
  """Rows of training step `step` (0-based): default_rng([seed, epoch]).permutation(n)[b*B:(b+1)*B]."""
  steps = n // batch_size
  epoch, b = divmod(step, steps)
  perm = np.random.default_rng([seed, epoch]).permutation(n)
  return perm[b * batch_size : (b + 1) * batch_size]


def _derangement(num_classes, seed):
  """default_rng(seed).permutation(C) drawn until no class stays in place."""
  rng = np.random.default_rng(seed)
  while True:
    perm = rng.permutation(num_classes)
    if np.all(perm != np.arange(num_classes)):
      return perm


def _lr(cfg, t, warmup, total):
  return ref._learning_rates(cfg, t + 1, warmup, total)[t]


# ----------------------------------------------------------------------------
# One run with seed 3: online source, shuffled S, A 1 epoch, B 2 epochs
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory):
  c = ref._tiny(
      f"epochs=1,similarity=online,shuffle=True,seed={SEED}",
      train_examples=96,
  )
  c.retrain.epochs = 2  # B trains twice as long as A
  c.log_every_steps = 1
  workdir = str(tmp_path_factory.mktemp("seeded_run"))
  logged, drawn, keys = [], [], []

  class Recording(loop.Progress):

    def update(self, step, scalars):
      logged.append((self.phase, step, dict(scalars)))
      super().update(step, scalars)

  plot = report_lib.plot_similarity

  def recording_plot(path, similarity, class_names=None):
    drawn.append(np.array(similarity, np.float64))
    return plot(path, similarity, class_names)

  make_input = input_pipeline.make_input

  def recording_input(*args, **kwargs):
    feeder = make_input(*args, **kwargs)
    step = feeder.run

    def run(state, key, num_steps):
      keys.append(np.asarray(jax.random.key_data(key)))
      return step(state, key, num_steps)

    feeder.run = run
    return feeder

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(loop, "Progress", Recording)
    mp.setattr(report_lib, "plot_similarity", recording_plot)
    mp.setattr(input_pipeline, "make_input", recording_input)
    train.train_and_evaluate(c, workdir)
  ds = ref._digits(c)
  split = ds.split("train")
  return SimpleNamespace(
      config=c,
      workdir=workdir,
      ds=ds,
      split=split,
      steps=len(split) // c.batch_size,  # 3 per epoch
      logged={(p, s): v for p, s, v in logged},
      drawn=drawn,
      keys=keys,
  )


def _params_before(run, phase, step):
  """The parameters step `step` (1-based) started from: the fresh seeded init at step 1."""
  if step == 1:
    return _fresh_params(run.ds, run.config.seed)
  return ref._restore(run.workdir, phase, step - 1)["params"]


def _logits(run, params, idx):
  return ref._mlp_logits(params, run.split.images[idx], run.ds.mean, run.ds.std)


def _s_before(run, phase, step):
  """The S step `step` (1-based) trained with: I for A; for B its state's S (S^0 at step 1)."""
  if phase == "estimate":
    return np.eye(C)
  if step == 1:
    eps = run.config.similarity.online.initial_smoothing
    return (1 - eps) * np.eye(C) + eps / C  # permutation-invariant
  return ref._restore(run.workdir, phase, step - 1)["similarity"]


def _step_loss(run, phase, step, params, rows):
  alpha = 0.0 if phase == "estimate" else run.config.loss.alpha
  return ref._soft_target_loss(
      _logits(run, params, rows),
      run.split.labels[rows],
      _s_before(run, phase, step),
      alpha,
  )[0].mean()


def test_seed_reaches_batch_order_and_initial_parameters(seeded_run):
  """Every logged loss of A and B is the loss of the parameters it started from on
  the batch default_rng([3, epoch]) picks; step 1 starts from nnx.Rngs(3)'s init.
  """
  run = seeded_run
  c, n = run.config, len(run.split)
  assert c.seed == SEED != 0
  for phase, steps in (("estimate", run.steps), ("retrain", 2 * run.steps)):
    for t in range(1, steps + 1):
      idx = _batch(n, c.batch_size, SEED, t - 1)
      params = _params_before(run, phase, t)
      expected = _step_loss(run, phase, t, params, idx)
      assert run.logged[(phase, t)]["loss"] == pytest.approx(
          expected, rel=1e-5
      ), (phase, t)
      # The check can tell: seed 0's batch of this step gives another loss.
      other = _batch(n, c.batch_size, 0, t - 1)
      assert abs(_step_loss(run, phase, t, params, other) - expected) > 1e-4
  # ... and so does seed 0's initial model at step 1.
  idx = _batch(n, c.batch_size, SEED, 0)
  seed0 = _step_loss(run, "estimate", 1, _fresh_params(run.ds, 0), idx)
  assert abs(seed0 - run.logged[("estimate", 1)]["loss"]) > 1e-4


def test_step_key_is_the_runs_seed(seeded_run):
  """Every dispatch of A and B gets jax.random.key(3) (the step folds its number in),
  not key(0): with augmentation on, seed 0's crops would be drawn otherwise."""
  run = seeded_run
  assert len(run.keys) == 3 * run.steps  # A's 3 steps, B's 6, one per dispatch
  want = np.asarray(jax.random.key_data(jax.random.key(SEED)))
  assert not np.array_equal(want, jax.random.key_data(jax.random.key(0)))
  for key in run.keys:
    np.testing.assert_array_equal(key, want)


def test_model_b_starts_from_a_fresh_seeded_init_not_from_a(seeded_run):
  """B's step-1 loss is that of nnx.Rngs(seed)'s fresh parameters, not of A's final ones."""
  run = seeded_run
  c = run.config
  idx = _batch(len(run.split), c.batch_size, SEED, 0)
  eps = c.similarity.online.initial_smoothing
  s0 = (1 - eps) * np.eye(C) + eps / C
  loss = lambda params: ref._soft_target_loss(
      _logits(run, params, idx), run.split.labels[idx], s0, c.loss.alpha
  )[0].mean()
  logged = run.logged[("retrain", 1)]["loss"]
  fresh = loss(_fresh_params(run.ds, SEED))
  a_final = loss(ref._restore(run.workdir, "estimate")["params"])
  assert logged == pytest.approx(fresh, rel=1e-5)
  assert abs(a_final - fresh) > 1e-3  # the check can tell


def _trace(opt_state):
  """The SGD momentum trace's params tree inside a raw-restored optax chain state."""
  found = []

  def walk(node):
    if isinstance(node, dict):
      if "trace" in node:
        found.append(node["trace"])
      for v in node.values():
        walk(v)
    elif isinstance(node, (list, tuple)):
      for v in node:
        walk(v)

  walk(opt_state)
  assert len(found) == 1, f"no unique momentum trace in {opt_state!r:.200}"
  return found[0]


def _leaf(tree, *path):
  node = tree
  for p in path:
    node = node[p]
  return np.asarray(node["value"] if isinstance(node, dict) else node)


def test_model_b_learning_rate_is_sized_by_its_own_epochs(seeded_run):
  """B trains 2 epochs, A 1: the learning rate logged and applied at B's last step
  is warmup + cosine over B's 6 steps (lr/4 at step 5), not A's 3 (0 by then).
  """
  run = seeded_run
  cfg = run.config.optimizer
  total_b = run.config.retrain.epochs * run.steps
  total_a = run.config.estimate.epochs * run.steps
  assert total_b != total_a
  warmup = int(round(cfg.warmup_epochs * run.steps))
  last = total_b - 1  # 0-based step of B's last update
  expected = _lr(cfg, last, warmup, total_b)
  assert expected == pytest.approx(cfg.learning_rate / 4)
  assert run.logged[("retrain", total_b)]["learning_rate"] == pytest.approx(
      expected, rel=1e-6
  )
  # The rate actually applied: p_{T-1} - p_T = lr_T * trace_T (SGD with momentum).
  before = ref._restore(run.workdir, "retrain", total_b - 1)
  after = ref._restore(run.workdir, "retrain", total_b)
  step = _leaf(before["params"], "head", "kernel") - _leaf(
      after["params"], "head", "kernel"
  )
  trace = _leaf(_trace(after["opt_state"]), "head", "kernel")
  big = np.abs(trace) > 1e-3 * np.abs(trace).max()
  np.testing.assert_allclose(step[big] / trace[big], expected, rtol=1e-3)


def test_shuffled_online_s_is_permuted_by_the_runs_derangement(seeded_run):
  """Under shuffle=True each epoch's S is the correct-only class-mean softmax with
  classes permuted by default_rng(3)'s derangement (not seed 0's, not unpermuted).
  """
  run = seeded_run
  c = run.config
  perm = _derangement(C, SEED)
  assert not np.array_equal(perm, _derangement(C, 0))
  target = json.loads(
      open(os.path.join(run.workdir, "retrain", "target.json")).read()
  )
  assert target["shuffle_permutation"] == perm.tolist()
  eps = c.similarity.online.initial_smoothing
  previous = (1 - eps) * np.eye(C) + eps / C  # unpermuted S of the last epoch
  n = len(run.split)
  for epoch in range(2):
    logits, labels = [], []
    for t in range(epoch * run.steps + 1, (epoch + 1) * run.steps + 1):
      idx = _batch(n, c.batch_size, SEED, t - 1)
      logits.append(_logits(run, _params_before(run, "retrain", t), idx))
      labels.append(run.split.labels[idx])
    unpermuted = ref._class_mean_softmax(
        np.concatenate(logits),
        np.concatenate(labels),
        correct_only=True,
        fallback=previous,
    )
    expected = unpermuted[np.ix_(perm, perm)]
    assert np.abs(expected - unpermuted).max() > 1e-3  # the check can tell
    saved = ref._restore(run.workdir, "retrain", (epoch + 1) * run.steps)
    np.testing.assert_allclose(
        saved["similarity"],
        expected,
        rtol=1e-4,
        atol=1e-6,
        err_msg=f"S after epoch {epoch + 1}",
    )
    previous = unpermuted


def test_online_statistics_count_the_epochs_training_batches(seeded_run):
  """Per-epoch source: mid-epoch statistics count exactly the training rows seen so
  far in this epoch (per class), and the correct ones among them."""
  run = seeded_run
  c, n = run.config, len(run.split)
  for t in (1, 2, run.steps + 1):  # restarts at each epoch
    epoch_start = (t - 1) // run.steps * run.steps
    rows = np.concatenate(
        [_batch(n, c.batch_size, SEED, u) for u in range(epoch_start, t)]
    )
    stats = ref._restore(run.workdir, "retrain", t)["epoch_stats"]
    labels = run.split.labels[rows]
    np.testing.assert_array_equal(
        np.asarray(stats["count"]), np.bincount(labels, minlength=C)
    )
    correct = np.zeros(C)
    for u in range(epoch_start, t):
      idx = _batch(n, c.batch_size, SEED, u)
      hit = (
          _logits(run, _params_before(run, "retrain", u + 1), idx).argmax(1)
          == run.split.labels[idx]
      )
      correct += np.bincount(run.split.labels[idx][hit], minlength=C)
    np.testing.assert_array_equal(np.asarray(stats["count_correct"]), correct)


def test_report_draws_model_bs_final_online_s(seeded_run):
  """The report's S is the S model B trained with last (its final online S), not A's."""
  run = seeded_run
  assert len(run.drawn) == 1
  final = np.load(os.path.join(run.workdir, "retrain", "online_similarity.npy"))
  np.testing.assert_allclose(
      ref._restore(run.workdir, "retrain")["similarity"], final, rtol=1e-6
  )
  np.testing.assert_allclose(run.drawn[0], final, rtol=1e-6)
  for other in (
      ref._restore(run.workdir, "estimate")["similarity"],  # A's
      np.load(os.path.join(run.workdir, "estimate", "similarity.npy")),
  ):
    assert np.abs(np.asarray(other) - final).max() > 1e-3  # the check can tell


def test_rebuilt_report_draws_the_same_s(seeded_run, tmp_path, monkeypatch):
  """`python -m simsoft.report WORKDIR` draws the S the run's own report drew:
  B's final online S (here shuffled), not estimate/similarity.npy's S^0."""
  drawn = []
  monkeypatch.setattr(
      report_lib,
      "plot_similarity",
      lambda path, similarity, class_names=None: drawn.append(
          np.array(similarity, np.float64)
      )
      or path,
  )
  assert report_lib.main([seeded_run.workdir, "--out", str(tmp_path)]) == 0
  assert len(drawn) == 1
  np.testing.assert_allclose(drawn[0], seeded_run.drawn[0], rtol=1e-6)


# ----------------------------------------------------------------------------
# Split and sample count of each source family, from one model A
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sources_run(tmp_path_factory):
  """Model A (3 steps) with the centroid source, then confusion and weights from the same A."""
  root = tmp_path_factory.mktemp("sources")
  out = {}
  for source in ("centroid", "confusion", "weights"):
    c = ref._tiny(f"epochs=1,phases=estimate,similarity={source}", 96)
    if source != "centroid":
      c.estimate.model_from = str(root / "centroid")
    train.train_and_evaluate(c, str(root / source))
    out[source] = str(root / source)
  ds = ref._digits(c)
  return SimpleNamespace(
      workdirs=out,
      ds=ds,
      params=ref._restore(out["centroid"], "estimate")["params"],
      config=c,
  )


def _saved(workdir):
  s = np.load(os.path.join(workdir, "estimate", "similarity.npy"))
  doc = json.loads(
      open(os.path.join(workdir, "estimate", "similarity.json")).read()
  )
  return s.astype(np.float64), doc["metadata"]["num_samples"]


def _rownorm(a):
  return a / a.sum(1, keepdims=True)


def _cosine_softmax(vectors, temperature):
  unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
  return _rownorm(np.exp((unit @ unit.T - 1.0) / temperature))


def _hidden(params, images, ds):
  v = lambda node: np.asarray(node["value"] if isinstance(node, dict) else node)
  x = ref._flat(images, ds.mean, ds.std)
  for _, layer in sorted(params["layers"].items()):
    x = np.maximum(x @ v(layer["kernel"]) + v(layer["bias"]), 0.0)
  return x


def _centroid_s(params, split, ds, temperature):
  h = _hidden(params, split.images, ds)
  means = np.stack([h[split.labels == y].mean(0) for y in range(C)])
  return _cosine_softmax(means - means.mean(0), temperature)


def test_feature_source_uses_the_validation_split(sources_run):
  """centroid: S from A's penultimate features on the validation split, N = its size."""
  run = sources_run
  s, num_samples = _saved(run.workdirs["centroid"])
  val, train_split = run.ds.split("validation"), run.ds.split("train")
  assert num_samples == len(val) != len(train_split)
  t = 0.1  # the documented default temperature (simsoft.similarity.sources)
  expected = _centroid_s(run.params, val, run.ds, t)
  assert (
      np.abs(expected - _centroid_s(run.params, train_split, run.ds, t)).max()
      > 1e-3
  )  # the splits tell apart
  np.testing.assert_allclose(s, expected, rtol=1e-3, atol=1e-5)


def test_data_source_uses_the_validation_split(sources_run):
  """confusion: (confusion counts of A on the validation split + 1), rows normalized."""
  run = sources_run
  s, num_samples = _saved(run.workdirs["confusion"])
  val = run.ds.split("validation")
  assert num_samples == len(val)
  pred = ref._mlp_logits(run.params, val.images, run.ds.mean, run.ds.std)
  counts = np.zeros((C, C))
  np.add.at(counts, (val.labels, pred.argmax(1)), 1.0)
  np.testing.assert_allclose(s, _rownorm(counts + 1.0), rtol=1e-5)


def test_kernel_source_uses_model_as_final_head_and_no_data(sources_run):
  """weights: cosine softmax of A's final head kernel columns; no samples counted."""
  run = sources_run
  s, num_samples = _saved(run.workdirs["weights"])
  assert num_samples == 0
  kernel = _leaf(run.params, "head", "kernel").astype(np.float64)
  t = 0.1  # the documented default temperature (simsoft.similarity.sources)
  expected = _cosine_softmax(kernel.T, t)
  init = _leaf(_fresh_params(run.ds, run.config.seed), "head", "kernel")
  assert (
      np.abs(_cosine_softmax(init.T.astype(np.float64), t) - expected).max()
      > 1e-4
  )
  np.testing.assert_allclose(s, expected, rtol=1e-4, atol=1e-6)
