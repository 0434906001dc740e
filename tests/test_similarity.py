"""Tests for simsoft.similarity: statistics, sources, post-processing, online updates, I/O."""

import json
import os

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import numpy as np
import optax
import pytest

from simsoft import similarity as sim

C, D = 5, 3
RNG = np.random.default_rng(0)


def _batch(n, c=C, d=D, seed=0):
  r = np.random.default_rng(seed)
  logits = r.normal(size=(n, c)).astype(np.float32) * 2
  labels = r.integers(0, c, size=n).astype(np.int32)
  feats = r.normal(size=(n, d)).astype(np.float32)
  return logits, labels, feats


def _np_stats(logits, labels, feats=None, mask=None):
  """Reference: one sample at a time, in float64."""
  n, c = logits.shape
  d = 0 if feats is None else feats.shape[1]
  mask = np.ones(n) if mask is None else mask
  out = {
      k: np.zeros(s)
      for k, s in [
          ("confusion", (c, c)),
          ("prob_sum", (c, c)),
          ("prob_sum_correct", (c, c)),
          ("count", c),
          ("count_correct", c),
          ("feature_sum", (c, d)),
      ]
  }
  for i in range(n):
    if not mask[i]:
      continue
    z = logits[i].astype(np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    y, k = labels[i], int(np.argmax(z))
    out["confusion"][y, k] += 1
    out["prob_sum"][y] += p
    out["count"][y] += 1
    if k == y:
      out["prob_sum_correct"][y] += p
      out["count_correct"][y] += 1
    if d:
      out["feature_sum"][y] += feats[i]
  return out


def _assert_stats(stats, ref, rtol=1e-5, atol=1e-5):
  for k, v in ref.items():
    np.testing.assert_allclose(
        np.asarray(getattr(stats, k)), v, rtol=rtol, atol=atol, err_msg=k
    )


def _accumulate(logits, labels, feats, batch_size, mask=None, d=D):
  update = jax.jit(sim.update_stats)
  stats = sim.init_stats(logits.shape[1], d)
  for s in range(0, len(labels), batch_size):
    sl = slice(s, s + batch_size)
    stats = update(
        stats,
        logits[sl],
        labels[sl],
        None if feats is None else feats[sl],
        None if mask is None else mask[sl],
    )
  return stats


def _assert_valid(s, c, rows_sum_to_one=True):
  assert s.shape == (c, c) and s.dtype == np.float32
  assert np.all(np.isfinite(s)) and np.all(s >= 0)
  if rows_sum_to_one:
    np.testing.assert_allclose(s.sum(axis=1), 1.0, atol=1e-5)


def _all_sources(stats, kernel, path, paths=None):
  """Every source; `paths` gives some sources their own file (else `path`)."""
  paths = paths or {}
  return {
      name: sim.build_similarity(
          name,
          num_classes=stats.num_classes,
          stats=stats,
          classifier_kernel=kernel,
          path=paths.get(name, path),
      )
      for name in sim.SOURCES
  }


# ------------------------------------------------------------------ statistics


def test_update_matches_numpy_reference_with_mask():
  logits, labels, feats = _batch(37)
  mask = (RNG.random(37) > 0.3).astype(np.float32)
  stats = jax.jit(sim.update_stats)(
      sim.init_stats(C, D), logits, labels, feats, mask
  )
  _assert_stats(stats, _np_stats(logits, labels, feats, mask))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(stats))


def test_perfect_classifier_gives_identity_confusion():
  labels = np.array([0, 1, 2, 3, 4, 0, 2, 2], np.int32)
  logits = np.eye(C, dtype=np.float32)[labels] * 10
  stats = sim.update_stats(sim.init_stats(C), logits, labels)
  np.testing.assert_array_equal(stats.confusion, np.diag([2, 1, 3, 1, 1]))
  s = sim.build_similarity(
      "confusion", num_classes=C, stats=stats, options={"smoothing": 0.0}
  )
  np.testing.assert_array_equal(s, np.eye(C))
  # Smoothing 1: row y = (n_y e_y + 1) / (n_y + C); class 2 has n = 3.
  s1 = sim.build_similarity("confusion", num_classes=C, stats=stats)
  np.testing.assert_allclose(s1[2], np.array([1, 1, 4, 1, 1]) / 8, rtol=1e-6)


