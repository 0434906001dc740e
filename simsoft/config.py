"""The one config schema every experiment shares, and the colon's short knobs.

Config files in configs/ call `base_config()` and change only what differs,
then `apply_args(config, arg)` for the text after the colon in
`--config configs/X.py:model=resnet20,similarity=confusion,seed=1`. The colon
takes only the short knobs of ARG_ALIASES (and a file's own, such as
configs/peers/ols.py's `variant`); any field is set with `--config.<field>=v`,
typed like the field (tuples as `--config.phases="('retrain', 'evaluate')"`).
Code sets dotted fields with `set_fields(config, {'loss.alpha': 0.3})`.

Fields (defaults below):
  dataset.name, dataset.data_dir, dataset.validation_fraction, dataset.split_seed,
    dataset.train_examples (> 0: a class-stratified subset of the train split)
  dataset.reader ('memory' | 'grain': streamed, simsoft.data.streaming),
    dataset.grain.records_dir / image_size / train_transform ('device' |
    'none' | 'pad_crop_flip' | 'random_resized_crop') / eval_transform
    ('none' | 'resize_center_crop') / stats_examples
  model.name, model.dtype ('float32' | 'bfloat16'), model.<name> (that model's
    own keyword arguments with their defaults, for every model that takes
    any: model.mlp.hidden, model.resnet20.depth / shortcut, model.wrn.depth /
    width / dropout, ...; the run uses model[model.name])
  similarity.source, similarity.path (file source), similarity.from_workdir
    (reuse another run's estimated S), similarity.shuffle (control: S with its
    classes permuted by a seeded derangement), similarity.sparse_top_k (0:
    dense S; k > 0: each row's top-k entries, for large C), similarity.shard_rows
    (S's rows split over the devices, not replicated), similarity.options
    (post-processing), similarity.<source> (that source's own options, with the
    source's defaults: confusion.smoothing, softmax.correct_only, centroid.center,
    online.correct_only / initial_smoothing / initial / fallback /
    freeze_threshold, hierarchy.beta, ordinal.ratio, embedding.lower_bound)
  hierarchy_path: a class hierarchy (or [C, C] distance matrix) file,
    simsoft.similarity.hierarchy: read by the 'hierarchy' source, the 'hxe'
    loss form and the evaluation (mistake severity from LCA heights)
  loss.form ('soft_target' | 'log_sum' | 'hxe'), loss.amount ('alpha' | 'mass'),
    loss.alpha, loss.mass (see simsoft.losses.similarity_target_matrix),
    loss.as_given (W = (1 - alpha) I + alpha S with S not row-normalized:
    SimLoss with log_sum and alpha 1, Online Label Smoothing's loss with
    soft_target), loss.hxe.alpha / loss.hxe.normalize (hierarchical
    cross-entropy, simsoft.similarity.hierarchy.hxe_arrays)
  optimizer.name ('sgd' | 'adamw'), learning_rate, momentum, nesterov,
    weight_decay, warmup_epochs, schedule ('cosine' | 'constant' | 'step'), grad_clip_norm
  input.pipeline ('auto' | 'host' | 'device'), input.steps_per_dispatch,
    input.scan_unroll, input.device_max_bytes, input.grain_workers /
    grain_threads / grain_buffer (the streaming reader's)
  batch_size (global), eval_batch_size, estimate.epochs, estimate.model_from,
    retrain.epochs
  checkpoint.every_steps, checkpoint.keep, log_every_steps (TensorBoard scalars
    are means over each window of that many steps)
  train_eval.every_epochs, train_eval.every_steps (> 0: instead of epochs),
    train_eval.split ('validation'), train_eval.examples (0: all): held-out
    accuracy, NLL and ECE during training (simsoft.train_eval; both 0: off)
  profile.num_steps (> 0: a jax.profiler trace of that many steps per training
    phase, in <workdir>/<phase>/plugins/profile, from step profile.first_step)
  evaluate.evaluators: {name: {'type': ..., options}} (simsoft.evaluators),
    by default clean and corruptions:
      clean        {'type': 'clean'} (required: every comparison uses it)
      corruptions  corruptions (names of simsoft.corruptions), severities
                   (1..5), examples (> 0: corrupt only the first that many
                   test images)
      cifar10_c    corruptions (CIFAR-10-C names), severities, data_dir
                   ('' = dataset.data_dir); configs/cifar10.py adds it
    evaluate.reference_similarity_path (mistake severity)
  phases (('estimate', 'retrain', 'evaluate')), seed
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ml_collections

from simsoft.errors import ConfigError

PHASES = ("estimate", "retrain", "evaluate")
LOSS_FORMS = ("soft_target", "log_sum", "hxe")
LOSS_AMOUNTS = ("alpha", "mass")

# Short names accepted after the colon, mapped to the field they set.
ARG_ALIASES = {
    "dataset": "dataset.name",
    "model": "model.name",
    "similarity": "similarity.source",
    "source": "similarity.source",
    "form": "loss.form",
    "alpha": "loss.alpha",
    "mass": None,  # sets loss.mass and loss.amount='mass'
    "shuffle": "similarity.shuffle",
    "lr": "optimizer.learning_rate",
    "epochs": None,  # sets both estimate.epochs and retrain.epochs
    "seed": "seed",
    "batch_size": "batch_size",
    "phases": "phases",
    "dtype": "model.dtype",
    "runlocal": None,
}

# Knobs whose value is a list of names: after the colon,
# `phases=retrain,evaluate` keeps `evaluate` in phases (an item without '='
# continues the previous list knob's value).
LIST_ARGS = ("phases",)
FLAG_ARGS = ("runlocal",)

# Fields that moved, for the hint of an override that names the old one.
MOVED_FIELDS = {
    "evaluate.severities": "evaluate.evaluators.corruptions.severities",
    "evaluate.corruptions": "evaluate.evaluators.corruptions.corruptions",
    "evaluate.corrupted_examples": "evaluate.evaluators.corruptions.examples",
    "evaluate.cifar10_c": "evaluate.evaluators.cifar10_c.corruptions",
}


def base_config() -> ml_collections.ConfigDict:
  """Returns the shared schema with its defaults (digits + mlp, about a minute on CPU)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.phases = PHASES

  c.dataset = ml_collections.ConfigDict(
      dict(
          name="digits",
          data_dir="",
          validation_fraction=0.2,
          split_seed=0,
          train_examples=0,
      )
  )
  # Pair-flip label noise on train and validation (simsoft.data.label_noise):
  # each example of class a relabelled b with probability rate, for each 'a->b'.
  c.dataset.label_noise = ml_collections.ConfigDict(dict(rate=0.0, flips=()))
  # reader 'grain' streams the data (simsoft.data.streaming) instead of
  # loading it into memory: prepared ArrayRecord shards in grain.records_dir
  # (image_folder, cifar10_jpeg) or a TFDS dataset's tfds.data_source.
  c.dataset.reader = "memory"
  c.dataset.grain = ml_collections.ConfigDict(
      dict(
          records_dir="",
          image_size=0,
          train_transform="device",
          eval_transform="none",
          stats_examples=2000,
      )
  )

  c.model = ml_collections.ConfigDict(dict(name="mlp", dtype="float32"))
  # Each model's own keyword arguments, with that model's defaults (one
  # section each, so any model can be chosen and tuned from the command line).
  for name, defaults in model_own_options().items():
    c.model[name] = ml_collections.ConfigDict(defaults)

  # sparse_top_k > 0: S kept as each row's top-k entries (diagonal included),
  # (C, k) arrays instead of C x C (simsoft.similarity.sparse); 0 = dense.
  # shard_rows: the train state's S split by rows over the devices instead of
  # replicated (C / D rows each; for a large dense S; C divisible by D).
  c.similarity = ml_collections.ConfigDict(
      dict(
          source="confusion",
          path="",
          from_workdir="",
          shuffle=False,
          sparse_top_k=0,
          shard_rows=False,
      )
  )
  # Post-processing, shared by every source. temperature 0 = the source's
  # default (0.1 for centroid and weights, else 1).
  c.similarity.options = ml_collections.ConfigDict(
      dict(
          temperature=0.0,
          symmetrize=False,
          diagonal="keep",
          top_k=0,
          identity_mix=0.0,
          normalize=True,
      )
  )
  # Each source's own options, with that source's defaults (one section each).
  for name, defaults in source_own_options().items():
    c.similarity[name] = ml_collections.ConfigDict(defaults)

  # amount 'alpha': target (1-alpha) onehot + alpha rownorm(S)[y];
  # amount 'mass': target (1-mass) onehot + mass Q[y] (Q: S off its diagonal,
  # rows normalized), the same off-target mass for every source.
  # as_given: W = (1 - alpha) I + alpha S, S not row-normalized (the peers' losses).
  c.loss = ml_collections.ConfigDict(
      dict(
          form="soft_target",
          amount="alpha",
          alpha=0.5,
          mass=0.1,
          as_given=False,
      )
  )
  # form 'hxe': hierarchical cross-entropy over config.hierarchy_path.
  c.loss.hxe = ml_collections.ConfigDict(dict(alpha=0.1, normalize=True))
  # One class hierarchy for the 'hierarchy' source, the 'hxe' loss and evaluation.
  c.hierarchy_path = ""

  c.optimizer = ml_collections.ConfigDict(
      dict(
          name="sgd",
          learning_rate=0.05,
          momentum=0.9,
          nesterov=False,
          weight_decay=5e-4,
          warmup_epochs=1.0,
          schedule="cosine",
          grad_clip_norm=0.0,
          b1=0.9,
          b2=0.999,
      )
  )

  # Input: 'device' keeps the train split on the accelerator (all datasets here
  # fit), 'host' streams numpy batches, 'auto' picks device below device_max_bytes.
  # steps_per_dispatch > 1 runs k steps per lax.scan; scan_unroll unrolls it
  # (fastest on CPU, where a rolled scan is slow; rolled suits GPU/TPU).
  c.input = ml_collections.ConfigDict(
      dict(
          pipeline="auto",
          steps_per_dispatch=1,
          scan_unroll=False,
          device_max_bytes=4 << 30,
          # dataset.reader='grain': reader processes, threads and buffered
          # batches per process (0 workers: read in this process).
          grain_workers=2,
          grain_threads=2,
          grain_buffer=2,
      )
  )

  c.batch_size = 64
  c.eval_batch_size = 256
  # estimate.model_from: a workdir whose finished model A (same config) this run
  # reuses instead of training its own, e.g. to build several sources from one A.
  c.estimate = ml_collections.ConfigDict(dict(epochs=30, model_from=""))
  c.retrain = ml_collections.ConfigDict(dict(epochs=30))

  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=200, keep=2))
  c.log_every_steps = 50
  # Held-out metrics during training (simsoft.train_eval): every_steps > 0,
  # else every_epochs (0 and 0: off), on `examples` images of `split` (0: all).
  c.train_eval = ml_collections.ConfigDict(
      dict(every_epochs=1.0, every_steps=0, split="validation", examples=0)
  )
  # A profiler trace of a few steps (like clu.periodic_actions.Profile); 0 = off.
  c.profile = ml_collections.ConfigDict(dict(num_steps=0, first_step=10))

  c.evaluate = ml_collections.ConfigDict(dict(reference_similarity_path=""))
  # In this order (not sorted): the evaluate phase runs them so.
  c.evaluate.evaluators = ml_collections.ConfigDict(
      dict(clean=dict(type="clean"), corruptions=corruptions_evaluator()),
      sort_keys=False,
  )
  return c


