"""Evaluators, as in big_vision: each built from its config entry and the test data.

  evaluators = from_config({'clean': {'type': 'clean'},
                            'corruptions': {'type': 'corruptions', 'severities': (1, 3)}},
                           data)
  for evaluator in evaluators.values():
    metrics.update(evaluator.run(predict_fn, report))

`predict_fn` maps float32 images [B, H, W, C] in [0, 1] to logits [B, C]
(normally jitted; it normalizes internally); `report(name)` is called after
each test set. An evaluator never sees the trainer: it holds its data on
device and can be run on any number of models. Types:

  clean        the test split: accuracy, NLL, ECE, mistake severity, ...
               -> {'clean': metrics + 'correct_bits' + 'confusion'}
  corruptions  simsoft.corruptions applied on device: `corruptions` ('all' or
               names) x `severities`, on the first `examples` test images
               (0: all) -> {'clean_on_corrupted_images', 'corruptions', 'summary'}
  cifar10_c    the real CIFAR-10-C through TFDS (cifar10 runs): `corruptions`
               ('all' or TFDS names) x `severities`
               -> {'extra_sets', 'extra_summary'}
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jax
import numpy as np
from jax.typing import ArrayLike

from simsoft import corruptions as corruptions_lib
from simsoft import data as data_lib
from simsoft import robustness

PredictFn = Callable[[jax.Array], jax.Array]
Report = Callable[[str], None]


@dataclasses.dataclass(frozen=True, eq=False)
class EvalData:
  """The test split and what the metrics need to know about the classes.

  Attributes:
    images: [N, H, W, C] uint8 or float32 in [0, 1].
    labels: int [N].
    num_classes: C.
    batch_size: evaluation batch size (a multiple of the mesh size).
    key: PRNG key of the corruption noise.
    mesh: 1-D ('data',) mesh the batches are sharded over, or None.
    class_to_group: int [C] super-class of each class (superclass accuracy), or None.
    reference_similarity: [C, C] R for mistake severity, or None.
    mistake_distance: [C, C] class distances (LCA heights), or None.
    mask_padding: pad the last batch and mask the padding (every image
      counts); False drops the last partial batch.
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  batch_size: int
  key: jax.Array
  mesh: jax.sharding.Mesh | None = None
  class_to_group: np.ndarray | None = None
  reference_similarity: np.ndarray | None = None
  mistake_distance: np.ndarray | None = None
  mask_padding: bool = True

  def scorer(self, predict_fn: PredictFn) -> robustness.Scorer:
    return robustness.Scorer(
        predict_fn,
        self.num_classes,
        self.class_to_group,
        self.reference_similarity,
        self.mistake_distance,
        self.mesh,
    )

  def batches(self, images, labels) -> robustness.Batches:
    return robustness.Batches(
        images, labels, self.batch_size, self.mask_padding, self.mesh
    )

  @property
  def streamed(self) -> bool:
    """Whether `images` is a streamed split (simsoft.data.streaming), `labels` None."""
    return not isinstance(self.images, np.ndarray) and hasattr(
        self.images, "head"
    )

  def test_batches(self, examples: int = 0):
    """The first `examples` (0: all) test images as Batches, or StreamBatches when streamed."""
    if self.streamed:
      return robustness.StreamBatches(
          self.images.head(examples),
          self.batch_size,
          self.mask_padding,
          self.mesh,
      )
    images, labels = robustness.check_split(
        self.images, self.labels, self.num_classes, "clean test split"
    )
    return self.batches(images[: examples or None], labels[: examples or None])


class Evaluator(Protocol):
  num_sets: int  # how many test sets run() scores (for progress)

  def run(self, predict_fn: PredictFn, report: Report) -> dict[str, Any]:
    ...


class CleanEvaluator:
  """Metrics of the clean test split, with per-image correctness (simsoft.intervals)."""

  num_sets = 1

  def __init__(self, data: EvalData):
    self._data = data
    self._batches = data.test_batches()

  def run(self, predict_fn: PredictFn, report: Report) -> dict[str, Any]:
    scorer = self._data.scorer(predict_fn)
    metrics = scorer.evaluate(self._batches, correct_bits=True, confusion=True)
    report("clean")
    return robustness.json_clean({"clean": metrics})


