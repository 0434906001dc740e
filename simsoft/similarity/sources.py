r"""Similarity sources: a name -> builder registry, from statistics or parameters to S.

Each source turns its input into a non-negative affinity matrix :math:`A`
([C, C]); :func:`~simsoft.similarity.postprocess.postprocess` then applies the
shared options (temperature, symmetrize, diagonal, top_k, normalize,
identity_mix) and, with the default ``normalize=True``, every source returns
rows that are distributions.

==========  ==========================  =====================================================
source      input                       affinity (own options, defaults)
==========  ==========================  =====================================================
identity    --                          :math:`I` (plain cross-entropy)
uniform     --                          :math:`\mathbf{1}/C` (label smoothing)
confusion   stats                       :math:`\mathrm{confusion} + s` (``smoothing`` s=1.0)
softmax     stats                       class-mean softmax :math:`\mathrm{prob\_sum}_y / n_y`
                                        (``correct_only``\ =False)
centroid    stats with features         :math:`\exp((\cos(\mu_y, \mu_k) - 1) / T)`, with
                                        :math:`\mu_y` the class-mean feature, minus the
                                        mean of the :math:`\mu` (``center``\ =True;
                                        ``temperature`` T=0.1)
weights     classifier_kernel [D, C]    :math:`\exp((\cos(w_y, w_k) - 1) / T)` on kernel
                                        columns (``temperature`` T=0.1)
file        path (.npy/.csv/.json)      the validated matrix in the file
online      stats (None: :math:`S^0`)   :func:`~simsoft.similarity.online.online_update`
                                        of :math:`S^0` (``correct_only``\ =True,
                                        ``initial_smoothing``\ =0.1, ``initial``\ ='smoothing',
                                        ``fallback``\ ='keep', ``freeze_threshold``\ =0)
hierarchy   path: class hierarchy or    :math:`\exp(-\beta\, d / \max d)`, d the LCA height
            [C, C] distance matrix      (:mod:`~simsoft.similarity.hierarchy`) or the given
                                        distances: Making Better Mistakes' soft labels once
                                        normalized (``beta``\ =10)
ordinal     --                          :math:`r^{|i-j|}` for ordered classes (SimLoss's age
                                        matrix; ``ratio`` r=0.5)
embedding   path: class embeddings      :math:`\max(0, (\cos(e_i, e_j) - b) / (1 - b))`
            [C, D] (.npy/.csv/.json)    (SimLoss's word2vec matrix; ``lower_bound`` b=0.5)
==========  ==========================  =====================================================

SimLoss (konstantinkobs/SimLoss) uses its matrices as given: build them with
``normalize=False`` and train with ``loss.as_given`` (see configs/peers/).
The online source's ``initial='zero'`` is the peer's CIFAR first epoch, a zero
soft-label matrix; it is not a similarity, so the pipeline uses it directly
(with ``loss.as_given``) and this builder refuses it.

For ``centroid`` and ``weights`` the temperature is the one of the row softmax
(:math:`S_y = \mathrm{softmax}(\cos(\cdot_y, \cdot) / T)` once normalized);
for the others it is the post-processing power :math:`A^{1/T}` (default 1).
A class with no samples gets the one-hot row :math:`e_y` from the data
sources (and, for ``centroid``, zero affinity in the other rows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import math
import numbers
import os
from typing import Any

from jax.typing import ArrayLike
import numpy as np

from simsoft.similarity import hierarchy as hierarchy_lib
from simsoft.similarity import io as sim_io
from simsoft.similarity import sparse as sparse_lib
from simsoft.similarity.online import online_initial, online_update
from simsoft.similarity.postprocess import POSTPROCESS_DEFAULTS, postprocess
from simsoft.similarity.stats import SimilarityStats

__all__ = [
    "SOURCES",
    "Source",
    "build_similarity",
    "check_source_options",
    "online_update_options",
    "source_needs_data",
    "source_needs_features",
    "source_needs_path",
    "source_spec",
    "initial_similarity",
]


@dataclasses.dataclass(frozen=True)
class Source:
  """A named builder and what it is built from, so the pipeline needs no name branches.

  ``build(num_classes, stats, classifier_kernel, path, options) -> A [C, C]``.

  Attributes:
    needs_data: built from a pass over data (its ``stats``).
    needs_features: that pass accumulates penultimate features.
    needs_kernel: built from the classifier's final kernel [D, C].
    path_field: the config field naming the file it reads, or None.
    check_file: ``(path, num_classes)`` reads that file up front (ValueError
      if unusable), so a bad file fails before any training.
    per_epoch: rebuilt at the end of every retraining epoch from that epoch's
      statistics (Online Label Smoothing); the estimate phase gives S^0.
    options: its own options with their defaults.
    own_temperature: the builder applies ``temperature`` itself.
    check_options: ``(options)`` checks its own options (ValueError naming
      the option), the same checks the builder runs, so that a bad value
      fails before model A trains.
  """

  build: Callable[..., np.ndarray]
  needs_data: bool = False
  needs_features: bool = False
  needs_kernel: bool = False
  path_field: str | None = None
  check_file: Callable[[str, int], Any] | None = None
  per_epoch: bool = False
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  own_temperature: bool = False
  check_options: Callable[[Mapping[str, Any]], Any] | None = None

  @property
  def needs_path(self) -> bool:
    return self.path_field is not None

  @property
  def estimate_needs_data(self) -> bool:
    """A data pass after model A is trained (per-epoch sources get theirs while B trains)."""
    return self.needs_data and not self.per_epoch

  def __call__(self, **kwargs) -> np.ndarray:
    return self.build(**kwargs)


def _stats_np(stats: SimilarityStats) -> dict[str, np.ndarray]:
  return {
      f.name: np.asarray(getattr(stats, f.name), np.float64)
      for f in dataclasses.fields(stats)
  }


def _mean_rows(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """Row y = sums[y] / counts[y]; e_y where counts[y] == 0."""
  c = sums.shape[0]
  seen = counts > 0
  return np.where(
      seen[:, None], sums / np.where(seen, counts, 1.0)[:, None], np.eye(c)
  )


def _cosine_affinity(vectors: np.ndarray, temperature: float) -> np.ndarray:
  r""":math:`\exp((\cos(v_y, v_k) - 1) / T)` for rows of `vectors` [C, D]; 0-vectors have cos 0."""
  norms = np.linalg.norm(vectors, axis=1, keepdims=True)
  unit = vectors / np.where(norms > 0, norms, 1.0)
  cos = np.clip(unit @ unit.T, -1.0, 1.0)
  return np.exp((cos - 1.0) / temperature)


def _identity(*, num_classes, **_):
  return np.eye(num_classes)


def _uniform(*, num_classes, **_):
  return np.full((num_classes, num_classes), 1.0 / num_classes)


def _confusion_smoothing(options) -> float:
  s = options["smoothing"]
  if (
      not isinstance(s, (int, float))
      or isinstance(s, bool)
      or not math.isfinite(s)
      or s < 0
  ):
    raise ValueError(
        f"option `smoothing` must be a finite number >= 0, got {s!r}."
    )
  return s


def _confusion(*, num_classes, stats, options, **_):
  counts = _stats_np(stats)["confusion"] + _confusion_smoothing(options)
  return _mean_rows(counts, counts.sum(axis=1))  # rows with no mass become e_y


def _check_bool(options, name):
  if not isinstance(options[name], (bool, np.bool_)):
    raise ValueError(f"option `{name}` must be a bool, got {options[name]!r}.")
  return bool(options[name])


def _softmax(*, num_classes, stats, options, **_):
  st = _stats_np(stats)
  if _check_bool(options, "correct_only"):
    return _mean_rows(st["prob_sum_correct"], st["count_correct"])
  return _mean_rows(st["prob_sum"], st["count"])


def _check_temperature(options):
  t = options["temperature"]
  if (
      not isinstance(t, (int, float))
      or isinstance(t, bool)
      or not math.isfinite(t)
      or t <= 0
  ):
    raise ValueError(
        f"option `temperature` must be a finite number > 0, got {t!r}."
    )
  return float(t)


def _centroid(*, num_classes, stats, options, **_):
  if stats.feature_dim == 0:
    raise ValueError(
        "source 'centroid' needs feature statistics: init_stats(num_classes, "
        "feature_dim=D) and pass `features` to update_stats."
    )
  st = _stats_np(stats)
  seen = st["count"] > 0
  means = st["feature_sum"] / np.where(seen, st["count"], 1.0)[:, None]
  if _check_bool(options, "center"):
    # Post-ReLU features share one orthant, so raw cosines all sit near 1 and
    # would call every class alike; centring on the mean centroid keeps contrast.
    means = np.where(seen[:, None], means - means[seen].mean(axis=0), 0.0)
  a = _cosine_affinity(means, _check_temperature(options))
  a = np.where(seen[None, :], a, 0.0)
  return np.where(seen[:, None], a, np.eye(num_classes))


def _weights(*, num_classes, classifier_kernel, options, **_):
  kernel = np.asarray(classifier_kernel, np.float64)
  if kernel.ndim != 2 or kernel.shape[1] != num_classes:
    raise ValueError(
        f"`classifier_kernel` must be [D, C] = [D, {num_classes}] (final dense "
        f"layer kernel, one column per class), got shape {kernel.shape}."
    )
  if not np.all(np.isfinite(kernel)):
    raise ValueError("`classifier_kernel` has non-finite entries.")
  return _cosine_affinity(kernel.T, _check_temperature(options))


def _file(*, num_classes, path, **_):
  return sim_io.read_similarity_file(path, num_classes=num_classes)[0]


def _number(options, name, low, high=math.inf, *, open_low=False):
  v = options[name]
  ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
      v, bool
  )
  ok = (
      ok
      and math.isfinite(v)
      and (v > low if open_low else v >= low)
      and v <= high
  )
  if not ok:
    bound = f"{'>' if open_low else '>='} {low}" + (
        f" and <= {high}" if high < math.inf else ""
    )
    raise ValueError(
        f"option `{name}` must be a finite number {bound}, got {v!r}."
    )
  return float(v)


def online_update_options(options: Mapping[str, Any]) -> dict[str, Any]:
  """The keyword arguments of online_update from the online source's options (checked)."""
  if options["fallback"] not in ("keep", "uniform"):
    raise ValueError(
        f"option `fallback` must be 'keep' or 'uniform', got {options['fallback']!r}."
    )
  if options["initial"] not in ("smoothing", "zero"):
    raise ValueError(
        f"option `initial` must be 'smoothing' or 'zero', got {options['initial']!r}."
    )
  post = {k: options[k] for k in POSTPROCESS_DEFAULTS if k in options}
  if post.get("temperature") is None:
    post.pop("temperature", None)
  return {
      "correct_only": _check_bool(options, "correct_only"),
      "fallback": options["fallback"],
      "freeze_threshold": _number(options, "freeze_threshold", 0.0, 1.0),
      "postprocess": post,
  }


