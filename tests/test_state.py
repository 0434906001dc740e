"""create_train_state: the state every phase, benchmark and test trains from."""

import jax
import numpy as np
from flax import nnx

from simsoft import data as data_lib
from simsoft import sharding
from simsoft import state as state_lib
from tests.helpers.tiny import tiny_config


def _setup(track_epoch_stats=False, seed=3):
  config = tiny_config()
  config.seed = seed
  ds = data_lib.get_dataset("digits")
  mesh = sharding.make_mesh()
  s = np.full((10, 10), 0.1, np.float32)
  setup = state_lib.create_train_state(
      config,
      ds,
      mesh,
      similarity=s,
      steps_per_epoch=20,
      total_steps=40,
      track_epoch_stats=track_epoch_stats,
  )
  return config, ds, mesh, s, setup


def test_initial_state_is_the_seeded_model_replicated():
  config, ds, mesh, s, setup = _setup()
  state = setup.init()
  assert int(state["step"]) == 0 and int(state["nonfinite_step"]) == -1
  np.testing.assert_array_equal(np.asarray(state["similarity"]), s)
  assert "epoch_stats" not in state
  model = state_lib.create_model(config.model, ds, nnx.Rngs(config.seed))
  want = nnx.state(model, nnx.Param)
  got = state["params"]
  for (path, a), (_, b) in zip(
      jax.tree_util.tree_leaves_with_path(want),
      jax.tree_util.tree_leaves_with_path(got),
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), str(path))
  leaves = jax.tree.leaves(state)
  assert all(x.sharding == sharding.replicated(mesh) for x in leaves)
  # The abstract state describes exactly what init builds (a restore target).
  assert jax.tree.structure(setup.abstract) == jax.tree.structure(state)
  for a, x in zip(jax.tree.leaves(setup.abstract), leaves):
    assert (a.shape, a.dtype) == (x.shape, x.dtype)
  # The schedule: warmup to the peak over config.optimizer.warmup_epochs.
  assert float(setup.schedule(20)) == np.float32(config.optimizer.learning_rate)


def test_other_seed_other_params_and_online_stats():
  *_, first = _setup(seed=0)
  *_, other = _setup(track_epoch_stats=True, seed=1)
  a, b = first.init(), other.init()
  assert "epoch_stats" in b and float(b["epoch_stats"]["count"].sum()) == 0
  assert not all(
      np.array_equal(np.asarray(x), np.asarray(y))
      for x, y in zip(
          jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])
      )
  )
