"""Range checks of every config field, run before anything touches the workdir.

`check_values(config)` needs neither data nor devices: names, numbers,
ranges, and the files the config names. `check_against_data(config, ds,
num_devices)` adds what needs the dataset (batch size vs the training split,
top_k vs the class count). Both raise simsoft.errors.ConfigError (or
MissingInputError) with a one-line message naming the field and the value
and saying what to do.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import ml_collections

if TYPE_CHECKING:
  from simsoft.data import Dataset

from simsoft import config as config_lib
from simsoft.errors import ConfigError, MissingInputError

DTYPES = ("float32", "bfloat16")
DIAGONALS = ("keep", "remove")
MAX_SEVERITY = 5


def _fail(field: str, value, rule: str, advice: str = "") -> None:
  tail = f"; {advice}" if advice else ""
  raise ConfigError(f"config.{field}={value!r} {rule}{tail}")


def _number(field: str, value, *, integer: bool = False) -> float:
  """`value` as a number, refusing bools, strings and NaN/inf."""
  kinds = (int,) if integer else (int, float)
  if isinstance(value, bool) or not isinstance(value, kinds):
    _fail(field, value, f"must be {'an integer' if integer else 'a number'}")
  if not math.isfinite(value):
    _fail(field, value, "must be finite")
  return value


def at_least(
    field: str,
    value: Any,
    low: float,
    *,
    integer: bool = True,
    advice: str = "",
) -> None:
  """value >= low (an integer unless integer=False)."""
  if _number(field, value, integer=integer) < low:
    _fail(field, value, f"must be >= {low}", advice)


# Seeds are unsigned 32-bit integers: jax.random.key and NumPy take them all
# (and the offsets simsoft adds), and a 2**64 fails there only after the
# workdir's records were written.
SEED_MAX = 2**32 - 1


def seed(field: str, value: Any) -> None:
  """An integer seed in [0, SEED_MAX]."""
  if not 0 <= _number(field, value, integer=True) <= SEED_MAX:
    _fail(field, value, f"must be an integer in [0, 2**32 - 1 = {SEED_MAX}]")


def positive(field: str, value: Any, advice: str = "") -> None:
  """value > 0, finite."""
  if _number(field, value) <= 0:
    _fail(field, value, "must be > 0", advice)


def fraction(
    field: str, value: Any, *, upper_open: bool = False, advice: str = ""
) -> None:
  """value in [0, 1] (or [0, 1) with upper_open), finite."""
  v = _number(field, value)
  if v < 0 or v > 1 or (upper_open and v == 1):
    _fail(
        field, value, f"must lie in [0, 1{')' if upper_open else ']'}", advice
    )


def one_of(
    field: str, value: Any, known: Sequence[Any], what: str = "value"
) -> None:
  if value not in known:
    raise ConfigError(
        f"unknown {what} {value!r} (config.{field}); use one of {list(known)}"
    )


def flag(field: str, value: Any) -> None:
  if not isinstance(value, bool):
    _fail(field, value, "must be True or False")


def _tuple_hint(field: str, example) -> str:
  return f'a tuple such as --config.{field}="{tuple(example)!r}"'


def names_in(
    field: str, names: Any, known: Sequence[str], *, what: str
) -> tuple[str, ...]:
  """A field that holds a tuple of names, each checked against `known`."""
  known = list(known)
  if not isinstance(names, (tuple, list)) or not all(
      isinstance(n, str) for n in names
  ):
    _fail(
        field, names, "must be a tuple of names", _tuple_hint(field, known[:2])
    )
  if not any(names):
    _fail(field, names, f"is empty; give one or more of {known}")
  for name in names:
    if name not in known:
      hint = (
          f"; give {_tuple_hint(field, name.split(','))}" if "," in name else ""
      )
      raise ConfigError(
          f"unknown {what} {name!r} in config.{field}={tuple(names)!r}; use "
          f"names from {known}{hint}"
      )
  return tuple(names)


def existing_file(field: str, path: str) -> None:
  if path and "://" not in path and not os.path.exists(path):
    raise MissingInputError(
        f"config.{field}={path!r}: no such file; give an existing path"
    )


# ----------------------------------------------------------------------------
# Sections.
# ----------------------------------------------------------------------------


def check_phases(c: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The phases to run: not empty, known names, no repeats."""
  names = c.phases
  if isinstance(names, (tuple, list)) and not any(names):
    _fail(
        "phases",
        names,
        f"is empty: nothing would run; give some of {list(config_lib.PHASES)}, "
        "e.g. :phases=estimate or "
        + _tuple_hint("phases", config_lib.PHASES[1:]),
    )
  names = names_in("phases", names, config_lib.PHASES, what="phase")
  if len(set(names)) != len(names):
    _fail("phases", names, "repeats a phase; name each phase once")
  return names


