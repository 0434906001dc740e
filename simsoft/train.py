"""The pipeline's entry: check everything, then run the configured phases in order.

  train_and_evaluate(config, workdir)
    prepare:  schema, dataset, devices, sources, files and the workdir's own
              records are checked before anything is written
    phases:   estimate -> retrain -> evaluate (simsoft.phases), each skipped
              when finished (<phase>/done.json; delete it to run the phase
              again) and resumed from its latest checkpoint

Only simsoft.main and simsoft.sweep import this module (it loads the data,
hence TensorFlow); the phases, the loop and the evaluators do not import it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import jax
import ml_collections
from flax import nnx

from simsoft import checkpoint as ckpt
from simsoft import data as data_lib
from simsoft import errors
from simsoft import evaluation
from simsoft import evaluators as evaluators_lib
from simsoft import input_pipeline
from simsoft import phases as phases_lib
from simsoft import progress as progress_lib
from simsoft import similarity as sim_lib
from simsoft import state as state_lib
from simsoft import target as target_lib
from simsoft import train_step as step_lib
from simsoft import validate
from simsoft.progress import log
from simsoft.run import Run
from simsoft.sharding import make_mesh


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
          config.loss.form, **target_lib.loss_options(config, ds.num_classes)
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
    named = sim_lib.declared_classes(config.hierarchy_path)
    if named is not None and named != tuple(ds.class_names):
      raise errors.ConfigError(
          f"config.hierarchy_path={config.hierarchy_path!r} is a tree over the "
          f"classes {list(named)[:4]}..., not those of dataset "
          f"{config.dataset.name!r} {list(ds.class_names)[:4]}...; give a "
          "hierarchy over that dataset's classes"
      )
  spec = sim_lib.source_spec(source)
  options = target_lib.similarity_options_that_ran(config, source)
  if spec.per_epoch:
    _as_config_error(
        lambda: sim_lib.online_update_options(options), f"similarity.{source}"
    )
    if options["symmetrize"]:
      raise errors.ConfigError(
          "similarity.options.symmetrize mixes rows and cannot follow the "
          f"per-epoch row updates of source {source!r}; turn it off"
      )
  if options.get("initial") == "zero" and not (
      config.loss.as_given and config.loss.form != "hxe"
  ):
    raise errors.ConfigError(
        f"similarity.{source}.initial='zero' (the peer's zero first-epoch matrix) needs "
        "loss.as_given=True (W = (1 - alpha) I + alpha S, S as given)"
    )
  _as_config_error(
      lambda: evaluators_lib.check_entries(
          evaluation.evaluator_entries(config)
      ),
      "evaluate.evaluators",
  )
  input_pipeline.choose_pipeline(config.input, ds.split("train"))
  if "estimate" in phases or "evaluate" in phases:
    phases_lib.model_a_workdir(run)
  if "evaluate" in phases:
    for needed in ("estimate", "retrain"):
      if needed not in phases and phases_lib.phase_done(run, needed) is None:
        raise errors.MissingInputError(
            f"evaluate needs the finished {needed!r} phase in {run.workdir}, which has none; "
            f"run it first, e.g. phases={needed},evaluate"
        )
  if spec.needs_path and "estimate" in phases:
    path = target_lib.source_path(config, source)
    if not path:
      raise errors.ConfigError(
          f"similarity source {source!r} needs config.{spec.path_field}"
      )
    if spec.check_file is not None:
      _as_config_error(
          lambda: spec.check_file(path, ds.num_classes), spec.path_field
      )
  if (
      "retrain" in phases
      and not spec.per_epoch
      and (config.similarity.from_workdir or "estimate" not in phases)
  ):
    # A missing or mismatched S fails now, not after training.
    phases_lib.load_similarity(run)
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
  """config.model[config.model.name] must build the model (shapes only, no compute)."""
  model = run.config.model
  try:
    nnx.eval_shape(
        lambda: state_lib.create_model(model, run.dataset, nnx.Rngs(0))
    )
  except (TypeError, ValueError) as e:
    raise errors.ConfigError(
        f"config.model.{model.name}={state_lib.model_kwargs(model)} do not fit "
        f"model {model.name!r}: {' '.join(str(e).split())[:200]}; see "
        f"simsoft/models/{model.name.rstrip('0123456789')}.py for its arguments"
    ) from None


def load_dataset(config: ml_collections.ConfigDict) -> data_lib.Dataset:
  """config.dataset loaded into memory; a failure names the dataset and data_dir."""
  try:
    ds = data_lib.from_config(config.dataset)
  except (errors.UserError, ModuleNotFoundError):
    raise  # a missing optional dependency names its extra (simsoft.extras)
  except Exception as e:  # pylint: disable=broad-except  # TFDS raises many kinds
    raise errors.MissingInputError(
        f"config.dataset.name={config.dataset.name!r} (data_dir {config.dataset.data_dir!r}) "
        f"cannot be loaded: {ckpt.short_error(e)}; check the name and config.dataset.data_dir"
    ) from None
  if config.dataset.get("reader", "memory") == "grain":
    from simsoft.data import streaming  # pylint: disable=g-import-not-at-top

    ds = streaming.with_eval_workers(ds, config.input.grain_workers)
  return ds


def prepare(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    devices: Sequence[jax.Device] | None = None,
) -> tuple[Run, tuple[str, ...]]:
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
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    devices: Sequence[jax.Device] | None = None,
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
  with ckpt.WorkdirLock(workdir), progress_lib.phase_writers():
    log(
        f"JAX process {jax.process_index() + 1}/{jax.process_count()}, devices "
        f"{jax.local_device_count()} local / {run.mesh.size} in the mesh"
    )
    ckpt.guard_workdir(
        workdir, config
    )  # again under the lock, then config.json
    warming = None
    if "evaluate" in phases and phases_lib.phase_done(run, "evaluate") is None:
      warming = evaluation.precompile(config, run.dataset, run.mesh)
    for phase in phases:
      if phase == "evaluate" and warming is not None:
        warming.join()  # its programs are in the jit caches now
      if phases_lib.phase_done(run, phase) is not None:
        log(f"[{phase}] already finished in {workdir}; skipping")
        if phase == "evaluate":
          phases_lib.show_finished_evaluation(run)
        continue
      if phase != "evaluate":
        ckpt.write_provenance(workdir, config, phase)
      start = time.time()
      phases_lib.PHASE_RUNNERS[phase](run)
      log(f"[{phase}] finished in {time.time() - start:.1f}s")
