"""A model's train state: the model, its optimizer and the initial state on the mesh.

  setup = create_train_state(config, dataset, mesh, similarity=S,
                             steps_per_epoch=k, total_steps=n)
  state = setup.init()          # fresh, replicated over the mesh
  state = restore(setup.abstract)  # or restored into the same shapes

The state is the plain dict documented in simsoft.train_step. Every phase, the
benchmarks and the tests build it here, so they train the same thing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from simsoft import data as data_lib
from simsoft import models as models_lib
from simsoft import sharding
from simsoft import similarity as sim_lib
from simsoft import train_step as step_lib


def create_model(
    model_config: ml_collections.ConfigDict,
    dataset: data_lib.Dataset,
    rngs: nnx.Rngs,
) -> nnx.Module:
  """config.model built for `dataset`'s classes and image shape.

  The model is model_config.name, computing in model_config.dtype, with its
  own keyword arguments from model_config[name] (none if there is no section).
  """
  return models_lib.create_model(
      model_config.name,
      num_classes=dataset.num_classes,
      input_shape=dataset.image_shape,
      rngs=rngs,
      dtype=jnp.dtype(model_config.dtype),
      **model_kwargs(model_config),
  )


def model_kwargs(model_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The chosen model's own keyword arguments: model_config[model_config.name]."""
  own = model_config.get(model_config.name)
  return own.to_dict() if own is not None else {}


@dataclasses.dataclass(frozen=True)
class TrainSetup:
  """What training one model needs besides data: built by create_train_state.

  Attributes:
    graphdef: the model's static structure (nnx.GraphDef).
    tx: the optimizer.
    schedule: its learning rate of step t (0-based).
    abstract: the state's ShapeDtypeStructs with their shardings (a restore
      target).
    init: () -> the fresh state on the mesh (jitted).
    shardings: the state's NamedShardings (a pytree like the state):
      replicated, except S's rows split over 'data' with
      config.similarity.shard_rows.
  """

  graphdef: nnx.GraphDef
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  abstract: dict[str, Any]
  init: Callable[[], dict[str, Any]]
  shardings: dict[str, Any]


def state_shardings(
    state_shapes: dict[str, Any],
    mesh: jax.sharding.Mesh,
    shard_similarity_rows: bool = False,
) -> dict[str, Any]:
  """Every leaf replicated; with `shard_similarity_rows`, state['similarity']
  (dense [C, C], or a sparse S's [C, k] arrays) split by rows over 'data', so
  each device holds C / D rows instead of all C (the loss's row gather is then
  partitioned by XLA: labels all-gathered, each device reads the rows it owns,
  the [B, C] rows summed over devices)."""
  replicated = sharding.replicated(mesh)
  out = jax.tree.map(lambda _: replicated, state_shapes)
  if shard_similarity_rows:
    rows = sharding.sharded(mesh)
    out["similarity"] = jax.tree.map(lambda _: rows, state_shapes["similarity"])
  return out


def _state_similarity(similarity):
  """float32 [C, C], or a SparseSimilarity of int32 / float32 [C, k] arrays."""
  if sim_lib.is_sparse(similarity):
    return sim_lib.SparseSimilarity(
        indices=jnp.asarray(similarity.indices, jnp.int32),
        values=jnp.asarray(similarity.values, jnp.float32),
    )
  return jnp.asarray(similarity, jnp.float32)


def create_train_state(
    config: ml_collections.ConfigDict,
    dataset: data_lib.Dataset,
    mesh: jax.sharding.Mesh,
    *,
    similarity: np.ndarray,
    steps_per_epoch: int,
    total_steps: int,
    track_epoch_stats: bool = False,
) -> TrainSetup:
  """Model (config.model, seeded by config.seed) and optimizer (config.optimizer).

  Args:
    config: the run's config (model, optimizer, seed).
    dataset: gives the number of classes and the image shape.
    mesh: the state is replicated over it (S's rows split over it with
      config.similarity.shard_rows).
    similarity: [C, C] the S the loss starts from (state['similarity']), or
      a top-k SparseSimilarity ([C, k] arrays).
    steps_per_epoch, total_steps: for the learning-rate schedule.
    track_epoch_stats: adds state['epoch_stats'] (the online source).
  """
  graphdef = nnx.graphdef(
      nnx.eval_shape(lambda: create_model(config.model, dataset, nnx.Rngs(0)))
  )
  tx = step_lib.make_optimizer(
      config.optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps
  )
  schedule = step_lib.make_schedule(
      config.optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps
  )

  def init_state():
    model = create_model(config.model, dataset, nnx.Rngs(config.seed))
    _, params, model_state = nnx.split(model, nnx.Param, ...)
    state = {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "model_state": model_state,
        "opt_state": tx.init(params),
        "similarity": _state_similarity(similarity),
        "nonfinite_step": jnp.full((), -1, jnp.int32),
    }
    if track_epoch_stats:
      state["epoch_stats"] = step_lib.stats_to_state(
          sim_lib.init_stats(dataset.num_classes)
      )
    return state

  shapes = jax.eval_shape(init_state)
  shardings = state_shardings(
      shapes, mesh, config.similarity.get("shard_rows", False)
  )
  abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      shapes,
      shardings,
  )
  return TrainSetup(
      graphdef=graphdef,
      tx=tx,
      schedule=schedule,
      abstract=abstract,
      init=jax.jit(init_state, out_shardings=shardings),
      shardings=shardings,
  )