def test_two_indistinguishable_classes_share_mass_equally():
  # Classes 0 and 1 look the same to the model: it predicts each half the time,
  # and its probabilities do not depend on which of the two is true.
  labels = np.array([0, 0, 1, 1, 2, 2], np.int32)
  logits = np.array(
      [
          [3, 2.9, 0],
          [2.9, 3, 0],
          [3, 2.9, 0],
          [2.9, 3, 0],
          [0, 0, 4],
          [0, 0, 4],
      ],
      np.float32,
  )
  stats = sim.update_stats(sim.init_stats(3), logits, labels)
  conf = sim.build_similarity(
      "confusion", num_classes=3, stats=stats, options={"smoothing": 0.0}
  )
  np.testing.assert_allclose(
      conf[:2], [[0.5, 0.5, 0], [0.5, 0.5, 0]], atol=1e-7
  )
  soft = sim.build_similarity("softmax", num_classes=3, stats=stats)
  np.testing.assert_allclose(soft[0, 0], soft[0, 1], rtol=1e-6)
  np.testing.assert_allclose(soft[0], soft[1], rtol=1e-6)


def test_identical_centroids_get_equal_similarity():
  labels = np.array([0, 0, 1, 1, 2], np.int32)
  feats = np.array(
      [[1, 0], [1, 0], [2, 0], [3, 0], [0, 1]], np.float32
  )  # 0 and 1 same direction
  stats = sim.update_stats(
      sim.init_stats(3, 2), np.zeros((5, 3), np.float32), labels, feats
  )
  s = sim.build_similarity(
      "centroid",
      num_classes=3,
      stats=stats,
      options={"temperature": 0.5, "center": False},
  )
  e = np.exp(-1 / 0.5)  # cos = 0 -> exp((0 - 1) / T)
  np.testing.assert_allclose(s[0], np.array([1, 1, e]) / (2 + e), rtol=1e-6)
  np.testing.assert_allclose(s[1], s[0], rtol=1e-6)
  np.testing.assert_allclose(s[2], np.array([e, e, 1]) / (1 + 2 * e), rtol=1e-6)


def test_centred_centroids_separate_same_orthant_classes():
  # Centroids (1, 0), (0.9, 0.1), (0, 1): raw cosine calls 0 and 2 fairly alike
  # (all features >= 0); centred, 0 and 1 stay alike and 2 is opposite.
  labels = np.array([0, 1, 2], np.int32)
  feats = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], np.float32)
  stats = sim.update_stats(
      sim.init_stats(3, 2), np.zeros((3, 3), np.float32), labels, feats
  )
  s = sim.build_similarity(
      "centroid",
      num_classes=3,
      stats=stats,
      options={"temperature": 1.0, "normalize": False},
  )
  centred = feats - feats.mean(0)
  unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
  np.testing.assert_allclose(s, np.exp(unit @ unit.T - 1.0), rtol=1e-5)
  assert s[0, 1] > 0.9 and s[0, 2] < np.exp(-1.5)


def test_batch_size_and_order_do_not_matter():
  logits, labels, feats = _batch(96, seed=1)
  a = _accumulate(logits, labels, feats, 96)
  b = _accumulate(logits, labels, feats, 13)
  perm = RNG.permutation(96)
  c = _accumulate(logits[perm], labels[perm], feats[perm], 32)
  for other in (b, c):
    jax.tree.map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5),
        a,
        other,
    )
    for name in ("confusion", "softmax", "centroid", "online"):
      np.testing.assert_allclose(
          sim.build_similarity(name, num_classes=C, stats=a),
          sim.build_similarity(name, num_classes=C, stats=other),
          rtol=1e-5,
          atol=1e-6,
      )