class CorruptionsEvaluator:
  """Every (corruption, severity) cell of simsoft.corruptions, applied on device."""

  def __init__(
      self,
      data: EvalData,
      *,
      corruptions: str | Sequence[str] = "all",
      severities: Sequence[int] = corruptions_lib.SEVERITIES,
      examples: int = 0,
  ):
    if int(examples) < 0:
      raise ValueError(f"examples must be >= 0, got {examples}")
    self._data = data
    self._names = robustness.resolve_suite(corruptions)
    self._severities = [corruptions_lib.check_severity(s) for s in severities]
    self._whole = not 0 < examples < len(data.images)
    self._batches = data.test_batches(examples)
    # Its clean pass counts as a test set of its own only on a subset.
    self.num_sets = len(self._names) * len(self._severities) + (not self._whole)

  def warm(self) -> None:
    """Compiles this evaluator's corruption programs (no model needed)."""
    robustness.warm_corruptions(self._batches, self._names, self._data.key)

  def run(self, predict_fn: PredictFn, report: Report) -> dict[str, Any]:
    scorer = self._data.scorer(predict_fn)
    # The severity-0 point of the curve: the clean metrics of these very images.
    clean = scorer.evaluate(
        self._batches, correct_bits=self._whole, confusion=self._whole
    )
    if not self._whole:
      report("clean (corrupted subset)")
    grid = robustness.corruption_grid(
        scorer,
        self._batches,
        self._names,
        self._severities,
        self._data.key,
        report,
    )
    out = robustness.json_clean(
        {"clean_on_corrupted_images": clean, "corruptions": grid}
    )
    if out["corruptions"]:
      out["summary"] = robustness.summarize(out["corruptions"])
    return out


