"""The robustness evaluation suite: clean + corrupted test sets -> metrics.

The pieces simsoft.evaluators (and its library form ``run_suite``) are
built from: a ``Scorer`` per predict function, test splits as ``Batches``,
the corruption grid, pre-corrupted sets, their summaries and the comparison
to a baseline. Decoupled from models and data loading: the caller passes ``predict_fn``
(images in [0, 1], float32 [B, H, W, C] -> logits [B, C], normally jitted; it
normalizes internally) and the clean test split as numpy arrays.

Each corruption is applied on device by one small jitted function per
corruption and batch shape, its severity traced (10 compilations for the
full suite, not 50; for small splits on CPU at XLA's cheap optimization
level, ``FAST_COMPILE_MAX_ELEMENTS``); compilations are cached across calls
and models. ``predict_fn`` is
traced once per batch shape, and one jitted
:func:`~simsoft.metrics.update_metric_stats` accumulates. The whole split is
padded to a multiple of ``batch_size`` (padding masked out) and put on device
once, sharded ``P(None, 'data')`` over ``mesh`` when one is given (with
several processes, every process passes the same full split).

Result layout (plain JSON: severities are string keys, undefined numbers
such as a mistake severity without mistakes are None)::

    {'clean': metrics + 'correct_bits' (per-image correctness, packed: simsoft.intervals)
               + 'confusion' (counts, C <= 100),
     'clean_on_corrupted_images': metrics,                 # when corruptions run
     'corruptions': {name: {'1': metrics, ..., '5': metrics}},
     'extra_sets': {name: {'<severity>': metrics}},        # when given
     'summary': {...}, 'extra_summary': {...}}             # when non-empty
"""

from __future__ import annotations

import functools
import math
import re
import zlib
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from simsoft import corruptions as corruptions_lib
from simsoft import intervals
from simsoft import metrics as metrics_lib
from simsoft import sharding as sharding_lib

PredictFn = Callable[[jax.Array], jax.Array]
_EXTRA_KEY = re.compile(r"^(?P<name>.+)_(?P<severity>\d+)$")


