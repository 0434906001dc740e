"""The three phases of a run: estimate S with model A, retrain model B with it, evaluate both.

  estimate: train A (plain cross-entropy) -> similarity source on the
            validation split -> S saved with Orbax next to A's final state
  retrain:  restore S -> train a fresh B with the similarity loss
  evaluate: the evaluators (simsoft.evaluation) on A and B -> results.json

Each phase marks itself finished with <workdir>/<phase>/done.json; a
similarity source's registry entry (simsoft.similarity.SOURCES) says what it
is built from, so no phase branches on source names.
"""

from __future__ import annotations

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

from simsoft import checkpoint as ckpt
from simsoft import config as config_lib
from simsoft import data as data_lib
from simsoft import errors
from simsoft import evaluation
from simsoft import losses
from simsoft import progress as progress_lib
from simsoft import results as results_lib
from simsoft import similarity as sim_lib
from simsoft import state as state_lib
from simsoft import train_step as step_lib
from simsoft.loop import checkpoint_manager, phase_steps, train_model
from simsoft.paths import resolve
from simsoft.run import Run


def similarity_options(
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
      **similarity_options(config, source),
  }


def shuffle_permutation(
    config: ml_collections.ConfigDict, num_classes: int
) -> np.ndarray | None:
  """The shuffled-S control's class permutation (a derangement fixed by config.seed), or None."""
  if not config.similarity.shuffle:
    return None
  return sim_lib.derangement(num_classes, seed=config.seed)


def source_path(config: ml_collections.ConfigDict, source: str) -> str | None:
  """The file a source reads (the config field its registry entry names), or None."""
  field = sim_lib.source_spec(source).path_field
  if field is None:
    return None
  node = config
  for name in field.split("."):
    node = node[name]
  return node or None


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


def phase_done(run: Run, phase: str) -> dict | None:
  return ckpt.read_json(os.path.join(run.workdir, phase, "done.json"))


def mark_done(run: Run, phase: str, state) -> None:
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
      run, "estimate", similarity=identity, **model_a_training(run)
  )
  source = config.similarity.source
  spec = sim_lib.source_spec(source)
  options = similarity_options(config, source)
  if spec.per_epoch:
    similarity = sim_lib.initial_similarity(
        source, num_classes=ds.num_classes, options=options
    )
    num_samples = 0
    if not similarity.any():
      # A zero first-epoch matrix is no similarity: record the direction of
      # that epoch's target, W = (1 - alpha) I (run_retrain starts from zero).
      similarity = identity
  else:
    stats, num_samples = None, 0
    if spec.needs_data:
      stats, num_samples = validation_stats(
          run, graphdef, state, with_features=spec.needs_features
      )
    kernel = None
    if spec.needs_kernel:
      model = nnx.merge(graphdef, state["params"], state["model_state"])
      kernel = np.asarray(model.head.kernel[...])
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
  mark_done(run, "estimate", state)
  print(
      f"[estimate] similarity source {source!r}: S saved to {directory}",
      flush=True,
  )


def validation_stats(
    run: Run, graphdef: nnx.GraphDef, state: dict, *, with_features: bool
) -> tuple[sim_lib.SimilarityStats, int]:
  """One forward pass of model A over the validation split accumulating
  SimilarityStats (simsoft.similarity.update_stats); returns (stats, N)."""
  ds = run.dataset
  split = ds.split("validation")
  predict = step_lib.make_predict_fn(
      graphdef, mean=ds.mean, std=ds.std, return_features=with_features
  )

  def update(stats, params, model_state, batch):
    out = predict(params, model_state, batch["image"])
    logits, features = out if with_features else (out, None)
    return sim_lib.update_stats(
        stats, logits, batch["label"], features, batch["mask"]
    )

  feature_dim = 0
  if with_features:
    probe = jax.eval_shape(
        predict,
        state["params"],
        state["model_state"],
        jax.ShapeDtypeStruct((1,) + ds.image_shape, np.float32),
    )
    feature_dim = probe[1].shape[-1]
  stats = run.replicate(sim_lib.init_stats(ds.num_classes, feature_dim))
  update = jax.jit(
      update,
      in_shardings=(
          run.replicated,
          run.replicated,
          run.replicated,
          run.batch_sharding,
      ),
      out_shardings=run.replicated,
      donate_argnums=0,
  )
  for batch in data_lib.eval_batches(
      split,
      global_batch_size=run.config.eval_batch_size,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  ):
    stats = update(
        stats, state["params"], state["model_state"], run.global_batch(batch)
    )
  return stats, len(split)


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
  config, num_classes = run.config, run.dataset.num_classes
  training = model_b_training(run)
  source = config.similarity.source
  per_epoch = training["online"]
  if per_epoch:
    similarity = sim_lib.initial_similarity(
        source,
        num_classes=num_classes,
        options=similarity_options(config, source),
    )
    if training["permutation"] is not None:
      similarity = sim_lib.permute_classes(similarity, training["permutation"])
  else:
    similarity = load_similarity(run)
  _, state = train_model(run, "retrain", similarity=similarity, **training)
  if per_epoch and jax.process_index() == 0:
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
          shuffle_permutation(config, num_classes),
      ),
  )
  mark_done(run, "retrain", state)


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

  For a per-epoch source (online) S changes every epoch: 'off_target_mass' is for the
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
  if sim_lib.source_spec(source).per_epoch:
    final = off_target_mass(final_similarity, amount, as_given)
    record |= {
        "off_target_mass_final": final.tolist(),
        "mean_off_target_mass_final": float(final.mean()),
    }
  return record


