"""Classification metrics as masked sufficient statistics, plus their aggregates.

``update_metric_stats`` is pure and runs under jit: it only sums over the batch
axis, so it is exact when that axis is sharded across devices (XLA inserts the
collectives). ``finalize_metrics`` turns the sums into numbers on the host.

Statistics (all float32, exact integers up to :math:`2^{24}` samples):

- ``count``: :math:`N = \\sum_i m_i`; ``correct``: :math:`\\sum_i m_i [\\hat y_i = y_i]`;
- ``nll_sum``: :math:`\\sum_i m_i (-\\log p_{i, y_i})`;
- ``bin_count``, ``bin_confidence``, ``bin_correct`` [num_bins]: per confidence
  bin :math:`B_b = ((b-1)/n_b, b/n_b]` of :math:`\\max_k p_{ik}`, the count,
  sum of confidences and sum of correct;
- ``confusion`` [C, C]: :math:`M_{jk} = \\sum_i m_i [y_i = j][\\hat y_i = k]`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np


def init_metric_stats(
    num_classes: int, num_bins: int = 15
) -> dict[str, jax.Array]:
  """Zero statistics for ``num_classes`` classes and ``num_bins`` ECE bins."""
  if int(num_classes) < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}")
  if int(num_bins) < 1:
    raise ValueError(f"num_bins must be >= 1, got {num_bins}")
  z = jnp.zeros((), jnp.float32)
  zb = jnp.zeros((num_bins,), jnp.float32)
  return {
      "count": z,
      "correct": z,
      "nll_sum": z,
      "bin_count": zb,
      "bin_confidence": zb,
      "bin_correct": zb,
      "confusion": jnp.zeros((num_classes, num_classes), jnp.float32),
  }


def update_metric_stats(
    stats: Mapping[str, jax.Array],
    logits: jax.Array,
    labels: jax.Array,
    mask: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """Adds a batch to ``stats``.

  Args:
    stats: from :func:`init_metric_stats` or a previous update.
    logits: [B, C] unnormalized log-probabilities.
    labels: [B] integer classes in [0, C).
    mask: [B] weights (1 = real sample, 0 = padding); all ones if None.

  Returns:
    New statistics (same structure and shapes).
  """
  num_classes = stats["confusion"].shape[0]
  num_bins = stats["bin_count"].shape[0]
  if logits.ndim != 2 or logits.shape[1] != num_classes:
    raise ValueError(
        f"logits must be [B, {num_classes}], got shape {logits.shape}"
    )
  if labels.shape != logits.shape[:1]:
    raise ValueError(
        f"labels must be [{logits.shape[0]}], got shape {labels.shape}"
    )
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"labels must be integers, got {labels.dtype}")
  if mask is None:
    mask = jnp.ones(labels.shape, jnp.float32)
  elif mask.shape != labels.shape:
    raise ValueError(
        f"mask must be [{labels.shape[0]}], got shape {mask.shape}"
    )
  mask = mask.astype(jnp.float32)

  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  pred = jnp.argmax(log_p, axis=-1)
  confidence = jnp.exp(jnp.max(log_p, axis=-1))
  correct = (pred == labels).astype(jnp.float32)
  nll = -jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
  bins = jnp.clip(
      jnp.ceil(confidence * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1
  )
  bin_onehot = jax.nn.one_hot(bins, num_bins, dtype=jnp.float32) * mask[:, None]
  # Sums of elementwise products rather than dots over the batch axis: a dot
  # contracting a sharded axis needs an explicit out_sharding under
  # Explicit-axis meshes, a plain sum does not.
  cell = jax.nn.one_hot(
      labels * num_classes + pred, num_classes * num_classes, dtype=jnp.float32
  )
  return {
      "count": stats["count"] + jnp.sum(mask),
      "correct": stats["correct"] + jnp.sum(mask * correct),
      "nll_sum": stats["nll_sum"] + jnp.sum(mask * nll),
      "bin_count": stats["bin_count"] + jnp.sum(bin_onehot, axis=0),
      "bin_confidence": stats["bin_confidence"]
      + jnp.sum(confidence[:, None] * bin_onehot, axis=0),
      "bin_correct": stats["bin_correct"]
      + jnp.sum(correct[:, None] * bin_onehot, axis=0),
      "confusion": stats["confusion"]
      + jnp.sum(cell * mask[:, None], axis=0).reshape(num_classes, num_classes),
  }


def similarity_from_groups(
    class_to_group: Sequence[int] | ArrayLike,
) -> np.ndarray:
  """0/1 reference similarity [C, C]: :math:`R_{jk} = [g(j) = g(k)]`."""
  g = np.asarray(class_to_group)
  if g.ndim != 1 or not np.issubdtype(g.dtype, np.integer):
    raise ValueError(f"class_to_group must be a 1-D integer array, got {g!r}")
  return (g[:, None] == g[None, :]).astype(np.float64)


def normalize_reference_similarity(
    reference_similarity: ArrayLike,
) -> np.ndarray:
  """:math:`\\tilde R_{jk} = R_{jk} / R_{jj}`, so the true class scores 1.

  Raises ValueError unless R is square, finite, non-negative, has a positive
  diagonal and :math:`R_{jk} \\le R_{jj}` (so :math:`\\tilde R \\in [0, 1]`).
  """
  r = np.asarray(reference_similarity, dtype=np.float64)
  if r.ndim != 2 or r.shape[0] != r.shape[1]:
    raise ValueError(
        f"reference_similarity must be [C, C], got shape {r.shape}"
    )
  if not np.all(np.isfinite(r)) or np.any(r < 0):
    raise ValueError("reference_similarity must be finite and non-negative")
  d = np.diag(r)
  if np.any(d <= 0):
    raise ValueError("reference_similarity must have a positive diagonal")
  rn = r / d[:, None]
  if np.any(rn > 1.0 + 1e-9):
    raise ValueError("reference_similarity must satisfy R[j, k] <= R[j, j]")
  return np.minimum(rn, 1.0)


# Above this many classes the per-class accuracies are left out of the record.
MAX_PER_CLASS_CLASSES = 100


def finalize_metrics(
    stats: Mapping[str, jax.Array],
    *,
    reference_similarity: ArrayLike | None = None,
    class_to_group: Sequence[int] | ArrayLike | None = None,
    mistake_distance: ArrayLike | None = None,
) -> dict[str, Any]:
  """Metrics from accumulated statistics, as Python floats and lists.

  - ``accuracy`` :math:`= \\text{correct}/N`; ``nll`` :math:`= \\text{nll\\_sum}/N`;
  - ``ece`` :math:`= \\sum_b \\frac{n_b}{N} |\\text{acc}_b - \\text{conf}_b|
    = \\frac1N \\sum_b |\\text{correct}_b - \\text{confidence}_b|`;
  - ``mistake_severity`` (with ``reference_similarity`` R): over misclassified
    samples, the mean of :math:`1 - \\tilde R_{y \\hat y}`, with
    :math:`\\tilde R` from :func:`normalize_reference_similarity` (NaN if there
    are no mistakes); ``num_mistakes`` alongside;
  - ``superclass_accuracy`` (with ``class_to_group`` g, int [C]): fraction of
    samples with :math:`g(\\hat y) = g(y)`;
  - ``mistake_distance`` (with ``mistake_distance`` D, [C, C]): over
    misclassified samples, the mean of :math:`D_{y \\hat y}`; with a class
    hierarchy D is the LCA height, and this is Making Better Mistakes'
    "average mistake severity" (NaN if there are no mistakes);
  - ``per_class_accuracy`` (C <= MAX_PER_CLASS_CLASSES): recall of each
    true class, :math:`\\text{confusion}_{yy} / \\sum_j \\text{confusion}_{yj}`
    (0 for a class without samples);
  - ``reliability``: per-bin ``count``, ``accuracy``, ``confidence`` lists
    (0 for empty bins) and ``bin_edges``, for reliability diagrams.
  """
  s = {k: np.asarray(v, np.float64) for k, v in stats.items()}
  n = float(s["count"])
  if n <= 0:
    raise ValueError("finalize_metrics: stats hold no samples (count is 0)")
  num_bins = s["bin_count"].shape[0]
  conf = s["confusion"]
  c = conf.shape[0]
  out: dict[str, Any] = {
      "count": n,
      "accuracy": float(s["correct"]) / n,
      "nll": float(s["nll_sum"]) / n,
      "ece": float(np.sum(np.abs(s["bin_correct"] - s["bin_confidence"]))) / n,
  }
  if c <= MAX_PER_CLASS_CLASSES:
    per_class = conf.sum(axis=1)
    out["per_class_accuracy"] = (
        np.diag(conf) / np.maximum(per_class, 1.0)
    ).tolist()
  safe = np.maximum(s["bin_count"], 1.0)
  out["reliability"] = {
      "bin_edges": np.linspace(0.0, 1.0, num_bins + 1).tolist(),
      "count": s["bin_count"].tolist(),
      "accuracy": (s["bin_correct"] / safe).tolist(),
      "confidence": (s["bin_confidence"] / safe).tolist(),
  }
  if reference_similarity is not None:
    rn = normalize_reference_similarity(reference_similarity)
    if rn.shape[0] != c:
      raise ValueError(
          f"reference_similarity must be [{c}, {c}], got shape {rn.shape}"
      )
    mistakes = conf * (1.0 - np.eye(c))
    m = float(mistakes.sum())
    out["num_mistakes"] = m
    out["mistake_severity"] = (
        float(np.sum(mistakes * (1.0 - rn)) / m) if m > 0 else math.nan
    )
  if mistake_distance is not None:
    d = np.asarray(mistake_distance, np.float64)
    if d.shape != (c, c):
      raise ValueError(
          f"mistake_distance must be [{c}, {c}], got shape {d.shape}"
      )
    mistakes = conf * (1.0 - np.eye(c))
    m = float(mistakes.sum())
    out["num_mistakes"] = m
    out["mistake_distance"] = (
        float(np.sum(mistakes * d) / m) if m > 0 else math.nan
    )
  if class_to_group is not None:
    g = np.asarray(class_to_group)
    if g.shape != (c,) or not np.issubdtype(g.dtype, np.integer):
      raise ValueError(
          f"class_to_group must be an int array of shape [{c}], got {g!r}"
      )
    out["superclass_accuracy"] = (
        float(np.sum(conf * (g[:, None] == g[None, :]))) / n
    )
  return out


def _grid(
    accuracies: Mapping[str, Mapping], what: str
) -> dict[str, np.ndarray]:
  if not accuracies:
    raise ValueError(f"{what} is empty: need at least one corruption")
  out = {}
  for name, by_sev in accuracies.items():
    if not by_sev:
      raise ValueError(f"{what}[{name!r}] has no severities")
    out[name] = np.array([float(by_sev[k]) for k in sorted(by_sev, key=int)])
  return out


def _check_same_cells(a: Mapping, b: Mapping) -> None:
  if set(a) != set(b) or any(
      {int(k) for k in a[n]} != {int(k) for k in b[n]} for n in a
  ):
    raise ValueError(
        "baseline_accuracies must have the same corruptions and severities as "
        f"accuracies; got {sorted(a)} vs {sorted(b)}"
    )


def mean_corrupted_accuracy(accuracies: Mapping[str, Mapping]) -> float:
  """:math:`\\frac{1}{|\\mathcal C|}\\sum_c \\frac{1}{|S_c|}\\sum_s \\text{acc}_{c,s}`.

  ``accuracies`` maps corruption name -> severity -> accuracy (the grid).
  """
  return float(
      np.mean([v.mean() for v in _grid(accuracies, "accuracies").values()])
  )


def mean_corruption_error(accuracies: Mapping[str, Mapping]) -> float:
  """Unnormalized mCE, :math:`\\text{mean}_c\\, \\text{mean}_s (1 - \\text{acc}_{c,s})`."""
  return 1.0 - mean_corrupted_accuracy(accuracies)


def normalized_mce(
    accuracies: Mapping[str, Mapping],
    baseline_accuracies: Mapping[str, Mapping],
) -> float:
  """Hendrycks and Dietterich's mCE with a baseline in AlexNet's place.

  :math:`\\text{mCE} = \\text{mean}_c \\frac{\\sum_s E_{c,s}}{\\sum_s E^{\\text{base}}_{c,s}}`,
  :math:`E = 1 - \\text{acc}`. Below 1 means fewer errors than the baseline.
  NaN if a baseline corruption has no errors.
  """
  _check_same_cells(accuracies, baseline_accuracies)
  a, b = _grid(accuracies, "accuracies"), _grid(
      baseline_accuracies, "baseline_accuracies"
  )
  ratios = []
  for name in a:
    den = np.sum(1.0 - b[name])
    ratios.append(np.sum(1.0 - a[name]) / den if den > 0 else math.nan)
  return float(np.mean(ratios))


def relative_mce(
    accuracies: Mapping[str, Mapping],
    clean_accuracy: float,
    baseline_accuracies: Mapping[str, Mapping],
    baseline_clean_accuracy: float,
) -> float:
  """Hendrycks and Dietterich's relative mCE: degradation against the baseline's.

  :math:`\\text{mean}_c \\frac{\\sum_s (E_{c,s} - E_{\\text{clean}})}
  {\\sum_s (E^{\\text{base}}_{c,s} - E^{\\text{base}}_{\\text{clean}})}`.
  NaN for a corruption that leaves the baseline's error unchanged.
  """
  _check_same_cells(accuracies, baseline_accuracies)
  a, b = _grid(accuracies, "accuracies"), _grid(
      baseline_accuracies, "baseline_accuracies"
  )
  e0, b0 = 1.0 - float(clean_accuracy), 1.0 - float(baseline_clean_accuracy)
  ratios = []
  for name in a:
    den = np.sum((1.0 - b[name]) - b0)
    ratios.append(np.sum((1.0 - a[name]) - e0) / den if den != 0 else math.nan)
  return float(np.mean(ratios))
