"""What every phase of a run shares: its config, workdir, mesh and dataset.

Its own module so that the phases (simsoft.train) and the code they hand a
run to (simsoft.evaluation) do not import each other.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding

from simsoft import data as data_lib
from simsoft import sharding


@dataclasses.dataclass
class Run:
  """What every phase shares: config, workdir, mesh, data."""

  config: ml_collections.ConfigDict
  workdir: str
  mesh: jax.sharding.Mesh
  dataset: data_lib.Dataset

  @property
  def replicated(self) -> NamedSharding:
    return sharding.replicated(self.mesh)

  @property
  def batch_sharding(self) -> NamedSharding:
    return sharding.sharded(self.mesh)

  def replicate(self, tree):
    """Host arrays (the same on every process) -> arrays replicated on the whole mesh."""
    return sharding.from_whole(tree, self.replicated)

  def global_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Per-process numpy batch -> global jax.Arrays sharded over 'data'."""
    return sharding.from_process_local(local, self.batch_sharding)
