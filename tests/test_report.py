"""Evaluation suite -> results -> report.md and the multi-run comparison, end to end."""

import csv
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib import image as mimage

from simsoft import (
    compare,
    corruptions,
    evaluators,
    intervals,
    metrics,
    report,
    robustness,
)
from simsoft.data import fashion_mnist_local

N, C = 37, 10
SUITE = ("contrast", "gaussian_noise")
SEVERITIES = (1, 5)
GROUPS = fashion_mnist_local.CLASS_GROUPS


def _data():
  rng = np.random.default_rng(0)
  x = rng.random((N, 8, 8, 1)).astype(np.float32)
  y = rng.integers(0, C, N)
  return x, y


def _linear(seed):
  w = np.random.default_rng(seed).normal(size=(64, C)).astype(np.float32)
  fn = jax.jit(lambda im: im.reshape(im.shape[0], -1) @ jnp.asarray(w))
  return fn, w


def _suite(predict_fn, **kw):
  x, y = _data()
  args = dict(
      suite=SUITE,
      severities=SEVERITIES,
      key=jax.random.key(0),
      batch_size=8,
      num_classes=C,
      class_to_group=GROUPS,
      reference_similarity=metrics.similarity_from_groups(GROUPS),
  )
  args.update(kw)
  return evaluators.run_suite(predict_fn, x, y, **args)


@pytest.fixture(scope="module")
def results():
  x, y = _data()
  contrast_1 = np.asarray(corruptions.corrupt("contrast", x, 1, None))
  suites = {}
  for model, seed in (("A", 1), ("B", 2)):
    fn, _ = _linear(seed)
    suites[model] = _suite(fn, extra_sets={"contrast_1": (contrast_1, y)})
  return {
      "config": {"dataset": {"name": "digits"}, "seed": 0},
      "models": suites,
  }


def _assert_close(a, b, path="results"):
  """Recursive approximate equality of nested dicts/lists of floats."""
  if isinstance(a, dict):
    assert set(a) == set(b), path
    for k in a:
      _assert_close(a[k], b[k], f"{path}[{k!r}]")
  elif isinstance(a, list):
    assert len(a) == len(b), path
    for i, (u, v) in enumerate(zip(a, b)):
      _assert_close(u, v, f"{path}[{i}]")
  elif isinstance(a, str):  # correct_bits
    assert a == b, path
  else:
    assert a == pytest.approx(b, rel=1e-5, abs=1e-6), path


def _assert_png(path):
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
  img = mimage.imread(path)
  assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50


def test_run_suite_keys_and_clean_accuracy_match_numpy(results):
  x, y = _data()
  _, w = _linear(1)
  a = results["models"]["A"]
  assert set(a) == {
      "clean",
      "clean_on_corrupted_images",
      "corruptions",
      "summary",
      "extra_sets",
      "extra_summary",
  }
  assert (
      a["clean_on_corrupted_images"] == a["clean"]
  )  # every test image was corrupted
  assert set(a["corruptions"]) == set(SUITE)
  assert all(set(by) == {"1", "5"} for by in a["corruptions"].values())
  ref_acc = np.mean((x.reshape(N, -1) @ w).argmax(1) == y)
  assert a["clean"]["count"] == N  # last partial batch padded, not dropped
  assert a["clean"]["accuracy"] == pytest.approx(ref_acc)
  pred = (x.reshape(N, -1) @ w).argmax(1)
  confusion = np.zeros((C, C), int)
  np.add.at(confusion, (y, pred), 1)
  assert a["clean"]["confusion"] == confusion.tolist()
  for key in (
      "accuracy",
      "nll",
      "ece",
      "mistake_severity",
      "superclass_accuracy",
      "reliability",
  ):
    assert key in a["clean"]
  s = a["summary"]
  cells = [
      m["accuracy"] for by in a["corruptions"].values() for m in by.values()
  ]
  assert s["mean_corrupted_accuracy"] == pytest.approx(np.mean(cells))
  assert s["mce"] == pytest.approx(1 - np.mean(cells))
  assert set(s["accuracy_by_severity"]) == {"1", "5"}
  # The pre-corrupted set is reported like the on-device cell it reproduces.
  _assert_close(
      a["extra_sets"]["contrast"]["1"], a["corruptions"]["contrast"]["1"]
  )
  json.dumps(results, allow_nan=False)