def corruptions_evaluator(**options) -> dict:
  """The 'corruptions' evaluator entry: simsoft.corruptions.DEFAULT_SUITE at
  every severity on the whole test split, unless `options` say otherwise."""
  from simsoft import corruptions  # pylint: disable=g-import-not-at-top

  return (
      dict(
          type="corruptions",
          corruptions=corruptions.DEFAULT_SUITE,
          severities=corruptions.SEVERITIES,
          examples=0,
      )
      | options
  )


def cifar10_c_evaluator(**options) -> dict:
  """The 'cifar10_c' evaluator entry: the 15 CIFAR-10-C corruptions at every
  severity, read from dataset.data_dir ('' here), unless `options` say otherwise.
  """
  from simsoft.data import tfds_sources  # pylint: disable=g-import-not-at-top

  return (
      dict(
          type="cifar10_c",
          corruptions=tfds_sources.CIFAR10_C_CORRUPTIONS,
          severities=tfds_sources.CIFAR10_C_SEVERITIES,
          data_dir="",
      )
      | options
  )


def set_severities(
    c: ml_collections.ConfigDict, severities: tuple[int, ...]
) -> None:
  """Every evaluator that has severities (corruptions, cifar10_c) uses these."""
  for entry in c.evaluate.evaluators.values():
    if "severities" in entry:
      entry.severities = tuple(severities)


