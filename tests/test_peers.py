"""The peers' methods from simsoft: SimLoss, Online Label Smoothing, Making Better Mistakes.

Every reference here is either computed by hand or a numpy transcription of the
peer's published code (named at each test); each peer config builds its loss
and runs through the pipeline.
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from simsoft import losses
from simsoft import target
from simsoft import similarity as sim
from simsoft import train
from simsoft import train_step as step_lib
from simsoft.similarity import hierarchy as hierarchy_lib
from tests.helpers.tiny import ROOT, load_config

RNG = np.random.default_rng(16)
FASHION_TREE = os.path.join(
    ROOT, "configs", "peers", "fashion_mnist_hierarchy.json"
)
DIGITS_TREE = os.path.join(ROOT, "configs", "peers", "digits_hierarchy.json")

# A 3-level tree: r -> A -> a1 -> {0, 1}; r -> A -> a2 -> {2}; r -> B -> b1 -> {3}.
PARENTS = {
    "A": "r",
    "B": "r",
    "a1": "A",
    "a2": "A",
    "b1": "B",
    "0": "a1",
    "1": "a1",
    "2": "a2",
    "3": "b1",
}


def _tree():
  return hierarchy_lib.from_parents(PARENTS, ["0", "1", "2", "3"])


def _log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


# ----------------------------------------------------------------------------
# Making Better Mistakes: hierarchy, LCA heights, soft labels, HXE
# ----------------------------------------------------------------------------


def test_lca_heights_and_soft_labels_hand_computed():
  d = _tree().lca_height()
  np.testing.assert_array_equal(
      d, [[0, 1, 2, 3], [1, 0, 2, 3], [2, 2, 0, 3], [3, 3, 3, 0]]
  )
  beta = 4.0
  row0 = np.exp(-beta * np.array([0, 1, 2, 3]) / 3)
  soft = hierarchy_lib.mbm_soft_labels(d, beta)
  np.testing.assert_allclose(soft[0], row0 / row0.sum(), rtol=1e-12)
  # The peer (labels.py, make_all_soft_labels) normalizes over axis 0 of D'[i, j] =
  # d(classes[j], classes[i]) and reads column y.
  peer = np.exp(-beta * d.T / d.max())
  peer = peer / peer.sum(axis=0)
  np.testing.assert_allclose(soft, peer.T, rtol=1e-12)


def test_hierarchy_source_is_mbm_soft_labels(tmp_path):
  d = sim.read_distances(FASHION_TREE, num_classes=10)
  assert (
      d[0, 2] == 1 and d[0, 1] == 2 and d[0, 5] == 3 and d[5, 7] == 1
  )  # tops, clothing, root
  s = sim.build_similarity(
      "hierarchy", num_classes=10, path=FASHION_TREE, options={"beta": 15.0}
  )
  np.testing.assert_allclose(
      s, hierarchy_lib.mbm_soft_labels(d, 15.0), rtol=1e-6
  )
  matrix = tmp_path / "d.csv"
  np.savetxt(
      matrix, d, delimiter=","
  )  # a plain distance matrix gives the same S
  np.testing.assert_allclose(
      sim.build_similarity(
          "hierarchy", num_classes=10, path=str(matrix), options={"beta": 15.0}
      ),
      s,
      rtol=1e-6,
  )


def test_hierarchy_files_json_csv_and_errors(tmp_path):
  csv_file = tmp_path / "t.csv"
  csv_file.write_text(
      "node,parent\n" + "".join(f"{k},{v}\n" for k, v in PARENTS.items())
  )
  from_csv = sim.read_hierarchy(str(csv_file), num_classes=4)
  np.testing.assert_array_equal(from_csv.lca_height(), _tree().lca_height())
  np.testing.assert_array_equal(
      sim.read_hierarchy(DIGITS_TREE, num_classes=10).lca_height()[0],
      [0, 2, 2, 2, 2, 2, 1, 2, 1, 1],
  )
  bad = {
      "cycle": ({"x": "y", "y": "x", "0": "x"}, r"cycle"),
      "leaf": ({**PARENTS, "z": "B"}, r"leaves \['z'\] are not classes"),
      "inner": ({**PARENTS, "x": "3"}, r"must be leaves.*'3'"),
  }
  for name, (parents, match) in bad.items():
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"parents": parents}))
    with pytest.raises(ValueError, match=match):
      sim.read_hierarchy(str(path), num_classes=4)
  with pytest.raises(
      ValueError, match=r"classes \['4'\] are not in the hierarchy"
  ):
    sim.read_hierarchy(str(csv_file), num_classes=5)
  with pytest.raises(ValueError, match="10 classes, the dataset 4"):
    sim.read_hierarchy(DIGITS_TREE, num_classes=4)


def _peer_hxe(tree, logits, labels, alpha):
  """numpy transcription of making-better-mistakes' HierarchicalLLLoss on softmax
  (losses.py) with get_exponential_weighting(normalize=True) (trees.py)."""
  depth = tree.depth()
  weight = np.exp(-alpha * depth) / np.exp(-alpha * depth).sum()
  under = np.zeros((len(tree.names), tree.num_classes))
  for y, leaf in enumerate(tree.class_nodes):
    under[[int(leaf)] + tree.path(int(leaf))[1:] + [0], y] = 1
  p = np.exp(_log_softmax(logits))
  out = []
  for i, y in enumerate(labels):
    path = tree.path(int(tree.class_nodes[y]))  # edges from the leaf up
    total = 0.0
    for j, node in enumerate(path):
      num = p[i] @ under[node]
      den = p[i] @ under[path[j + 1]] if j + 1 < len(path) else p[i].sum()
      if num != 0:
        total += weight[node] * -np.log(num / den)
    out.append(total)
  return np.array(out)


def test_hxe_hand_computed_on_a_three_level_tree():
  leaves, k = hierarchy_lib.hxe_arrays(_tree(), math.log(2.0), normalize=False)
  # lambda(depth) = 2^-depth; uniform p = 1/4: P(a1) = 1/2, P(A) = 3/4, P(B) = P(b1) = 1/4.
  want = [
      np.log(2) / 8
      + np.log(1.5) / 4
      + np.log(4 / 3) / 2,  # 0: 0 -> a1 -> A -> r
      np.log(3) / 4 + np.log(4 / 3) / 2,  # 2: a2 holds only 2
      np.log(4) / 2,
  ]  # 3: only B's edge counts
  hxe = jax.jit(losses.hierarchical_cross_entropy)
  got = hxe(jnp.zeros((3, 4)), jnp.array([0, 2, 3]), leaves, k)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # normalize: divided by the sum over all 10 nodes, 1 + 2/2 + 3/4 + 4/8 = 3.25.
  leaves, k = hierarchy_lib.hxe_arrays(_tree(), math.log(2.0))
  np.testing.assert_allclose(
      hxe(jnp.zeros((3, 4)), jnp.array([0, 2, 3]), leaves, k),
      np.array(want) / 3.25,
      rtol=1e-6,
  )
  # alpha = 0 without normalizing is plain cross-entropy.
  logits, labels = RNG.normal(size=(6, 4)).astype(np.float32), np.array(
      [0, 1, 2, 3, 0, 2]
  )
  leaves, k = hierarchy_lib.hxe_arrays(_tree(), 0.0, normalize=False)
  np.testing.assert_allclose(
      hxe(logits, labels, leaves, k),
      optax.softmax_cross_entropy_with_integer_labels(logits, labels),
      rtol=1e-5,
  )


@pytest.mark.parametrize("alpha", [0.1, 0.6])
def test_hxe_matches_the_peers_algorithm(alpha):
  tree = sim.read_hierarchy(FASHION_TREE, num_classes=10)
  logits = (RNG.normal(size=(32, 10)) * 3).astype(np.float32)
  labels = RNG.integers(0, 10, size=32)
  leaves, k = hierarchy_lib.hxe_arrays(tree, alpha)
  got = losses.hierarchical_cross_entropy(logits, labels, leaves, k)
  np.testing.assert_allclose(
      got, _peer_hxe(tree, logits, labels, alpha), rtol=2e-5, atol=1e-7
  )
  grads = jax.grad(
      lambda z: losses.hierarchical_cross_entropy(z, labels, leaves, k).sum()
  )(jnp.asarray(logits))
  assert np.all(np.isfinite(grads))


# ----------------------------------------------------------------------------
# SimLoss: the log-sum form on S as given, its two matrices
# ----------------------------------------------------------------------------


def test_ordinal_and_embedding_sources_hand_computed(tmp_path):
  s = sim.build_similarity(
      "ordinal", num_classes=4, options={"ratio": 0.5, "normalize": False}
  )
  np.testing.assert_allclose(s[1], [0.5, 1, 0.5, 0.25])
  emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])  # cosines: 0.8, 0, 0.6
  path = tmp_path / "e.npy"
  np.save(path, emb)
  s = sim.build_similarity(
      "embedding",
      num_classes=3,
      path=str(path),
      options={"lower_bound": 0.5, "normalize": False},
  )
  # (cos - 0.5) / 0.5, negatives to 0 (SimLoss image_classification/simloss/run.py).
  np.testing.assert_allclose(
      s, [[1, 0.6, 0], [0.6, 1, 0.2], [0, 0.2, 1]], atol=1e-6
  )


def test_as_given_loss_forms_match_the_peers():
  logits = RNG.normal(size=(16, 10)).astype(np.float32)
  labels = RNG.integers(0, 10, size=16)
  s = RNG.uniform(size=(10, 10)).astype(np.float32)
  p = np.exp(_log_softmax(logits))
  # SimLoss (loss.py): mean(-log(sum(w * x) + 1e-8)) on softmax outputs x.
  simloss = step_lib.make_loss_fn("log_sum", 1.0, as_given=True)
  np.testing.assert_allclose(
      simloss(logits, labels, s),
      -np.log((s[labels] * p).sum(1) + 1e-8),
      rtol=1e-5,
  )
  # OLS (train_cifar_all_methods.py): 0.5 * CE + 0.5 * sum(-log_softmax * S[y]).
  ols = step_lib.make_loss_fn("soft_target", 0.5, as_given=True)
  ce = -_log_softmax(logits)[np.arange(16), labels]
  np.testing.assert_allclose(
      ols(logits, labels, s),
      0.5 * ce + 0.5 * (-_log_softmax(logits) * s[labels]).sum(1),
      rtol=1e-5,
  )
  np.testing.assert_allclose(
      ols(logits, labels, np.zeros((10, 10), np.float32)), 0.5 * ce, rtol=1e-6
  )  # the peer's first epoch
  with pytest.raises(ValueError, match="as_given"):
    step_lib.make_loss_fn("soft_target", mass=0.1, as_given=True)
  with pytest.raises(ValueError, match="hierarchy"):
    step_lib.make_loss_fn("hxe")


# ----------------------------------------------------------------------------
# Online Label Smoothing: fallback, freeze, post-processing of every update
# ----------------------------------------------------------------------------


def _peer_ols_update(prev, logits, labels, freeze=None):
  """numpy transcription of the peer's epoch-end update (cifar/scripts/
  train_cifar_all_methods.py, fine-grained/solver.py with `freeze`)."""
  c = prev.shape[0]
  p = np.exp(_log_softmax(logits))
  lams, cnt = np.zeros((c, c)), np.zeros(c)
  for k in range(len(labels)):
    if np.argmax(p[k]) == labels[k]:
      lams[labels[k]] += p[k]
      cnt[labels[k]] += 1
  new = prev.astype(np.float64).copy()
  for cls in range(c):
    if cnt[cls] < 0.5:
      new[cls] = 1.0 / c
    elif freeze is not None and new[cls].max() >= freeze:
      continue
    else:
      new[cls] = lams[cls] / cnt[cls]
  return new


def test_online_update_follows_the_peers_rules():
  c = 5
  logits = (RNG.normal(size=(80, c)) * 2).astype(np.float32)
  labels = RNG.integers(0, c, size=80).astype(np.int32)
  logits[labels == 4, 4] = -20.0  # class 4 is never right: the uniform row
  stats = sim.update_stats(sim.init_stats(c), logits, labels)
  prev = RNG.dirichlet(np.ones(c), size=c).astype(np.float32)
  prev[1] = [
      0.9,
      0.025,
      0.025,
      0.025,
      0.025,
  ]  # max >= 0.88: frozen in the fine-grained rule
  update = jax.jit(
      sim.online_update, static_argnames=("fallback", "freeze_threshold")
  )
  got = update(prev, stats, fallback="uniform")
  np.testing.assert_allclose(
      got, _peer_ols_update(prev, logits, labels), rtol=1e-5, atol=1e-7
  )
  np.testing.assert_allclose(got[4], 0.2)
  frozen = update(prev, stats, fallback="uniform", freeze_threshold=0.88)
  np.testing.assert_allclose(
      frozen,
      _peer_ols_update(prev, logits, labels, freeze=0.88),
      rtol=1e-5,
      atol=1e-7,
  )
  np.testing.assert_array_equal(frozen[1], prev[1])
  np.testing.assert_array_equal(
      update(prev, stats)[4], prev[4]
  )  # simsoft's 'keep'

  # Every renewed row gets the same post-processing as the initial S.
  options = {
      "temperature": 0.5,
      "top_k": 3,
      "identity_mix": 0.2,
      "diagonal": "remove",
  }
  post = sim.online_update(prev, stats, fallback="uniform", postprocess=options)
  raw = _peer_ols_update(prev, logits, labels)
  np.testing.assert_allclose(
      post, sim.postprocess(raw, options), rtol=1e-5, atol=1e-6
  )
  with pytest.raises(ValueError, match="fallback"):
    sim.online_update(prev, stats, fallback="previous")


def test_step_schedule_is_the_peers():
  """adjust_learning_rate: lr * 0.1 ** (e // (E/2)) * 0.1 ** (e // (3E/4)) for epoch e of E."""
  cfg = load_config("", "peers/ols").optimizer
  cfg.momentum, cfg.nesterov = 0.0, False  # plain SGD: the update is -lr * grad
  tx = step_lib.make_optimizer(cfg, steps_per_epoch=3, total_steps=30)  # E = 10
  params = {"w": jnp.ones(())}
  state = tx.init(params)
  rates = []
  for _ in range(30):
    updates, state = tx.update({"w": jnp.ones(())}, state, params)
    rates.append(-float(updates["w"]))
  want = [
      0.1 * 0.1 ** (e // 5) * 0.1 ** (e // 7.5)
      for e in range(10)
      for _ in range(3)
  ]
  np.testing.assert_allclose(rates, want, rtol=1e-6)


# ----------------------------------------------------------------------------
# One config per peer: its loss against a hand-computed reference, then a run
# ----------------------------------------------------------------------------


def _config_loss(config, num_classes):
  """(loss_fn, S at the start of retraining) as the pipeline builds them."""
  source = config.similarity.source
  options = target.similarity_options(config, source)
  if sim.source_spec(source).per_epoch:
    s = sim.initial_similarity(source, num_classes=num_classes, options=options)
  else:
    s = sim.build_similarity(
        source,
        num_classes=num_classes,
        path=target.source_path(config, source),
        options=options,
    )
  fn = step_lib.make_loss_fn(
      config.loss.form, **target.loss_options(config, num_classes)
  )
  return fn, s


def test_simloss_config_loss():
  fn, s = _config_loss(load_config("", "peers/simloss"), 10)
  logits, labels = RNG.normal(size=(8, 10)).astype(np.float32), np.arange(8)
  w = 0.5 ** np.abs(
      np.arange(10)[:, None] - np.arange(10)[None, :]
  )  # r^|i-j|, as given
  p = np.exp(_log_softmax(logits))
  np.testing.assert_allclose(
      fn(logits, labels, s), -np.log((w[labels] * p).sum(1)), rtol=1e-5
  )


def test_ols_config_loss():
  config = load_config("", "peers/ols")
  fn, s = _config_loss(config, 10)
  logits, labels = RNG.normal(size=(8, 10)).astype(np.float32), np.arange(8)
  np.testing.assert_array_equal(s, 0.0)  # first epoch: 0.5 x cross-entropy
  np.testing.assert_allclose(
      fn(logits, labels, s),
      -0.5 * _log_softmax(logits)[np.arange(8), labels],
      rtol=1e-6,
  )
  online = target.similarity_options_that_ran(config, "online")
  assert sim.online_update_options(online)["fallback"] == "uniform"
  fine = load_config("variant=fine_grained", "peers/ols")
  _, s0 = _config_loss(fine, 10)
  np.testing.assert_allclose(s0, 0.1)  # the fine-grained S^0 = 1/C
  assert fine.similarity.online.freeze_threshold == 0.88


@pytest.mark.parametrize("method", ["soft_labels", "hxe"])
def test_mbm_config_loss(method):
  config = load_config(f"method={method}", "peers/mbm")
  fn, s = _config_loss(config, 10)
  logits, labels = RNG.normal(size=(8, 10)).astype(np.float32), np.arange(8)
  d = sim.read_distances(FASHION_TREE)
  if method == "soft_labels":  # cross-entropy against softmax(-10 d(y, .) / 3)
    t = np.exp(-10.0 * d / 3.0)
    t = t / t.sum(1, keepdims=True)
    want = -(t[labels] * _log_softmax(logits)).sum(1)
  else:
    want = _peer_hxe(sim.read_hierarchy(FASHION_TREE), logits, labels, 0.1)
  np.testing.assert_allclose(fn(logits, labels, s), want, rtol=1e-5)


def _shrunk(name, arg, phases=("estimate", "retrain", "evaluate")):
  """A quick digits run of a peer config: 1 epoch per phase, a (16,) MLP, 320 images."""
  c = load_config(
      f"epochs=1,dataset=digits,{arg}" if arg else "epochs=1,dataset=digits",
      name,
  )
  c.model.name, c.model.mlp.hidden = "mlp", (16,)
  c.evaluate.evaluators = {"clean": {"type": "clean"}}
  c.dataset.train_examples = 320
  c.batch_size = 64
  c.checkpoint.every_steps = c.log_every_steps = 50
  c.phases = phases
  return c


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def _target(workdir):
  with open(os.path.join(workdir, "retrain", "target.json")) as f:
    return json.load(f)


def test_simloss_and_ols_configs_run(tmp_path):
  """Both train through estimate and retrain (evaluate is the same code as for mbm below)."""
  train.train_and_evaluate(
      _shrunk("peers/simloss", "", ("estimate", "retrain")),
      str(tmp_path / "simloss"),
  )
  target = _target(str(tmp_path / "simloss"))
  assert target["as_given"] and target["form"] == "log_sum"
  s = np.load(tmp_path / "simloss" / "estimate" / "similarity.npy")
  np.testing.assert_allclose(s[0, :3], [1, 0.5, 0.25])

  train.train_and_evaluate(
      _shrunk("peers/ols", "", ("estimate", "retrain")), str(tmp_path / "ols")
  )
  assert (
      _target(str(tmp_path / "ols"))["mean_off_target_mass"] == 0.0
  )  # the zero first epoch
  s = np.load(tmp_path / "ols" / "retrain" / "online_similarity.npy")
  np.testing.assert_allclose(
      s.sum(1), 1.0, rtol=1e-5
  )  # class means or 1/C rows
  assert np.all(s > 0)


@pytest.mark.parametrize("arg", ["method=soft_labels", "method=hxe"])
def test_mbm_config_runs_and_reports_lca_mistakes(tmp_path, arg):
  config = _shrunk("peers/mbm", arg)
  train.train_and_evaluate(config, str(tmp_path))
  results = _results(str(tmp_path))
  d = sim.read_distances(config.hierarchy_path, num_classes=10)
  for key in ("A", "B"):
    clean = results["models"][key]["clean"]
    assert 0 < clean["mistake_distance"] <= d.max()
    assert clean["mistake_severity"] == pytest.approx(
        clean["mistake_distance"] / d.max()
    )
  assert results["target"]["form"] == ("hxe" if "hxe" in arg else "soft_target")


def test_readme_table_names_every_peer_config():
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  table = text[text.index("## Methods and their configs") :]
  table = table[: table.index("\n## ")]
  for peer, config in [
      ("SimLoss", "simloss"),
      ("Online Label Smoothing", "ols"),
      ("Making Better Mistakes", "mbm"),
      ("HXE", "mbm.py:method=hxe"),
      ("Negi et al.", "default.py"),
  ]:
    row = next(line for line in table.splitlines() if peer in line)
    assert (
        f"configs/{'peers/' if 'default' not in config else ''}{config}" in row
    )
  for name in ("simloss", "ols", "mbm"):
    assert os.path.isfile(os.path.join(ROOT, "configs", "peers", f"{name}.py"))
