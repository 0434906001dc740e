"""The two-phase pipeline: estimate S with model A, retrain model B with it, evaluate both.

Reads top to bottom: mesh and input, model and optimizer, sharded state,
update step, checkpoint load, loop; then the phases that use it.

  train_and_evaluate(config, workdir)
    estimate: train A (plain cross-entropy) -> similarity source on the
              validation split -> S saved with Orbax next to A's final state
    retrain:  restore S -> train a fresh B with the similarity loss
    evaluate: clean (and corrupted) test metrics of A and B -> results.json

Every phase resumes from its latest checkpoint; a finished phase (done.json)
is skipped. Data order and per-step randomness are functions of (seed, step),
so a resumed run reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from simsoft import checkpoint as ckpt
from simsoft import config as config_lib
from simsoft import data as data_lib
from simsoft import errors
from simsoft import evaluation
from simsoft import sharding
from simsoft.run import Run
from simsoft import input_pipeline
from simsoft import losses
from simsoft import models as models_lib
from simsoft import similarity as sim_lib
from simsoft import train_step as step_lib
from simsoft import validate
from simsoft.paths import resolve
from simsoft import progress as progress_lib
from simsoft.progress import Progress, flat_hparams

NonFiniteLossError = (
    errors.NonFiniteLossError
)  # Training produced a NaN or inf loss.


make_mesh = sharding.make_mesh  # the mesh every phase uses (simsoft.sharding)


def _model(run: Run, rngs: nnx.Rngs) -> nnx.Module:
  cfg = run.config.model
  return models_lib.create_model(
      cfg.name,
      num_classes=run.dataset.num_classes,
      input_shape=run.dataset.image_shape,
      rngs=rngs,
      dtype=jnp.dtype(cfg.dtype),
      **cfg.kwargs.to_dict(),
  )


def _similarity_options(
    config: ml_collections.ConfigDict, source: str
) -> dict[str, Any]:
  """What build_similarity gets: similarity.options plus similarity.<source> (its own)."""
  options = config.similarity.options.to_dict()
  if source in sim_lib.SOURCES and isinstance(
      config.similarity.get(source), ml_collections.ConfigDict
  ):
    options.update(config.similarity[source].to_dict())
  if not options.get("temperature"):
    options.pop("temperature", None)
  allowed = sim_lib.source_options(source)
  return {k: v for k, v in options.items() if k in allowed}


def similarity_options_that_ran(
    config: ml_collections.ConfigDict, source: str
) -> dict[str, Any]:
  """Every option of `source` with the value it ran with (defaults filled in)."""
  return {
      **sim_lib.source_options(source),
      **_similarity_options(config, source),
  }


def shuffle_permutation(
    config: ml_collections.ConfigDict, num_classes: int
) -> np.ndarray | None:
  """The shuffled-S control's class permutation (a derangement fixed by config.seed), or None."""
  if not config.similarity.shuffle:
    return None
  return sim_lib.derangement(num_classes, seed=config.seed)


def source_path(config: ml_collections.ConfigDict, source: str) -> str | None:
  """The file a source reads: config.hierarchy_path for 'hierarchy', else config.similarity.path."""
  path = (
      config.hierarchy_path if source == "hierarchy" else config.similarity.path
  )
  return path or None


def loss_options(
    config: ml_collections.ConfigDict, num_classes: int
) -> dict[str, Any]:
  """make_loss_fn's keywords from config.loss: the amount, as_given and (form 'hxe') the arrays."""
  options = {**config_lib.loss_amount(config), "as_given": config.loss.as_given}
  if config.loss.form == "hxe":
    if not config.hierarchy_path:
      raise ValueError(
          "loss form 'hxe' needs a class hierarchy: set config.hierarchy_path"
      )
    tree = sim_lib.read_hierarchy(
        config.hierarchy_path, num_classes=num_classes
    )
    options["hxe"] = sim_lib.hxe_arrays(
        tree, config.loss.hxe.alpha, normalize=config.loss.hxe.normalize
    )
  return options


# ----------------------------------------------------------------------------
# Training one model: the loop both phases share.
# ----------------------------------------------------------------------------