def check_dataset(c: ml_collections.ConfigDict) -> None:
  from simsoft import data as data_lib  # pylint: disable=g-import-not-at-top

  reader = c.dataset.get("reader", "memory")
  one_of("dataset.reader", reader, ["grain", "memory"], "dataset reader")
  if reader == "memory":
    one_of("dataset.name", c.dataset.name, sorted(data_lib.DATASETS), "dataset")
  else:
    check_streaming(c)
  v = _number("dataset.validation_fraction", c.dataset.validation_fraction)
  if not 0 < v < 1:
    _fail(
        "dataset.validation_fraction",
        v,
        "must lie in (0, 1): the estimate phase needs a " "held-out split",
        "e.g. 0.1",
    )
  seed("dataset.split_seed", c.dataset.split_seed)
  at_least(
      "dataset.train_examples",
      c.dataset.train_examples,
      0,
      advice="0 keeps the whole training split",
  )
  noise = c.dataset.label_noise
  fraction("dataset.label_noise.rate", noise.rate)
  if isinstance(noise.flips, str) or not all(
      isinstance(f, str) for f in noise.flips
  ):
    _fail(
        "dataset.label_noise.flips",
        noise.flips,
        "must be a tuple of 'SOURCE->TARGET' class names",
        "e.g. \"('cat->dog',)\"",
    )


def check_streaming(c: ml_collections.ConfigDict) -> None:
  """dataset.reader='grain': any TFDS name or a prepared dataset; transforms; input.grain_*."""
  from simsoft.data import image_ops  # pylint: disable=g-import-not-at-top
  from simsoft.data import streaming  # pylint: disable=g-import-not-at-top

  g = c.dataset.grain
  one_of(
      "dataset.grain.train_transform",
      g.train_transform,
      list(streaming.TRAIN_TRANSFORMS),
      "train transform",
  )
  one_of(
      "dataset.grain.eval_transform",
      g.eval_transform,
      list(image_ops.EVAL_TRANSFORMS),
      "eval transform",
  )
  at_least("dataset.grain.image_size", g.image_size, 0)
  at_least("dataset.grain.stats_examples", g.stats_examples, 0)
  if g.train_transform == "device" and g.image_size:
    _fail(
        "dataset.grain.image_size",
        g.image_size,
        "needs a host train transform (train_transform='device' keeps the "
        "images' own size)",
        "set dataset.grain.train_transform='random_resized_crop' or image_size=0",
    )
  for field in ("grain_workers", "grain_threads", "grain_buffer"):
    at_least(f"input.{field}", c.input[field], 0)
  if c.dataset.train_examples or c.dataset.label_noise.rate:
    _fail(
        "dataset.reader",
        "grain",
        "cannot subset or relabel a streamed split (dataset.train_examples, "
        "dataset.label_noise)",
        "use dataset.reader='memory' for those",
    )


def check_model(c: ml_collections.ConfigDict) -> None:
  from simsoft import models as models_lib  # pylint: disable=g-import-not-at-top

  one_of("model.name", c.model.name, sorted(models_lib.MODELS), "model")
  one_of("model.dtype", c.model.dtype, DTYPES, "dtype")