def json_clean(x: Any) -> Any:
  """Recursively: numpy scalars -> Python, non-finite floats -> None."""
  if isinstance(x, Mapping):
    return {str(k): json_clean(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [json_clean(v) for v in x]
  if isinstance(x, (np.floating, float)):
    return float(x) if math.isfinite(x) else None
  if isinstance(x, np.integer):
    return int(x)
  return x


def check_split(
    images: ArrayLike, labels: ArrayLike, num_classes: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
  """(float32 images in [0, 1], int32 labels) of a split, checked; ValueError naming `what`."""
  images, labels = np.asarray(images), np.asarray(labels)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(
        f"{what} images must be [N, H, W, 1|3], got shape {images.shape}"
    )
  if labels.shape != images.shape[:1]:
    raise ValueError(
        f"{what} labels must be [{images.shape[0]}], got shape {labels.shape}"
    )
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{what} labels must be integers, got {labels.dtype}")
  if images.shape[0] == 0:
    raise ValueError(f"{what} is empty")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(
        f"{what} labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
    )
  if images.dtype == np.uint8:
    return images.astype(np.float32) / 255.0, labels.astype(np.int32)
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(
        f"{what} images must be float in [0, 1] or uint8, got {images.dtype}"
    )
  return images.astype(np.float32), labels.astype(np.int32)


class Batches:
  """A split padded to [num_batches, batch_size, ...] on device, with its mask."""

  def __init__(self, images, labels, batch_size, mask_padding, mesh):
    n = images.shape[0]
    if not mask_padding:
      n = (n // batch_size) * batch_size
      if n == 0:
        raise ValueError(
            f"mask_padding=False drops every sample: {images.shape[0]} < batch_size {batch_size}"
        )
      images, labels = images[:n], labels[:n]
    nb = -(-n // batch_size)
    pad = nb * batch_size - n
    mask = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    images = np.concatenate(
        [images, np.zeros((pad,) + images.shape[1:], np.float32)]
    )
    labels = np.concatenate([labels, np.zeros(pad, np.int32)])
    shape = lambda a: a.reshape((nb, batch_size) + a.shape[1:])
    if mesh is None:
      put = jax.device_put
    else:  # every process holds the whole split: batches [nb, B] split on B
      put = lambda a: sharding_lib.from_whole(a, sharding_lib.sharded(mesh, 1))
    self.num_batches, self.count = nb, n
    self.images, self.labels, self.mask = (
        put(shape(images)),
        put(shape(labels)),
        put(shape(mask)),
    )


class StreamBatches:
  """A streamed split (simsoft.data.streaming.StreamSplit) in padded, masked batches.

  Read anew on each pass, each process reading its rows of every global
  batch (as simsoft.data.eval_batches); batch i is what Batches would hold
  at index i for the same examples.
  """

  def __init__(self, split, batch_size, mask_padding, mesh):
    if not mask_padding:
      raise ValueError("a streamed split is evaluated with mask_padding=True")
    self.split, self.batch_size, self.mesh = split, batch_size, mesh
    self.count = len(split)
    self.num_batches = -(-self.count // batch_size)

  def __iter__(self):
    from simsoft.data import streaming  # pylint: disable=g-import-not-at-top

    for local in streaming.eval_batches(
        self.split,
        global_batch_size=self.batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    ):
      batch = (local["image"], local["label"], local["mask"])
      if self.mesh is None:
        yield jax.device_put(batch)
      else:
        yield sharding_lib.from_process_local(
            batch, sharding_lib.sharded(self.mesh)
        )


@functools.partial(jax.jit, static_argnames=("name", "severity"))
def _corrupt_one(images, i, key, traced_severity, *, name, severity):
  """_corrupt_batch for one streamed batch ``images`` [B, ...], batch index ``i``."""
  sev = traced_severity if severity is None else severity
  return corruptions_lib.corrupt(name, images, sev, jax.random.fold_in(key, i))


@jax.jit
def _update_one(stats, logits, labels, mask):
  return metrics_lib.update_metric_stats(stats, logits, labels, mask)


def _stable_id(name: str) -> int:
  return zlib.crc32(name.encode()) & 0x7FFFFFFF


# Compile-time options for the corruption programs of small test splits on
# CPU, where compiling takes far longer than running: about 2.5x faster to
# compile, 3-5x slower to run (a 10,000-image CIFAR split keeps the default).
# Values agree to 1 ulp, except shot noise's Poisson draws, whose rejection
# sampler compares floats: the same distribution, other draws.
_FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
}
FAST_COMPILE_MAX_ELEMENTS = 1 << 21  # padded test split, [nb, B, H, W, C]


def _corrupt_batch(images, i, key, severity, *, name):
  """Batch ``i`` of ``images`` [nb, B, ...], corrupted with key ``fold_in(key, i)``.

  ``severity`` is traced (every corruption takes a traced severity), so one
  compilation per corruption and batch shape serves every severity and, the
  cache being module level, every model (A and B) and call.
  """
  return corruptions_lib.corrupt(
      name, images[i], severity, jax.random.fold_in(key, i)
  )


@functools.lru_cache(maxsize=None)
def _corrupt_fn(fast_compile: bool) -> Callable:
  return jax.jit(
      _corrupt_batch,
      static_argnames=("name",),
      compiler_options=_FAST_COMPILE if fast_compile else None,
  )


def _fast_compile(images: jax.Array) -> bool:
  """Compile a split's corruption programs cheaply: on CPU, for small splits."""
  return (
      jax.default_backend() == "cpu"
      and images.size <= FAST_COMPILE_MAX_ELEMENTS
  )


def warm_corruptions(batches: "Batches", names: Sequence[str], key) -> None:
  """Compiles the corruption programs `corruption_grid` will run on `batches`
  (one per name; the severity is traced), by running batch 0 of each once.
  A streamed split (StreamBatches) compiles its own on first use."""
  if isinstance(batches, StreamBatches):
    return
  corrupt = _corrupt_fn(_fast_compile(batches.images))
  key = jax.random.fold_in(jax.random.fold_in(key, 0), 1)
  severity = jnp.asarray(1, jnp.int32)
  jax.block_until_ready(
      [corrupt(batches.images, 0, key, severity, name=n) for n in names]
  )


@jax.jit
def _select(images, i):
  return images[i]


def _update(stats, logits, labels, mask, i):
  return metrics_lib.update_metric_stats(stats, logits, labels[i], mask[i])


@functools.lru_cache(maxsize=None)
def _update_fn(fast_compile: bool) -> Callable:
  """The jitted metric accumulation: a few [B, C] reductions and scatters, run
  once per batch, whose compile (about 1 s on CPU) dwarfs its run time, so
  compiled cheaply on CPU whatever the split's size."""
  return jax.jit(
      _update, compiler_options=_FAST_COMPILE if fast_compile else None
  )


@functools.lru_cache(maxsize=None)
def _correct_fn(mesh: jax.sharding.Mesh | None) -> Callable:
  """Per-image correctness, replicated so that every process can read it
  (one compilation per mesh, shared by every Scorer)."""
  return jax.jit(
      lambda logits, labels, i: jnp.argmax(logits, -1) == labels[i],
      out_shardings=None if mesh is None else sharding_lib.replicated(mesh),
  )


class Scorer:
  """Scores one predict_fn on padded splits (Batches), clean or corrupted."""

  def __init__(
      self,
      predict_fn,
      num_classes,
      class_to_group,
      reference_similarity,
      mistake_distance=None,
      mesh=None,
  ):
    self.predict_fn = predict_fn
    self.num_classes = num_classes
    self.finalize_kw = {
        "class_to_group": class_to_group,
        "reference_similarity": reference_similarity,
        "mistake_distance": mistake_distance,
    }
    self._correct = _correct_fn(mesh)

  def evaluate(
      self,
      batches: Batches,
      name: str | None = None,
      severity: int = 0,
      key=None,
      *,
      correct_bits: bool = False,
      confusion: bool = False,
  ) -> dict:
    """The set's metrics; with `correct_bits`, also 'correct_bits' (simsoft.intervals);
    with `confusion`, also 'confusion' (counts [C][C], true class by row) when
    C <= metrics.MAX_PER_CLASS_CLASSES."""
    stats = metrics_lib.init_metric_stats(self.num_classes)
    correct = []
    traced_severity = jnp.asarray(severity, jnp.int32)
    if isinstance(batches, StreamBatches):
      for i, (x, labels, mask) in enumerate(batches):
        if name is not None:
          x = _corrupt_one(x, i, key, traced_severity, name=name, severity=None)
        logits = self.predict_fn(x)
        stats = _update_one(stats, logits, labels, mask)
        if correct_bits:
          correct.append(self._correct(logits, labels[None], 0))
    else:
      corrupt = _corrupt_fn(_fast_compile(batches.images))
      update = _update_fn(jax.default_backend() == "cpu")
      for i in range(batches.num_batches):
        if name is None:
          x = _select(batches.images, i)
        else:
          x = corrupt(batches.images, i, key, traced_severity, name=name)
        logits = self.predict_fn(x)
        stats = update(stats, logits, batches.labels, batches.mask, i)
        if correct_bits:
          correct.append(self._correct(logits, batches.labels, i))
    out = metrics_lib.finalize_metrics(stats, **self.finalize_kw)
    if confusion and self.num_classes <= metrics_lib.MAX_PER_CLASS_CLASSES:
      out["confusion"] = (
          np.rint(np.asarray(stats["confusion"])).astype(int).tolist()
      )
    if correct_bits:
      out["correct_bits"] = intervals.pack_correct(
          np.concatenate([np.asarray(c) for c in correct])[: batches.count]
      )
    return out


_SUMMARY_METRICS = (
    "accuracy",
    "nll",
    "ece",
    "mistake_severity",
    "superclass_accuracy",
)


def summarize(cells: Mapping[str, Mapping[str, Mapping]]) -> dict:
  """Aggregates a {name: {severity: metrics}} grid.

  Returns ``mean_corrupted_accuracy``, ``mce`` (unnormalized, = 1 - mCA), the
  mean over all cells of each other scalar metric (``mean_corrupted_nll``,
  ``..._ece``, ``..._mistake_severity``, ``..._superclass_accuracy``, cells
  with an undefined value skipped), ``accuracy_by_corruption`` (mean over
  severities) and ``accuracy_by_severity`` (mean over corruptions).
  """
  acc = {
      n: {s: m["accuracy"] for s, m in by.items()} for n, by in cells.items()
  }
  out = {
      "mean_corrupted_accuracy": metrics_lib.mean_corrupted_accuracy(acc),
      "mce": metrics_lib.mean_corruption_error(acc),
  }
  for metric in _SUMMARY_METRICS[1:]:
    vals = [m.get(metric) for by in cells.values() for m in by.values()]
    if any(v is not None for v in vals):
      finite = [v for v in vals if v is not None and math.isfinite(v)]
      out[f"mean_corrupted_{metric}"] = (
          float(np.mean(finite)) if finite else math.nan
      )
  out["accuracy_by_corruption"] = {
      n: float(np.mean(list(by.values()))) for n, by in acc.items()
  }
  sevs = sorted({s for by in acc.values() for s in by}, key=int)
  out["accuracy_by_severity"] = {
      s: float(np.mean([by[s] for by in acc.values() if s in by])) for s in sevs
  }
  return json_clean(out)


def resolve_suite(suite: str | Sequence[str]) -> list[str]:
  """'all' -> every corruption; else the names, each checked (ValueError naming it)."""
  if isinstance(suite, str):
    if suite == "all":
      return list(corruptions_lib.CORRUPTIONS)
    suite = [suite]
  names = list(suite)
  for name in names:
    corruptions_lib.get_corruption(name)
  return names


def corrupted_subset(
    images: np.ndarray,
    labels: np.ndarray,
    corrupted_examples: int,
    batch_size: int,
    mask_padding: bool,
    mesh: jax.sharding.Mesh | None,
) -> Batches | None:
  """Batches of the first `corrupted_examples` images, or None when that is the whole split."""
  if 0 < corrupted_examples < len(labels):
    return Batches(
        images[:corrupted_examples],
        labels[:corrupted_examples],
        batch_size,
        mask_padding,
        mesh,
    )
  return None


def corruption_grid(
    scorer: Scorer,
    batches: Batches,
    names: Sequence[str],
    severities: Sequence[int],
    key: jax.Array,
    report: Callable[[str], None] = lambda name: None,
) -> dict:
  """{name: {'<severity>': metrics}}: `batches` corrupted on device, cell by cell.

  Cell (name, s) batch i uses fold_in(fold_in(fold_in(key, crc32(name)), s), i).
  """
  grid = {}
  for name in names:
    name_key = jax.random.fold_in(key, _stable_id(name))
    grid[name] = {}
    for s in severities:
      grid[name][str(s)] = scorer.evaluate(
          batches, name, s, jax.random.fold_in(name_key, s)
      )
      report(f"{name} s{s}")
  return grid


def extra_set_grid(
    scorer: Scorer,
    extra_sets: Mapping[str, tuple],
    batch_size: int,
    mask_padding: bool,
    mesh: jax.sharding.Mesh | None,
    report: Callable[[str], None] = lambda name: None,
) -> dict:
  """{name: {'<severity>': metrics}} of pre-corrupted sets keyed '<name>_<severity>'.

  Sets are read one at a time (a lazy Mapping keeps one in memory).
  """
  grid = {}
  for set_key in sorted(extra_sets):
    match = _EXTRA_KEY.match(set_key)
    if match is None:
      raise ValueError(
          f"extra_sets key {set_key!r} must look like '<name>_<severity>'"
      )
    x, y = check_split(
        *extra_sets[set_key], scorer.num_classes, f"extra_sets[{set_key!r}]"
    )
    cell = scorer.evaluate(Batches(x, y, batch_size, mask_padding, mesh))
    grid.setdefault(match["name"], {})[str(int(match["severity"]))] = cell
    report(set_key)
  return grid


def _compare_grid(cells, base_cells, clean, base_clean) -> dict:
  acc = {
      n: {s: m["accuracy"] for s, m in by.items()} for n, by in cells.items()
  }
  base = {
      n: {s: m["accuracy"] for s, m in by.items()}
      for n, by in base_cells.items()
  }
  out = {
      "normalized_mce": metrics_lib.normalized_mce(acc, base),
      "relative_mce": metrics_lib.relative_mce(
          acc, clean["accuracy"], base, base_clean["accuracy"]
      ),
      "corruption_error_ratio": {
          n: metrics_lib.normalized_mce({n: acc[n]}, {n: base[n]}) for n in acc
      },
      "mean_corrupted_accuracy_delta": metrics_lib.mean_corrupted_accuracy(acc)
      - metrics_lib.mean_corrupted_accuracy(base),
  }
  return out


def paired_clean_difference(
    results: Mapping, baseline_results: Mapping
) -> dict | None:
  """results - baseline in clean accuracy on the same images, with its paired 95 % interval
  (:func:`simsoft.intervals.paired_difference`); None without per-image correctness.
  """
  clean, base = results["clean"], baseline_results["clean"]
  if (
      "correct_bits" not in clean
      or "correct_bits" not in base
      or clean["count"] != base["count"]
  ):
    return None
  n = int(clean["count"])
  return intervals.paired_difference(
      intervals.unpack_correct(base["correct_bits"], n),
      intervals.unpack_correct(clean["correct_bits"], n),
  )


def compare_to_baseline(results: Mapping, baseline_results: Mapping) -> dict:
  """Robustness of ``results`` relative to a baseline (the run's CE model A).

  Returns ``clean_accuracy_delta`` and, for ``corruptions`` (and
  ``extra_sets`` under key ``extra_sets``) present in both:
  ``normalized_mce`` (:func:`metrics.normalized_mce`, < 1 is better than the
  baseline), ``relative_mce`` (:func:`metrics.relative_mce`),
  ``corruption_error_ratio`` per corruption and
  ``mean_corrupted_accuracy_delta``; ``clean_accuracy_paired`` (the paired
  difference with its 95 % interval) when both carry per-image correctness. JSON-able; undefined ratios are None.
  """
  clean, base_clean = results["clean"], baseline_results["clean"]
  out = {"clean_accuracy_delta": clean["accuracy"] - base_clean["accuracy"]}
  paired = paired_clean_difference(results, baseline_results)
  if paired is not None:
    out["clean_accuracy_paired"] = paired
  if results.get("corruptions") and baseline_results.get("corruptions"):
    out.update(
        _compare_grid(
            results["corruptions"],
            baseline_results["corruptions"],
            clean,
            base_clean,
        )
    )
  if results.get("extra_sets") and baseline_results.get("extra_sets"):
    out["extra_sets"] = _compare_grid(
        results["extra_sets"], baseline_results["extra_sets"], clean, base_clean
    )
  return json_clean(out)
