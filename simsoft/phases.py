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
import numpy as np
from flax import nnx

from simsoft import checkpoint as ckpt
from simsoft import data as data_lib
from simsoft import errors
from simsoft import evaluation
from simsoft import hparams as hparams_lib
from simsoft import losses
from simsoft import progress as progress_lib
from simsoft import results as results_lib
from simsoft import similarity as sim_lib
from simsoft import state as state_lib
from simsoft import target as target_lib
from simsoft import train_eval
from simsoft import train_step as step_lib
from simsoft.loop import checkpoint_manager, phase_steps, train_model
from simsoft.paths import resolve
from simsoft.progress import log
from simsoft.run import Run

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
  """The phase's done.json, or None while it has not finished."""
  return ckpt.read_json(os.path.join(run.workdir, phase, "done.json"))


def mark_done(run: Run, phase: str, state: dict[str, Any]) -> None:
  """<workdir>/<phase>/done.json: the final step, the time and the provenance."""
  ckpt.write_json(
      os.path.join(run.workdir, phase, "done.json"),
      {
          "step": int(state["step"]),
          "time": time.time(),
          "provenance": ckpt.provenance(run.config, phase),
      },
  )


def identity_similarity(run: Run):
  """S = I in the configured form: dense [C, C], or sparse with k = 1
  (similarity.sparse_top_k > 0: no C x C array for model A)."""
  c = run.dataset.num_classes
  if run.config.similarity.sparse_top_k:
    return sim_lib.sparse_identity(c)
  return np.eye(c, dtype=np.float32)


def configured_form(similarity, num_classes: int, sparse_top_k: int):
  """S validated and in the form the config asks for: dense [C, C] when
  sparse_top_k is 0, else each row's top-k entries (SparseSimilarity)."""
  if sim_lib.is_sparse(similarity):
    similarity = sim_lib.validate_sparse(similarity, num_classes)
    if not sparse_top_k:
      return losses.validate_similarity(
          sim_lib.to_dense(similarity), num_classes
      )
    return sim_lib.truncate(similarity, sparse_top_k)
  similarity = losses.validate_similarity(similarity, num_classes)
  if sparse_top_k:
    return sim_lib.to_sparse(similarity, sparse_top_k)
  return similarity


def image_similarity(similarity, max_classes: int = 1024) -> np.ndarray | None:
  """A dense S to draw (a sparse one densified up to `max_classes`), else None."""
  if not sim_lib.is_sparse(similarity):
    return np.asarray(similarity)
  if similarity.num_classes > max_classes:
    return None
  return sim_lib.to_dense(similarity)


def run_estimate(run: Run) -> None:
  """Trains model A with plain cross-entropy, then estimates S on the validation split."""
  config, ds = run.config, run.dataset
  graphdef, state = train_model(
      run,
      "estimate",
      similarity=identity_similarity(run),
      **model_a_training(run),
  )
  source = config.similarity.source
  spec = sim_lib.source_spec(source)
  options = target_lib.similarity_options(config, source)
  if spec.per_epoch:
    similarity = sim_lib.initial_similarity(
        source, num_classes=ds.num_classes, options=options
    )
    num_samples = 0
    if not similarity.any():
      # A zero first-epoch matrix is no similarity: record the direction of
      # that epoch's target, W = (1 - alpha) I (run_retrain starts from zero).
      similarity = np.eye(ds.num_classes, dtype=np.float32)
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
        path=target_lib.source_path(config, source),
        options=options,
    )
  if sim_lib.is_sparse(similarity):
    similarity = sim_lib.validate_sparse(similarity, ds.num_classes)
  else:
    similarity = losses.validate_similarity(similarity, ds.num_classes)
  options = target_lib.similarity_options_that_ran(config, source)
  permutation = target_lib.shuffle_permutation(config, ds.num_classes)
  if permutation is not None:
    permute = (
        sim_lib.permute_sparse
        if sim_lib.is_sparse(similarity)
        else sim_lib.permute_classes
    )
    similarity = permute(similarity, permutation)
    options["shuffle_permutation"] = permutation.tolist()
  similarity = configured_form(
      similarity, ds.num_classes, config.similarity.sparse_top_k
  )
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
    image = image_similarity(similarity)
    if image is not None:
      progress_lib.write_similarity_image(
          os.path.join(run.workdir, "estimate"), int(state["step"]), image
      )
  mark_done(run, "estimate", state)
  log(f"[estimate] similarity source {source!r}: S saved to {directory}")


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