def check_similarity(c: ml_collections.ConfigDict) -> None:
  from simsoft import similarity as sim_lib  # pylint: disable=g-import-not-at-top

  s = c.similarity
  one_of(
      "similarity.source",
      s.source,
      sorted(sim_lib.SOURCES),
      "similarity source",
  )
  flag("similarity.shuffle", s.shuffle)
  flag("similarity.shard_rows", s.shard_rows)
  if s.source == "file" and not s.path:
    _fail(
        "similarity.path",
        s.path,
        "is empty but similarity.source is 'file'",
        "give the .npy/.json/.csv file that holds S",
    )
  existing_file("similarity.path", s.path)
  at_least(
      "similarity.sparse_top_k",
      s.sparse_top_k,
      0,
      advice="0 keeps S dense; k > 0 keeps each row's k largest entries",
  )
  if s.sparse_top_k and sim_lib.source_spec(s.source).per_epoch:
    _fail(
        "similarity.sparse_top_k",
        s.sparse_top_k,
        f"is set but source {s.source!r} rebuilds a dense S every epoch",
        "use 0 with this source",
    )
  if (
      s.from_workdir
      and "://" not in s.from_workdir
      and not os.path.isdir(s.from_workdir)
  ):
    raise MissingInputError(
        f"config.similarity.from_workdir={s.from_workdir!r}: no such workdir; "
        "give a workdir whose estimate phase finished"
    )
  check_postprocess_options(s.options)
  for name in config_lib.source_own_options():
    check_source_options(name, s[name])


def check_postprocess_options(o: ml_collections.ConfigDict) -> None:
  at_least(
      "similarity.options.temperature",
      o.temperature,
      0,
      integer=False,
      advice="0 picks the source's default",
  )
  flag("similarity.options.symmetrize", o.symmetrize)
  one_of(
      "similarity.options.diagonal", o.diagonal, DIAGONALS, "diagonal option"
  )
  at_least("similarity.options.top_k", o.top_k, 0, advice="0 keeps every class")
  fraction("similarity.options.identity_mix", o.identity_mix)
  flag("similarity.options.normalize", o.normalize)


def check_source_options(
    source: str, section: ml_collections.ConfigDict
) -> None:
  """similarity.<source>.*: booleans are booleans, amounts in range, then the
  source's own rules (simsoft.similarity.check_source_options: ordinal
  ratio, embedding lower_bound, hierarchy beta, ...), before model A trains."""
  from simsoft import similarity as sim_lib  # pylint: disable=g-import-not-at-top

  for key, value in section.items():
    field = f"similarity.{source}.{key}"
    if key == "smoothing":
      at_least(field, value, 0, integer=False)
    elif key == "initial_smoothing":
      fraction(field, value)
    elif key == "temperature":
      positive(field, value)
    elif isinstance(value, bool) or key in ("correct_only", "center"):
      flag(field, value)
  try:
    sim_lib.check_source_options(source, section.to_dict())
  except ValueError as e:
    raise ConfigError(f"config.similarity.{source}: {e}") from None


def check_loss(c: ml_collections.ConfigDict) -> None:
  one_of("loss.form", c.loss.form, config_lib.LOSS_FORMS, "loss form")
  one_of("loss.amount", c.loss.amount, config_lib.LOSS_AMOUNTS, "loss amount")
  fraction(
      "loss.alpha",
      c.loss.alpha,
      advice="0 is plain cross-entropy, 1 the full similarity target",
  )
  fraction(
      "loss.mass",
      c.loss.mass,
      advice="the off-target mass of each soft target, e.g. 0.1",
  )
  flag("loss.as_given", c.loss.as_given)
  at_least("loss.hxe.alpha", c.loss.hxe.alpha, 0, integer=False)
  flag("loss.hxe.normalize", c.loss.hxe.normalize)
  if c.loss.form == "hxe" and not c.hierarchy_path:
    raise ConfigError(
        "loss form 'hxe' needs a class hierarchy: set config.hierarchy_path "
        "(a JSON/CSV tree or a [C, C] distance matrix)"
    )


