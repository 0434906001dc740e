"""Deterministic numpy batch iterators over an in-memory `ArraySplit`.

Both iterators define a *global* batch that does not depend on how many
processes read it; process p of P takes the contiguous rows
[p * B/P, (p + 1) * B/P) of each global batch, so the union over processes
is the global batch. Callers pass jax.process_index() / jax.process_count()
and build the global array with jax.make_array_from_process_local_data.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from simsoft.data.dataset import ArraySplit


def _local_batch_size(
    global_batch_size: int, process_index: int, process_count: int
) -> int:
  if (
      not isinstance(global_batch_size, (int, np.integer))
      or global_batch_size <= 0
  ):
    raise ValueError(
        f"global_batch_size must be a positive int, got {global_batch_size!r}"
    )
  if process_count <= 0 or not 0 <= process_index < process_count:
    raise ValueError(
        f"need 0 <= process_index < process_count, got process_index={process_index}, "
        f"process_count={process_count}"
    )
  if global_batch_size % process_count:
    raise ValueError(
        f"global_batch_size={global_batch_size} is not divisible by "
        f"process_count={process_count}"
    )
  return global_batch_size // process_count


def _as_float(images: np.ndarray) -> np.ndarray:
  """uint8 -> float32 / 255; float32 (already in [0, 1]) is passed through."""
  if images.dtype == np.uint8:
    return images.astype(np.float32) * np.float32(1.0 / 255.0)
  return images.astype(np.float32, copy=False)


def steps_per_epoch(split: ArraySplit, global_batch_size: int) -> int:
  """Full global batches per epoch: N // global_batch_size (last partial batch dropped)."""
  _local_batch_size(global_batch_size, 0, 1)
  return len(split) // global_batch_size


def train_indices(
    num_examples: int,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[np.ndarray]:
  """The example indices of each training batch, forever (see `train_batches`).

  Lets an input pipeline that keeps the split on the accelerator gather
  exactly the batches the host pipeline would read.

  Yields:
    int32 [B/P], this process's rows of the global batch of each step.
  """
  local = _local_batch_size(global_batch_size, process_index, process_count)
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}")
  steps = num_examples // global_batch_size
  if steps == 0:
    raise ValueError(
        f"global_batch_size={global_batch_size} exceeds the split's {num_examples} examples"
    )
  return _train_indices(
      num_examples,
      global_batch_size,
      seed,
      start_step,
      process_index * local,
      local,
      steps,
  )


def _train_indices(n, global_batch_size, seed, step, offset, local, steps):
  epoch, perm = None, None
  while True:
    if step // steps != epoch:
      epoch = step // steps
      perm = (
          np.random.default_rng([seed, epoch]).permutation(n).astype(np.int32)
      )
    start = (step % steps) * global_batch_size + offset
    yield perm[start : start + local]
    step += 1


def train_batches(
    split: ArraySplit,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Shuffled training batches, forever.

  With S = N // global_batch_size steps per epoch, step s reads batch
  b = s mod S of epoch e = s // S, i.e. the examples
  perm_e[b * B : (b + 1) * B] where perm_e = default_rng([seed, e]).permutation(N).
  Each epoch visits N - (N mod B) distinct examples once. Starting at
  `start_step` yields exactly what an iterator started at 0 yields from
  its step `start_step` on, so a resumed run sees the same batches.
  Arguments are checked at the call, before the first batch.

  Yields:
    {'image': float32 [B/P, H, W, C] in [0, 1], 'label': int32 [B/P]}.
  """
  indices = train_indices(
      len(split),
      global_batch_size=global_batch_size,
      seed=seed,
      start_step=start_step,
      process_index=process_index,
      process_count=process_count,
  )
  return (
      {"image": _as_float(split.images[idx]), "label": split.labels[idx]}
      for idx in indices
  )


def eval_batches(
    split: ArraySplit,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Every example once, in order, in ceil(N / B) global batches.

  The last global batch is padded to B rows with zero images and label 0;
  'mask' is 1.0 for real rows and 0.0 for padding, so sums weighted by
  mask count each example exactly once. Every process yields the same
  number of batches. Arguments are checked at the call.

  Yields:
    {'image': float32 [B/P, H, W, C] in [0, 1], 'label': int32 [B/P],
     'mask': float32 [B/P]}.
  """
  local = _local_batch_size(global_batch_size, process_index, process_count)
  return _eval_batches(split, global_batch_size, process_index * local, local)


def _eval_batches(split, global_batch_size, offset, local):
  n = len(split)
  for batch in range(-(-n // global_batch_size)):
    start = batch * global_batch_size + offset
    real = max(0, min(local, n - start))
    image = np.zeros((local,) + split.image_shape, np.float32)
    label = np.zeros((local,), np.int32)
    mask = np.zeros((local,), np.float32)
    image[:real] = _as_float(split.images[start : start + real])
    label[:real] = split.labels[start : start + real]
    mask[:real] = 1.0
    yield {"image": image, "label": label, "mask": mask}