def test_masked_padding_is_ignored_even_if_not_finite():
  logits, labels, feats = _batch(20, seed=2)
  pad = 12
  logits_p = np.concatenate([logits, np.full((pad, C), np.nan, np.float32)])
  labels_p = np.concatenate([labels, np.zeros(pad, np.int32)])
  feats_p = np.concatenate([feats, np.full((pad, D), np.inf, np.float32)])
  mask = np.concatenate([np.ones(20, bool), np.zeros(pad, bool)])
  padded = _accumulate(logits_p, labels_p, feats_p, 16, mask=mask)
  _assert_stats(padded, _np_stats(logits, labels, feats))


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
def test_four_sharded_devices_match_one(axis_type):
  assert jax.device_count() >= 4, "tests/conftest.py should simulate 4 devices"
  logits, labels, feats = _batch(64, seed=3)
  mask = (np.arange(64) < 58).astype(np.float32)
  single = _accumulate(logits, labels, feats, 32, mask=mask)

  mesh = jax.make_mesh((4,), ("data",), axis_types=(axis_type,))
  shard = lambda x: jax.device_put(x, NamedSharding(mesh, P("data")))
  update = jax.jit(sim.update_stats)
  stats = sim.init_stats(C, D)
  for s in range(0, 64, 32):
    sl = slice(s, s + 32)
    stats = update(
        stats,
        shard(logits[sl]),
        shard(labels[sl]),
        shard(feats[sl]),
        shard(mask[sl]),
    )
  assert stats.confusion.sharding.is_fully_replicated
  jax.tree.map(
      lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6),
      single,
      stats,
  )
  _assert_stats(stats, _np_stats(logits, labels, feats, mask))
  kernel = RNG.normal(size=(D, C))
  for name in ("confusion", "softmax", "centroid", "online", "weights"):
    np.testing.assert_allclose(
        sim.build_similarity(
            name, num_classes=C, stats=single, classifier_kernel=kernel
        ),
        sim.build_similarity(
            name, num_classes=C, stats=stats, classifier_kernel=kernel
        ),
        rtol=1e-6,
        atol=1e-7,
    )


def test_update_rejects_bad_shapes():
  st = sim.init_stats(C, D)
  logits, labels, feats = _batch(4)
  with pytest.raises(ValueError, match="logits"):
    sim.update_stats(st, logits[:, :3], labels, feats)
  with pytest.raises(ValueError, match="labels"):
    sim.update_stats(st, logits, labels[:3], feats)
  with pytest.raises(TypeError, match="labels"):
    sim.update_stats(st, logits, labels.astype(np.float32), feats)
  with pytest.raises(ValueError, match="features"):
    sim.update_stats(st, logits, labels)
  with pytest.raises(ValueError, match="features"):
    sim.update_stats(sim.init_stats(C), logits, labels, feats)
  with pytest.raises(ValueError, match="mask"):
    sim.update_stats(st, logits, labels, feats, np.ones(3))
  with pytest.raises(ValueError, match="num_classes"):
    sim.init_stats(0)
  with pytest.raises(ValueError, match="merge"):
    sim.merge_stats(st, sim.init_stats(C))


def test_merge_stats_sums():
  logits, labels, feats = _batch(30, seed=4)
  a = sim.update_stats(
      sim.init_stats(C, D), logits[:10], labels[:10], feats[:10]
  )
  b = sim.update_stats(
      sim.init_stats(C, D), logits[10:], labels[10:], feats[10:]
  )
  _assert_stats(sim.merge_stats(a, b), _np_stats(logits, labels, feats))


# ------------------------------------------------------------------ sources


@pytest.fixture(scope="module")
def random_stats():
  logits, labels, feats = _batch(200, seed=5)
  return _accumulate(logits, labels, feats, 200)


@pytest.fixture
def good_file(tmp_path):
  path = tmp_path / "s.csv"
  np.savetxt(path, RNG.random((C, C)) + 0.1, delimiter=",")
  return str(path)


@pytest.mark.parametrize("name", sorted(sim.SOURCES))
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"symmetrize": True, "diagonal": "remove"},
        {"top_k": 2, "identity_mix": 0.3, "temperature": 0.5},
    ],
)
def test_every_source_gives_valid_rows(name, options, random_stats, good_file):
  s = sim.build_similarity(
      name,
      num_classes=C,
      stats=random_stats,
      classifier_kernel=RNG.normal(size=(7, C)),
      path=good_file,
      options=options,
  )
  _assert_valid(s, C)
  if options.get("diagonal") == "remove":
    np.testing.assert_array_equal(np.diag(s), 0.0)
  if options.get("top_k"):
    mix = options["identity_mix"]
    assert np.all(
        ((s - mix * np.eye(C)) > 1e-7).sum(axis=1) <= options["top_k"]
    )


