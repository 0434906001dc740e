"""Evaluators built from config entries: the same numbers as run_suite and numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simsoft import corruptions, evaluators, metrics
from simsoft.data import fashion_mnist_local

N, C = 37, 10
GROUPS = np.asarray(fashion_mnist_local.CLASS_GROUPS)


def _data():
  rng = np.random.default_rng(0)
  return (
      rng.random((N, 8, 8, 1)).astype(np.float32),
      rng.integers(0, C, N).astype(np.int32),
  )


def _linear(seed=1):
  w = np.random.default_rng(seed).normal(size=(64, C)).astype(np.float32)
  return jax.jit(lambda im: im.reshape(im.shape[0], -1) @ jnp.asarray(w)), w


def _eval_data(**kw):
  x, y = _data()
  args = dict(
      images=x,
      labels=y,
      num_classes=C,
      batch_size=8,
      key=jax.random.key(3),
      class_to_group=GROUPS,
      reference_similarity=metrics.similarity_from_groups(GROUPS),
  )
  return evaluators.EvalData(**(args | kw))


def _run_all(built, predict_fn):
  reported, metrics_ = [], {}
  for evaluator in built.values():
    metrics_.update(evaluator.run(predict_fn, reported.append))
  return metrics_, reported


@pytest.mark.parametrize("examples", [0, 20])
def test_corruptions_grid_summary_and_progress(examples):
  entries = {
      "clean": {"type": "clean"},
      "noise": {
          "type": "corruptions",
          "corruptions": ("contrast", "gaussian_noise"),
          "severities": (1, 5),
          "examples": examples,
      },
  }
  built = evaluators.from_config(entries, _eval_data())
  got, reported = _run_all(built, _linear()[0])
  assert got["clean"]["count"] == N
  on_corrupted = got["clean_on_corrupted_images"]
  if examples:
    assert on_corrupted["count"] == examples
  else:  # the whole split: the clean evaluator's numbers, measured again
    assert on_corrupted == got["clean"]
  cells = [
      got["corruptions"][n][s]["accuracy"]
      for n in ("contrast", "gaussian_noise")
      for s in ("1", "5")
  ]
  assert all(
      got["corruptions"][n][s]["count"] == (examples or N)
      for n in ("contrast", "gaussian_noise")
      for s in ("1", "5")
  )
  assert got["summary"]["mean_corrupted_accuracy"] == pytest.approx(
      np.mean(cells)
  )
  subset = ["clean (corrupted subset)"] if examples else []
  assert reported == ["clean"] + subset + [
      "contrast s1",
      "contrast s5",
      "gaussian_noise s1",
      "gaussian_noise s5",
  ]
  assert sum(e.num_sets for e in built.values()) == len(reported)


def test_clean_evaluator_matches_numpy():
  fn, w = _linear(2)
  x, y = _data()
  out = evaluators.CleanEvaluator(_eval_data(class_to_group=None)).run(
      fn, lambda name: None
  )["clean"]
  logits = x.reshape(N, -1) @ w
  assert out["count"] == N
  assert out["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))
  log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  assert out["nll"] == pytest.approx(-log_p[np.arange(N), y].mean(), rel=1e-5)
  assert "superclass_accuracy" not in out


def test_corrupted_images_are_the_ones_scored():
  # One cell by hand: contrast s5 on the first 20 images, with the cell's key.
  fn, w = _linear(4)
  evaluator = evaluators.CorruptionsEvaluator(
      _eval_data(class_to_group=None, reference_similarity=None),
      corruptions=("contrast",),
      severities=(5,),
      examples=20,
  )
  cell = evaluator.run(fn, lambda name: None)["corruptions"]["contrast"]["5"]
  x, y = _data()
  corrupted = np.asarray(corruptions.corrupt("contrast", x[:20], 5, None))
  logits = corrupted.reshape(20, -1) @ w
  assert cell["count"] == 20
  assert cell["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y[:20]))


@pytest.mark.parametrize(
    "entries, message",
    [
        ({"noise": {"type": "corruptions"}}, "must include 'clean'"),
        (
            {"clean": {}, "x": {"type": "vibes"}},
            "unknown evaluator type 'vibes'",
        ),
        (
            {"clean": {}, "c": {"type": "corruptions", "severity": 3}},
            r"no option\(s\) \['severity'\]",
        ),
    ],
)
def test_bad_entries_name_what_is_wrong(entries, message):
  with pytest.raises(ValueError, match=message):
    evaluators.check_entries(entries)
