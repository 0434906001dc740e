"""The evaluate phase's wiring: config and dataset -> evaluators; models -> results.

  evaluators = build_evaluators(config, dataset, mesh)   # simsoft.evaluators
  results = evaluate_models({'A': predict_a, 'B': predict_b}, evaluators)

config.evaluate.evaluators holds the evaluators' entries, {name: {'type':
..., options}} (simsoft.evaluators: clean, corruptions, cifar10_c); the
class structure they measure mistakes against (super-classes, a hierarchy, a
reference S) comes from the dataset and the config. Nothing here sees the
trainer.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from simsoft import data as data_lib
from simsoft import evaluators as evaluators_lib
from simsoft import metrics as metrics_lib
from simsoft import report as report_lib
from simsoft import robustness
from simsoft import similarity as sim_lib
from simsoft.paths import resolve
from simsoft.progress import EvalProgress
from simsoft.results import MODEL_LABELS


def hierarchy_distances(
    config: ml_collections.ConfigDict, num_classes: int
) -> np.ndarray | None:
  """[C, C] LCA heights (or the given distances) of config.hierarchy_path, or None."""
  if not config.hierarchy_path:
    return None
  return sim_lib.read_distances(config.hierarchy_path, num_classes=num_classes)


def reference_similarity(
    config: ml_collections.ConfigDict,
    num_classes: int,
    groups: np.ndarray | None,
    distances: np.ndarray | None = None,
) -> np.ndarray | None:
  """R for mistake severity: evaluate.reference_similarity_path, else 1 - D / max D
  of the hierarchy (so mistake_severity is the mean LCA height of mistakes over
  the largest), else the dataset's super-class groups, else None."""
  path = config.evaluate.reference_similarity_path
  if path:
    matrix, _ = sim_lib.read_similarity_file(path, num_classes=num_classes)
    return sim_lib.to_dense(matrix) if sim_lib.is_sparse(matrix) else matrix
  if distances is not None:
    return 1.0 - distances / distances.max()
  return None if groups is None else metrics_lib.similarity_from_groups(groups)


def evaluator_entries(
    config: ml_collections.ConfigDict,
) -> dict[str, dict[str, Any]]:
  """config.evaluate.evaluators as {name: {'type': ..., options}}, 'clean' first.

  A cifar10_c entry with an empty data_dir reads config.dataset.data_dir.
  """
  entries = {}
  for name, entry in config.evaluate.evaluators.items():
    entry = dict(entry)
    if entry.get("type", name) == "cifar10_c" and not entry.get("data_dir"):
      entry["data_dir"] = config.dataset.data_dir
    entries[name] = entry
  return dict(sorted(entries.items(), key=lambda item: item[0] != "clean"))


def eval_data(
    config: ml_collections.ConfigDict,
    ds: data_lib.Dataset,
    mesh: jax.sharding.Mesh | None,
) -> evaluators_lib.EvalData:
  """The test split, batch size, noise key and class structure the evaluators share."""
  test = ds.split("test")
  groups = None if ds.class_groups is None else np.asarray(ds.class_groups)
  distances = hierarchy_distances(config, ds.num_classes)
  streamed = not isinstance(test, data_lib.ArraySplit)  # read on demand
  return evaluators_lib.EvalData(
      images=test if streamed else test.images,
      labels=test.labels,
      num_classes=ds.num_classes,
      batch_size=config.eval_batch_size,
      key=jax.random.key(config.seed + 17),
      mesh=mesh,
      class_to_group=groups,
      reference_similarity=reference_similarity(
          config, ds.num_classes, groups, distances
      ),
      mistake_distance=distances,
  )


def build_evaluators(
    config: ml_collections.ConfigDict,
    ds: data_lib.Dataset,
    mesh: jax.sharding.Mesh | None,
) -> dict[str, evaluators_lib.Evaluator]:
  """config.evaluate's evaluators, holding ds's test split on the mesh."""
  return evaluators_lib.from_config(
      evaluator_entries(config), eval_data(config, ds, mesh)
  )


def precompile(
    config: ml_collections.ConfigDict,
    ds: data_lib.Dataset,
    mesh: jax.sharding.Mesh | None,
) -> threading.Thread | None:
  """Compiles the evaluators' corruption programs in a background thread while
  the models train (they depend on the test split's shape, not on a model).

  Only where compiling is what the evaluation costs: one process, CPU, a small
  test split held in memory (robustness.FAST_COMPILE_MAX_ELEMENTS); else None. Join the
  thread before evaluating; a failure there only logs (evaluation compiles).
  """
  test = ds.split("test")
  if not isinstance(test, data_lib.ArraySplit):  # streamed: compiles on use
    return None
  size = test.images[:1].size * max(len(test), config.eval_batch_size)
  if (
      jax.process_count() > 1
      or jax.default_backend() != "cpu"
      or size > robustness.FAST_COMPILE_MAX_ELEMENTS
  ):
    return None

  def warm():
    try:
      for evaluator in build_evaluators(config, ds, mesh).values():
        if hasattr(evaluator, "warm"):
          evaluator.warm()
    except Exception as e:  # pylint: disable=broad-except  # evaluation retries
      logging.warning("precompiling the evaluation failed (%s)", e)

  thread = threading.Thread(target=warm, name="simsoft-precompile", daemon=True)
  thread.start()
  return thread


def evaluate_models(
    predict_fns: Mapping[str, evaluators_lib.PredictFn],
    evaluators: Mapping[str, evaluators_lib.Evaluator],
    precomputed: Mapping[str, dict] | None = None,
) -> dict[str, Any]:
  """{'models': {key: metrics}, 'comparison': B relative to A} (results.json's part).

  Every evaluator runs on every model of `predict_fns` (float32 images in
  [0, 1] -> logits); `precomputed` maps other model keys to results already
  measured under the same evaluation config (model A shared by a sweep's runs).
  """
  models = dict(precomputed or {})
  total = sum(e.num_sets for e in evaluators.values())
  for key, predict_fn in predict_fns.items():
    report = EvalProgress(key, total)
    metrics = {}
    for evaluator in evaluators.values():
      metrics.update(evaluator.run(predict_fn, report))
    models[key] = {**metrics, "label": MODEL_LABELS[key]}
  out = {"models": models}
  if "A" in models and "B" in models:
    out["comparison"] = robustness.compare_to_baseline(models["B"], models["A"])
  return out


def write_report(
    workdir: str,
    results: dict[str, Any],
    similarity: np.ndarray,
    class_names: Sequence[str],
    curves: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
) -> str:
  """workdir/report.md with figures; written locally first when workdir is a bucket."""
  target = resolve(workdir)
  kwargs = dict(similarity=similarity, class_names=class_names, curves=curves)
  if "://" not in os.fspath(workdir):
    return report_lib.write_report(os.fspath(target), results, **kwargs)
  with tempfile.TemporaryDirectory() as local:
    report_lib.write_report(local, results, **kwargs)
    for name in os.listdir(local):
      (target / name).write_bytes(open(os.path.join(local, name), "rb").read())
  return os.fspath(target / "report.md")