def test_fixed_sources_values():
  np.testing.assert_array_equal(
      sim.build_similarity("identity", num_classes=4), np.eye(4)
  )
  np.testing.assert_allclose(
      sim.build_similarity("uniform", num_classes=4), 0.25
  )
  off = sim.build_similarity(
      "uniform", num_classes=4, options={"diagonal": "remove"}
  )
  np.testing.assert_allclose(off, (1 - np.eye(4)) / 3, rtol=1e-6)
  # No diagonal and no evidence: uniform over the other classes.
  np.testing.assert_allclose(
      sim.build_similarity(
          "identity", num_classes=4, options={"diagonal": "remove"}
      ),
      off,
  )
  s0 = sim.build_similarity("online", num_classes=4)
  np.testing.assert_allclose(s0, 0.9 * np.eye(4) + 0.1 / 4, rtol=1e-6)


def test_weights_source_cosine_softmax():
  kernel = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])  # columns: e1, 2 e1, e2
  s = sim.build_similarity(
      "weights",
      num_classes=3,
      classifier_kernel=kernel,
      options={"temperature": 1.0},
  )
  # Row softmax of cos / T: cos rows [1, 1, 0], [1, 1, 0], [0, 0, 1].
  ref = np.exp(np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]]))
  np.testing.assert_allclose(s, ref / ref.sum(1, keepdims=True), rtol=1e-6)
  with pytest.raises(ValueError, match="classifier_kernel"):
    sim.build_similarity("weights", num_classes=4, classifier_kernel=kernel)


def test_softmax_correct_only_and_empty_class():
  labels = np.array([0, 0, 1], np.int32)
  logits = np.array(
      [[2, 0, 0], [0, 2, 0], [0, 1, 0]], np.float32
  )  # one class-0 miss; no class 2
  stats = sim.update_stats(sim.init_stats(3), logits, labels)
  p = lambda z: np.exp(z) / np.exp(z).sum()
  s_all = sim.build_similarity("softmax", num_classes=3, stats=stats)
  np.testing.assert_allclose(
      s_all[0], (p(logits[0]) + p(logits[1])) / 2, rtol=1e-6
  )
  np.testing.assert_array_equal(s_all[2], [0, 0, 1])  # no samples: one-hot row
  s_ok = sim.build_similarity(
      "softmax", num_classes=3, stats=stats, options={"correct_only": True}
  )
  np.testing.assert_allclose(s_ok[0], p(logits[0]), rtol=1e-6)


def test_postprocess_hand_computed():
  a = np.array([[4.0, 1.0, 1.0], [2.0, 2.0, 0.0], [0.0, 1.0, 3.0]])
  np.testing.assert_allclose(
      sim.postprocess(a, {"temperature": 0.5}),
      (a**2) / (a**2).sum(1, keepdims=True),
      rtol=1e-6,
  )
  sym = (a + a.T) / 2
  np.testing.assert_allclose(
      sim.postprocess(a, {"symmetrize": True}),
      sym / sym.sum(1, keepdims=True),
      rtol=1e-6,
  )
  np.testing.assert_allclose(
      sim.postprocess(a, {"diagonal": "remove"})[0], [0, 0.5, 0.5]
  )
  # top_k=1 keeps the largest; the tie in row 1 goes to the lower index.
  np.testing.assert_array_equal(
      sim.postprocess(a, {"top_k": 1}), [[1, 0, 0], [1, 0, 0], [0, 0, 1]]
  )
  np.testing.assert_allclose(sim.postprocess(a, {"top_k": 2})[0], [0.8, 0.2, 0])
  np.testing.assert_allclose(
      sim.postprocess(a, {"identity_mix": 0.5})[1], [0.25, 0.75, 0]
  )
  np.testing.assert_allclose(sim.postprocess(a, {"normalize": False}), a)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"temprature": 1.0}, "temprature"),
        ({"temperature": 0.0}, "temperature"),
        ({"diagonal": "drop"}, "diagonal"),
        ({"top_k": 9}, "top_k"),
        ({"identity_mix": 1.5}, "identity_mix"),
        ({"symmetrize": "yes"}, "symmetrize"),
        ({"smoothing": -1.0}, "smoothing"),
        ({"correct_only": "no"}, "correct_only"),
        ({"initial_smoothing": 2.0}, "initial_smoothing"),
        ({"temperature": -1.0}, "temperature"),
    ],
)
def test_bad_options_raise(options, match, random_stats):
  source = {"correct_only": "online", "initial_smoothing": "online"}.get(
      next(iter(options)), "confusion"
  )
  with pytest.raises(ValueError, match=match):
    sim.build_similarity(
        source, num_classes=C, stats=random_stats, options=options
    )
  with pytest.raises(
      ValueError,
      match="temprature|temperature|smoothing|correct_only|top_k"
      "|diagonal|identity_mix|symmetrize",
  ):
    sim.build_similarity(
        "centroid", num_classes=C, stats=random_stats, options=options
    )


