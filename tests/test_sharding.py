"""simsoft.sharding: the mesh, its shardings and host -> global arrays on 4 devices."""

import jax
import numpy as np

from simsoft import sharding


def test_mesh_and_shardings():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == ("data",) and mesh.size == jax.device_count() == 4
  assert tuple(sharding.replicated(mesh).spec) == ()
  assert tuple(sharding.sharded(mesh).spec) == ("data",)
  assert tuple(sharding.sharded(mesh, axis=1).spec) == (None, "data")


def test_host_arrays_become_global_arrays_with_the_right_pieces():
  mesh = sharding.make_mesh()
  whole = np.arange(24, dtype=np.float32).reshape(3, 8)
  tree = sharding.from_whole({"a": whole}, sharding.sharded(mesh, axis=1))
  np.testing.assert_array_equal(tree["a"], whole)
  # Each device holds 2 of the 8 columns.
  for shard in tree["a"].addressable_shards:
    assert shard.data.shape == (3, 2)
    np.testing.assert_array_equal(shard.data, whole[shard.index])
  rep = sharding.from_whole(whole, sharding.replicated(mesh))
  assert all(s.data.shape == (3, 8) for s in rep.addressable_shards)
  # One process: its local rows are the whole global batch.
  batch = sharding.from_process_local({"x": whole.T}, sharding.sharded(mesh))
  np.testing.assert_array_equal(batch["x"], whole.T)
  assert batch["x"].sharding == sharding.sharded(mesh)