def train_model(
    run: Run,
    phase: str,
    *,
    loss_form: str,
    amount: dict[str, Any],
    similarity: np.ndarray,
    online: bool = False,
    permutation=None,
    workdir: str | None = None,
    online_options: dict | None = None,
):
  """Trains one model for `config.<phase>.epochs`, resuming from checkpoints.

  `amount` holds make_loss_fn's keywords: {'alpha': a} or {'mass': m}
  (simsoft.losses), plus as_given / hxe (loss_options); `permutation` (online
  only) permutes every per-epoch S, for the shuffled-S control;
  `online_options` are online_update's keywords (default: its defaults).
  The checkpoints live in <workdir or run.workdir>/<phase>/checkpoints.

  Returns:
    (graphdef, state) with state as in simsoft.train_step (replicated arrays).
  """
  config, ds = run.config, run.dataset
  train_split = ds.split("train")
  batch_size = config.batch_size
  if batch_size % run.mesh.size:
    raise ValueError(
        f"config.batch_size={batch_size} must be divisible by the "
        f"{run.mesh.size} devices of the mesh"
    )
  steps_per_epoch = data_lib.steps_per_epoch(train_split, batch_size)
  total_steps = config[phase].epochs * steps_per_epoch

  # Model, optimizer and the sharded state, created already replicated.
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: _model(run, nnx.Rngs(0))))
  tx = step_lib.make_optimizer(
      config.optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps
  )
  schedule = step_lib.make_schedule(
      config.optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps
  )

  def init_state():
    model = _model(run, nnx.Rngs(config.seed))
    _, params, model_state = nnx.split(model, nnx.Param, ...)
    state = {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "model_state": model_state,
        "opt_state": tx.init(params),
        "similarity": jnp.asarray(similarity, jnp.float32),
        "nonfinite_step": jnp.full((), -1, jnp.int32),
    }
    if online:
      state["epoch_stats"] = step_lib.stats_to_state(
          sim_lib.init_stats(ds.num_classes)
      )
    return state

  abstract = jax.eval_shape(init_state)
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=run.replicated),
      abstract,
  )

  # Update step: state replicated and donated, batch sharded over 'data'.
  loss_fn = step_lib.make_loss_fn(loss_form, **amount)
  step_fn = step_lib.make_train_step(
      graphdef,
      tx,
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
      out_shardings=run.replicated,
      donate_argnums=0,
  )

  # Checkpoint load.
  with ckpt.quiet_logs():  # Orbax logs each unreadable checkpoint file at ERROR
    manager = ckpt.make_manager(
        os.path.join(workdir or run.workdir, phase, "checkpoints"),
        every_steps=config.checkpoint.every_steps,
        keep=config.checkpoint.keep,
    )
    has_checkpoint = manager.latest_step() is not None
  if has_checkpoint:
    state = ckpt.restore_latest_readable(manager, abstract, phase=phase)
    if int(state["step"]) < total_steps and jax.process_index() == 0:
      print(f"[{phase}] resumed from step {int(state['step'])}", flush=True)
  else:
    state = jax.jit(init_state, out_shardings=run.replicated)()
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
        schedule=schedule,
    )
  manager.wait_until_finished()
  return graphdef, state


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
):
  """Steps from `start` to `total_steps` in chunks that end at every log,
  checkpoint, (online source) epoch boundary and profile start/stop.

  Logged scalars are means over the logging window (every step of it, whatever
  the chunking), plus the learning rate of the window's last step.
  """
  config = run.config
  feeder = input_pipeline.make_input(
      config.input,
      step_fn,
      run.mesh,
      run.dataset.split("train"),
      global_batch_size=config.batch_size,
      seed=config.seed,
      start_step=start,
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
      hparams=flat_hparams(config),
  )
  every = [config.log_every_steps, config.checkpoint.every_steps]
  every += [steps_per_epoch] if end_epoch else []
  profile = _profile_window(config, start, total_steps)
  window = []  # (metrics, steps) of the chunks since the last log
  done, tracing = start, False
  try:
    with _sigint_stops_after_chunk() as stop:
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
          if jax.process_index() == 0:
            print(
                f"[{phase}] profiler trace of steps {profile[0] + 1}-{profile[1]} in "
                f"{logdir}/plugins/profile",
                flush=True,
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
        if done % config.checkpoint.every_steps == 0 or done == total_steps:
          _check_finite(run, state, phase, manager)
          ckpt.save_state(manager, done, state, force=done == total_steps)
        if stop.requested:
          raise _interrupted(phase, done, total_steps, manager)
  finally:
    if tracing:
      jax.profiler.stop_trace()
    progress.close()
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


def _online_end_epoch(state, permutation=None, options=None):
  """Online Label Smoothing: S <- that epoch's class-mean correct softmax; reset stats.

  `options` are online_update's keywords (fallback, freeze_threshold,
  post-processing, correct_only). With `permutation` (shuffled-S control) the
  new S is S[perm][:, perm].
  """
  stats = step_lib.stats_from_state(state["epoch_stats"])
  similarity = sim_lib.online_update(
      state["similarity"], stats, **(options or {})
  )
  if permutation is not None:
    perm = jnp.asarray(permutation)
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
    raise NonFiniteLossError(
        nonfinite_message(
            run.config,
            phase,
            bad,
            manager.latest_step(),
            os.fspath(manager.directory),
        )
    )


def nonfinite_message(
    config, phase: str, bad_step: int, latest: int | None, directory: str
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


def likely_causes(config, phase: str) -> list[str]:
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


# ----------------------------------------------------------------------------
# Phases.
# ----------------------------------------------------------------------------

# Config sections that define model A: another workdir's A is reusable when they match.
MODEL_A_FIELDS = (
    "dataset",
    "model",
    "optimizer",
    "input",
    "batch_size",
    "estimate",
    "seed",
)


def model_a_workdir(run: Run) -> str:
  """Where model A's checkpoints are: config.estimate.model_from (checked), or this run."""
  other = run.config.estimate.model_from
  if not other:
    return run.workdir
  if ckpt.read_json(os.path.join(other, "estimate", "done.json")) is None:
    raise errors.MissingInputError(
        f"config.estimate.model_from={other!r} has no finished estimate "
        "phase; run it there first (phases=estimate)"
    )
  saved = ckpt.read_json(os.path.join(other, "config.json"))
  if saved is None:
    raise errors.MissingInputError(
        f"config.estimate.model_from={other!r} has no config.json, so "
        "its model A cannot be matched to this config; rerun it there"
    )
  current = json.loads(run.config.to_json())
  diffs = [
      d
      for d in ckpt.config_differences(
          {k: saved.get(k) for k in MODEL_A_FIELDS},
          {k: current.get(k) for k in MODEL_A_FIELDS},
      )
      if d != "estimate.model_from"
  ]
  if diffs:
    raise errors.WorkdirError(
        f"config.estimate.model_from={other!r} trained model A with "
        f"another config; differing fields: {diffs}; use a model_from "
        "workdir made with the same model A fields"
    )
  return other


def _phase_done(run: Run, phase: str) -> dict | None:
  return ckpt.read_json(os.path.join(run.workdir, phase, "done.json"))


def _mark_done(run: Run, phase: str, state) -> None:
  ckpt.write_json(
      os.path.join(run.workdir, phase, "done.json"),
      {
          "step": int(state["step"]),
          "time": time.time(),
          "provenance": ckpt.provenance(run.config, phase),
      },
  )


def run_estimate(run: Run) -> None:
  """Trains model A with plain cross-entropy, then estimates S on the validation split."""
  config, ds = run.config, run.dataset
  identity = np.eye(ds.num_classes, dtype=np.float32)
  graphdef, state = train_model(
      run,
      "estimate",
      loss_form="soft_target",
      amount={"alpha": 0.0},
      similarity=identity,
      workdir=model_a_workdir(run),
  )
  source = config.similarity.source
  stats, num_samples = None, 0
  if sim_lib.source_needs_data(source) and source != "online":
    stats, num_samples = evaluation.similarity_stats(
        run,
        graphdef,
        state,
        ds.split("validation"),
        with_features=sim_lib.source_needs_features(source),
    )
  kernel = None
  if source == "weights":
    kernel = np.asarray(
        nnx.merge(graphdef, state["params"], state["model_state"]).head.kernel[
            ...
        ]
    )
  options = _similarity_options(config, source)
  if source == "online" and options.get("initial") == "zero":
    # The peer's zero first-epoch matrix is no similarity: record the direction
    # of that epoch's target, W = (1 - alpha) I (run_retrain starts from zero).
    similarity = np.eye(ds.num_classes, dtype=np.float32)
  else:
    similarity = sim_lib.build_similarity(
        source,
        num_classes=ds.num_classes,
        stats=stats,
        classifier_kernel=kernel,
        path=source_path(config, source),
        options=options,
    )
  similarity = losses.validate_similarity(similarity, ds.num_classes)
  options = similarity_options_that_ran(config, source)
  permutation = shuffle_permutation(config, ds.num_classes)
  if permutation is not None:
    similarity = sim_lib.permute_classes(similarity, permutation)
    options["shuffle_permutation"] = permutation.tolist()
  record = sim_lib.make_record(
      similarity,
      source=source,
      dataset=ds.name,
      class_names=list(ds.class_names),
      num_samples=int(num_samples),
      model_step=int(state["step"]),
      options=options,
  )
  directory = os.path.join(run.workdir, "estimate", "similarity")
  sim_lib.save_record(directory, record, force=True)
  if jax.process_index() == 0:
    sim_lib.export_plain(record, os.path.join(run.workdir, "estimate"))
    progress_lib.write_similarity_image(
        os.path.join(run.workdir, "estimate"), int(state["step"]), similarity
    )
  _mark_done(run, "estimate", state)
  print(
      f"[estimate] similarity source {source!r}: S saved to {directory}",
      flush=True,
  )


def load_similarity(run: Run) -> np.ndarray:
  """The S the retrain phase uses: this run's estimate, or config.similarity.from_workdir's."""
  source_dir = run.config.similarity.from_workdir or run.workdir
  directory = os.path.join(source_dir, "estimate", "similarity")
  if not resolve(directory).exists():
    raise errors.MissingInputError(
        f"no estimated similarity at {directory}: run the 'estimate' phase first"
        + (
            " in that workdir (config.similarity.from_workdir)"
            if run.config.similarity.from_workdir
            else " (phases=estimate,retrain,evaluate)"
        )
    )
  try:
    with ckpt.quiet_logs():
      record = sim_lib.load_record(directory)
  except Exception as e:  # pylint: disable=broad-except  # any unreadable file
    raise errors.DamagedFileError(
        f"the similarity checkpoint {directory} cannot be read ({ckpt.short_error(e)}); delete "
        f"{os.path.dirname(directory)}/done.json to estimate S again, or restore it from a backup"
    ) from None
  try:
    return losses.validate_similarity(
        record.similarity, run.dataset.num_classes
    )
  except ValueError as e:
    raise errors.ConfigError(
        f"similarity from {directory} is unusable for dataset "
        f"{run.dataset.name!r}: {e}"
    ) from None


def run_retrain(run: Run) -> None:
  """Trains a fresh model B with the configured similarity loss."""
  config = run.config
  training = _model_b_training(run)
  online, permutation = training["online"], training["permutation"]
  if online:
    options = _similarity_options(config, "online")
    if options.get("initial") == "zero":  # the peer's zero first-epoch matrix
      similarity = np.zeros((run.dataset.num_classes,) * 2, np.float32)
    else:
      similarity = sim_lib.build_similarity(
          "online", num_classes=run.dataset.num_classes, options=options
      )
    if permutation is not None:
      similarity = sim_lib.permute_classes(similarity, permutation)
  else:
    similarity = load_similarity(run)
  _, state = train_model(run, "retrain", similarity=similarity, **training)
  if online and jax.process_index() == 0:
    with (resolve(run.workdir) / "retrain" / "online_similarity.npy").open(
        "wb"
    ) as f:
      np.save(f, np.asarray(state["similarity"]), allow_pickle=False)
    progress_lib.write_similarity_image(
        os.path.join(run.workdir, "retrain"),
        int(state["step"]),
        np.asarray(state["similarity"]),
    )
  ckpt.write_json(
      os.path.join(run.workdir, "retrain", "target.json"),
      target_record(
          config,
          similarity,
          np.asarray(state["similarity"]),
          shuffle_permutation(config, run.dataset.num_classes),
      ),
  )
  _mark_done(run, "retrain", state)


def off_target_mass(
    similarity, amount: dict[str, Any], as_given: bool = False
) -> np.ndarray:
  """[C]: the mass class y's soft target puts on other classes.

  1 - T[y, y] for T = similarity_target_matrix(S); with `as_given`, the
  off-diagonal sum of row y of W = (1 - alpha) I + alpha S.
  """
  if as_given:
    s = np.asarray(similarity, np.float64)
    return amount.get("alpha", 1.0) * (s.sum(axis=1) - np.diag(s))
  target = losses.similarity_target_matrix(
      jnp.asarray(similarity, jnp.float32), **amount
  )
  return 1.0 - np.diag(np.asarray(target, np.float64))


def target_record(
    config, initial_similarity, final_similarity, permutation
) -> dict:
  """What model B's target actually was: form, amount, per-class off-target mass, source options.

  For the online source S changes every epoch: 'off_target_mass' is for the
  first epoch's S, 'off_target_mass_final' for the last one. The 'hxe' form has
  no soft target: its record holds its alpha and hierarchy instead.
  """
  amount = config_lib.loss_amount(config)
  source = config.similarity.source
  as_given = config.loss.as_given
  record = {
      "form": config.loss.form,
      "amount": amount,
      "as_given": as_given,
      "source": source,
      "options": similarity_options_that_ran(config, source),
      "shuffle_permutation": None
      if permutation is None
      else np.asarray(permutation).tolist(),
  }
  if config.loss.form == "hxe":
    return record | {
        "hxe": config.loss.hxe.to_dict(),
        "hierarchy_path": config.hierarchy_path,
    }
  mass = off_target_mass(initial_similarity, amount, as_given)
  record |= {
      "off_target_mass": mass.tolist(),
      "mean_off_target_mass": float(mass.mean()),
  }
  if source == "online":
    final = off_target_mass(final_similarity, amount, as_given)
    record |= {
        "off_target_mass_final": final.tolist(),
        "mean_off_target_mass_final": float(final.mean()),
    }
  return record


def _restore_final(run: Run, phase: str, similarity: np.ndarray):
  """(graphdef, state) of a finished phase: train_model restores and has nothing left to do.

  If the final checkpoint is damaged and an older one restores, train_model
  trains the missing steps again, with the phase's own loss (the same model:
  data order and randomness are functions of (seed, step)).
  """
  if phase == "estimate":
    return train_model(
        run,
        phase,
        loss_form="soft_target",
        amount={"alpha": 0.0},
        similarity=similarity,
        workdir=model_a_workdir(run),
    )
  return train_model(
      run, phase, similarity=similarity, **_model_b_training(run)
  )


def _model_b_training(run: Run) -> dict[str, Any]:
  """train_model's keywords for model B, the same when training and when restoring.

  The shuffled-S control's permutation reaches the loop only for the online
  source (its per-epoch S); other sources' S was saved already permuted.
  """
  config, num_classes = run.config, run.dataset.num_classes
  online = config.similarity.source == "online"
  return {
      "loss_form": config.loss.form,
      "amount": loss_options(config, num_classes),
      "online": online,
      "permutation": shuffle_permutation(config, num_classes)
      if online
      else None,
      "online_options": sim_lib.online_update_options(
          similarity_options_that_ran(config, "online")
      )
      if online
      else None,
  }


def run_evaluate(run: Run) -> dict:
  """Test metrics of models A and B -> workdir/results.json (+ table on stdout)."""
  ds, config = run.dataset, run.config
  identity = np.eye(ds.num_classes, dtype=np.float32)
  shared_a = _shared_model_a_results(run)
  models = {}
  for key, phase in (("A", "estimate"), ("B", "retrain")):
    if _phase_done(run, phase) is None:
      raise errors.MissingInputError(
          f"evaluate needs the finished {phase!r} phase (model {key}) in {run.workdir}; run it "
          f"first, e.g. phases={phase},evaluate"
      )
    if shared_a and key in shared_a:
      continue
    models[key] = _restore_final(run, phase, identity)
  results = evaluation.evaluate_models(run, models, precomputed=shared_a)
  results["target"] = ckpt.read_json(
      os.path.join(run.workdir, "retrain", "target.json")
  )
  results["provenance"] = ckpt.provenance(config, "evaluate")
  if config.estimate.model_from and shared_a is None:
    ckpt.write_json(
        os.path.join(config.estimate.model_from, "evaluate_A.json"),
        {
            "evaluated_under": _evaluation_key(config),
            "results": results["models"]["A"],
        },
    )
  ckpt.write_json(os.path.join(run.workdir, "results.json"), results)
  if jax.process_index() == 0:
    for key, phase in (("A", "estimate"), ("B", "retrain")):
      progress_lib.write_evaluation(
          os.path.join(run.workdir, "evaluate", key),
          _phase_done(run, phase)["step"],
          results["models"][key],
      )
    print(evaluation.format_table(results), flush=True)
    similarity = np.asarray(
        models["B"][1]["similarity"]
    )  # the S model B trained with
    path = evaluation.write_report(
        run.workdir, results, similarity, list(ds.class_names)
    )
    print(f"[evaluate] report: {path}", flush=True)
  return results


def _evaluation_key(config) -> dict:
  """Every field model A's test results depend on, besides model A itself."""
  return {
      "dataset": config.dataset.to_dict(),
      "evaluate": config.evaluate.to_dict(),
      "eval_batch_size": config.eval_batch_size,
      "seed": config.seed,
  }


def _shared_model_a_results(run: Run) -> dict | None:
  """{'A': results} that an earlier run sharing config.estimate.model_from measured under
  the same evaluation config (model_from/evaluate_A.json), else None."""
  other = run.config.estimate.model_from
  saved = (
      ckpt.read_json(os.path.join(other, "evaluate_A.json")) if other else None
  )
  if saved is None or saved["evaluated_under"] != _evaluation_key(run.config):
    return None
  print(f"[evaluate] model A: results from {other}/evaluate_A.json", flush=True)
  return {"A": saved["results"]}


PHASE_RUNNERS = {
    "estimate": run_estimate,
    "retrain": run_retrain,
    "evaluate": run_evaluate,
}


def check_config(run: Run, phases: tuple[str, ...]) -> None:
  """Fails on bad names and unusable inputs before any training starts (writes nothing)."""
  config, ds = run.config, run.dataset
  validate.check_against_data(config, ds, run.mesh.size)
  _check_model_kwargs(run)
  source = config.similarity.source
  if source not in sim_lib.SOURCES:
    raise errors.ConfigError(
        f"unknown similarity source {source!r} (config.similarity.source); "
        f"known: {sorted(sim_lib.SOURCES)}"
    )
  _as_config_error(
      lambda: step_lib.make_loss_fn(
          config.loss.form, **loss_options(config, ds.num_classes)
      ),
      "loss",
  )
  if config.hierarchy_path:
    _as_config_error(
        lambda: sim_lib.read_distances(
            config.hierarchy_path, num_classes=ds.num_classes
        ),
        "hierarchy_path",
    )
  if source == "online":
    online = similarity_options_that_ran(config, "online")
    _as_config_error(
        lambda: sim_lib.online_update_options(online), "similarity.online"
    )
    if online["symmetrize"]:
      raise errors.ConfigError(
          "similarity.options.symmetrize mixes rows and cannot follow the online source's "
          "per-epoch row updates; turn it off for source 'online'"
      )
    if online["initial"] == "zero" and not (
        config.loss.as_given and config.loss.form != "hxe"
    ):
      raise errors.ConfigError(
          "similarity.online.initial='zero' (the peer's zero first-epoch matrix) needs "
          "loss.as_given=True (W = (1 - alpha) I + alpha S, S as given)"
      )
  evaluation.evaluators_of(config)
  input_pipeline.choose_pipeline(config.input, ds.split("train"))
  if "estimate" in phases or "evaluate" in phases:
    model_a_workdir(run)
  if "evaluate" in phases:
    for needed in ("estimate", "retrain"):
      if needed not in phases and _phase_done(run, needed) is None:
        raise errors.MissingInputError(
            f"evaluate needs the finished {needed!r} phase in {run.workdir}, which has none; "
            f"run it first, e.g. phases={needed},evaluate"
        )
  if sim_lib.source_needs_path(source) and "estimate" in phases:
    field = "hierarchy_path" if source == "hierarchy" else "similarity.path"
    if not source_path(config, source):
      raise errors.ConfigError(
          f"similarity source {source!r} needs config.{field}"
      )
    if source == "file":
      _as_config_error(
          lambda: sim_lib.read_similarity_file(
              config.similarity.path, num_classes=ds.num_classes
          ),
          "similarity.path",
      )
  if (
      "retrain" in phases
      and source != "online"
      and (config.similarity.from_workdir or "estimate" not in phases)
  ):
    load_similarity(
        run
    )  # missing or mismatched S fails now, not after training
  if config.evaluate.reference_similarity_path:
    _as_config_error(
        lambda: sim_lib.read_similarity_file(
            config.evaluate.reference_similarity_path,
            num_classes=ds.num_classes,
        ),
        "evaluate.reference_similarity_path",
    )


def _as_config_error(check, field: str):
  """Runs `check`; a ValueError or FileNotFoundError becomes a ConfigError naming `field`."""
  try:
    return check()
  except errors.UserError:
    raise
  except (ValueError, FileNotFoundError, TypeError) as e:
    raise errors.ConfigError(f"config.{field}: {e}") from None


def _check_model_kwargs(run: Run) -> None:
  """config.model.kwargs must build the model (shapes only, no compute)."""
  try:
    nnx.eval_shape(lambda: _model(run, nnx.Rngs(0)))
  except (TypeError, ValueError) as e:
    raise errors.ConfigError(
        f"config.model.kwargs={run.config.model.kwargs.to_dict()} do not fit model "
        f"{run.config.model.name!r}: {' '.join(str(e).split())[:200]}; see simsoft/models/"
        f"{run.config.model.name.rstrip('0123456789')}.py for its arguments"
    ) from None


def load_dataset(config: ml_collections.ConfigDict) -> data_lib.Dataset:
  """config.dataset loaded into memory; a failure names the dataset and data_dir."""
  try:
    return data_lib.get_dataset(
        config.dataset.name,
        data_dir=config.dataset.data_dir or None,
        validation_fraction=config.dataset.validation_fraction,
        split_seed=config.dataset.split_seed,
        train_examples=config.dataset.train_examples,
    )
  except Exception as e:  # pylint: disable=broad-except  # TFDS raises many kinds
    raise errors.MissingInputError(
        f"config.dataset.name={config.dataset.name!r} (data_dir {config.dataset.data_dir!r}) "
        f"cannot be loaded: {ckpt.short_error(e)}; check the name and config.dataset.data_dir"
    ) from None


def prepare(config: ml_collections.ConfigDict, workdir: str, *, devices=None):
  """Every check, in order, before the workdir is touched: returns (run, phases).

  Schema ranges, then the dataset and devices, then the workdir's own records.
  """
  phases = validate.check_values(config)
  run = Run(
      config=config,
      workdir=workdir,
      mesh=make_mesh(devices),
      dataset=load_dataset(config),
  )
  check_config(run, phases)
  ckpt.check_workdir(workdir, config)
  return run, phases


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, devices=None
) -> None:
  """Runs the configured phases in order, skipping finished ones.

  Every check runs first (a refused run leaves the workdir as it was); then
  the run holds WORKDIR/.lock until it ends, so a second process is refused.

  Args:
    config: see simsoft.config.
    workdir: local path or gs:// bucket; one run per workdir.
    devices: the devices of the data-parallel mesh (default: all).
  """
  run, phases = prepare(config, workdir, devices=devices)
  with ckpt.WorkdirLock(workdir):
    ckpt.guard_workdir(
        workdir, config
    )  # again under the lock, then config.json
    for phase in phases:
      if phase != "evaluate" and _phase_done(run, phase) is not None:
        print(f"[{phase}] already finished in {workdir}; skipping", flush=True)
        continue
      if phase != "evaluate":
        ckpt.write_provenance(workdir, config, phase)
      start = time.time()
      PHASE_RUNNERS[phase](run)
      print(f"[{phase}] finished in {time.time() - start:.1f}s", flush=True)
