"""Issue 24: the losses keep their promises, and every check runs before the first step.

Cheap by design: functions are called directly; an entry point runs as a
subprocess only where the real process (stderr, exit code) is what is tested.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simsoft import losses
from simsoft.similarity import hierarchy

# ----------------------------------------------------------------------------
# The losses API.
# ----------------------------------------------------------------------------

S = np.eye(3, dtype=np.float32) + 0.5
LOGITS = jnp.zeros((2, 3))
LOGITS3 = jnp.zeros((3, 3))
LEAVES = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
K = np.ones((3, 4), np.float32)

EVERY_LOSS = {
    "cross_entropy": lambda y: losses.similarity_cross_entropy(LOGITS3, y, S),
    "log_loss": lambda y: losses.similarity_log_loss(LOGITS3, y, S),
    "weighted": lambda y: losses.weighted_cross_entropy(LOGITS3, y, S),
    "hierarchical": lambda y: losses.hierarchical_cross_entropy(
        LOGITS3, y, LEAVES, K
    ),
    "targets": lambda y: losses.similarity_targets(y, S),
}


@pytest.mark.parametrize("fn", sorted(EVERY_LOSS))
def test_every_loss_gives_nan_for_a_label_out_of_range_under_jit(fn):
  out = np.asarray(jax.jit(EVERY_LOSS[fn])(jnp.array([1, 3, -1])))
  assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1:])), out


AMOUNT_FNS = {
    "cross_entropy": lambda k, v: losses.similarity_cross_entropy(
        LOGITS, jnp.array([0, 1]), S, **{k: v}
    ),
    "log_loss": lambda k, v: losses.similarity_log_loss(
        LOGITS, jnp.array([0, 1]), S, normalize=k == "mass", **{k: v}
    ),
    "targets": lambda k, v: losses.similarity_targets(
        jnp.array([0, 1]), S, **{k: v}
    ),
    "matrix": lambda k, v: losses.similarity_target_matrix(S, **{k: v}),
}


@pytest.mark.parametrize("fn", sorted(AMOUNT_FNS))
@pytest.mark.parametrize("name", ["mass", "alpha"])
def test_a_traced_amount_outside_0_1_gives_nan(fn, name):
  f = jax.jit(lambda v: AMOUNT_FNS[fn](name, v))
  for value in (2.0, -1.0, float("nan")):
    assert np.all(np.isnan(np.asarray(f(value)))), (value, f(value))
  assert np.all(np.isfinite(np.asarray(f(0.25))))


@pytest.mark.parametrize(
    "value", [True, np.bool_(False), jnp.array(True), "0.5", b"1", [0.5]]
)
@pytest.mark.parametrize("name", ["alpha", "mass"])
def test_bools_and_strings_are_refused_by_name(name, value):
  with pytest.raises(TypeError, match=f"`{name}` must be a real number"):
    losses.similarity_cross_entropy(
        LOGITS, jnp.array([0, 1]), S, **{name: value}
    )


BAD_S = {
    "negative": (
        S - np.eye(3, dtype=np.float32) * 2,
        "negative entry at row 0",
    ),
    "zero row": (
        S * np.array([[1], [0], [1]], np.float32),
        "row 1 is all zeros",
    ),
    "nan": (
        np.where(np.eye(3) > 0, np.nan, S).astype(np.float32),
        "non-finite",
    ),
}


@pytest.mark.parametrize("defect", sorted(BAD_S))
@pytest.mark.parametrize("fn", ["cross_entropy", "log_loss", "sparse_log_loss"])
def test_a_concrete_bad_similarity_is_refused(fn, defect):
  from simsoft.similarity import sparse  # pylint: disable=g-import-not-at-top

  bad, message = BAD_S[defect]
  sim = (
      sparse.SparseSimilarity(
          np.tile(np.arange(3, dtype=np.int32), (3, 1)), bad
      )
      if fn.startswith("sparse")
      else bad
  )
  loss = (
      losses.similarity_cross_entropy
      if fn == "cross_entropy"
      else losses.similarity_log_loss
  )
  with pytest.raises(ValueError, match=f"`similarity` .*{message}"):
    loss(LOGITS, jnp.array([0, 1]), sim)


def test_weighted_cross_entropy_takes_zero_rows_but_not_negative_weights():
  zero_row = S * np.array([[1], [0], [1]], np.float32)
  out = losses.weighted_cross_entropy(LOGITS, jnp.array([0, 1]), zero_row)
  assert float(out[1]) == 0.0  # a zero row: loss 0 (OLS's first epoch)
  with pytest.raises(ValueError, match="negative entry"):
    losses.weighted_cross_entropy(LOGITS, jnp.array([0, 1]), -zero_row)


def _hierarchy_file(tmp_path, text):
  path = tmp_path / "tree.json"
  path.write_text(text)
  return path


def test_a_json_hierarchy_with_a_node_under_two_parents_is_refused(tmp_path):
  path = _hierarchy_file(
      tmp_path,
      '{"classes": ["a", "b"], "parents": {"a": "x", "b": "x", "a": "y"}}',
  )
  with pytest.raises(ValueError, match="node 'a' has two parents: 'x' and 'y'"):
    hierarchy.read_hierarchy(path)


@pytest.mark.parametrize("classes", ['"ab"', '{"a": 0}', "[[1]]"])
def test_a_json_hierarchy_classes_must_be_a_list_of_names(tmp_path, classes):
  path = _hierarchy_file(
      tmp_path, f'{{"classes": {classes}, "parents": {{"a": "x", "b": "x"}}}}'
  )
  with pytest.raises(ValueError, match="'classes' must be a list"):
    hierarchy.read_hierarchy(path)
  ok = _hierarchy_file(
      tmp_path,
      json.dumps({"classes": ["a", "b"], "parents": {"a": "x", "b": "x"}}),
  )
  assert hierarchy.read_hierarchy(ok).names == ("x", "a", "b")