def test_run_suite_drop_remainder_sharded_and_errors():
  fn, _ = _linear(1)
  dropped = _suite(fn, suite=(), mask_padding=False)
  assert dropped["clean"]["count"] == 32 and "summary" not in dropped
  mesh = jax.make_mesh((4,), ("data",), (jax.sharding.AxisType.Explicit,))
  plain = _suite(fn, suite=("contrast",), severities=(5,))
  sharded = _suite(fn, suite=("contrast",), severities=(5,), mesh=mesh)
  _assert_close(sharded, plain)
  x_u8 = np.round(_data()[0] * 255).astype(
      np.uint8
  )  # as TFDS stores CIFAR-10-C
  kw = dict(key=jax.random.key(0), batch_size=8, num_classes=C, suite=())
  _assert_close(
      evaluators.run_suite(fn, x_u8, _data()[1], **kw),
      evaluators.run_suite(fn, x_u8.astype(np.float32) / 255, _data()[1], **kw),
  )
  with pytest.raises(ValueError, match="multiple of the mesh size"):
    _suite(fn, batch_size=6, mesh=mesh)
  with pytest.raises(ValueError, match="known"):
    _suite(fn, suite=("snowstorm",))
  with pytest.raises(ValueError, match="severity"):
    _suite(fn, severities=(0,))
  with pytest.raises(ValueError, match="<name>_<severity>"):
    _suite(fn, suite=(), extra_sets={"contrast": _data()})
  with pytest.raises(ValueError, match="labels must lie"):
    evaluators.run_suite(
        fn,
        _data()[0],
        np.full(N, C),
        key=jax.random.key(0),
        batch_size=8,
        num_classes=C,
        suite=(),
    )


def test_run_suite_corrupted_examples_subset():
  fn, _ = _linear(1)
  x, y = _data()
  subset = _suite(fn, corrupted_examples=20)
  assert subset["clean"]["count"] == N  # clean metrics keep the whole split
  cell = subset["corruptions"]["contrast"]["5"]
  assert cell["count"] == 20
  expected = corruptions.corrupt("contrast", x[:20], 5, None)
  ref_acc = np.mean(np.asarray(fn(expected)).argmax(1) == y[:20])
  assert cell["accuracy"] == pytest.approx(ref_acc)
  # The severity-0 point: clean metrics of exactly the 20 corrupted images.
  clean20 = subset["clean_on_corrupted_images"]
  assert clean20["count"] == 20
  assert clean20["accuracy"] == pytest.approx(
      np.mean(np.asarray(fn(x[:20])).argmax(1) == y[:20])
  )
  _assert_close(
      _suite(fn, corrupted_examples=N), _suite(fn)
  )  # N or more = everything
  with pytest.raises(ValueError, match="corrupted_examples"):
    _suite(fn, corrupted_examples=-1)


def test_clean_correct_bits_and_paired_difference(results):
  """Per-image correctness travels with the clean metrics; B - A is paired on the same images."""
  x, y = _data()
  a, b = results["models"]["A"]["clean"], results["models"]["B"]["clean"]
  right = {
      k: np.asarray(_linear(seed)[0](x)).argmax(1) == y
      for k, seed in (("A", 1), ("B", 2))
  }
  np.testing.assert_array_equal(
      intervals.unpack_correct(a["correct_bits"], N), right["A"]
  )
  assert a["accuracy"] == pytest.approx(right["A"].mean())
  paired = robustness.compare_to_baseline(
      results["models"]["B"], results["models"]["A"]
  )["clean_accuracy_paired"]
  assert paired["difference"] == pytest.approx(b["accuracy"] - a["accuracy"])
  assert paired["only_b"] == int(np.sum(right["B"] & ~right["A"]))
  assert paired["ci"][0] < paired["difference"] < paired["ci"][1]


def test_compare_to_baseline(results):
  a, b = results["models"]["A"], results["models"]["B"]
  self_cmp = robustness.compare_to_baseline(a, a)
  assert self_cmp["normalized_mce"] == pytest.approx(1.0)
  assert self_cmp["clean_accuracy_delta"] == 0.0
  cmp = robustness.compare_to_baseline(b, a)
  acc = lambda r: {
      n: {s: m["accuracy"] for s, m in by.items()}
      for n, by in r["corruptions"].items()
  }
  assert cmp["normalized_mce"] == pytest.approx(
      metrics.normalized_mce(acc(b), acc(a))
  )
  assert set(cmp["corruption_error_ratio"]) == set(SUITE)
  assert "extra_sets" in cmp