def model_a_training(run: Run) -> dict[str, Any]:
  """train_model's keywords for model A: plain cross-entropy, in model_a_workdir."""
  return {
      "loss_form": "soft_target",
      "amount": {"alpha": 0.0},
      "workdir": model_a_workdir(run),
  }


def model_b_training(run: Run) -> dict[str, Any]:
  """train_model's keywords for model B, the same when training and when restoring.

  For a per-epoch source ('online': True) the loop rebuilds S every epoch;
  the shuffled-S control's permutation reaches the loop only then (other
  sources' S was saved already permuted).
  """
  config, num_classes = run.config, run.dataset.num_classes
  source = config.similarity.source
  per_epoch = sim_lib.source_spec(source).per_epoch
  return {
      "loss_form": config.loss.form,
      "amount": loss_options(config, num_classes),
      "online": per_epoch,
      "permutation": shuffle_permutation(config, num_classes)
      if per_epoch
      else None,
      "online_options": sim_lib.online_update_options(
          similarity_options_that_ran(config, source)
      )
      if per_epoch
      else None,
  }


def restore_final(run: Run, phase: str) -> tuple[nnx.GraphDef, dict[str, Any]]:
  """(graphdef, state) of a finished phase's model, from its latest readable checkpoint.

  If the final checkpoint is damaged and an older one restores, the missing
  steps are trained again with the phase's own loss (the same model: data
  order and randomness are functions of (seed, step)).
  """
  training = (model_a_training if phase == "estimate" else model_b_training)(
      run
  )
  steps_per_epoch, total_steps = phase_steps(run, phase)
  identity = np.eye(run.dataset.num_classes, dtype=np.float32)
  setup = state_lib.create_train_state(
      run.config,
      run.dataset,
      run.mesh,
      similarity=identity,
      steps_per_epoch=steps_per_epoch,
      total_steps=total_steps,
      track_epoch_stats=training.get("online", False),
  )
  manager = checkpoint_manager(run, phase, training.get("workdir"))
  state = ckpt.restore_latest_readable(manager, setup.abstract, phase=phase)
  if int(state["step"]) < total_steps:
    return train_model(run, phase, similarity=identity, **training)
  return setup.graphdef, state


def run_evaluate(run: Run) -> dict:
  """Test metrics of models A and B -> workdir/results.json (+ table on stdout)."""
  ds, config = run.dataset, run.config
  shared_a = _shared_model_a_results(run)
  models = {}
  for key, phase in (("A", "estimate"), ("B", "retrain")):
    if phase_done(run, phase) is None:
      raise errors.MissingInputError(
          f"evaluate needs the finished {phase!r} phase (model {key}) in {run.workdir}; run it "
          f"first, e.g. phases={phase},evaluate"
      )
    if shared_a and key in shared_a:
      continue
    models[key] = restore_final(run, phase)
  predict_jits = {}  # A and B share one compiled program
  predict_fns = {}
  for key, (graphdef, state) in models.items():
    if graphdef not in predict_jits:
      predict_jits[graphdef] = jax.jit(
          step_lib.make_predict_fn(graphdef, mean=ds.mean, std=ds.std)
      )
    predict_fns[key] = functools.partial(
        predict_jits[graphdef], state["params"], state["model_state"]
    )
  results = {
      "config": config.to_dict(),
      "dataset": ds.name,
      "class_names": list(ds.class_names),
      **evaluation.evaluate_models(
          predict_fns,
          evaluation.build_evaluators(config, ds, run.mesh),
          precomputed=shared_a,
      ),
  }
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
          phase_done(run, phase)["step"],
          results["models"][key],
      )
    print(results_lib.format_table(results), flush=True)
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
      "evaluate": json.loads(config.evaluate.to_json()),
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