def check_optimizer(c: ml_collections.ConfigDict) -> None:
  o = c.optimizer
  one_of("optimizer.name", o.name, ("sgd", "adamw"), "optimizer")
  positive("optimizer.learning_rate", o.learning_rate, "e.g. lr=0.05")
  fraction("optimizer.momentum", o.momentum, upper_open=True)
  flag("optimizer.nesterov", o.nesterov)
  at_least("optimizer.weight_decay", o.weight_decay, 0, integer=False)
  at_least("optimizer.warmup_epochs", o.warmup_epochs, 0, integer=False)
  one_of(
      "optimizer.schedule",
      o.schedule,
      ("cosine", "constant", "step"),
      "schedule",
  )
  at_least(
      "optimizer.grad_clip_norm",
      o.grad_clip_norm,
      0,
      integer=False,
      advice="0 turns clipping off",
  )
  fraction("optimizer.b1", o.b1, upper_open=True)
  fraction("optimizer.b2", o.b2, upper_open=True)


def check_training(c: ml_collections.ConfigDict) -> None:
  from simsoft import input_pipeline  # pylint: disable=g-import-not-at-top

  one_of(
      "input.pipeline",
      c.input.pipeline,
      input_pipeline.PIPELINES,
      "input pipeline",
  )
  at_least("input.steps_per_dispatch", c.input.steps_per_dispatch, 1)
  flag("input.scan_unroll", c.input.scan_unroll)
  at_least("input.device_max_bytes", c.input.device_max_bytes, 0)
  at_least("batch_size", c.batch_size, 1)
  at_least("eval_batch_size", c.eval_batch_size, 1)
  at_least("estimate.epochs", c.estimate.epochs, 1, advice="e.g. epochs=1")
  at_least("retrain.epochs", c.retrain.epochs, 1, advice="e.g. epochs=1")
  at_least("checkpoint.every_steps", c.checkpoint.every_steps, 1)
  at_least(
      "checkpoint.keep",
      c.checkpoint.keep,
      1,
      advice="2 keeps a fallback if the latest is damaged",
  )
  at_least("log_every_steps", c.log_every_steps, 1)
  at_least(
      "train_eval.every_epochs",
      c.train_eval.every_epochs,
      0,
      integer=False,
      advice="0 (with every_steps 0) turns held-out evaluation off",
  )
  at_least("train_eval.every_steps", c.train_eval.every_steps, 0)
  one_of(
      "train_eval.split",
      c.train_eval.split,
      ("validation", "train", "test"),
      "split",
  )
  at_least("train_eval.examples", c.train_eval.examples, 0, advice="0 is all")
  seed("seed", c.seed)
  if (
      c.estimate.model_from
      and "://" not in c.estimate.model_from
      and not os.path.isdir(c.estimate.model_from)
  ):
    raise MissingInputError(
        f"config.estimate.model_from={c.estimate.model_from!r}: no such "
        "workdir; give a workdir whose estimate phase finished"
    )


def check_evaluate(c: ml_collections.ConfigDict) -> None:
  """evaluate.evaluators: {name: {'type': ..., options}}, each option in range."""
  from simsoft import corruptions as corruptions_lib  # pylint: disable=g-import-not-at-top
  from simsoft import data as data_lib  # pylint: disable=g-import-not-at-top
  from simsoft import evaluators  # pylint: disable=g-import-not-at-top

  entries = _plain(c.evaluate.evaluators)
  known_names = {
      "corruptions": (sorted(corruptions_lib.CORRUPTIONS), "corruption"),
      "cifar10_c": (
          data_lib.CIFAR10_C_CORRUPTIONS + data_lib.CIFAR10_C_EXTRA_CORRUPTIONS,
          "CIFAR-10-C corruption",
      ),
  }
  if not isinstance(entries, dict) or not all(
      isinstance(e, dict) for e in entries.values()
  ):
    _fail(
        "evaluate.evaluators",
        entries,
        "must map each evaluator's name to {'type': ..., options}",
        "e.g. {'clean': {'type': 'clean'}}",
    )
  try:
    evaluators.check_entries(entries)
  except ValueError as e:
    raise ConfigError(f"config.evaluate.evaluators: {e}") from None
  for name, entry in entries.items():
    field = f"evaluate.evaluators.{name}"
    kind = entry.get("type", name)
    if "corruptions" in entry:
      known, what = known_names[kind]
      names_in(f"{field}.corruptions", entry["corruptions"], known, what=what)
    if "severities" in entry:
      check_severities(f"{field}.severities", entry["severities"])
    if "examples" in entry:
      at_least(
          f"{field}.examples",
          entry["examples"],
          0,
          advice="0 corrupts every test image",
      )
    if "data_dir" in entry and not isinstance(entry["data_dir"], str):
      _fail(
          f"{field}.data_dir",
          entry["data_dir"],
          "must be a path",
          "'' reads config.dataset.data_dir",
      )
  existing_file(
      "evaluate.reference_similarity_path",
      c.evaluate.reference_similarity_path,
  )


