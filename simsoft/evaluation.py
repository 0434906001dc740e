"""The evaluation side of the pipeline: the similarity data pass and the evaluator suite.

Evaluators (config.evaluate.evaluators, comma-separated):
  clean        test-split accuracy, NLL, ECE (always computed)
  corruptions  simsoft.corruptions applied on device, config.evaluate.corruptions
               ('all' or names) x config.evaluate.severities
  cifar10_c    the real CIFAR-10-C through TFDS (cifar10 runs): config.evaluate.cifar10_c
               ('all' or TFDS corruption names) x config.evaluate.severities
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
import os
import tempfile
from typing import TYPE_CHECKING

import jax
import numpy as np

from simsoft import data as data_lib
from simsoft import metrics as metrics_lib
from simsoft import report as report_lib
from simsoft.results import MODEL_LABELS
from simsoft.results import format_table  # noqa: F401 (train prints it)
from simsoft import robustness
from simsoft import similarity as sim_lib
from simsoft import train_step as step_lib
from simsoft.paths import resolve
from simsoft.progress import EvalProgress

if TYPE_CHECKING:
  from simsoft.run import Run

EVALUATORS = ("clean", "corruptions", "cifar10_c")


def similarity_stats(
    run: "Run",
    graphdef,
    state,
    split: data_lib.ArraySplit,
    *,
    with_features: bool,
):
  """One forward pass over `split` accumulating SimilarityStats; returns (stats, N)."""
  ds = run.dataset
  feature_dim = 0
  predict = step_lib.make_predict_fn(
      graphdef, mean=ds.mean, std=ds.std, return_features=with_features
  )

  def update(stats, params, model_state, batch):
    out = predict(params, model_state, batch["image"])
    logits, features = out if with_features else (out, None)
    return sim_lib.update_stats(
        stats, logits, batch["label"], features, batch["mask"]
    )

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


def _class_to_group(ds: data_lib.Dataset):
  """Super-classes where the dataset has a documented grouping, else None."""
  if ds.coarse_labels is not None:
    fine, coarse = ds.split("train").labels, ds.coarse_labels["train"]
    groups = np.zeros(ds.num_classes, np.int64)
    groups[fine] = coarse
    return groups
  if ds.name in ("fashion_mnist", "fashion_mnist_local"):
    return np.asarray(metrics_lib.FASHION_MNIST_GROUPS)
  return None


def hierarchy_distances(config, num_classes: int):
  """[C, C] LCA heights (or the given distances) of config.hierarchy_path, or None."""
  if not config.hierarchy_path:
    return None
  return sim_lib.read_distances(config.hierarchy_path, num_classes=num_classes)


def _reference_similarity(run: "Run", groups, distances=None):
  """R for mistake severity: reference_similarity_path, else 1 - D / max D of the
  hierarchy (so mistake_severity is the mean LCA height of mistakes over the
  largest), else the dataset's super-class groups."""
  path = run.config.evaluate.reference_similarity_path
  if path:
    matrix, _ = sim_lib.read_similarity_file(
        path, num_classes=run.dataset.num_classes
    )
    return matrix
  if distances is not None:
    return 1.0 - distances / distances.max()
  return None if groups is None else metrics_lib.similarity_from_groups(groups)


def evaluators_of(config) -> tuple[str, ...]:
  names = tuple(
      n.strip() for n in config.evaluate.evaluators.split(",") if n.strip()
  )
  for name in names:
    if name not in EVALUATORS:
      raise ValueError(
          f"unknown evaluator {name!r} in config.evaluate.evaluators; "
          f"known: {list(EVALUATORS)}"
      )
  return names


