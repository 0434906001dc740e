"""The data-parallel mesh, its shardings, and host arrays as global jax.Arrays.

simsoft trains on one 1-D mesh with axis ``'data'`` over every device of every
process: the state is replicated, batches are split along their batch axis.
Host (numpy) data becomes a global array in one of two ways:

* :func:`from_whole`: every process holds the whole array (a split kept on
  device, S, an evaluation set); ``jax.make_array_from_callback`` gives each
  device its slice, also across processes (``jax.device_put`` cannot);
* :func:`from_process_local`: each process holds only its rows of the global
  batch; ``jax.make_array_from_process_local_data`` assembles them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA = "data"

__all__ = [
    "DATA",
    "from_process_local",
    "from_whole",
    "make_mesh",
    "replicated",
    "sharded",
]


def make_mesh(devices: Iterable[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-D ('data',) mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh(
      (len(devices),),
      (DATA,),
      devices=devices,
      axis_types=(jax.sharding.AxisType.Auto,),
  )


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, P())


def sharded(mesh: jax.sharding.Mesh, axis: int = 0) -> NamedSharding:
  """Axis `axis` split over 'data' (0: a batch [B, ...]; 1: stacked batches [k, B, ...])."""
  return NamedSharding(mesh, P(*([None] * axis), DATA))


def from_whole(tree: Any, sharding: NamedSharding) -> Any:
  """Host arrays that every process holds whole -> global arrays with `sharding`."""
  return jax.tree.map(
      lambda x: jax.make_array_from_callback(
          np.shape(x), sharding, lambda index, x=x: np.asarray(x)[index]
      ),
      tree,
  )


def from_process_local(tree: Any, sharding: NamedSharding) -> Any:
  """Each process's rows of a global batch -> global arrays with `sharding`."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), tree
  )
