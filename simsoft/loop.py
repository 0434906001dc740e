"""Training one model: the sharded update loop, checkpoints, Ctrl-C and NaN handling.

  train_model(run, phase, loss_form=..., amount=..., similarity=S)

builds the state (simsoft.state), resumes from the phase's latest checkpoint
and steps until config.<phase>.epochs are done, in chunks that end at every
log, checkpoint, (online source) epoch boundary and profile start/stop. Data
order and per-step randomness are functions of (seed, step), so a resumed run
reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from simsoft import checkpoint as ckpt
from simsoft import data as data_lib
from simsoft import errors
from simsoft import input_pipeline
from simsoft import preemption
from simsoft import similarity as sim_lib
from simsoft import state as state_lib
from simsoft import train_eval
from simsoft import train_step as step_lib
from simsoft.progress import Progress, log
from simsoft.run import Run


def train_model(
    run: Run,
    phase: str,
    *,
    loss_form: str,
    amount: dict[str, Any],
    similarity: np.ndarray,
    online: bool = False,
    permutation: np.ndarray | None = None,
    workdir: str | None = None,
    online_options: dict[str, Any] | None = None,
) -> tuple[nnx.GraphDef, dict[str, Any]]:
  """Trains one model for `config.<phase>.epochs`, resuming from checkpoints.

  `amount` holds make_loss_fn's keywords: {'alpha': a} or {'mass': m}
  (simsoft.losses), plus as_given / hxe (target.loss_options); `permutation`
  (online only) permutes every per-epoch S, for the shuffled-S control;
  `online_options` are online_update's keywords (default: its defaults).
  The checkpoints live in <workdir or run.workdir>/<phase>/checkpoints.

  Returns:
    (graphdef, state) with state as in simsoft.train_step (replicated arrays).
  """
  config, ds = run.config, run.dataset
  batch_size = config.batch_size
  if batch_size % run.mesh.size:
    raise ValueError(
        f"config.batch_size={batch_size} must be divisible by the "
        f"{run.mesh.size} devices of the mesh"
    )
  steps_per_epoch, total_steps = phase_steps(run, phase)
  setup = state_lib.create_train_state(
      config,
      ds,
      run.mesh,
      similarity=similarity,
      steps_per_epoch=steps_per_epoch,
      total_steps=total_steps,
      track_epoch_stats=online,
  )

  # Update step: state replicated and donated, batch sharded over 'data'.
  loss_fn = step_lib.make_loss_fn(loss_form, **amount)
  step_fn = step_lib.make_train_step(
      setup.graphdef,
      setup.tx,
      loss_fn,
      mean=ds.mean,
      std=ds.std,
      augmentation=ds.augmentation,
      track_epoch_stats=online,
  )
  end_epoch = jax.jit(
      functools.partial(
          _online_end_epoch,
          permutation=permutation,
          options=online_options or {},
      ),
      out_shardings=setup.shardings,
      donate_argnums=0,
  )

  manager = checkpoint_manager(run, phase, workdir)
  # None: data in memory
  stream = _stream_input(run, step_fn, total_steps, setup.shardings)
  iterator = stream and stream.iterator
  if manager.latest_step() is not None:
    state = ckpt.restore_latest_readable(
        manager, setup.abstract, phase=phase, iterator=iterator
    )
    if int(state["step"]) < total_steps:
      log(f"[{phase}] resumed from step {int(state['step'])}")
  else:
    state = setup.init()
  start = int(state["step"])

  if start < total_steps:
    state = _loop(
        run,
        phase,
        state,
        step_fn,
        end_epoch if online else None,
        manager,
        start=start,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        schedule=setup.schedule,
        state_sharding=setup.shardings,
        held_out=train_eval.from_config(run, setup.graphdef, steps_per_epoch),
        feeder=stream,
    )
  ckpt.wait_until_finished(manager)
  if stream is not None:
    stream.close()
  return setup.graphdef, state


def _stream_input(run: Run, step_fn, total_steps: int, state_sharding):
  """The streaming reader's StreamInput, or None for a split held in memory."""
  split = run.dataset.split("train")
  if input_pipeline.choose_pipeline(run.config.input, split) != "stream":
    return None
  return input_pipeline.make_stream_input(
      run.config.input,
      step_fn,
      run.mesh,
      split,
      global_batch_size=run.config.batch_size,
      seed=run.config.seed,
      num_steps=total_steps,
      state_sharding=state_sharding,
  )


def phase_steps(run: Run, phase: str) -> tuple[int, int]:
  """(steps per epoch, total steps) of `phase`: config.<phase>.epochs over the train split."""
  steps_per_epoch = data_lib.steps_per_epoch(
      run.dataset.split("train"), run.config.batch_size
  )
  return steps_per_epoch, run.config[phase].epochs * steps_per_epoch


