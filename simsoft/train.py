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

import dataclasses
import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from simsoft import checkpoint as ckpt
from simsoft import config as config_lib
from simsoft import data as data_lib
from simsoft import evaluation
from simsoft import input_pipeline
from simsoft import losses
from simsoft import models as models_lib
from simsoft import similarity as sim_lib
from simsoft import train_step as step_lib
from simsoft.paths import resolve
from simsoft import progress as progress_lib
from simsoft.progress import Progress, flat_hparams


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or inf loss."""


@dataclasses.dataclass
class Run:
  """What every phase shares: config, workdir, mesh, data."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: jax.sharding.Mesh
  dataset: data_lib.Dataset

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P("data"))

  def replicate(self, tree):
    """Host arrays (the same on every process) -> arrays replicated on the whole mesh."""
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(np.shape(x), self.replicated,
                                               lambda i: np.asarray(x)[i]), tree)

  def global_batch(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Per-process numpy batch -> global jax.Arrays sharded over 'data'."""
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
            for k, v in local.items()}


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D ('data',) mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), ("data",), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def _model(run: Run, rngs: nnx.Rngs) -> nnx.Module:
  cfg = run.config.model
  return models_lib.create_model(
      cfg.name, num_classes=run.dataset.num_classes, input_shape=run.dataset.image_shape,
      rngs=rngs, dtype=jnp.dtype(cfg.dtype), **cfg.kwargs.to_dict())


def _similarity_options(config: ml_collections.ConfigDict, source: str) -> dict[str, Any]:
  """What build_similarity gets: similarity.options plus similarity.<source> (its own)."""
  options = config.similarity.options.to_dict()
  if source in sim_lib.SOURCES and isinstance(config.similarity.get(source), ml_collections.ConfigDict):
    options.update(config.similarity[source].to_dict())
  if not options.get("temperature"):
    options.pop("temperature", None)
  allowed = sim_lib.source_options(source)
  return {k: v for k, v in options.items() if k in allowed}


def similarity_options_that_ran(config: ml_collections.ConfigDict, source: str) -> dict[str, Any]:
  """Every option of `source` with the value it ran with (defaults filled in)."""
  return {**sim_lib.source_options(source), **_similarity_options(config, source)}


def shuffle_permutation(config: ml_collections.ConfigDict, num_classes: int) -> np.ndarray | None:
  """The shuffled-S control's class permutation (a derangement fixed by config.seed), or None."""
  if not config.similarity.shuffle:
    return None
  return sim_lib.derangement(num_classes, seed=config.seed)


# ----------------------------------------------------------------------------
# Training one model: the loop both phases share.
# ----------------------------------------------------------------------------

def train_model(run: Run, phase: str, *, loss_form: str, amount: dict[str, float],
                similarity: np.ndarray, online: bool = False, permutation=None,
                workdir: str | None = None):
  """Trains one model for `config.<phase>.epochs`, resuming from checkpoints.

  `amount` is {'alpha': a} or {'mass': m} (simsoft.losses); `permutation`
  (online only) permutes every per-epoch S, for the shuffled-S control.
  The checkpoints live in <workdir or run.workdir>/<phase>/checkpoints.

  Returns:
    (graphdef, state) with state as in simsoft.train_step (replicated arrays).
  """
  config, ds = run.config, run.dataset
  train_split = ds.split("train")
  batch_size = config.batch_size
  if batch_size % run.mesh.size:
    raise ValueError(f"config.batch_size={batch_size} must be divisible by the "
                     f"{run.mesh.size} devices of the mesh")
  steps_per_epoch = data_lib.steps_per_epoch(train_split, batch_size)
  total_steps = config[phase].epochs * steps_per_epoch

  # Model, optimizer and the sharded state, created already replicated.
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: _model(run, nnx.Rngs(0))))
  tx = step_lib.make_optimizer(config.optimizer, steps_per_epoch=steps_per_epoch,
                               total_steps=total_steps)
  schedule = step_lib.make_schedule(config.optimizer, steps_per_epoch=steps_per_epoch,
                                    total_steps=total_steps)

  def init_state():
    model = _model(run, nnx.Rngs(config.seed))
    _, params, model_state = nnx.split(model, nnx.Param, ...)
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "model_state": model_state,
             "opt_state": tx.init(params),
             "similarity": jnp.asarray(similarity, jnp.float32),
             "nonfinite_step": jnp.full((), -1, jnp.int32)}
    if online:
      state["epoch_stats"] = step_lib.stats_to_state(sim_lib.init_stats(ds.num_classes))
    return state

  abstract = jax.eval_shape(init_state)
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=run.replicated), abstract)

  # Update step: state replicated and donated, batch sharded over 'data'.
  loss_fn = step_lib.make_loss_fn(loss_form, **amount)
  step_fn = step_lib.make_train_step(graphdef, tx, loss_fn, mean=ds.mean, std=ds.std,
                                     augmentation=ds.augmentation, track_epoch_stats=online)
  end_epoch = jax.jit(functools.partial(_online_end_epoch, permutation=permutation),
                      out_shardings=run.replicated, donate_argnums=0)

  # Checkpoint load.
  manager = ckpt.make_manager(os.path.join(workdir or run.workdir, phase, "checkpoints"),
                              every_steps=config.checkpoint.every_steps,
                              keep=config.checkpoint.keep)
  if manager.latest_step() is not None:
    state = ckpt.restore_state(manager, abstract)
    if int(state["step"]) < total_steps and jax.process_index() == 0:
      print(f"[{phase}] resumed from step {int(state['step'])}", flush=True)
  else:
    state = jax.jit(init_state, out_shardings=run.replicated)()
  start = int(state["step"])

  if start < total_steps:
    state = _loop(run, phase, state, step_fn, end_epoch if online else None, manager,
                  start=start, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                  schedule=schedule)
  manager.wait_until_finished()
  return graphdef, state