def _online_initial_smoothing(options) -> float:
  eps = options["initial_smoothing"]
  if (
      not isinstance(eps, (int, float))
      or isinstance(eps, bool)
      or not 0 <= eps <= 1
  ):
    raise ValueError(
        f"option `initial_smoothing` must be a number in [0, 1], got {eps!r}."
    )
  return float(eps)


def _check_online(options) -> None:
  _online_initial_smoothing(options)
  online_update_options(options)


def _online(*, num_classes, stats, options, **_):
  eps = _online_initial_smoothing(options)
  update = online_update_options(options)
  if options["initial"] == "zero":
    raise ValueError(
        "option initial='zero' (the peer's zero first-epoch matrix) is no "
        "similarity; the pipeline uses it directly with loss.as_given=True."
    )
  s0 = online_initial(num_classes, smoothing=float(eps))
  if stats is None:
    return np.asarray(s0, np.float64)
  update["postprocess"] = (
      None  # build_similarity post-processes the whole matrix
  )
  return np.asarray(online_update(s0, stats, **update), np.float64)


def _hierarchy_beta(options) -> float:
  return _number(options, "beta", 0.0)


def _hierarchy(*, num_classes, path, options, **_):
  beta = _hierarchy_beta(options)
  d = hierarchy_lib.read_distances(path, num_classes=num_classes)
  return np.exp(-beta * d / d.max())