def load_similarity(run: Run):
  """The S the retrain phase uses: this run's estimate, or config.similarity.from_workdir's,
  in the configured form (dense, or top-k sparse: similarity.sparse_top_k)."""
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
    return configured_form(
        record.similarity,
        run.dataset.num_classes,
        run.config.similarity.sparse_top_k,
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
        options=target_lib.similarity_options(config, source),
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
      target_lib.target_record(
          config,
          similarity,
          np.asarray(state["similarity"]) if per_epoch else similarity,
          target_lib.shuffle_permutation(config, num_classes),
      ),
  )
  mark_done(run, "retrain", state)


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
      "amount": target_lib.loss_options(config, num_classes),
      "online": per_epoch,
      "permutation": target_lib.shuffle_permutation(config, num_classes)
      if per_epoch
      else None,
      "online_options": sim_lib.online_update_options(
          target_lib.similarity_options_that_ran(config, source)
      )
      if per_epoch
      else None,
  }


def restore_final(
    run: Run, phase: str, *, read_only: bool = False
) -> tuple[nnx.GraphDef, dict[str, Any]]:
  """(graphdef, state) of a finished phase's model, from its latest readable checkpoint.

  If the final checkpoint is damaged and an older one restores, the missing
  steps are trained again with the phase's own loss (the same model: data
  order and randomness are functions of (seed, step)). With `read_only`
  (diagnosis tools) nothing is written: an unfinished phase or a missing
  final checkpoint is a MissingInputError instead.
  """
  if read_only and phase_done(run, phase) is None:
    raise errors.MissingInputError(
        f"{run.workdir}: phase {phase!r} has not finished (no {phase}/done.json); "
        "finish the run with simsoft.main first (this tool only reads)"
    )
  training = (model_a_training if phase == "estimate" else model_b_training)(
      run
  )
  steps_per_epoch, total_steps = phase_steps(run, phase)
  # S's structure in the saved state (its values come from the checkpoint)
  identity = identity_similarity(run)
  if phase == "retrain" and sim_lib.is_sparse(identity):
    identity = load_similarity(run)
  setup = state_lib.create_train_state(
      run.config,
      run.dataset,
      run.mesh,
      similarity=identity,
      steps_per_epoch=steps_per_epoch,
      total_steps=total_steps,
      track_epoch_stats=training.get("online", False),
  )
  manager = checkpoint_manager(
      run, phase, training.get("workdir"), read_only=read_only
  )
  if read_only and manager.latest_step() is None:
    raise errors.MissingInputError(
        f"{run.workdir}: phase {phase!r} has no checkpoint in "
        f"{os.fspath(manager.directory)}; finish the run with simsoft.main first"
    )
  state = ckpt.restore_latest_readable(
      manager, setup.abstract, phase=phase, move_aside=not read_only
  )
  if int(state["step"]) < total_steps:
    if read_only:
      raise errors.MissingInputError(
          f"{run.workdir}: phase {phase!r}'s latest readable checkpoint is step "
          f"{int(state['step'])} of {total_steps}; finish the run with "
          "simsoft.main first (this tool only reads)"
      )
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
  predict_fns = {}  # A and B share one compiled program, the training's
  for key, (graphdef, state) in models.items():
    predict = train_eval.predict_jit(graphdef, tuple(ds.mean), tuple(ds.std))
    predict_fns[key] = functools.partial(
        predict, state["params"], state["model_state"]
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
    hparams_lib.write_session(os.path.join(run.workdir, "evaluate"), config)
    print(results_lib.format_table(results), flush=True)
    # the S model B trained with (None: sparse and too large to draw)
    similarity = image_similarity(
        jax.tree.map(np.asarray, models["B"][1]["similarity"])
    )
    curves = {
        "A": progress_lib.read_metrics(
            os.path.join(model_a_workdir(run), "estimate")
        ),
        "B": progress_lib.read_metrics(os.path.join(run.workdir, "retrain")),
    }
    path = evaluation.write_report(
        run.workdir, results, similarity, list(ds.class_names), curves
    )
    log(f"[evaluate] report: {path}")
  ckpt.write_json(
      os.path.join(run.workdir, "evaluate", "done.json"),
      {"time": time.time(), "provenance": results["provenance"]},
  )
  return results


def show_finished_evaluation(run: Run) -> None:
  """A finished evaluate phase: its result table again, and how to rerun it."""
  results = ckpt.read_json(os.path.join(run.workdir, "results.json"))
  if results is not None and jax.process_index() == 0:
    print(results_lib.format_table(results), flush=True)
  log(
      f"[evaluate] results: {run.workdir}/results.json, report.md; delete "
      f"{run.workdir}/evaluate/done.json to evaluate again"
  )


def _evaluation_key(config) -> dict:
  """Every field model A's test results depend on, besides model A itself."""
  return {
      "dataset": json.loads(config.dataset.to_json()),
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
  log(f"[evaluate] model A: results from {other}/evaluate_A.json")
  return {"A": saved["results"]}


PHASE_RUNNERS = {
    "estimate": run_estimate,
    "retrain": run_retrain,
    "evaluate": run_evaluate,
}