def _plain(value):
  """A ConfigDict as a dict (whose repr fits on one line); anything else as it is."""
  if isinstance(value, ml_collections.ConfigDict):
    return value.to_dict()
  return value


def check_severities(field: str, severities: Any) -> tuple[int, ...]:
  """A tuple of severities, each an integer in 1..5."""
  if not isinstance(severities, (tuple, list)):
    _fail(field, severities, "must be a tuple", _tuple_hint(field, (1, 3, 5)))
  if not severities:
    _fail(
        field,
        severities,
        f"is empty; give severities in 1..{MAX_SEVERITY}",
        _tuple_hint(field, (1, 3, 5)),
    )
  for item in severities:
    if (
        isinstance(item, bool)
        or not isinstance(item, int)
        or not 1 <= item <= MAX_SEVERITY
    ):
      _fail(
          field,
          tuple(severities),
          f"holds {item!r}; each severity must be an integer "
          f"in 1..{MAX_SEVERITY}",
          "e.g. (1, 3, 5)",
      )
  return tuple(severities)


SECTIONS = (
    check_dataset,
    check_model,
    check_similarity,
    check_loss,
    check_optimizer,
    check_training,
    check_evaluate,
)


def check_values(c: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Every field's range; returns the phases to run. Needs no data, writes nothing."""
  phases = check_phases(c)
  for check in SECTIONS:
    check(c)
  return phases


# ----------------------------------------------------------------------------
# Checks that need the dataset and the devices.
# ----------------------------------------------------------------------------


def check_against_data(
    c: ml_collections.ConfigDict, ds: "Dataset", num_devices: int
) -> None:
  """Batch sizes vs devices and the training split; top_k vs the class count."""
  train_size = ds.num_examples("train")
  for field in ("batch_size", "eval_batch_size"):
    if c[field] % num_devices:
      _fail(
          field,
          c[field],
          f"is not a multiple of the {num_devices} devices",
          f"use a multiple of {num_devices}",
      )
  if c.batch_size > train_size:
    _fail(
        "batch_size",
        c.batch_size,
        f"is larger than the {train_size} examples of "
        f"{ds.name}'s training split",
        f"use at most {train_size - train_size % num_devices}",
    )
  if c.similarity.sparse_top_k > ds.num_classes:
    _fail(
        "similarity.sparse_top_k",
        c.similarity.sparse_top_k,
        f"exceeds the {ds.num_classes} classes of {ds.name}",
        f"use 0 (dense) or at most {ds.num_classes}",
    )
  if c.similarity.shard_rows and ds.num_classes % num_devices:
    _fail(
        "similarity.shard_rows",
        c.similarity.shard_rows,
        f"splits S's {ds.num_classes} rows over {num_devices} devices, "
        "which does not divide them",
        "use False (replicated S) or a sparse S (similarity.sparse_top_k)",
    )
  if c.similarity.options.top_k > ds.num_classes:
    _fail(
        "similarity.options.top_k",
        c.similarity.options.top_k,
        f"exceeds the {ds.num_classes} classes of {ds.name}",
        "use 0 (all) or fewer",
    )