def _ordinal_ratio(options) -> float:
  return _number(options, "ratio", 0.0, 1.0)


def _ordinal(*, num_classes, options, **_):
  r = _ordinal_ratio(options)
  i = np.arange(num_classes)
  return r ** np.abs(i[:, None] - i[None, :]).astype(
      np.float64
  )  # 0 ** 0 = 1 on the diagonal


def _read_embeddings(path, num_classes):
  p = str(path)
  ext = p.rsplit(".", 1)[-1].lower()
  try:
    if ext == "npy":
      e = np.load(p, allow_pickle=False)
    elif ext == "csv":
      e = np.loadtxt(p, delimiter=",", ndmin=2)
    elif ext == "json":
      import json  # pylint: disable=g-import-not-at-top

      with open(p, encoding="utf-8") as f:
        data = json.load(f)
      e = data["embeddings"] if isinstance(data, dict) else data
    else:
      raise ValueError(f"unsupported extension .{ext}; use .npy, .csv or .json")
    e = np.asarray(e, np.float64)
  except (OSError, ValueError, KeyError, TypeError) as err:
    raise ValueError(f"embedding file {p!r}: {err}") from None
  if e.ndim != 2 or e.shape[0] != num_classes or not np.all(np.isfinite(e)):
    raise ValueError(
        f"embedding file {p!r}: must be a finite [C, D] = [{num_classes}, D] "
        f"array (one row per class), got shape {e.shape}."
    )
  norms = np.linalg.norm(e, axis=1)
  if np.any(norms == 0):
    raise ValueError(
        f"embedding file {p!r}: class {int(np.flatnonzero(norms == 0)[0])} "
        "has a zero embedding (no cosine)."
    )
  return e