class Cifar10CSets(Mapping):
  """'<corruption>_<severity>' -> (uint8 images, labels), read from TFDS on access.

  One set at a time is read, so only one of the 95 is in memory.
  """

  def __init__(
      self,
      data_dir: str | None,
      corruptions: str | Sequence[str] = "all",
      severities: Sequence[int] | None = None,
  ):
    names = (
        data_lib.CIFAR10_C_CORRUPTIONS if corruptions == "all" else corruptions
    )
    known = (
        data_lib.CIFAR10_C_CORRUPTIONS + data_lib.CIFAR10_C_EXTRA_CORRUPTIONS
    )
    unknown = sorted(set(names) - set(known))
    if unknown:
      raise ValueError(
          f"unknown CIFAR-10-C corruption(s) {unknown}; "
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


class SetsEvaluator:
  """Pre-corrupted test sets, {'<name>_<severity>': (images, labels)}, one at a time.

  -> {'extra_sets': {name: {'<severity>': metrics}}, 'extra_summary'}; a
  lazy Mapping that loads a set on access keeps one set in memory.
  """

  def __init__(self, data: EvalData, sets: Mapping[str, tuple]):
    self._data, self._sets = data, sets
    self.num_sets = len(sets)

  def run(self, predict_fn: PredictFn, report: Report) -> dict[str, Any]:
    grid = robustness.extra_set_grid(
        self._data.scorer(predict_fn),
        self._sets,
        self._data.batch_size,
        self._data.mask_padding,
        self._data.mesh,
        report,
    )
    out = robustness.json_clean({"extra_sets": grid})
    out["extra_summary"] = robustness.summarize(out["extra_sets"])
    return out


class Cifar10CEvaluator(SetsEvaluator):
  """The real CIFAR-10-C (TFDS 'cifar10_corrupted'), one set at a time."""

  def __init__(
      self,
      data: EvalData,
      *,
      corruptions: str | Sequence[str] = "all",
      severities: Sequence[int] = corruptions_lib.SEVERITIES,
      data_dir: str | None = None,
  ):
    super().__init__(
        data, Cifar10CSets(data_dir or None, corruptions, severities)
    )


EVALUATORS: dict[str, type] = {
    "clean": CleanEvaluator,
    "corruptions": CorruptionsEvaluator,
    "cifar10_c": Cifar10CEvaluator,
}


def check_entries(entries: Mapping[str, Mapping[str, Any]]) -> None:
  """Each entry names a known type and only that type's options (ValueError otherwise)."""
  if "clean" not in entries:
    raise ValueError(
        "the evaluators must include 'clean' (the test split every comparison uses)"
    )
  for name, entry in entries.items():
    kind = entry.get("type", name)
    if kind not in EVALUATORS:
      raise ValueError(
          f"unknown evaluator type {kind!r} (evaluator {name!r}); "
          f"known: {list(EVALUATORS)}"
      )
    allowed = set(inspect.signature(EVALUATORS[kind]).parameters) - {"data"}
    unknown = sorted(set(entry) - allowed - {"type"})
    if unknown:
      raise ValueError(
          f"evaluator {name!r} ({kind}) has no option(s) {unknown}; "
          f"known: {sorted(allowed)}"
      )


def from_config(
    entries: Mapping[str, Mapping[str, Any]], data: EvalData
) -> dict[str, Evaluator]:
  """{name: evaluator} built from {name: {'type': ..., option: value}} entries, in order."""
  check_entries(entries)
  return {
      name: EVALUATORS[entry.get("type", name)](
          data, **{k: v for k, v in entry.items() if k != "type"}
      )
      for name, entry in entries.items()
  }


def run_suite(
    predict_fn: PredictFn,
    images: ArrayLike,
    labels: ArrayLike,
    *,
    suite: Sequence[str] | str = "all",
    severities: Sequence[int] = corruptions_lib.SEVERITIES,
    key: jax.Array,
    batch_size: int,
    num_classes: int,
    mask_padding: bool = True,
    class_to_group: ArrayLike | None = None,
    reference_similarity: ArrayLike | None = None,
    mistake_distance: ArrayLike | None = None,
    extra_sets: Mapping[str, tuple] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    corrupted_examples: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
  """Evaluates ``predict_fn`` on the clean split and every corruption cell.

  The library form of the evaluators above, on one model: clean, then
  corruptions (when `suite` names any), then the pre-corrupted `extra_sets`.

  Args:
    predict_fn: float32 [B, H, W, C] in [0, 1] -> logits [B, num_classes].
    images: clean test images [N, H, W, C] (numpy), float in [0, 1] or
      uint8 (divided by 255).
    labels: int [N].
    suite: corruption names (keys of ``corruptions.CORRUPTIONS``) or 'all'.
    severities: subset of 1..5.
    key: PRNG key; cell (name, s) batch i uses
      ``fold_in(fold_in(fold_in(key, crc32(name)), s), i)``.
    batch_size: evaluation batch size (a multiple of the mesh size).
    num_classes: C.
    mask_padding: True pads the last batch and masks the padding, so every
      sample counts; False drops the last partial batch.
    class_to_group: int [C], adds ``superclass_accuracy``.
    reference_similarity: [C, C], adds ``mistake_severity``.
    mistake_distance: [C, C] class distances (LCA heights), adds ``mistake_distance``.
    extra_sets: pre-corrupted sets such as CIFAR-10-C,
      ``{'<name>_<severity>': (images, labels)}``; reported under
      ``extra_sets[name][severity]`` and summarized in ``extra_summary``.
    mesh: optional 1-D ('data',) mesh: batches are sharded over it.
    corrupted_examples: > 0 corrupts only the first that many test examples
      (every cell the same ones); 0 corrupts the whole split. Clean metrics
      use the whole split; ``clean_on_corrupted_images`` holds the clean
      metrics of exactly the corrupted images.
    progress: called as progress(done, total, name) after each test set.

  Returns:
    JSON-able dict, see simsoft.robustness's module docstring.
  """
  if int(batch_size) < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  if mesh is not None and batch_size % mesh.size:
    raise ValueError(
        f"batch_size {batch_size} must be a multiple of the mesh size {mesh.size}"
    )
  if int(corrupted_examples) < 0:
    raise ValueError(
        f"corrupted_examples must be >= 0, got {corrupted_examples}"
    )
  data = EvalData(
      images=np.asarray(images),
      labels=np.asarray(labels),
      num_classes=num_classes,
      batch_size=batch_size,
      key=key,
      mesh=mesh,
      class_to_group=class_to_group,
      reference_similarity=reference_similarity,
      mistake_distance=mistake_distance,
      mask_padding=mask_padding,
  )
  evaluators = [CleanEvaluator(data)]
  names = robustness.resolve_suite(suite)
  if names:
    evaluators.append(
        CorruptionsEvaluator(
            data,
            corruptions=names,
            severities=severities,
            examples=corrupted_examples,
        )
    )
  if extra_sets:
    evaluators.append(SetsEvaluator(data, extra_sets))
  total = sum(e.num_sets for e in evaluators)
  done = iter(range(1, total + 1))
  report = (
      (lambda name: progress(next(done), total, name))
      if progress
      else (lambda name: None)
  )
  results = {"corruptions": {}}
  for evaluator in evaluators:
    results.update(evaluator.run(predict_fn, report))
  return results
