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

A streamed train split (dataset.reader='grain', simsoft.data.streaming) is
read by `StreamInput` whatever `pipeline` says: grain worker processes
read, decode and transform each process's rows of every batch, which are put
on the devices DEVICE_PREFETCH steps ahead, as uint8, and scaled to [0, 1]
inside the jitted step.

Like the rest of the core this imports no TensorFlow.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from simsoft import sharding
from simsoft import train_step as step_lib
from simsoft.data.dataset import ArraySplit
from simsoft.data.iterators import train_batches, train_indices

PIPELINES = ("auto", "host", "device")


def choose_pipeline(cfg: ml_collections.ConfigDict, split: ArraySplit) -> str:
  """'host', 'device' or (a streamed split) 'stream' for config.input and a train split."""
  if cfg.pipeline not in PIPELINES:
    raise ValueError(
        f"unknown input pipeline {cfg.pipeline!r} (config.input.pipeline); "
        f"known: {list(PIPELINES)}"
    )
  if not isinstance(split, ArraySplit):
    return "stream"
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


def _scaled(step: Callable) -> Callable:
  """`step` fed uint8 images: x * float32(1/255) on device, as the other paths scale."""

  def scaled(state, batch, key):
    image = batch["image"].astype(jnp.float32) * jnp.float32(1.0 / 255.0)
    return step(state, dict(batch, image=image), key)

  return scaled


# Batches a StreamInput puts on the devices ahead of the step.
DEVICE_PREFETCH = 2


class StreamPosition:
  """Where a StreamInput's stream is, as of the next batch the step consumes.

  The object the checkpoint saves as its 'iter' item (grain's handler: the
  bytes of get_state, one file per process) and restores into. The device
  prefetch reads ahead of the step, so this is not the grain iterator's own
  state but the one recorded before the oldest batch not yet consumed.
  """

  def __init__(self, stream: "StreamInput"):
    self._stream = stream

  def get_state(self) -> bytes:
    return self._stream.consumed_state().encode()

  def set_state(self, state: bytes) -> None:
    self._stream.restore(state.decode())

  def start_prefetch(self) -> None:
    pass


class StreamInput:
  """One dispatch per step; batches streamed by grain (simsoft.data.streaming).

  Each step's batch was put on the devices while an earlier step ran
  (DEVICE_PREFETCH batches ahead). `iterator` (a StreamPosition) is what the
  loop saves with each checkpoint and a restore sets, so a resumed run reads
  on from the batch after the last one the saved run consumed.
  """

  max_steps_per_dispatch = 1

  def __init__(
      self,
      step: Callable,
      mesh: jax.sharding.Mesh,
      split,
      *,
      global_batch_size: int,
      seed: int,
      num_steps: int,
      workers: int,
      threads: int,
      buffer: int,
      state_sharding: Any = None,
  ):
    from simsoft.data import streaming  # pylint: disable=g-import-not-at-top

    replicated, batch = sharding.replicated(mesh), sharding.sharded(mesh)
    state_sharding = state_sharding or replicated
    self._batch_sharding = batch
    self._step = jax.jit(
        _scaled(step),
        in_shardings=(state_sharding, batch, replicated),
        out_shardings=(state_sharding, replicated),
        donate_argnums=0,
    )
    self._closed = False
    self._ready = collections.deque()  # (state before it, batch on device)
    self._grain = iter(
        streaming.train_dataset(
            split,
            global_batch_size=global_batch_size,
            seed=seed,
            num_steps=num_steps,
            workers=workers,
            threads=threads,
            buffer=buffer,
        )
    )
    self.iterator = StreamPosition(self)

  def _fill(self) -> None:
    while len(self._ready) < DEVICE_PREFETCH:
      state = json.dumps(self._grain.get_state())
      try:
        local = next(self._grain)
      except StopIteration:
        return
      self._ready.append(
          (state, sharding.from_process_local(local, self._batch_sharding))
      )

  def consumed_state(self) -> str:
    """grain's state (JSON) before the first batch the step has not consumed."""
    if self._ready:
      return self._ready[0][0]
    return json.dumps(self._grain.get_state())

  def restore(self, state: str) -> None:
    self._ready.clear()
    self._grain.set_state(json.loads(state))

  def run(self, state, key, num_steps: int):
    assert num_steps == 1
    self._fill()
    _, batch = self._ready.popleft()
    out = self._step(
        state, batch, key
    )  # dispatched; the next batch loads meanwhile
    self._fill()
    return out

  def close(self) -> None:
    """Stops the grain workers (a second call does nothing)."""
    if not self._closed:
      self._closed = True
      self._ready.clear()
      self._grain.close()


def make_stream_input(
    cfg: ml_collections.ConfigDict,
    step: Callable,
    mesh: jax.sharding.Mesh,
    split,
    *,
    global_batch_size: int,
    seed: int,
    num_steps: int,
    state_sharding: Any = None,
) -> StreamInput:
  """The StreamInput of config.input's grain_* fields, at step 0 (a restore moves it)."""
  return StreamInput(
      step,
      mesh,
      split,
      global_batch_size=global_batch_size,
      seed=seed,
      num_steps=num_steps,
      workers=cfg.grain_workers,
      threads=cfg.grain_threads,
      buffer=cfg.grain_buffer,
      state_sharding=state_sharding,
  )


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
