"""Feeds the jitted train step: host-read batches, or a split kept on the accelerator.

Both paths read the same examples at every step (simsoft.data.train_indices),
so they train the same model; they differ only in where the pixels live.

  host    numpy batches from simsoft.data.train_batches, one step per dispatch.
  device  the whole train split is put on every device once (replicated); each
          step gathers its batch on device from int32 indices, and
          `steps_per_dispatch` > 1 runs several steps in one lax.scan, so no
          Python or host copy sits between steps (`scan_unroll` unrolls it:
          the fast choice on XLA:CPU, where a rolled scan is ~15x slower).
  auto    device when the split's pixels fit in `device_max_bytes`, else host.

Like the rest of the core this imports no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from simsoft import sharding
from simsoft import train_step as step_lib
from simsoft.data.dataset import ArraySplit
from simsoft.data.iterators import train_batches, train_indices

PIPELINES = ("auto", "host", "device")


def choose_pipeline(cfg: ml_collections.ConfigDict, split: ArraySplit) -> str:
  """'host' or 'device' for config.input and a train split."""
  if cfg.pipeline not in PIPELINES:
    raise ValueError(
        f"unknown input pipeline {cfg.pipeline!r} (config.input.pipeline); "
        f"known: {list(PIPELINES)}"
    )
  if cfg.pipeline != "auto":
    return cfg.pipeline
  return "device" if split.images.nbytes <= cfg.device_max_bytes else "host"


class HostInput:
  """One dispatch per step, batches read on the host and sharded over 'data'."""

  max_steps_per_dispatch = 1

  def __init__(
      self,
      step: Callable,
      mesh: jax.sharding.Mesh,
      split: ArraySplit,
      *,
      global_batch_size: int,
      seed: int,
      start_step: int,
      state_sharding: Any = None,
  ):
    replicated, batch = sharding.replicated(mesh), sharding.sharded(mesh)
    state_sharding = state_sharding or replicated
    self._batch_sharding = batch
    self._step = jax.jit(
        step,
        in_shardings=(state_sharding, batch, replicated),
        out_shardings=(state_sharding, replicated),
        donate_argnums=0,
    )
    self._batches = train_batches(
        split,
        global_batch_size=global_batch_size,
        seed=seed,
        start_step=start_step,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )

  def run(self, state, key, num_steps: int):
    assert num_steps == 1
    local = next(self._batches)
    batch = sharding.from_process_local(local, self._batch_sharding)
    return self._step(state, batch, key)


class DeviceInput:
  """The split lives on device; `num_steps` steps per dispatch (lax.scan when > 1)."""

  def __init__(
      self,
      step: Callable,
      mesh: jax.sharding.Mesh,
      split: ArraySplit,
      *,
      global_batch_size: int,
      seed: int,
      start_step: int,
      steps_per_dispatch: int,
      scan_unroll: bool = False,
      state_sharding: Any = None,
  ):
    if steps_per_dispatch < 1:
      raise ValueError(
          f"config.input.steps_per_dispatch must be >= 1, got {steps_per_dispatch}"
      )
    self.max_steps_per_dispatch = steps_per_dispatch
    replicated = sharding.replicated(mesh)
    state_sharding = state_sharding or replicated
    self._index_sharding = sharding.sharded(mesh, axis=1)
    # Each process holds the same split: one replicated copy spanning them all.
    self._data = sharding.from_whole(
        {"image": split.images, "label": split.labels}, replicated
    )
    self._steps = jax.jit(
        step_lib.make_device_steps(step, unroll=scan_unroll),
        in_shardings=(
            state_sharding,
            replicated,
            self._index_sharding,
            replicated,
        ),
        out_shardings=(state_sharding, replicated),
        donate_argnums=0,
    )
    self._indices = train_indices(
        len(split),
        global_batch_size=global_batch_size,
        seed=seed,
        start_step=start_step,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )

  def run(self, state, key, num_steps: int):
    local = np.stack([next(self._indices) for _ in range(num_steps)])
    indices = sharding.from_process_local(local, self._index_sharding)
    return self._steps(state, self._data, indices, key)


def make_input(
    cfg: ml_collections.ConfigDict,
    step: Callable,
    mesh: jax.sharding.Mesh,
    split: ArraySplit,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int,
    state_sharding: Any = None,
) -> HostInput | DeviceInput:
  """The HostInput or DeviceInput that config.input selects; `state_sharding`
  (a pytree of NamedShardings like the state; default: replicated) is where
  the step keeps the state."""
  kwargs = dict(
      global_batch_size=global_batch_size,
      seed=seed,
      start_step=start_step,
      state_sharding=state_sharding,
  )
  if choose_pipeline(cfg, split) == "device":
    return DeviceInput(
        step,
        mesh,
        split,
        steps_per_dispatch=cfg.steps_per_dispatch,
        scan_unroll=cfg.scan_unroll,
        **kwargs,
    )
  return HostInput(step, mesh, split, **kwargs)