def small_cnn_recipe(
    c: ml_collections.ConfigDict, dataset: str
) -> ml_collections.ConfigDict:
  """MNIST-style data: LeNet-style CNN, SGD momentum 0.9 lr 0.05, cosine, batch 128, 15 epochs."""
  c.dataset.name = dataset
  c.dataset.validation_fraction = 0.1
  c.model.name = "lenet"
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.optimizer.learning_rate = 0.05
  c.estimate.epochs = c.retrain.epochs = 15
  c.checkpoint.every_steps = 500
  c.log_every_steps = 100
  return c


def cifar_recipe(
    c: ml_collections.ConfigDict, dataset: str
) -> ml_collections.ConfigDict:
  """The recipe the field uses for CIFAR ResNets (He et al. 2016 style).

  ResNet-20, SGD momentum 0.9, lr 0.1, cosine schedule, weight decay 5e-4,
  batch 128, 200 epochs per phase; crop + flip augmentation comes with the dataset.
  """
  c.dataset.name = dataset
  c.dataset.validation_fraction = 0.1
  c.model.name = "resnet20"
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.optimizer.learning_rate = 0.1
  c.optimizer.weight_decay = 5e-4
  c.optimizer.warmup_epochs = 0.0
  c.estimate.epochs = c.retrain.epochs = 200
  c.checkpoint.every_steps = 1000
  c.log_every_steps = 100
  return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks any config to a quick local smoke run (minutes on 2 CPU cores)."""
  c.estimate.epochs = min(c.estimate.epochs, 2)
  c.retrain.epochs = min(c.retrain.epochs, 2)
  c.batch_size = min(c.batch_size, 64)
  c.checkpoint.every_steps = min(c.checkpoint.every_steps, 100)
  c.log_every_steps = min(c.log_every_steps, 20)
  set_severities(c, (1, 3, 5))
  return c


def parse_arg(arg: str | None) -> dict[str, str]:
  """'a=1,b=x,runlocal' -> {'a': '1', 'b': 'x', 'runlocal': 'True'}.

  A bare item after a list knob continues its value:
  'phases=retrain,evaluate,seed=1' -> {'phases': 'retrain,evaluate', 'seed': '1'}.
  """
  out, last = {}, None
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep and key not in FLAG_ARGS and last in LIST_ARGS:
      out[last] += "," + key
      continue
    out[key] = value.strip() if sep else "True"
    last = key if sep else None
  return out


def check_args(args: Mapping[str, str], own: Iterable[str] = ()) -> None:
  """Every key is a knob (ARG_ALIASES, or a config file's `own`); ConfigError otherwise.

  A dotted name is a field, which the colon does not take: the message says
  to use --config.<field>=<value>.
  """
  known = sorted(ARG_ALIASES) + sorted(own)
  for key, text in args.items():
    if key in known:
      continue
    if "." in key:
      raise ConfigError(
          f"{key}={text} after the colon names a field; use --config.{key}={text} "
          f"(the colon takes only the knobs {known})"
      )
    raise ConfigError(
        f"unknown config argument {key!r} after the colon; use one of {known}, "
        "or --config.<field>=<value> for any field"
    )


def split_args(
    arg: str | None, **own: Sequence[str]
) -> tuple[dict[str, str], dict[str, str]]:
  """The colon text as (a config file's own knobs, the shared knobs for apply_args).

  `own` maps each of the file's knobs to its allowed values, the first the
  default: split_args('variant=fine_grained,seed=1', variant=('cifar',
  'fine_grained')) -> ({'variant': 'fine_grained'}, {'seed': '1'}).
  """
  args = parse_arg(arg)
  check_args(args, own)
  mine = {key: values[0] for key, values in own.items()}
  for key, values in own.items():
    if key in args:
      mine[key] = args.pop(key)
      if mine[key] not in values:
        raise ConfigError(
            f"unknown {key} {mine[key]!r} after the colon; use one of {list(values)}"
        )
  return mine, args


def _parent(
    c: ml_collections.ConfigDict, dotted: str
) -> tuple[ml_collections.ConfigDict, str]:
  """(the section holding the dotted field, its last name); ConfigError if there is no such field."""
  *parents, leaf = dotted.split(".")
  node = c
  for name in parents:
    node = (
        node.get(name) if isinstance(node, ml_collections.ConfigDict) else None
    )
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise ConfigError(
        f"config has no field {dotted!r}; the fields are listed in simsoft/config.py"
    )
  return node, leaf


def set_fields(
    c: ml_collections.ConfigDict, fields: Mapping[str, Any]
) -> ml_collections.ConfigDict:
  """Sets each dotted field of `c` to its value, typed like the field.

  set_fields(c, {'loss.amount': 'mass', 'loss.mass': 0.1}). An int sets a
  float field, a list a tuple field, a dict a section; a field that does not
  exist, or a value of another type, raises ConfigError naming the field.
  """
  for dotted, value in fields.items():
    node, leaf = _parent(c, dotted)
    current = node[leaf]
    if isinstance(value, list):
      value = tuple(value)
    if not (
        current is None
        or type(value) is type(current)
        or (type(current) is float and type(value) is int)
        or (
            isinstance(current, ml_collections.ConfigDict)
            and isinstance(value, Mapping)
        )
    ):
      raise ConfigError(
          f"config.{dotted}={value!r} is of type {type(value).__name__}; the "
          f"field takes values of type {type(current).__name__}, such as {current!r}"
      )
    node[leaf] = float(value) if type(current) is float else value
  return c


def parse_value(dotted: str, current: Any, text: str) -> Any:
  """`text` typed like the field's current value; ConfigError naming the field if it is not."""
  try:
    if isinstance(current, bool):
      if text.lower() not in ("1", "true", "yes", "0", "false", "no"):
        raise ValueError("not a boolean")
      return text.lower() in ("1", "true", "yes")
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
  except (ValueError, SyntaxError, TypeError):
    kind = {bool: "true or false", int: "an integer", float: "a number"}[
        type(current)
    ]
    raise ConfigError(
        f"config.{dotted}={text!r} is not {kind}; give {kind}"
    ) from None
  return text


def apply_args(
    c: ml_collections.ConfigDict, arg: str | Mapping[str, str] | None
) -> ml_collections.ConfigDict:
  """Applies the colon's knobs ('lr=0.1,epochs=3' or split_args' dict) to a config.

  Knobs are the short names of ARG_ALIASES; anything else raises ConfigError
  (a dotted field name with a pointer to --config.<field>=<value>).
  `runlocal` (a flag) shrinks the run with `runlocal()`; `epochs=N` sets both
  phases; `phases=retrain,evaluate` sets the tuple of phases.
  """
  args = parse_arg(arg) if arg is None or isinstance(arg, str) else dict(arg)
  check_args(args)
  for key, text in args.items():
    if key == "runlocal":
      continue
    if key == "epochs":
      epochs = parse_value("estimate.epochs", 0, text)
      set_fields(c, {"estimate.epochs": epochs, "retrain.epochs": epochs})
    elif key == "mass":
      set_fields(
          c,
          {
              "loss.amount": "mass",
              "loss.mass": parse_value("loss.mass", 0.0, text),
          },
      )
    elif key in LIST_ARGS:
      set_fields(c, {ARG_ALIASES[key]: tuple(text.split(","))})
    else:
      dotted = ARG_ALIASES[key]
      node, leaf = _parent(c, dotted)
      set_fields(c, {dotted: parse_value(dotted, node[leaf], text)})
  if "runlocal" in args and args["runlocal"].lower() in ("1", "true", "yes"):
    runlocal(c)
  return c


def model_own_options() -> dict[str, dict]:
  """{model: its own keyword arguments with defaults} for every model that takes any."""
  from simsoft import models  # pylint: disable=g-import-not-at-top

  out = {}
  for name in models.MODELS:
    own = models.default_kwargs(name)
    if own:
      out[name] = own
  return out


def source_own_options() -> dict[str, dict]:
  """{source: its own options with defaults} for every source that has any
  (temperature excluded: it lives in similarity.options)."""
  from simsoft.similarity import SOURCES  # pylint: disable=g-import-not-at-top

  out = {}
  for name, spec in SOURCES.items():
    own = {k: v for k, v in spec.options.items() if k != "temperature"}
    if own:
      out[name] = own
  return out


def loss_amount(c: ml_collections.ConfigDict) -> dict[str, float]:
  """{'alpha': a} or {'mass': m}: the keyword the losses take, from config.loss."""
  if c.loss.amount not in LOSS_AMOUNTS:
    raise ConfigError(
        f"unknown config.loss.amount {c.loss.amount!r}; known: {list(LOSS_AMOUNTS)}"
    )
  return {c.loss.amount: c.loss[c.loss.amount]}