class Cifar10CSets(Mapping):
  """'<corruption>_<severity>' -> (uint8 images, labels), read from TFDS on access.

  run_suite reads one set at a time, so only one of the 95 is in memory.
  """

  def __init__(self, data_dir: str | None, corruptions="all", severities=None):
    names = (
        data_lib.CIFAR10_C_CORRUPTIONS if corruptions == "all" else corruptions
    )
    unknown = sorted(
        set(names)
        - set(
            data_lib.CIFAR10_C_CORRUPTIONS
            + data_lib.CIFAR10_C_EXTRA_CORRUPTIONS
        )
    )
    if unknown:
      raise ValueError(
          f"unknown CIFAR-10-C corruption(s) {unknown} (config.evaluate.cifar10_c); "
          f"known: {list(data_lib.CIFAR10_C_CORRUPTIONS)}"
      )
    self._data_dir = data_dir
    self._keys = [
        f"{n}_{s}"
        for n in names
        for s in severities or data_lib.CIFAR10_C_SEVERITIES
    ]

  def __getitem__(self, key):
    name, _, severity = key.rpartition("_")
    split = data_lib.load_cifar10_corrupted(
        name, int(severity), data_dir=self._data_dir
    )
    return split.images, split.labels

  def __iter__(self):
    return iter(self._keys)

  def __len__(self):
    return len(self._keys)


def evaluate_models(
    run: "Run", models: dict, precomputed: dict | None = None
) -> dict:
  """Runs the configured evaluators on each model; returns the results.json payload.

  `precomputed` maps other model keys to results already measured under this
  same evaluation config (model A shared by a sweep's runs), added as they are.
  """
  config, ds = run.config, run.dataset
  names = evaluators_of(config)
  test = ds.split("test")
  groups = _class_to_group(ds)
  distances = hierarchy_distances(config, ds.num_classes)
  reference = _reference_similarity(run, groups, distances)
  severities = [
      int(s) for s in config.evaluate.severities.split(",") if s.strip()
  ]
  suite = []
  if "corruptions" in names:
    suite = (
        "all"
        if config.evaluate.corruptions == "all"
        else [
            n.strip()
            for n in config.evaluate.corruptions.split(",")
            if n.strip()
        ]
    )
  extra = None
  if "cifar10_c" in names:
    chosen = config.evaluate.cifar10_c
    extra = Cifar10CSets(
        config.dataset.data_dir or None,
        "all" if chosen == "all" else [n.strip() for n in chosen.split(",")],
        severities,
    )
  results = {
      "config": config.to_dict(),
      "dataset": ds.name,
      "class_names": list(ds.class_names),
      "models": {},
  }
  results["models"].update(precomputed or {})
  predict_jits = {}
  for key, (graphdef, state) in models.items():
    if graphdef not in predict_jits:  # A and B share one compiled program
      predict_jits[graphdef] = jax.jit(
          step_lib.make_predict_fn(graphdef, mean=ds.mean, std=ds.std)
      )
    predict_fn = functools.partial(
        predict_jits[graphdef], state["params"], state["model_state"]
    )
    results["models"][key] = robustness.run_suite(
        predict_fn,
        test.images,
        test.labels,
        suite=suite,
        severities=severities,
        key=jax.random.key(config.seed + 17),
        batch_size=config.eval_batch_size,
        num_classes=ds.num_classes,
        class_to_group=groups,
        reference_similarity=reference,
        mistake_distance=distances,
        extra_sets=extra,
        mesh=run.mesh,
        corrupted_examples=config.evaluate.corrupted_examples,
        progress=EvalProgress(key),
    )
    results["models"][key]["label"] = MODEL_LABELS[key]
  if "A" in results["models"] and "B" in results["models"]:
    results["comparison"] = robustness.compare_to_baseline(
        results["models"]["B"], results["models"]["A"]
    )
  return results


def write_report(workdir: str, results: dict, similarity, class_names) -> str:
  """workdir/report.md with figures; written locally first when workdir is a bucket."""
  target = resolve(workdir)
  if "://" not in os.fspath(workdir):
    return report_lib.write_report(
        os.fspath(target),
        results,
        similarity=similarity,
        class_names=class_names,
    )
  with tempfile.TemporaryDirectory() as local:
    report_lib.write_report(
        local, results, similarity=similarity, class_names=class_names
    )
    for name in os.listdir(local):
      (target / name).write_bytes(open(os.path.join(local, name), "rb").read())
  return os.fspath(target / "report.md")