def _loop(run: Run, phase: str, state, step_fn, end_epoch, manager, *, start: int,
          total_steps: int, steps_per_epoch: int, schedule=None):
  """Steps from `start` to `total_steps` in chunks that end at every log,
  checkpoint, (online source) epoch boundary and profile start/stop.

  Logged scalars are means over the logging window (every step of it, whatever
  the chunking), plus the learning rate of the window's last step.
  """
  config = run.config
  feeder = input_pipeline.make_input(config.input, step_fn, run.mesh, run.dataset.split("train"),
                                     global_batch_size=config.batch_size, seed=config.seed,
                                     start_step=start)
  key = jax.jit(lambda: jax.random.key(config.seed), out_shardings=run.replicated)()
  logdir = os.path.join(run.workdir, phase)
  progress = Progress(phase, total_steps, start_step=start, batch_size=config.batch_size,
                      steps_per_epoch=steps_per_epoch, logdir=logdir,
                      hparams=flat_hparams(config))
  every = [config.log_every_steps, config.checkpoint.every_steps]
  every += [steps_per_epoch] if end_epoch else []
  profile = _profile_window(config, start, total_steps)
  window = []  # (metrics, steps) of the chunks since the last log
  done, tracing = start, False
  try:
    while done < total_steps:
      boundary = min([total_steps] + [(done // n + 1) * n for n in every]
                     + [p for p in profile if p > done])
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
          print(f"[{phase}] profiler trace of steps {profile[0] + 1}-{profile[1]} in "
                f"{logdir}/plugins/profile", flush=True)
      if end_epoch and done % steps_per_epoch == 0:
        state = end_epoch(state)
      if done % config.log_every_steps == 0 or done == total_steps:
        _check_finite(state, phase, manager)
        scalars = _window_means(window)
        window = []
        if schedule is not None:
          scalars["learning_rate"] = float(schedule(done - 1))
        progress.update(done, scalars)
      if done % config.checkpoint.every_steps == 0 or done == total_steps:
        _check_finite(state, phase, manager)
        ckpt.save_state(manager, done, state, force=done == total_steps)
  finally:
    if tracing:
      jax.profiler.stop_trace()
    progress.close()
  return state


def _window_means(window) -> dict[str, float]:
  """Step-weighted means of the chunks' metrics (a chunk's metrics are its steps' mean)."""
  steps = sum(n for _, n in window)
  return {k: sum(float(m[k]) * n for m, n in window) / steps for k in window[0][0]}


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


def _online_end_epoch(state, permutation=None):
  """Online Label Smoothing: S <- that epoch's class-mean correct softmax; reset stats.

  With `permutation` (shuffled-S control) the new S is S[perm][:, perm].
  """
  stats = step_lib.stats_from_state(state["epoch_stats"])
  similarity = sim_lib.online_update(state["similarity"], stats)
  if permutation is not None:
    perm = jnp.asarray(permutation)
    similarity = similarity[perm][:, perm]
  return dict(state, similarity=similarity,
              epoch_stats=jax.tree.map(jnp.zeros_like, state["epoch_stats"]))


def _check_finite(state, phase: str, manager) -> None:
  bad = int(state["nonfinite_step"])
  if bad >= 0:
    manager.wait_until_finished()
    raise NonFiniteLossError(
        f"phase {phase!r}: the loss became NaN or inf at step {bad}; training stopped. "
        f"The last good checkpoint (step {manager.latest_step()}) is intact. Lower "
        "config.optimizer.learning_rate or set config.optimizer.grad_clip_norm.")


# ----------------------------------------------------------------------------
# Phases.
# ----------------------------------------------------------------------------

# Config sections that define model A: another workdir's A is reusable when they match.
MODEL_A_FIELDS = ("dataset", "model", "optimizer", "input", "batch_size", "estimate", "seed")


def model_a_workdir(run: Run) -> str:
  """Where model A's checkpoints are: config.estimate.model_from (checked), or this run."""
  other = run.config.estimate.model_from
  if not other:
    return run.workdir
  if ckpt.read_json(os.path.join(other, "estimate", "done.json")) is None:
    raise FileNotFoundError(f"config.estimate.model_from={other!r} has no finished estimate "
                            "phase; run it there first (phases=estimate)")
  saved = ckpt.read_json(os.path.join(other, "config.json"))
  current = json.loads(run.config.to_json())
  diffs = [d for d in ckpt.config_differences(
      {k: saved.get(k) for k in MODEL_A_FIELDS}, {k: current.get(k) for k in MODEL_A_FIELDS})
      if d != "estimate.model_from"]
  if diffs:
    raise ValueError(f"config.estimate.model_from={other!r} trained model A with another "
                     f"config; differing fields: {diffs}")
  return other


def _phase_done(run: Run, phase: str) -> dict | None:
  return ckpt.read_json(os.path.join(run.workdir, phase, "done.json"))


def _mark_done(run: Run, phase: str, state) -> None:
  ckpt.write_json(os.path.join(run.workdir, phase, "done.json"),
                  {"step": int(state["step"]), "time": time.time()})


def run_estimate(run: Run) -> None:
  """Trains model A with plain cross-entropy, then estimates S on the validation split."""
  config, ds = run.config, run.dataset
  identity = np.eye(ds.num_classes, dtype=np.float32)
  graphdef, state = train_model(run, "estimate", loss_form="soft_target", amount={"alpha": 0.0},
                                similarity=identity, workdir=model_a_workdir(run))
  source = config.similarity.source
  stats, num_samples = None, 0
  if sim_lib.source_needs_data(source) and source != "online":
    stats, num_samples = evaluation.similarity_stats(
        run, graphdef, state, ds.split("validation"),
        with_features=sim_lib.source_needs_features(source))
  kernel = None
  if source == "weights":
    kernel = np.asarray(nnx.merge(graphdef, state["params"], state["model_state"]).head.kernel[...])
  similarity = sim_lib.build_similarity(
      source, num_classes=ds.num_classes, stats=stats, classifier_kernel=kernel,
      path=config.similarity.path or None, options=_similarity_options(config, source))
  similarity = losses.validate_similarity(similarity, ds.num_classes)
  options = similarity_options_that_ran(config, source)
  permutation = shuffle_permutation(config, ds.num_classes)
  if permutation is not None:
    similarity = sim_lib.permute_classes(similarity, permutation)
    options["shuffle_permutation"] = permutation.tolist()
  record = sim_lib.make_record(
      similarity, source=source, dataset=ds.name, class_names=list(ds.class_names),
      num_samples=int(num_samples), model_step=int(state["step"]), options=options)
  directory = os.path.join(run.workdir, "estimate", "similarity")
  sim_lib.save_record(directory, record, force=True)
  if jax.process_index() == 0:
    sim_lib.export_plain(record, os.path.join(run.workdir, "estimate"))
    progress_lib.write_similarity_image(os.path.join(run.workdir, "estimate"),
                                        int(state["step"]), similarity)
  _mark_done(run, "estimate", state)
  print(f"[estimate] similarity source {source!r}: S saved to {directory}", flush=True)


def load_similarity(run: Run) -> np.ndarray:
  """The S the retrain phase uses: this run's estimate, or config.similarity.from_workdir's."""
  source_dir = run.config.similarity.from_workdir or run.workdir
  directory = os.path.join(source_dir, "estimate", "similarity")
  if not resolve(directory).exists():
    raise FileNotFoundError(
        f"no estimated similarity at {directory}: run the 'estimate' phase first"
        + (" in that workdir" if run.config.similarity.from_workdir else ""))
  record = sim_lib.load_record(directory)
  try:
    return losses.validate_similarity(record.similarity, run.dataset.num_classes)
  except ValueError as e:
    raise ValueError(f"similarity from {directory} is unusable for dataset "
                     f"{run.dataset.name!r}: {e}") from None


def run_retrain(run: Run) -> None:
  """Trains a fresh model B with the configured similarity loss."""
  config = run.config
  online = config.similarity.source == "online"
  # Shuffled-S control: the estimate phase saved S already permuted; online
  # permutes its initial S here and every per-epoch update in the loop.
  permutation = shuffle_permutation(config, run.dataset.num_classes)
  if online:
    similarity = sim_lib.build_similarity(
        "online", num_classes=run.dataset.num_classes,
        options=_similarity_options(config, "online"))
    if permutation is not None:
      similarity = sim_lib.permute_classes(similarity, permutation)
  else:
    similarity = load_similarity(run)
  amount = config_lib.loss_amount(config)
  _, state = train_model(run, "retrain", loss_form=config.loss.form, amount=amount,
                         similarity=similarity, online=online,
                         permutation=permutation if online else None)
  if online and jax.process_index() == 0:
    with (resolve(run.workdir) / "retrain" / "online_similarity.npy").open("wb") as f:
      np.save(f, np.asarray(state["similarity"]), allow_pickle=False)
    progress_lib.write_similarity_image(os.path.join(run.workdir, "retrain"),
                                        int(state["step"]), np.asarray(state["similarity"]))
  ckpt.write_json(os.path.join(run.workdir, "retrain", "target.json"),
                  target_record(config, similarity, np.asarray(state["similarity"]), permutation))
  _mark_done(run, "retrain", state)


def off_target_mass(similarity, amount: dict[str, float]) -> np.ndarray:
  """[C]: 1 - T[y, y], the mass class y's soft target puts on other classes."""
  target = losses.similarity_target_matrix(jnp.asarray(similarity, jnp.float32), **amount)
  return 1.0 - np.diag(np.asarray(target, np.float64))


def target_record(config, initial_similarity, final_similarity, permutation) -> dict:
  """What model B's target actually was: form, amount, per-class off-target mass, source options.

  For the online source S changes every epoch: 'off_target_mass' is for the
  first epoch's S, 'off_target_mass_final' for the last one.
  """
  amount = config_lib.loss_amount(config)
  source = config.similarity.source
  mass = off_target_mass(initial_similarity, amount)
  record = {"form": config.loss.form, "amount": amount, "source": source,
            "options": similarity_options_that_ran(config, source),
            "shuffle_permutation": None if permutation is None else np.asarray(permutation).tolist(),
            "off_target_mass": mass.tolist(), "mean_off_target_mass": float(mass.mean())}
  if source == "online":
    final = off_target_mass(final_similarity, amount)
    record |= {"off_target_mass_final": final.tolist(),
               "mean_off_target_mass_final": float(final.mean())}
  return record


def _restore_final(run: Run, phase: str, similarity: np.ndarray, online: bool = False):
  """(graphdef, state) of a finished phase: train_model restores and has nothing left to do."""
  workdir = model_a_workdir(run) if phase == "estimate" else None
  return train_model(run, phase, loss_form="soft_target", amount={"alpha": 0.0},
                     similarity=similarity, online=online, workdir=workdir)


def run_evaluate(run: Run) -> dict:
  """Test metrics of models A and B -> workdir/results.json (+ table on stdout)."""
  ds, config = run.dataset, run.config
  identity = np.eye(ds.num_classes, dtype=np.float32)
  shared_a = _shared_model_a_results(run)
  models = {}
  for key, phase in (("A", "estimate"), ("B", "retrain")):
    if _phase_done(run, phase) is None:
      raise RuntimeError(f"evaluate needs the finished {phase!r} phase (model {key}); "
                         f"run it first (config.phases)")
    if shared_a and key in shared_a:
      continue
    online = phase == "retrain" and config.similarity.source == "online"
    models[key] = _restore_final(run, phase, identity, online)
  results = evaluation.evaluate_models(run, models, precomputed=shared_a)
  results["target"] = ckpt.read_json(os.path.join(run.workdir, "retrain", "target.json"))
  if config.estimate.model_from and shared_a is None:
    ckpt.write_json(os.path.join(config.estimate.model_from, "evaluate_A.json"),
                    {"evaluated_under": _evaluation_key(config), "results": results["models"]["A"]})
  ckpt.write_json(os.path.join(run.workdir, "results.json"), results)
  if jax.process_index() == 0:
    for key, phase in (("A", "estimate"), ("B", "retrain")):
      progress_lib.write_evaluation(os.path.join(run.workdir, "evaluate", key),
                                    _phase_done(run, phase)["step"], results["models"][key])
    print(evaluation.format_table(results), flush=True)
    similarity = np.asarray(models["B"][1]["similarity"])  # the S model B trained with
    path = evaluation.write_report(run.workdir, results, similarity, list(ds.class_names))
    print(f"[evaluate] report: {path}", flush=True)
  return results


def _evaluation_key(config) -> dict:
  """Every field model A's test results depend on, besides model A itself."""
  return {"dataset": config.dataset.to_dict(), "evaluate": config.evaluate.to_dict(),
          "eval_batch_size": config.eval_batch_size, "seed": config.seed}


def _shared_model_a_results(run: Run) -> dict | None:
  """{'A': results} that an earlier run sharing config.estimate.model_from measured under
  the same evaluation config (model_from/evaluate_A.json), else None."""
  other = run.config.estimate.model_from
  saved = ckpt.read_json(os.path.join(other, "evaluate_A.json")) if other else None
  if saved is None or saved["evaluated_under"] != _evaluation_key(run.config):
    return None
  print(f"[evaluate] model A: results from {other}/evaluate_A.json", flush=True)
  return {"A": saved["results"]}


PHASE_RUNNERS = {"estimate": run_estimate, "retrain": run_retrain, "evaluate": run_evaluate}


def check_config(run: Run, phases: tuple[str, ...]) -> None:
  """Fails on bad names and unusable inputs before any training starts."""
  config, ds = run.config, run.dataset
  if config.model.name not in models_lib.MODELS:
    raise ValueError(f"unknown model {config.model.name!r} (config.model.name); "
                     f"known: {sorted(models_lib.MODELS)}")
  source = config.similarity.source
  if source not in sim_lib.SOURCES:
    raise ValueError(f"unknown similarity source {source!r} (config.similarity.source); "
                     f"known: {sorted(sim_lib.SOURCES)}")
  step_lib.make_loss_fn(config.loss.form, **config_lib.loss_amount(config))
  evaluation.evaluators_of(config)
  input_pipeline.choose_pipeline(config.input, ds.split("train"))
  if "estimate" in phases or "evaluate" in phases:
    model_a_workdir(run)
  if source == "file" and "estimate" in phases:
    if not config.similarity.path:
      raise ValueError("similarity source 'file' needs config.similarity.path")
    sim_lib.read_similarity_file(config.similarity.path, num_classes=ds.num_classes)
  if ("retrain" in phases and source != "online"
      and (config.similarity.from_workdir or "estimate" not in phases)):
    load_similarity(run)  # missing or mismatched S fails now, not after training
  if config.evaluate.reference_similarity_path:
    sim_lib.read_similarity_file(config.evaluate.reference_similarity_path,
                                 num_classes=ds.num_classes)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       devices=None) -> None:
  """Runs the configured phases in order, skipping finished ones.

  Args:
    config: see simsoft.config.
    workdir: local path or gs:// bucket; one run per workdir.
    devices: the devices of the data-parallel mesh (default: all).
  """
  phases = config_lib.phases_of(config)
  ckpt.guard_workdir(workdir, config)
  ds = data_lib.get_dataset(
      config.dataset.name, data_dir=config.dataset.data_dir or None,
      validation_fraction=config.dataset.validation_fraction,
      split_seed=config.dataset.split_seed, train_examples=config.dataset.train_examples)
  run = Run(config=config, workdir=workdir, mesh=make_mesh(devices), dataset=ds)
  check_config(run, phases)
  for phase in phases:
    if phase != "evaluate" and _phase_done(run, phase) is not None:
      print(f"[{phase}] already finished in {workdir}; skipping", flush=True)
      continue
    start = time.time()
    PHASE_RUNNERS[phase](run)
    print(f"[{phase}] finished in {time.time() - start:.1f}s", flush=True)