def test_registry_errors_and_flags(random_stats):
  with pytest.raises(
      ValueError, match=r"unknown similarity source 'nope'.*confusion"
  ):
    sim.build_similarity("nope", num_classes=C)
  for name in ("confusion", "softmax", "centroid"):
    with pytest.raises(ValueError, match="stats"):
      sim.build_similarity(name, num_classes=C)
  with pytest.raises(ValueError, match="classifier_kernel"):
    sim.build_similarity("weights", num_classes=C)
  with pytest.raises(ValueError, match="path"):
    sim.build_similarity("file", num_classes=C)
  with pytest.raises(ValueError, match="classes"):
    sim.build_similarity("confusion", num_classes=C + 1, stats=random_stats)
  with pytest.raises(ValueError, match="feature"):
    sim.build_similarity("centroid", num_classes=C, stats=sim.init_stats(C))
  assert {n for n in sim.SOURCES if sim.source_needs_data(n)} == {
      "confusion",
      "softmax",
      "centroid",
      "online",
  }
  assert {n for n in sim.SOURCES if sim.source_needs_features(n)} == {
      "centroid"
  }
  with pytest.raises(ValueError, match="known"):
    sim.source_needs_data("nope")


# ------------------------------------------------------------------ online


def test_online_update_matches_numpy_reference():
  logits, labels, _ = _batch(60, seed=6)
  labels[labels == 3] = 0  # class 3 has no samples: keeps its previous row
  logits[labels == 4, 4] = (
      -10.0
  )  # class 4 never correct: keeps its row (correct_only)
  stats = sim.update_stats(sim.init_stats(C), logits, labels)
  prev = RNG.dirichlet(np.ones(C), size=C).astype(np.float32)

  z = logits - logits.max(1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
  correct = p.argmax(1) == labels
  ref_ok, ref_all = prev.astype(np.float64), prev.astype(np.float64)
  for y in range(C):
    if np.any(correct & (labels == y)):
      ref_ok[y] = p[correct & (labels == y)].mean(0)
    if np.any(labels == y):
      ref_all[y] = p[labels == y].mean(0)
  assert not np.allclose(ref_ok[[0, 1, 2]], prev[[0, 1, 2]])
  new = jax.jit(sim.online_update)(prev, stats)
  np.testing.assert_allclose(new, ref_ok, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(new)[[3, 4]], prev[[3, 4]])
  np.testing.assert_allclose(
      sim.online_update(prev, stats, correct_only=False),
      ref_all,
      rtol=1e-5,
      atol=1e-6,
  )
  with pytest.raises(ValueError, match="similarity_prev"):
    sim.online_update(prev[:3], stats)


# ------------------------------------------------------------------ files


def _write(tmp_path, name, content):
  path = tmp_path / name
  if name.endswith(".npy"):
    np.save(path, content, allow_pickle=True)
  elif isinstance(content, str):
    path.write_text(content)
  else:
    path.write_text(json.dumps(content))
  return str(path)


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("wrong_c.npy", np.ones((4, 4)), r"4 x 4 but there are 5 classes"),
        ("not_square.csv", "1,2,3\n4,5,6\n", r"square"),
        (
            "nan.npy",
            np.where(np.eye(C) > 0, np.nan, 1.0),
            r"non-finite entry at row 0",
        ),
        (
            "negative.json",
            (np.ones((C, C)) - 2 * np.eye(C)).tolist(),
            r"negative entry",
        ),
        (
            "zero_row.csv",
            "\n".join(
                ",".join("0" if r == 2 else "1" for _ in range(C))
                for r in range(C)
            ),
            r"row 2 is all zeros",
        ),
        ("matrix.txt", "1", r"unsupported extension '.txt'"),
        (
            "pickled.npy",
            np.array([{"a": 1}], dtype=object),
            r"pickled/object data",
        ),
        ("ragged.json", [[1, 2], [1]], r"different lengths"),
        ("strings.json", {"similarity": [["a"]]}, r"not a number"),
        ("no_key.json", {"matrix": [[1]]}, r"no 'similarity' key"),
        (
            "names.json",
            {"similarity": np.eye(C).tolist(), "class_names": ["a"]},
            r"1 class_names",
        ),
        ("garbage.csv", "a,b\nc,d\n", r"cannot be read as a numeric .csv"),
        ("garbage.json", "{not json", r"cannot be read as a numeric .json"),
    ],
)
def test_bad_files_each_get_a_clear_error(tmp_path, name, content, match):
  path = _write(tmp_path, name, content)
  with pytest.raises(ValueError, match=match) as info:
    sim.build_similarity("file", num_classes=C, path=path)
  assert path in str(info.value)