def _embedding_lower_bound(options) -> float:
  b = _number(options, "lower_bound", 0.0, 1.0)
  if b >= 1.0:
    raise ValueError(f"option `lower_bound` must be < 1, got {b!r}.")
  return b


def _embedding(*, num_classes, path, options, **_):
  b = _embedding_lower_bound(options)
  e = _read_embeddings(path, num_classes)
  unit = e / np.linalg.norm(e, axis=1, keepdims=True)
  cos = np.clip(unit @ unit.T, -1.0, 1.0)
  return np.maximum((cos - b) / (1.0 - b), 0.0)


def _check_embedding_file(path: str, num_classes: int) -> None:
  _read_embeddings(path, num_classes)


SOURCES: dict[str, Source] = {
    "identity": Source(_identity),
    "uniform": Source(_uniform),
    "confusion": Source(
        _confusion,
        needs_data=True,
        options={"smoothing": 1.0},
        check_options=_confusion_smoothing,
    ),
    "softmax": Source(
        _softmax,
        needs_data=True,
        options={"correct_only": False},
        check_options=lambda o: _check_bool(o, "correct_only"),
    ),
    "centroid": Source(
        _centroid,
        needs_data=True,
        needs_features=True,
        options={"temperature": 0.1, "center": True},
        own_temperature=True,
        check_options=lambda o: _check_bool(o, "center"),
    ),
    "weights": Source(
        _weights,
        needs_kernel=True,
        options={"temperature": 0.1},
        own_temperature=True,
    ),
    "file": Source(
        _file,
        path_field="similarity.path",
        check_file=lambda path, c: sim_io.read_similarity_file(
            path, num_classes=c
        ),
    ),
    "online": Source(
        _online,
        needs_data=True,
        per_epoch=True,
        options={
            "correct_only": True,
            "initial_smoothing": 0.1,
            "initial": "smoothing",
            "fallback": "keep",
            "freeze_threshold": 0.0,
        },
        check_options=_check_online,
    ),
    "hierarchy": Source(
        _hierarchy,
        path_field="hierarchy_path",
        check_file=lambda path, c: hierarchy_lib.read_distances(
            path, num_classes=c
        ),
        options={"beta": 10.0},
        check_options=_hierarchy_beta,
    ),
    "ordinal": Source(
        _ordinal, options={"ratio": 0.5}, check_options=_ordinal_ratio
    ),
    "embedding": Source(
        _embedding,
        path_field="similarity.path",
        check_file=_check_embedding_file,
        options={"lower_bound": 0.5},
        check_options=_embedding_lower_bound,
    ),
}


def check_source_options(source: str, options: Mapping[str, Any]) -> None:
  """The checks `source`'s builder runs on its own options, without building:
  ValueError naming the option (unknown names included)."""
  spec = _source(source)
  unknown = sorted(set(options) - set(source_options(source)))
  if unknown:
    raise ValueError(
        f"unknown option(s) {unknown} for similarity source {source!r}; "
        f"allowed: {sorted(spec.options)}."
    )
  if spec.check_options is not None:
    spec.check_options({**spec.options, **options})


def source_spec(source: str) -> Source:
  """The registry entry of `source` (ValueError naming the known ones)."""
  return _source(source)