def test_write_report_end_to_end(results, tmp_path):
  roundtrip = json.loads(json.dumps(results))
  sim = np.eye(C) * 0.7 + 0.03
  names = list(fashion_mnist_local.CLASS_NAMES)
  curves = {
      key: [
          {"step": 10, "epoch": 1.0, "train/loss": 1.0, "train/accuracy": 0.5},
          {"step": 10, "epoch": 1.0, "validation/nll": 1.2},
          {"step": 20, "epoch": 2.0, "validation/accuracy": 0.6},
      ]
      for key in ("A", "B")
  }
  path = report.write_report(
      str(tmp_path), roundtrip, similarity=sim, class_names=names, curves=curves
  )
  assert path == str(tmp_path / "report.md")
  text = open(path).read()
  pngs = sorted(p for p in os.listdir(tmp_path) if p.endswith(".png"))
  assert pngs == [
      "accuracy_vs_severity_corruptions.png",
      "accuracy_vs_severity_extra_sets.png",
      "per_class.png",
      "reliability.png",
      "similarity.png",
      "training_curves.png",
  ]
  for p in pngs:
    assert f"]({p})" in text
    _assert_png(tmp_path / p)
  a_clean = roundtrip["models"]["A"]["clean"]
  lo, hi = intervals.wilson(round(a_clean["accuracy"] * N), N)
  assert (
      f"| A: cross-entropy | {100 * a_clean['accuracy']:.2f}% [{100 * lo:.1f}, {100 * hi:.1f}] "
      f"| {a_clean['nll']:.4f} |"
  ) in text
  assert "**B - A, clean accuracy:" in text and f"same {N} test images" in text
  assert (
      "mean of the cells' ECEs, as in the tables" in text
  )  # one ECE, said where it differs
  assert "| B: similarity loss |" in text
  for name in SUITE:
    assert f"| {name} |" in text
  assert "(baseline)" in text and "relative mCE vs A" in text
  assert "Model A** is trained with plain cross-entropy" in text
  with pytest.raises(ValueError, match="models"):
    report.write_report(str(tmp_path), {"config": {}})


def test_figure_helpers_by_hand():
  # The heatmap's colours span the off-diagonal entries, not the diagonal.
  s = np.array([[0.7, 0.05, 0.03], [0.03, 0.77, 0.03], [0.04, 0.03, 0.69]])
  assert report.off_diagonal_range(s) == (0.03, 0.05)
  # B - A confusions: the largest moves, true -> predicted, signed.
  a = np.array([[5, 2, 0], [0, 6, 1], [0, 0, 7]])
  b = np.array([[7, 0, 0], [0, 4, 3], [1, 0, 6]])
  assert report._top_moves(b - a, ["x", "y", "z"], k=2) == [
      "x->y -2",
      "y->z +2",
  ]


def _fake_run(root, name, *, alpha, seed, clean_a, clean_b, with_config=True):
  d = root / name
  d.mkdir()

  def suite(acc):
    return {
        "clean": {
            "accuracy": acc,
            "nll": 1 - acc,
            "ece": 0.1,
            "mistake_severity": 0.5,
        },
        "summary": {"mean_corrupted_accuracy": acc - 0.2},
    }

  (d / "results.json").write_text(
      json.dumps({"models": {"A": suite(clean_a), "B": suite(clean_b)}})
  )
  if with_config:
    cfg = {
        "dataset": {"name": "digits"},
        "model": {"name": "mlp"},
        "similarity": {"source": "confusion"},
        "loss": {"form": "soft_target", "alpha": alpha},
        "seed": seed,
    }
    (d / "config.json").write_text(json.dumps(cfg))
  return str(d)


def test_compare_end_to_end(tmp_path):
  runs = [
      _fake_run(tmp_path, "r0", alpha=0.1, seed=0, clean_a=0.90, clean_b=0.92),
      _fake_run(tmp_path, "r1", alpha=0.1, seed=1, clean_a=0.80, clean_b=0.94),
      _fake_run(tmp_path, "r2", alpha=0.3, seed=0, clean_a=0.85, clean_b=0.86),
      _fake_run(
          tmp_path,
          "r3",
          alpha=None,
          seed=None,
          clean_a=0.5,
          clean_b=0.5,
          with_config=False,
      ),
  ]
  out = tmp_path / "cmp"
  paths = compare.compare(runs, str(out))
  with open(paths["csv"]) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 6  # (alpha 0.1, alpha 0.3, no config) x (A, B)
  by = {(r["loss.alpha"], r["trained"]): r for r in rows}
  b01 = by[("0.1", "B")]
  assert b01["n"] == "2" and b01["seeds"] == "0,1"
  assert float(b01["clean_accuracy_mean"]) == pytest.approx(0.93)
  assert float(b01["clean_accuracy_std"]) == pytest.approx(
      np.std([0.92, 0.94], ddof=1)
  )
  assert float(b01["mean_corrupted_accuracy_mean"]) == pytest.approx(0.73)
  assert by[("0.3", "A")]["clean_accuracy_std"] == ""  # one seed: no std
  assert by[("-", "A")]["dataset.name"] == "-"  # missing config.json
  md = open(paths["md"]).read()
  assert (
      "| digits | mlp | confusion | soft_target | 0.1 | B | 2 (0,1) | 0.9300 ± 0.0141 |"
      in md
  )
  _assert_png(paths["png"])

  cli = subprocess.run(
      [
          sys.executable,
          "-m",
          "simsoft.compare",
          *runs[:2],
          "--out",
          str(tmp_path / "cli"),
      ],
      capture_output=True,
      text=True,
      check=True,
  )
  assert "0.9300 ± 0.0141" in cli.stdout
  assert os.path.exists(tmp_path / "cli" / "comparison.csv")
  with pytest.raises(FileNotFoundError, match="results.json"):
    compare.compare([str(tmp_path / "cmp")], str(out))
