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
                                        ``initial_smoothing``\ =0.1)
==========  ==========================  =====================================================

For ``centroid`` and ``weights`` the temperature is the one of the row softmax
(:math:`S_y = \mathrm{softmax}(\cos(\cdot_y, \cdot) / T)` once normalised);
for the others it is the post-processing power :math:`A^{1/T}` (default 1).
A class with no samples gets the one-hot row :math:`e_y` from the data
sources (and, for ``centroid``, zero affinity in the other rows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import math
import numbers
from typing import Any

import numpy as np

from simsoft.similarity import io as sim_io
from simsoft.similarity.online import online_initial, online_update
from simsoft.similarity.postprocess import POSTPROCESS_DEFAULTS, postprocess
from simsoft.similarity.stats import SimilarityStats

__all__ = ["SOURCES", "Source", "build_similarity", "source_needs_data", "source_needs_features"]


@dataclasses.dataclass(frozen=True)
class Source:
  """A named builder: ``build(num_classes, stats, classifier_kernel, path, options) -> A``."""

  build: Callable[..., np.ndarray]
  needs_data: bool = False
  needs_features: bool = False
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  own_temperature: bool = False

  def __call__(self, **kwargs) -> np.ndarray:
    return self.build(**kwargs)


def _stats_np(stats: SimilarityStats) -> dict[str, np.ndarray]:
  return {f.name: np.asarray(getattr(stats, f.name), np.float64) for f in dataclasses.fields(stats)}


def _mean_rows(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """Row y = sums[y] / counts[y]; e_y where counts[y] == 0."""
  c = sums.shape[0]
  seen = counts > 0
  return np.where(seen[:, None], sums / np.where(seen, counts, 1.0)[:, None], np.eye(c))


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


def _confusion(*, num_classes, stats, options, **_):
  s = options["smoothing"]
  if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s) or s < 0:
    raise ValueError(f"option `smoothing` must be a finite number >= 0, got {s!r}.")
  counts = _stats_np(stats)["confusion"] + s
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
  if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
    raise ValueError(f"option `temperature` must be a finite number > 0, got {t!r}.")
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


def _online(*, num_classes, stats, options, **_):
  eps = options["initial_smoothing"]
  if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 <= eps <= 1:
    raise ValueError(f"option `initial_smoothing` must be a number in [0, 1], got {eps!r}.")
  correct_only = _check_bool(options, "correct_only")
  s0 = online_initial(num_classes, smoothing=float(eps))
  if stats is None:
    return np.asarray(s0, np.float64)
  return np.asarray(online_update(s0, stats, correct_only=correct_only), np.float64)


SOURCES: dict[str, Source] = {
    "identity": Source(_identity),
    "uniform": Source(_uniform),
    "confusion": Source(_confusion, needs_data=True, options={"smoothing": 1.0}),
    "softmax": Source(_softmax, needs_data=True, options={"correct_only": False}),
    "centroid": Source(
        _centroid, needs_data=True, needs_features=True,
        options={"temperature": 0.1, "center": True}, own_temperature=True,
    ),
    "weights": Source(_weights, options={"temperature": 0.1}, own_temperature=True),
    "file": Source(_file),
    "online": Source(
        _online, needs_data=True,
        options={"correct_only": True, "initial_smoothing": 0.1},
    ),
}


def _source(source: str) -> Source:
  if source not in SOURCES:
    raise ValueError(f"unknown similarity source {source!r}; known: {sorted(SOURCES)}.")
  return SOURCES[source]


def source_needs_data(source: str) -> bool:
  """True when `source` is built from a data pass (its `stats`)."""
  return _source(source).needs_data


def source_needs_features(source: str) -> bool:
  """True when `source` needs penultimate-feature statistics (feature_dim > 0)."""
  return _source(source).needs_features


def source_options(source: str) -> dict[str, Any]:
  """Every option `source` accepts, with its default."""
  spec = _source(source)
  return {**POSTPROCESS_DEFAULTS, **spec.options}


def build_similarity(
    source: str,
    *,
    num_classes: int,
    stats: SimilarityStats | None = None,
    classifier_kernel=None,
    path: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> np.ndarray:
  """Builds S with the named source, then applies the shared post-processing.

  Args:
    source: a key of :data:`SOURCES`.
    num_classes: C, the dataset's class count.
    stats: statistics from ``update_stats`` (confusion, softmax, centroid;
      online: None gives :math:`S^0`).
    classifier_kernel: [D, C] final dense kernel (weights).
    path: matrix file (file).
    options: source options and shared post-processing options; see
      :func:`source_options` for the keys and defaults.

  Returns:
    np.ndarray float32 [C, C], finite and non-negative; rows sum to 1 unless
    ``normalize=False``.
  """
  spec = _source(source)
  if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) or num_classes < 1:
    raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
  num_classes = int(num_classes)
  if options is None:
    options = {}
  elif hasattr(options, "to_dict"):  # ml_collections.ConfigDict
    options = options.to_dict()
  if not isinstance(options, Mapping):
    raise TypeError(f"`options` must be a mapping, got {type(options).__name__}.")
  allowed = source_options(source)
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise ValueError(
        f"unknown option(s) {unknown} for similarity source {source!r}; allowed: {sorted(allowed)}."
    )
  opts = {**allowed, **options}

  if spec.needs_data and stats is None and source != "online":
    raise ValueError(f"source {source!r} needs `stats` (from update_stats over a data pass).")
  if stats is not None and stats.num_classes != num_classes:
    raise ValueError(f"`stats` has {stats.num_classes} classes but `num_classes` is {num_classes}.")
  if source == "weights" and classifier_kernel is None:
    raise ValueError("source 'weights' needs `classifier_kernel` ([D, C] final-layer kernel).")
  if source == "file" and path is None:
    raise ValueError("source 'file' needs `path` (a .npy, .csv or .json matrix).")

  affinity = spec(num_classes=num_classes, stats=stats, classifier_kernel=classifier_kernel,
                  path=path, options=opts)
  return postprocess(affinity, opts, apply_temperature=not spec.own_temperature)