def initial_similarity(
    source: str, *, num_classes: int, options: Mapping[str, Any]
) -> np.ndarray:
  """[C, C] the S a per-epoch source trains its first epoch with.

  Zeros for the online source's initial='zero' (the peer's zero first-epoch
  matrix, used with loss.as_given), else build_similarity without statistics.
  """
  if options.get("initial") == "zero":
    return np.zeros((num_classes, num_classes), np.float32)
  return build_similarity(source, num_classes=num_classes, options=options)


def _source(source: str) -> Source:
  if source not in SOURCES:
    raise ValueError(
        f"unknown similarity source {source!r}; known: {sorted(SOURCES)}."
    )
  return SOURCES[source]


def source_needs_data(source: str) -> bool:
  """True when `source` is built from a data pass (its `stats`)."""
  return _source(source).needs_data


def source_needs_features(source: str) -> bool:
  """True when `source` needs penultimate-feature statistics (feature_dim > 0)."""
  return _source(source).needs_features


def source_needs_path(source: str) -> bool:
  """True when `source` reads a file (`path`)."""
  return _source(source).needs_path


def source_options(source: str) -> dict[str, Any]:
  """Every option `source` accepts, with its default."""
  spec = _source(source)
  return {**POSTPROCESS_DEFAULTS, **spec.options}


def build_similarity(
    source: str,
    *,
    num_classes: int,
    stats: SimilarityStats | None = None,
    classifier_kernel: ArrayLike | None = None,
    path: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> np.ndarray:
  """Builds S with the named source, then applies the shared post-processing.

  Args:
    source: a key of :data:`SOURCES`.
    num_classes: C, the dataset's class count.
    stats: statistics from ``update_stats`` (confusion, softmax, centroid;
      online: None gives :math:`S^0`).
    classifier_kernel: [D, C] final dense kernel (weights).
    path: matrix file (file), class hierarchy or distance matrix (hierarchy),
      class embeddings (embedding).
    options: source options and shared post-processing options; see
      :func:`source_options` for the keys and defaults.

  Returns:
    np.ndarray float32 [C, C], finite and non-negative; rows sum to 1 unless
    ``normalize=False``. The ``file`` source with a sparse ``.npz`` returns
    its SparseSimilarity as read (no post-processing).
  """
  spec = _source(source)
  if (
      not isinstance(num_classes, numbers.Integral)
      or isinstance(num_classes, bool)
      or num_classes < 1
  ):
    raise ValueError(
        f"`num_classes` must be a positive int, got {num_classes!r}."
    )
  num_classes = int(num_classes)
  if options is None:
    options = {}
  elif hasattr(options, "to_dict"):  # ml_collections.ConfigDict
    options = options.to_dict()
  if not isinstance(options, Mapping):
    raise TypeError(
        f"`options` must be a mapping, got {type(options).__name__}."
    )
  allowed = source_options(source)
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise ValueError(
        f"unknown option(s) {unknown} for similarity source {source!r}; allowed: {sorted(allowed)}."
    )
  opts = {**allowed, **options}

  if spec.estimate_needs_data and stats is None:
    raise ValueError(
        f"source {source!r} needs `stats` (from update_stats over a data pass)."
    )
  if stats is not None and stats.num_classes != num_classes:
    raise ValueError(
        f"`stats` has {stats.num_classes} classes but `num_classes` is {num_classes}."
    )
  if spec.needs_kernel and classifier_kernel is None:
    raise ValueError(
        f"source {source!r} needs `classifier_kernel` ([D, C] final-layer kernel)."
    )
  if spec.needs_path and path is None:
    raise ValueError(
        f"source {source!r} needs `path` (config.{spec.path_field})."
    )

  affinity = spec(
      num_classes=num_classes,
      stats=stats,
      classifier_kernel=classifier_kernel,
      path=path,
      options=opts,
  )
  if sparse_lib.is_sparse(affinity):  # a sparse .npz file: used as it is
    changed = sorted(
        k for k, v in POSTPROCESS_DEFAULTS.items() if opts.get(k, v) != v
    )
    if changed:
      raise ValueError(
          f"post-processing options {changed} do not apply to a sparse S "
          "(a .npz file); post-process the dense matrix before saving it."
      )
    return affinity
  return postprocess(affinity, opts, apply_temperature=not spec.own_temperature)