def checkpoint_manager(
    run: Run, phase: str, workdir: str | None = None, read_only: bool = False
) -> ocp.CheckpointManager:
  """The Orbax manager of <workdir or run.workdir>/<phase>/checkpoints."""
  with ckpt.quiet_logs():  # Orbax logs each unreadable checkpoint file at ERROR
    manager = ckpt.make_manager(
        os.path.join(workdir or run.workdir, phase, "checkpoints"),
        every_steps=run.config.checkpoint.every_steps,
        keep=run.config.checkpoint.keep,
        read_only=read_only,
    )
    manager.latest_step()  # reads the directory, under quiet logs
  return manager


def _loop(
    run: Run,
    phase: str,
    state,
    step_fn,
    end_epoch,
    manager,
    *,
    start: int,
    total_steps: int,
    steps_per_epoch: int,
    schedule=None,
    state_sharding=None,
    held_out: train_eval.HeldOut | None = None,
    feeder=None,
):
  """Steps from `start` to `total_steps` in chunks that end at every log,
  checkpoint, held-out evaluation, (online source) epoch boundary and profile
  start/stop.

  Logged scalars are means over the logging window (every step of it, whatever
  the chunking), plus the learning rate of the window's last step; held-out
  metrics (simsoft.train_eval) are those of the state after the step.
  """
  config = run.config
  # A StreamInput (`feeder`) comes already at `start`, its iterator restored.
  iterator = feeder.iterator if feeder is not None else None
  feeder = feeder or input_pipeline.make_input(
      config.input,
      step_fn,
      run.mesh,
      run.dataset.split("train"),
      global_batch_size=config.batch_size,
      seed=config.seed,
      start_step=start,
      state_sharding=state_sharding,
  )
  key = jax.jit(
      lambda: jax.random.key(config.seed), out_shardings=run.replicated
  )()
  logdir = os.path.join(run.workdir, phase)
  progress = Progress(
      phase,
      total_steps,
      start_step=start,
      batch_size=config.batch_size,
      steps_per_epoch=steps_per_epoch,
      logdir=logdir,
      log_every=config.log_every_steps,
  )
  every = [config.log_every_steps, config.checkpoint.every_steps]
  every += [steps_per_epoch] if end_epoch else []
  every += [held_out.every] if held_out else []
  profile = _profile_window(config, start, total_steps)
  window = []  # (metrics, steps) of the chunks since the last log
  done, tracing = start, False
  try:
    with _sigint_stops_after_chunk() as stop, preemption.listening() as notice:
      while done < total_steps:
        boundary = min(
            [total_steps]
            + [(done // n + 1) * n for n in every]
            + [p for p in profile if p > done]
        )
        chunk = min(feeder.max_steps_per_dispatch, boundary - done)
        if profile and done == profile[0]:
          jax.profiler.start_trace(logdir)
          tracing = True
        state, metrics = feeder.run(state, key, chunk)
        window.append((metrics, chunk))
        done += chunk
        if done - chunk == start:  # the first dispatch compiled the step
          jax.block_until_ready(metrics)
          progress.compiled(done)
        if tracing and done == profile[1]:
          jax.block_until_ready(state)
          jax.profiler.stop_trace()
          tracing = False
          log(
              f"[{phase}] profiler trace of steps {profile[0] + 1}-{profile[1]} in "
              f"{logdir}/plugins/profile"
          )
        if end_epoch and done % steps_per_epoch == 0:
          state = end_epoch(state)
        if done % config.log_every_steps == 0 or done == total_steps:
          _check_finite(run, state, phase, manager)
          scalars = _window_means(window)
          window = []
          if schedule is not None:
            scalars["learning_rate"] = float(schedule(done - 1))
          progress.update(done, scalars)
        if held_out and (done % held_out.every == 0 or done == total_steps):
          progress.held_out(done, held_out(state))
        preempted = notice.reached()
        if (
            done % config.checkpoint.every_steps == 0
            or done == total_steps
            or preempted
        ):
          _check_finite(run, state, phase, manager)
          ckpt.save_state(
              manager,
              done,
              state,
              force=done == total_steps or preempted,
              iterator=iterator,
          )
        if preempted:
          raise _preempted(phase, done, total_steps, manager)
        if stop.requested:
          raise _interrupted(phase, done, total_steps, manager)
  finally:
    if tracing:
      jax.profiler.stop_trace()
    progress.close()
    if iterator is not None:  # a stopped run leaves no grain workers behind
      feeder.close()
  return state


def _window_means(window) -> dict[str, float]:
  """Step-weighted means of the chunks' metrics (a chunk's metrics are its steps' mean)."""
  steps = sum(n for _, n in window)
  return {
      k: sum(float(m[k]) * n for m, n in window) / steps for k in window[0][0]
  }


def _profile_window(config, start: int, total_steps: int) -> tuple[int, ...]:
  """(first, last): trace the steps first+1..last; () when off or out of range.

  Never the first dispatch after `start`, which compiles.
  """
  num = config.profile.num_steps if "profile" in config else 0
  if num <= 0:
    return ()
  first = max(config.profile.first_step, start + 1)
  last = min(first + num, total_steps)
  return (first, last) if first < last else ()


class _Stop:
  requested = False


@contextlib.contextmanager
def _sigint_stops_after_chunk():
  """Ctrl-C sets a flag the loop reads after each chunk, so a checkpoint save in flight
  finishes; a second Ctrl-C interrupts at once. (Main thread only.)"""
  stop = _Stop()
  if threading.current_thread() is not threading.main_thread():
    yield stop
    return

  def handler(signum, frame):  # pylint: disable=unused-argument
    if stop.requested:
      raise KeyboardInterrupt
    stop.requested = True

  previous = signal.signal(signal.SIGINT, handler)
  try:
    yield stop
  finally:
    signal.signal(signal.SIGINT, previous)


def _interrupted(
    phase: str, done: int, total_steps: int, manager
) -> errors.InterruptedRun:
  """The one-line Ctrl-C message: where it stopped and that the same command resumes."""
  manager.wait_until_finished()
  latest = manager.latest_step()
  kept = (
      f"the last checkpoint is step {latest}"
      if latest is not None
      else "no checkpoint was saved yet, so the phase starts over"
  )
  return errors.InterruptedRun(
      f"interrupted (Ctrl-C) in phase {phase!r} at step {done} of {total_steps}; {kept}; "
      "run the same command to resume"
  )


def _preempted(
    phase: str, done: int, total_steps: int, manager
) -> errors.Preempted:
  """The checkpoint of step `done` is on disk (every host): the one-line notice."""
  ckpt.wait_until_finished(manager)
  return errors.Preempted(
      f"preempted (SIGTERM) in phase {phase!r} at step {done} of {total_steps}; "
      f"saved checkpoint step {manager.latest_step()}; run the same command to "
      "resume"
  )


def _online_end_epoch(state, permutation=None, options=None):
  """Online Label Smoothing: S <- that epoch's class-mean correct softmax; reset stats.

  `options` are online_update's keywords (fallback, freeze_threshold,
  post-processing, correct_only). With `permutation` (shuffled-S control) the
  state holds P U P^T, U the unshuffled online matrix: the update runs on U
  (so a kept row is U's previous row, permuted once) and the new S is
  U'[perm][:, perm].
  """
  stats = step_lib.stats_from_state(state["epoch_stats"])
  previous = state["similarity"]
  if permutation is not None:
    perm = jnp.asarray(permutation)
    inverse = jnp.argsort(perm)
    previous = previous[inverse][:, inverse]
  similarity = sim_lib.online_update(previous, stats, **(options or {}))
  if permutation is not None:
    similarity = similarity[perm][:, perm]
  return dict(
      state,
      similarity=similarity,
      epoch_stats=jax.tree.map(jnp.zeros_like, state["epoch_stats"]),
  )


def _check_finite(run: Run, state, phase: str, manager) -> None:
  bad = int(state["nonfinite_step"])
  if bad >= 0:
    manager.wait_until_finished()
    raise errors.NonFiniteLossError(
        nonfinite_message(
            run.config,
            phase,
            bad,
            manager.latest_step(),
            os.fspath(manager.directory),
        )
    )


def nonfinite_message(
    config: ml_collections.ConfigDict,
    phase: str,
    bad_step: int,
    latest: int | None,
    directory: str,
) -> str:
  """What became NaN/inf, the likely causes that fit the config, and the last good checkpoint."""
  model = {
      "estimate": "model A (cross-entropy)",
      "retrain": "model B (similarity loss)",
  }[phase]
  kept = (
      f"the last good checkpoint, step {latest} in {directory}, is intact"
      if latest is not None
      else "no checkpoint was saved before it"
  )
  return (
      f"phase {phase!r}: the training loss of {model} became NaN or inf at step {bad_step}; "
      f"training stopped; {kept}. Likely causes: {'; '.join(likely_causes(config, phase))}"
  )


def likely_causes(config: ml_collections.ConfigDict, phase: str) -> list[str]:
  """The causes of a NaN/inf loss that this config makes plausible, most likely first."""
  lr, causes = config.optimizer.learning_rate, []
  if not np.isfinite(lr) or lr <= 0:
    causes.append(
        f"config.optimizer.learning_rate={lr} is not a positive number"
    )
  elif lr > 1.0:
    causes.append(
        f"config.optimizer.learning_rate={lr} is very large (try 0.05)"
    )
  if phase == "retrain":
    for name in ("alpha", "mass"):
      v = config.loss[name]
      if config.loss.amount == name and not (np.isfinite(v) and 0 <= v <= 1):
        causes.append(f"config.loss.{name}={v} is outside [0, 1]")
  if not config.optimizer.grad_clip_norm:
    causes.append(
        "no gradient clipping (set config.optimizer.grad_clip_norm, e.g. 1.0)"
    )
  if config.model.dtype == "bfloat16":
    causes.append("config.model.dtype='bfloat16' overflowing (try 'float32')")
  if len(causes) < 2:
    causes.append(
        f"a learning rate too large for this model (config.optimizer.learning_rate={lr}; "
        "try a smaller one)"
    )
  return causes