def test_missing_file(tmp_path):
  path = str(tmp_path / "absent.npy")
  with pytest.raises(FileNotFoundError, match="absent.npy"):
    sim.build_similarity("file", num_classes=C, path=path)


@pytest.mark.parametrize("ext", [".npy", ".csv", ".json"])
def test_good_files_read_back(tmp_path, ext):
  m = (RNG.random((C, C)) + 0.05).astype(np.float32)
  path = str(tmp_path / f"m{ext}")
  if ext == ".npy":
    np.save(path, m)
  elif ext == ".csv":
    np.savetxt(path, m, delimiter=",", fmt="%.9g")
  else:
    with open(path, "w") as f:
      json.dump({"similarity": m.tolist(), "class_names": list("abcde")}, f)
  got, names = sim.read_similarity_file(path, num_classes=C)
  np.testing.assert_allclose(got, m, rtol=1e-6)
  assert names == (list("abcde") if ext == ".json" else None)
  s = sim.build_similarity(
      "file", num_classes=C, path=path, options={"normalize": False}
  )
  np.testing.assert_allclose(s, m, rtol=1e-6)


# ------------------------------------------------------------------ records


def test_record_orbax_round_trip_and_plain_export(tmp_path):
  s = sim.build_similarity(
      "uniform", num_classes=3, options={"identity_mix": 0.4}
  )
  rec = sim.make_record(
      s,
      source="uniform",
      dataset="digits",
      class_names=["a", "b", "c"],
      num_samples=np.int64(123),
      model_step=77,
      options={"identity_mix": np.float32(0.4), "top_k": 0},
  )
  tree = sim.to_pytree(rec)
  assert set(tree) == {"similarity", "metadata"}
  json.dumps(tree["metadata"])  # JSON-able

  path = sim.save_record(tmp_path / "ckpt", rec)
  back = sim.load_record(path)
  np.testing.assert_array_equal(back.similarity, s)
  assert back.similarity.dtype == np.float32
  assert back.metadata == rec.metadata
  assert back.metadata["options"]["identity_mix"] == pytest.approx(0.4)
  with pytest.raises(Exception):
    sim.save_record(tmp_path / "ckpt", rec)  # no silent overwrite
  sim.save_record(tmp_path / "ckpt", rec, force=True)
  with pytest.raises(FileNotFoundError):
    sim.load_record(tmp_path / "nothing")

  npy, js = sim.export_plain(back, tmp_path / "plain")
  np.testing.assert_array_equal(np.load(npy, allow_pickle=False), s)
  doc = json.loads(open(js).read())
  assert doc["metadata"]["dataset"] == "digits" and doc["class_names"] == [
      "a",
      "b",
      "c",
  ]
  got, names = sim.read_similarity_file(js, num_classes=3)
  np.testing.assert_array_equal(got, s)
  assert names == ["a", "b", "c"]
  assert sim.from_pytree(sim.to_pytree(back)).metadata == rec.metadata


def test_record_validation():
  with pytest.raises(ValueError, match="class_names"):
    sim.make_record(np.eye(2), source="identity", class_names=["a"])
  with pytest.raises(ValueError, match="non-finite"):
    sim.make_record(np.full((2, 2), np.nan), source="identity")
  with pytest.raises(ValueError, match="metadata lacks"):
    sim.from_pytree({"similarity": np.eye(2), "metadata": {"source": "x"}})


# ------------------------------------------------------------------ end to end


