"""simsoft's training path, built as simsoft.loop.train_model builds it, for benchmarks.

`simsoft_step` returns the replicated state of `simsoft.state.create_train_state`
(the function train_model calls) and the step of
`simsoft.train_step.make_train_step`, jitted as `simsoft.input_pipeline.HostInput`
jits it (state donated, batch sharded over the ('data',) mesh);
`simsoft_feeder` is the loop's own feeder, `simsoft.input_pipeline.make_input`
('host': train_batches + make_array_from_process_local_data; 'device': the
split on device, k steps per dispatch). Also: the models' input data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding

from simsoft import config as config_lib
from simsoft import data as data_lib
from simsoft import state as state_lib
from simsoft import train_step as step_lib
from simsoft.sharding import make_mesh, sharded
from simsoft.run import Run


def optimizer_config(
    name: str = "sgd", learning_rate: float = 0.05
) -> ml_collections.ConfigDict:
  """config.optimizer of simsoft's base config ('sgd': momentum 0.9, cosine, wd 5e-4; 'adamw')."""
  cfg = config_lib.base_config().optimizer
  cfg.name = name
  cfg.learning_rate = learning_rate
  if name == "adamw":
    cfg.weight_decay = 0.0
  return cfg


def synthetic_split(
    n: int, image_shape: tuple[int, int, int], num_classes: int, seed: int = 0
) -> data_lib.ArraySplit:
  """n random uint8 images and int32 labels (the dtype real IDX/TFDS sources have)."""
  r = np.random.default_rng(seed)
  return data_lib.ArraySplit(
      r.integers(0, 256, (n,) + tuple(image_shape), dtype=np.uint8),
      r.integers(0, num_classes, n).astype(np.int32),
  )


def fashion_mnist_or_synthetic(n: int) -> tuple[data_lib.ArraySplit, str]:
  """The first n real Fashion-MNIST training images if installed, else random 28x28x1."""
  try:
    ds = data_lib.get_dataset("fashion_mnist_local", validation_fraction=0.0)
    train = ds.split("train")
    return train.take(np.arange(min(n, len(train)))), "fashion_mnist_local"
  except (FileNotFoundError, OSError, ValueError):
    return synthetic_split(n, (28, 28, 1), 10), "synthetic 28x28x1"


@dataclasses.dataclass
class SimsoftPath:
  """simsoft's state, raw step (`step_fn`) and jitted step; `run` is the mesh/data wiring."""

  run: Run
  state: dict
  step: Callable
  step_fn: Callable
  graphdef: nnx.GraphDef


def simsoft_step(
    *,
    model: str,
    split: data_lib.ArraySplit,
    num_classes: int,
    loss_fn: step_lib.LossFn,
    optimizer: ml_collections.ConfigDict,
    batch_size: int,
    augmentation: str = "none",
    dtype=jnp.float32,
    mesh: jax.sharding.Mesh | None = None,
    seed: int = 0,
    model_kwargs: dict | None = None,
) -> SimsoftPath:
  """State (simsoft.state.create_train_state) and step as loop.train_model builds them (estimate phase, not online)."""
  mesh = mesh or make_mesh()
  mean, std = data_lib.channel_stats(split.images)
  ds = data_lib.Dataset(
      name="bench",
      num_classes=num_classes,
      class_names=tuple(map(str, range(num_classes))),
      image_shape=split.image_shape,
      mean=mean,
      std=std,
      augmentation=augmentation,
      splits={"train": split},
  )
  config = config_lib.base_config()
  config.batch_size = batch_size
  config.seed = seed
  config.model.name = model
  config.model.dtype = jnp.dtype(dtype).name
  config.model[model] = ml_collections.ConfigDict(model_kwargs or {})
  config.optimizer = optimizer
  run = Run(config=config, workdir="", mesh=mesh, dataset=ds)
  steps_per_epoch = max(len(split) // batch_size, 1)
  setup = state_lib.create_train_state(
      config,
      ds,
      mesh,
      similarity=np.eye(num_classes, dtype=np.float32),
      steps_per_epoch=steps_per_epoch,
      total_steps=100 * steps_per_epoch,
  )
  graphdef = setup.graphdef
  step_fn = step_lib.make_train_step(
      graphdef,
      setup.tx,
      loss_fn,
      mean=mean,
      std=std,
      augmentation=augmentation,
      track_epoch_stats=False,
  )
  step = jax.jit(
      step_fn,
      in_shardings=(run.replicated, run.batch_sharding, run.replicated),
      out_shardings=(run.replicated, run.replicated),
      donate_argnums=0,
  )
  state = setup.init()
  return SimsoftPath(
      run=run, state=state, step=step, step_fn=step_fn, graphdef=graphdef
  )


def simsoft_feeder(
    path: SimsoftPath,
    pipeline: str,
    *,
    steps_per_dispatch: int = 1,
    scan_unroll: bool = False,
    seed: int = 0,
):
  """loop.train_model's feeder: input_pipeline.make_input for 'host' or 'device'."""
  from simsoft import input_pipeline

  cfg = config_lib.base_config().input
  cfg.pipeline, cfg.steps_per_dispatch = pipeline, steps_per_dispatch
  if scan_unroll:
    cfg.scan_unroll = True
  return input_pipeline.make_input(
      cfg,
      path.step_fn,
      path.run.mesh,
      path.run.dataset.split("train"),
      global_batch_size=path.run.config.batch_size,
      seed=seed,
      start_step=0,
  )


def device_batch(
    split: data_lib.ArraySplit,
    batch_size: int,
    sharding: NamedSharding | None = None,
) -> dict[str, jax.Array]:
  """The first batch_size examples as one device-resident (sharded) float32 batch."""
  images = split.images[:batch_size]
  images = (
      images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
  )
  batch = {"image": images, "label": split.labels[:batch_size]}
  if sharding is None:
    sharding = sharded(make_mesh())
  return {k: jax.device_put(v, sharding) for k, v in batch.items()}