def test_every_source_from_a_model_trained_on_digits(tmp_path):
  """A 1-hidden-layer MLP trained ~200 steps on the real digits; every source from it."""
  from sklearn.datasets import load_digits

  x, y = load_digits(return_X_y=True)
  x = (x / 16.0).astype(np.float32)
  y = y.astype(np.int32)
  perm = np.random.default_rng(0).permutation(len(y))
  train, held = perm[:1400], perm[1400:]
  c, hidden = 10, 32

  k1, k2 = jax.random.split(jax.random.key(0))
  params = {
      "w1": jax.random.normal(k1, (64, hidden)) * 0.1,
      "b1": jnp.zeros(hidden),
      "w2": jax.random.normal(k2, (hidden, c)) * 0.1,
      "b2": jnp.zeros(c),
  }

  def forward(params, xb):
    h = jax.nn.relu(xb @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"], h

  opt = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state, xb, yb):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        forward(p, xb)[0], yb
    ).mean()
    grads = jax.grad(loss)(params)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  opt_state = opt.init(params)
  r = np.random.default_rng(1)
  for _ in range(200):
    idx = r.choice(train, 64)
    params, opt_state = step(params, opt_state, x[idx], y[idx])

  @jax.jit
  def estimate(stats, xb, yb, mb):
    logits, h = forward(params, xb)
    return sim.update_stats(stats, logits, yb, h, mb)

  stats = sim.init_stats(c, hidden)
  bs = 128
  for s in range(0, len(held), bs):  # last batch padded to a fixed shape
    idx = held[s : s + bs]
    pad = bs - len(idx)
    xb = np.concatenate([x[idx], np.zeros((pad, 64), np.float32)])
    yb = np.concatenate([y[idx], np.zeros(pad, np.int32)])
    mb = np.arange(bs) < len(idx)
    stats = estimate(stats, xb, yb, mb)

  assert float(stats.count.sum()) == len(held)
  accuracy = float(stats.count_correct.sum() / stats.count.sum())
  assert accuracy > 0.85, accuracy
  conf = np.asarray(stats.confusion)
  assert np.all(np.diag(conf) >= conf.max(axis=1))

  rec = sim.make_record(
      sim.build_similarity("confusion", num_classes=c, stats=stats),
      source="confusion",
      dataset="digits",
      num_samples=len(held),
      model_step=200,
  )
  _, json_path = sim.export_plain(rec, tmp_path)
  embeddings = tmp_path / "embeddings.npy"
  np.save(embeddings, np.asarray(params["w2"]).T)  # one row per class
  tree = os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
      "configs",
      "peers",
      "digits_hierarchy.json",
  )
  built = _all_sources(
      stats,
      params["w2"],
      json_path,
      {"hierarchy": tree, "embedding": str(embeddings)},
  )
  assert set(built) == set(sim.SOURCES)
  for name, s in built.items():
    _assert_valid(s, c)
    if name not in (
        "uniform",
    ):  # data-driven rows put most mass on the true class
      assert np.all(np.argmax(s, axis=1) == np.arange(c)), name
  np.testing.assert_allclose(built["file"], built["confusion"], rtol=1e-6)


def test_import_does_not_pull_tensorflow():
  import subprocess
  import sys

  code = "import sys, simsoft.similarity; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {
      **os.environ,
      "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
  }
  subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=root)


def test_centroid_centring_counts_only_classes_present():
  """Centring subtracts the mean of the centroids of classes with samples; an absent
  class (2 here) is neither averaged in nor given affinity (its row is e_2)."""
  labels = np.array([0, 0, 1, 3, 3], np.int32)
  feats = np.array(
      [[1.0, 0.0], [1.0, 0.2], [0.6, 1.0], [0.2, 0.4], [0.4, 0.4]], np.float32
  )
  stats = sim.update_stats(
      sim.init_stats(4, 2), np.zeros((5, 4), np.float32), labels, feats
  )
  s = sim.build_similarity(
      "centroid",
      num_classes=4,
      stats=stats,
      options={"temperature": 0.5, "center": True},
  )
  present = [0, 1, 3]
  means = np.stack([feats[labels == y].mean(0) for y in present])
  centred = means - means.mean(0)
  unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
  a = np.exp((unit @ unit.T - 1.0) / 0.5)
  expected = np.zeros((4, 4))
  expected[np.ix_(present, present)] = a / a.sum(1, keepdims=True)
  expected[2, 2] = 1.0
  np.testing.assert_allclose(s, expected, rtol=1e-5, atol=1e-7)
  # Counting the absent class as a zero centroid would centre elsewhere.
  wrong = np.concatenate([means, np.zeros((1, 2))]).mean(0)
  assert np.abs(means.mean(0) - wrong).max() > 0.1
