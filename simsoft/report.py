"""Per-run report: workdir/report.md with tables and PNG figures (headless).

  python -m simsoft.report WORKDIR [--out DIR]

rebuilds the report of a finished run from WORKDIR/results.json (and the S
model B trained with last, drawn as the run's own report drew it: the final
per-epoch S in WORKDIR/retrain/online_similarity.npy, else the estimated S in
WORKDIR/estimate/similarity.npy) into DIR (default WORKDIR); it reads nothing
else and writes only report.md and its figures.

Input layout: ``{'config': {...}, 'models': {'A': suite, 'B': suite},
'comparison': optional}`` where each suite is the output of
:func:`simsoft.evaluators.run_suite` (possibly read back from results.json).
Model B is compared with model A via :func:`robustness.compare_to_baseline`.
Figures use matplotlib's object API (``Figure``), never pyplot, so no display
or global backend state is touched.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from simsoft import intervals
from jax.typing import ArrayLike

from simsoft import results as results_lib
from simsoft import robustness
from simsoft.results import MODEL_LABELS

# Inside a run (absl logging at INFO) matplotlib's first text layout logs a
# "findfont: ... not found" warning per mathtext font it probes (about 20
# lines) before it falls back to DejaVu Sans, which it then uses: noise.
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)

# The clean table's columns after the accuracy with its interval.
_CLEAN_METRICS = results_lib.select(
    "clean_nll", "clean_ece", "mistake_severity", "superclass_accuracy"
)

_INTRO = """\
Two classifiers with the same architecture and data were trained in this run.
**Model A** is trained with plain cross-entropy against one-hot labels, where
every mistake costs the same. A class-similarity matrix S is then built, by
the similarity source named in the configuration (for example from model A's
confusions or features on held-out data, or from a file); in the heatmap below,
row *i* says how similar each class is to class *i*. **Model B** is trained
from scratch with a loss whose target uses S, so that confusing two similar classes costs less than confusing
two unrelated ones. Both models are evaluated on the clean test set and on
corrupted copies of it (noise, blur, contrast, ... at severities 1 to 5, after
Hendrycks and Dietterich 2019, CIFAR-10-C).
"""

_GLOSSARY = """\
- **accuracy**: fraction of test images classified correctly (higher is better).
- **NLL**: mean negative log-likelihood of the true class, -log p(y|x) (lower is better).
- **ECE** (one definition throughout, simsoft.metrics): the predictions of one
  test set are put in 15 equal-width bins of confidence (the top softmax
  probability); ECE is the average, weighted by bin size, of |accuracy - mean
  confidence| per bin (0 = perfectly calibrated). For corrupted data it is
  computed per cell (corruption x severity) and averaged over cells, like
  accuracy: the tables' "mean ECE" and the corrupted reliability panels show
  that mean.
- **95 % CI**: for an accuracy, Wilson's score interval over the n test
  images; for B - A, Newcombe's paired score interval (both models see the
  same images, so only the images on which they disagree move the
  difference). They describe which test images were drawn, not the spread
  over training seeds (simsoft.sweep reports that across runs).
- **mistake severity**: over misclassified images only, the mean of
  1 - R[true, predicted] for a reference similarity R scaled so R[y, y] = 1
  (0 = every mistake is between "similar" classes, 1 = between unrelated ones).
- **super-class accuracy**: fraction of images whose predicted class is in the
  same group (e.g. footwear) as the true class.
- **mCA**: mean corrupted accuracy, averaged over every corruption and severity.
  **mCE** = 1 - mCA, the unnormalized mean corruption error.
- **normalized mCE (B vs A)**: mean over corruptions of B's summed error over
  severities divided by A's (below 1: B makes fewer errors on corrupted data).
  **relative mCE** does the same with each model's clean error subtracted first,
  i.e. it compares how much accuracy each model *loses* under corruption.
"""


def _label(name: str) -> str:
  return MODEL_LABELS.get(name, name)


def _fmt(x, pct: bool = False) -> str:
  if x is None:
    return "n/a"
  return f"{100 * x:.2f}%" if pct else f"{x:.4f}"


def _grids(suite: Mapping) -> dict[str, Mapping]:
  """{'title': {name: {severity: metrics}}} for the synthetic and extra grids."""
  out = {}
  if suite.get("corruptions"):
    out["corruptions"] = suite["corruptions"]
  if suite.get("extra_sets"):
    out["extra_sets"] = suite["extra_sets"]
  return out


def _save(fig: Figure, path: str) -> str:
  # No bbox_inches='tight': the figures lay themselves out, and a tight box
  # draws each figure twice.
  fig.savefig(path, dpi=100)
  return os.path.basename(path)


def off_diagonal_range(similarity: ArrayLike) -> tuple[float, float]:
  """(min, max) of S's off-diagonal entries: the heatmap's colour scale."""
  s = np.asarray(similarity, np.float64)
  if s.shape[0] < 2:
    return 0.0, 1.0
  off = s[~np.eye(s.shape[0], dtype=bool)]
  return float(off.min()), float(off.max())


def plot_similarity(
    path: str, similarity: ArrayLike, class_names: Sequence[str] | None = None
) -> str:
  """Heatmap of S [C, C] with class names on both axes; returns the file name.

  The colour scale spans the off-diagonal entries only (the structure the
  loss uses): the diagonal, usually far larger, is drawn grey with its
  values written in (C <= 12) or its range in the title.
  """
  s = np.asarray(similarity, dtype=np.float64)
  if s.ndim != 2 or s.shape[0] != s.shape[1]:
    raise ValueError(f"similarity must be [C, C], got shape {s.shape}")
  c = s.shape[0]
  names = (
      list(class_names)
      if class_names is not None
      else [str(i) for i in range(c)]
  )
  if len(names) != c:
    raise ValueError(
        f"class_names has {len(names)} names for a {c}x{c} similarity"
    )
  diagonal = np.eye(c, dtype=bool)
  off = np.ma.masked_array(s, mask=diagonal)
  lo, hi = off_diagonal_range(s)
  size = min(4 + 0.35 * c, 16)
  fig = Figure(figsize=(size + 1, size), layout="constrained")
  ax = fig.add_subplot()
  ax.imshow(
      np.where(diagonal, 1.0, np.nan), cmap="Greys", vmin=0.0, vmax=4.0
  )  # light grey diagonal under the masked heatmap
  im = ax.imshow(off, cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="S[i, j], i != j")
  fontsize = 8 if c <= 20 else max(3, 160 // c)
  ax.set_xticks(range(c), names, rotation=90, fontsize=fontsize)
  ax.set_yticks(range(c), names, fontsize=fontsize)
  ax.set_xlabel("class j")
  ax.set_ylabel("class i (row)")
  d = np.diag(s)
  ax.set_title(
      "Class similarity S[i, j]: colours scaled to the off-diagonal\n"
      f"entries ({lo:.3g} to {hi:.3g}); diagonal (grey) {d.min():.3g} to {d.max():.3g}",
      fontsize=9,
  )
  if c <= 12:
    mid = 0.5 * (lo + hi)
    for i in range(c):
      for j in range(c):
        color = "k" if i == j or s[i, j] > mid else "w"
        ax.text(
            j,
            i,
            f"{s[i, j]:.2f}",
            ha="center",
            va="center",
            fontsize=7,
            color=color,
        )
  return _save(fig, path)


def _wilson_band(accuracy: float, count: float | None) -> tuple[float, float]:
  """Wilson 95 % interval of an accuracy over `count` images ((acc, acc) without a count)."""
  if not count:
    return accuracy, accuracy
  return intervals.wilson(round(accuracy * count), int(count))


def plot_accuracy_vs_severity(
    path: str, models: Mapping[str, Mapping], grid: str = "corruptions"
) -> str:
  """One panel per corruption: accuracy against severity (0 = clean), per model,
  each point with its Wilson 95 % band over the test images."""
  names = sorted({n for suite in models.values() for n in suite.get(grid, {})})
  if not names:
    raise ValueError(f"no model has a {grid!r} grid to plot")
  cols = min(5, len(names))
  rows = -(-len(names) // cols)
  fig = Figure(figsize=(2.6 * cols, 2.2 * rows + 0.9))
  axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)
  bands = {}
  for model, suite in models.items():
    clean = suite["clean"]
    for name in names:
      cells = suite.get(grid, {}).get(name)
      if not cells:
        continue
      sev = sorted(cells, key=int)
      points = [(0, clean["accuracy"], clean.get("count"))] + [
          (int(s), cells[s]["accuracy"], cells[s].get("count")) for s in sev
      ]
      bands[model, name] = [(x, y, *_wilson_band(y, n)) for x, y, n in points]
  lows = [b[2] for band in bands.values() for b in band]
  highs = [b[3] for band in bands.values() for b in band]
  colours = {}
  for k, name in enumerate(names):
    ax = axes[k // cols][k % cols]
    for model in models:
      band = bands.get((model, name))
      if band is None:
        continue
      x, y, lo, hi = (np.asarray(v) for v in zip(*band))
      (line,) = ax.plot(
          x, y, marker="o", ms=3, label=_label(model), color=colours.get(model)
      )
      colours[model] = line.get_color()
      ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_title(name, fontsize=9)
    ax.grid(alpha=0.3)
  for k in range(len(names), rows * cols):
    axes[k // cols][k % cols].set_visible(False)
  axes[0][0].set_xticks(range(0, 6))
  axes[0][0].set_ylim(max(0.0, min(lows) - 0.02), min(1.0, max(highs) + 0.02))
  for r in range(rows):
    axes[r][0].set_ylabel("accuracy")
  for k in range(max(0, len(names) - cols), len(names)):
    axes[k // cols][k % cols].set_xlabel("severity (0 = clean)")
    axes[k // cols][k % cols].xaxis.set_tick_params(labelbottom=True)
  handles, labels = axes[0][0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9)
  fig.suptitle(
      "Accuracy against corruption severity (bands: Wilson 95 % intervals "
      "over the test images)",
      fontsize=10,
  )
  fig.subplots_adjust(
      left=0.08,
      right=0.98,
      bottom=0.8 / fig.get_figheight() + 0.04,
      top=1 - 0.55 / fig.get_figheight(),
      wspace=0.08,
      hspace=0.35,
  )
  return _save(fig, path)


# Training curves: (metrics.jsonl key, label) per panel row.
_CURVES = (
    (
        "loss",
        (
            ("train/loss", "train (window mean)"),
            ("validation/nll", "held-out NLL"),
        ),
    ),
    (
        "accuracy",
        (
            ("train/accuracy", "train (window mean)"),
            ("validation/accuracy", "held-out"),
        ),
    ),
)


def plot_training_curves(
    path: str, curves: Mapping[str, Sequence[Mapping[str, float]]]
) -> str:
  """Training and held-out loss and accuracy against epoch, one column per model.

  `curves` maps a model key to its phase's metrics.jsonl records
  (simsoft.progress.read_metrics).
  """
  keys = [k for k, records in curves.items() if records]
  if not keys:
    raise ValueError("no training curves to plot")
  fig = Figure(figsize=(3.6 * len(keys), 5.0))
  axes = fig.subplots(2, len(keys), sharex="col", sharey="row", squeeze=False)
  for col, key in enumerate(keys):
    for row, (what, series) in enumerate(_CURVES):
      ax = axes[row][col]
      for tag, label in series:
        points = [(r["epoch"], r[tag]) for r in curves[key] if tag in r]
        if points:
          x, y = zip(*points)
          ax.plot(
              x, y, marker="." if "validation" in tag else None, label=label
          )
      ax.grid(alpha=0.3)
      if col == 0:
        ax.set_ylabel(what)
      if row == 0:
        ax.set_title(_label(key), fontsize=9)
        ax.set_yscale("log")
      else:
        ax.set_xlabel("epoch")
  axes[0][0].legend(fontsize=7)
  fig.suptitle(
      "Training curves: train windows and the held-out split", fontsize=10
  )
  return _save(fig, path)


def _top_moves(
    delta: np.ndarray, names: Sequence[str], k: int = 3
) -> list[str]:
  """The k off-diagonal cells of B - A with the largest |change|, as 'true->pred +n'."""
  off = np.where(np.eye(len(delta), dtype=bool), 0, delta)
  order = np.argsort(-np.abs(off), axis=None, kind="stable")[:k]
  return [
      f"{names[i]}->{names[j]} {int(off[i, j]):+d}"
      for i, j in zip(*np.unravel_index(order, off.shape))
      if off[i, j]
  ]


def plot_per_class(
    path: str, models: Mapping[str, Mapping], class_names: Sequence[str]
) -> str:
  """Per class, A against B: recall with Wilson bands, and the confusions that moved.

  Left: each class's recall (confusion[y, y] / row total) for A and B, with
  Wilson 95 % intervals over that class's test images. Right: B's confusion
  counts minus A's, off the diagonal (true class by row; red: B makes that
  mistake more often, blue: less).
  """
  a, b = models["A"]["clean"], models["B"]["clean"]
  ca, cb = np.asarray(a["confusion"], float), np.asarray(b["confusion"], float)
  c = ca.shape[0]
  names = (
      list(class_names)
      if class_names is not None
      else [str(i) for i in range(c)]
  )
  fig = Figure(figsize=(4.0 + 0.5 * c, 3.2 + 0.2 * c), layout="constrained")
  left, right = fig.subplots(1, 2, width_ratios=(1.2, 1))
  y = np.arange(c)
  for offset, (key, conf) in zip((-0.15, 0.15), (("A", ca), ("B", cb))):
    n = conf.sum(1)
    recall = np.diag(conf) / np.maximum(n, 1)
    lo, hi = zip(*(_wilson_band(r, m) for r, m in zip(recall, n)))
    left.errorbar(
        recall,
        y + offset,
        xerr=np.maximum(
            0.0, [recall - np.asarray(lo), np.asarray(hi) - recall]
        ),
        fmt="o",
        ms=4,
        capsize=2,
        label=_label(key),
    )
  left.set_yticks(y, names, fontsize=8)
  left.invert_yaxis()
  left.set_xlabel("recall (95 % Wilson interval)")
  left.set_title("Recall per true class", fontsize=9)
  left.grid(alpha=0.3, axis="x")
  left.legend(
      fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2
  )
  delta = np.where(np.eye(c, dtype=bool), np.nan, cb - ca)
  lim = max(1.0, float(np.nanmax(np.abs(delta))) if c > 1 else 1.0)
  right.imshow(
      np.where(np.eye(c, dtype=bool), 1.0, np.nan),
      cmap="Greys",
      vmin=0.0,
      vmax=4.0,
  )  # grey diagonal: not a mistake
  im = right.imshow(delta, cmap="RdBu_r", vmin=-lim, vmax=lim)
  bar = fig.colorbar(
      im, ax=right, fraction=0.046, pad=0.04, label="B - A (images)"
  )
  bar.locator = MaxNLocator(integer=True)
  bar.update_ticks()
  right.set_xticks(y, names, rotation=90, fontsize=8)
  right.set_yticks(y, names, fontsize=8)
  right.set_xlabel("predicted class")
  right.set_ylabel("true class")
  moves = _top_moves(cb - ca, names)
  right.set_title(
      "Mistakes B - A (true -> predicted)"
      + (f"\nlargest: {', '.join(moves)}" if moves else ""),
      fontsize=9,
  )
  if c <= 12:
    for i in range(c):
      for j in range(c):
        if i != j and delta[i, j]:
          strong = abs(delta[i, j]) > 0.5 * lim
          right.text(
              j,
              i,
              f"{int(delta[i, j]):+d}",
              ha="center",
              va="center",
              fontsize=7,
              color="w" if strong else "k",
          )
  return _save(fig, path)


def pooled_reliability(cells: Sequence[Mapping]) -> dict:
  """Sums the per-bin statistics of several metric dicts into one reliability dict."""
  count = np.zeros(len(cells[0]["reliability"]["count"]))
  correct, conf = np.zeros_like(count), np.zeros_like(count)
  for m in cells:
    r = m["reliability"]
    n = np.asarray(r["count"], np.float64)
    count += n
    correct += n * np.asarray(r["accuracy"], np.float64)
    conf += n * np.asarray(r["confidence"], np.float64)
  safe = np.maximum(count, 1.0)
  return {
      "bin_edges": cells[0]["reliability"]["bin_edges"],
      "count": count.tolist(),
      "accuracy": (correct / safe).tolist(),
      "confidence": (conf / safe).tolist(),
      "ece": float(np.sum(np.abs(correct - conf)) / max(count.sum(), 1.0)),
  }


def _corrupted_cells(suite: Mapping) -> list[Mapping]:
  return [
      m
      for g in _grids(suite).values()
      for by in g.values()
      for m in by.values()
  ]


def plot_reliability(path: str, models: Mapping[str, Mapping]) -> str:
  """Reliability diagrams: rows = clean / corrupted, columns = models.

  Bars are the accuracy per confidence bin with the bin's image count above
  it. A corrupted panel pools the bins of every cell; its title gives the
  mean of the cells' ECEs, the number the tables report.
  """
  panels = []
  for model, suite in models.items():
    clean = dict(suite["clean"]["reliability"], ece=suite["clean"]["ece"])
    panels.append((model, "clean test set, ECE", clean))
    cells = _corrupted_cells(suite)
    if cells:
      pooled = pooled_reliability(cells)
      pooled["ece"] = float(np.mean([m["ece"] for m in cells]))
      panels.append(
          (
              model,
              f"corrupted, {len(cells)} cells pooled;\nmean ECE over cells",
              pooled,
          )
      )
  cols = len(models)
  rows = -(-len(panels) // cols)
  fig = Figure(figsize=(3.6 * cols, 3.4 * rows))
  order = sorted(
      range(len(panels)),
      key=lambda i: (not panels[i][1].startswith("clean"), i),
  )
  for k, i in enumerate(order):
    model, title, r = panels[i]
    ax = fig.add_subplot(rows, cols, k + 1)
    edges = np.asarray(r["bin_edges"])
    width = np.diff(edges)
    n = np.asarray(r["count"])
    acc = np.where(n > 0, r["accuracy"], 0.0)
    ax.bar(
        edges[:-1],
        acc,
        width=width,
        align="edge",
        edgecolor="k",
        alpha=0.8,
        label="accuracy",
    )
    for left, w, a, count in zip(edges[:-1], width, acc, n):
      if count > 0:  # inside a tall bar, above a short one
        inside = a > 0.25
        ax.text(
            left + w / 2,
            a - 0.02 if inside else a + 0.02,
            f"{int(count)}",
            ha="center",
            va="top" if inside else "bottom",
            rotation=90,
            fontsize=6,
        )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top softmax probability)")
    ax.set_ylabel("accuracy in bin")
    ax.set_title(f"{_label(model)}\n{title} {r['ece']:.3f}", fontsize=9)
    if k == 0:
      ax.legend(fontsize=7, loc="upper left")
  fig.subplots_adjust(
      left=0.1,
      right=0.97,
      bottom=0.45 / fig.get_figheight(),
      top=1 - 0.5 / fig.get_figheight(),
      wspace=0.3,
      hspace=0.6,
  )
  return _save(fig, path)


def _accuracy_ci(metrics: Mapping) -> str:
  """'97.21% [95.0, 98.5]': accuracy with its Wilson 95 % interval (points)."""
  n = metrics.get("count")
  if not n:
    return _fmt(metrics["accuracy"], True)
  lo, hi = intervals.wilson(round(metrics["accuracy"] * n), n)
  return f"{100 * metrics['accuracy']:.2f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def _clean_table(models: Mapping[str, Mapping]) -> str:
  rows = [
      [_label(model), _accuracy_ci(suite["clean"])]
      + [_fmt(m.get(suite), m.percent) for m in _CLEAN_METRICS]
      for model, suite in models.items()
  ]
  header = ["model", "accuracy [95 % CI]"] + [m.label for m in _CLEAN_METRICS]
  return results_lib.markdown_table(header, rows)


def paired_sentence(models: Mapping[str, Mapping]) -> str | None:
  """B - A in clean accuracy with its paired 95 % interval, in words; None if not computable."""
  if "A" not in models or "B" not in models:
    return None
  d = robustness.paired_clean_difference(models["B"], models["A"])
  if d is None:
    return None
  lo, hi = d["ci"]
  return (
      f"**B - A, clean accuracy: {100 * d['difference']:+.2f} points, 95 % CI "
      f"[{100 * lo:+.2f}, {100 * hi:+.2f}]** (paired over the same {d['n']} test images: "
      f"B right where A was wrong on {d['only_b']}, A right where B was wrong on "
      f"{d['only_a']}; Newcombe's paired score interval). "
      + (
          "The interval excludes 0."
          if lo > 0 or hi < 0
          else "The interval includes 0: this test set cannot tell the two models apart."
      )
  )


def _corrupted_table(
    models, summary_key: str, comparison_key: str | None
) -> str:
  rows = []
  for model, suite in models.items():
    s = suite.get(summary_key)
    if not s:
      continue
    cmp = {}
    if model != "A" and "A" in models:
      try:
        cmp = robustness.compare_to_baseline(suite, models["A"])
      except ValueError:  # A and B ran different corruption cells
        cmp = {"normalized_mce": None, "relative_mce": None}
      cmp = cmp.get(comparison_key, {}) if comparison_key else cmp
    rows.append(
        [
            _label(model),
            _fmt(s["mean_corrupted_accuracy"], True),
            _fmt(s["mce"], True),
            _fmt(s.get("mean_corrupted_nll")),
            _fmt(s.get("mean_corrupted_ece")),
            _fmt(s.get("mean_corrupted_mistake_severity")),
            _fmt(cmp.get("normalized_mce")) if cmp else "(baseline)",
            _fmt(cmp.get("relative_mce")) if cmp else "(baseline)",
        ]
    )
  header = [
      "model",
      "mCA",
      "mCE",
      "mean NLL",
      "mean ECE",
      "mean mistake severity",
      "normalized mCE vs A",
      "relative mCE vs A",
  ]
  return results_lib.markdown_table(header, rows)


def _per_corruption_table(models, grid: str) -> str:
  names = sorted({n for suite in models.values() for n in suite.get(grid, {})})
  keys = list(models)
  rows = []
  for name in names:
    accs = []
    for m in keys:
      cells = models[m].get(grid, {}).get(name)
      accs.append(
          float(np.mean([c["accuracy"] for c in cells.values()]))
          if cells
          else None
      )
    row = [name] + [_fmt(a, True) for a in accs]
    if keys[:2] == ["A", "B"] and None not in accs[:2]:
      row.append(f"{100 * (accs[1] - accs[0]):+.2f}")
    rows.append(row)
  header = ["corruption"] + [_label(m) for m in keys]
  if keys[:2] == ["A", "B"]:
    header.append("B - A (points)")
  return results_lib.markdown_table(header, rows)


def _severity_table(models, summary_key: str) -> str:
  sevs = sorted(
      {
          s
          for suite in models.values()
          for s in suite.get(summary_key, {}).get("accuracy_by_severity", {})
      },
      key=int,
  )
  rows = []
  for model, suite in models.items():
    by = suite.get(summary_key, {}).get("accuracy_by_severity", {})
    rows.append(
        [_label(model), _fmt(suite["clean"]["accuracy"], True)]
        + [_fmt(by.get(s), True) for s in sevs]
    )
  return results_lib.markdown_table(
      ["model", "clean"] + [f"severity {s}" for s in sevs], rows
  )


def write_report(
    workdir: str,
    results: Mapping,
    *,
    similarity: ArrayLike | None = None,
    class_names: Sequence[str] | None = None,
    curves: Mapping[str, Sequence[Mapping[str, float]]] | None = None,
) -> str:
  """Writes ``workdir/report.md`` and its PNG figures; returns the report's path.

  Args:
    workdir: run directory (created if missing); figures go next to report.md.
    results: ``{'config': {...}, 'models': {'A': suite, 'B': suite}}``.
    similarity: optional S [C, C] to draw as a heatmap.
    class_names: optional C names for the heatmap axes.
    curves: optional {'A': records, 'B': records}, each phase's metrics.jsonl
      (simsoft.progress.read_metrics), for the training curves.
  """
  models = results.get("models") if isinstance(results, Mapping) else None
  if not models:
    raise ValueError(
        "results must contain a non-empty 'models' mapping, e.g. {'A': ..., 'B': ...}"
    )
  for model, suite in models.items():
    if "clean" not in suite:
      raise ValueError(f"results['models'][{model!r}] has no 'clean' metrics")
  os.makedirs(workdir, exist_ok=True)
  fig = lambda name: os.path.join(workdir, name)
  parts = ["# simsoft run report", "", _INTRO]

  if curves and any(curves.values()):
    png = plot_training_curves(fig("training_curves.png"), curves)
    parts += [
        "## Training",
        "",
        "Loss and accuracy of each model while it trained: means over each "
        "logging window of the training batches, and the held-out split "
        "(config.train_eval) after each evaluation period. A held-out curve "
        "that turns up while the training one keeps falling is overfitting.",
        "",
        f"![training curves]({png})",
        "",
    ]

  if similarity is not None:
    png = plot_similarity(fig("similarity.png"), similarity, class_names)
    parts += [
        "## Class similarity S",
        "",
        "Brighter = more similar. Model B's loss uses this matrix. The colours "
        "span the off-diagonal entries, which decide where a soft target puts "
        "its mass; the diagonal (grey) is on another scale.",
        "",
        f"![similarity heatmap]({png})",
        "",
    ]

  parts += ["## Clean test set", "", _clean_table(models), ""]
  sentence = paired_sentence(models)
  if sentence:
    parts += [sentence, ""]
  if (
      "A" in models
      and "B" in models
      and "confusion" in models["A"]["clean"]
      and "confusion" in models["B"]["clean"]
  ):
    png = plot_per_class(fig("per_class.png"), models, class_names)
    parts += [
        "Per class: each model's recall with its 95 % interval over that "
        "class's test images (a class has a tenth of the images or fewer, so "
        "these intervals are wide), and which mistakes B makes more (red) or "
        "less (blue) often than A.",
        "",
        f"![per-class A against B]({png})",
        "",
    ]

  titles = {
      "corruptions": ("Synthetic corruptions", "summary", None),
      "extra_sets": (
          "Pre-corrupted test sets (e.g. CIFAR-10-C)",
          "extra_summary",
          "extra_sets",
      ),
  }
  for grid in ("corruptions", "extra_sets"):
    if not any(suite.get(grid) for suite in models.values()):
      continue
    title, summary_key, cmp_key = titles[grid]
    png = plot_accuracy_vs_severity(
        fig(f"accuracy_vs_severity_{grid}.png"), models, grid
    )
    parts += [
        f"## {title}",
        "",
        "Averages over every corruption and severity:",
        "",
        _corrupted_table(models, summary_key, cmp_key),
        "",
        "Accuracy by severity (mean over corruptions):",
        "",
        _severity_table(models, summary_key),
        "",
        "Accuracy per corruption (mean over severities):",
        "",
        _per_corruption_table(models, grid),
        "",
        f"![accuracy against severity]({png})",
        "",
    ]

  png = plot_reliability(fig("reliability.png"), models)
  pooled = {
      m: pooled_reliability(_corrupted_cells(s))["ece"]
      for m, s in models.items()
      if _corrupted_cells(s)
  }
  note = []
  if pooled:
    values = ", ".join(f"{m} {e:.3f}" for m, e in pooled.items())
    note = [
        "Corrupted panels pool the bins of every corruption cell, but their "
        "ECE is the mean of the cells' ECEs, as in the tables. The ECE of the "
        f"pooled bins themselves ({values}) differs because over- and "
        "under-confidence in different cells cancel when pooled.",
        "",
    ]
  parts += (
      [
          "## Calibration",
          "",
          "Bars show the accuracy of the predictions in each confidence bin, with "
          "the number of test images in the bin above the bar (a bar of a few "
          "images says little); a calibrated model's bars follow the dashed "
          "diagonal. Bars below it mean over-confidence. ECE: see the definitions "
          "below.",
          "",
      ]
      + note
      + [f"![reliability diagram]({png})", ""]
  )
  parts += ["## What the numbers mean", "", _GLOSSARY]
  if results.get("config"):
    parts += [
        "## Configuration",
        "",
        "```json",
        json.dumps(results["config"], indent=2, sort_keys=True, default=str),
        "```",
        "",
    ]
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(parts))
  return path


def _load_results(workdir: str) -> dict:
  """WORKDIR/results.json, checked enough to draw (UserError naming the file)."""
  from simsoft import checkpoint as ckpt  # pylint: disable=g-import-not-at-top
  from simsoft import errors  # pylint: disable=g-import-not-at-top

  if not os.path.isdir(workdir):
    what = "is not a directory" if os.path.exists(workdir) else "does not exist"
    raise errors.MissingInputError(
        f"WORKDIR {workdir} {what}; give a finished run's workdir"
    )
  path = os.path.join(workdir, "results.json")
  results = ckpt.read_json(path)
  if results is None:
    raise errors.MissingInputError(
        f"{path} does not exist: the run has not finished its evaluate phase"
    )
  models = results.get("models")
  if (
      not isinstance(models, dict)
      or not models
      or not all(
          isinstance(m, dict) and isinstance(m.get("clean"), dict)
          for m in models.values()
      )
  ):
    raise errors.DamagedFileError(
        f"{path} is damaged: 'models' must map each model to its metrics, "
        "with 'clean' metrics"
    )
  return results


def _similarity_to_draw(workdir: str) -> np.ndarray | None:
  """The S model B trained with last, as simsoft.phases.run_evaluate draws it.

  A per-epoch source's final S (retrain/online_similarity.npy; its
  estimate/similarity.npy holds only S^0), else the estimated S
  (estimate/similarity.npy, saved already permuted for the shuffled control).
  """
  for phase, name in (
      ("retrain", "online_similarity.npy"),
      ("estimate", "similarity.npy"),
  ):
    path = os.path.join(workdir, phase, name)
    if os.path.isfile(path):
      return np.load(path, allow_pickle=False)
  return None


def main(argv: Sequence[str] | None = None) -> int:
  """`python -m simsoft.report WORKDIR [--out DIR]`: 0, or 2 with one error line."""
  import argparse  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  from simsoft import errors  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser(
      prog="python -m simsoft.report",
      description="Rebuilds WORKDIR/report.md from WORKDIR/results.json.",
  )
  parser.add_argument("workdir", metavar="WORKDIR")
  parser.add_argument(
      "--out", default="", help="output directory (default WORKDIR)"
  )
  args = parser.parse_args(argv)

  def run() -> None:
    results = _load_results(args.workdir)
    out = args.out or args.workdir
    if os.path.lexists(out) and not os.path.isdir(out):
      raise errors.OSFailure(f"--out {out} exists and is not a directory")
    try:
      path = write_report(
          out, results, similarity=_similarity_to_draw(args.workdir)
      )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
      raise errors.DamagedFileError(
          f"{args.workdir}/results.json cannot be drawn "
          f"({type(e).__name__}: {' '.join(str(e).split())[:100]})"
      ) from None
    print(f"wrote {path}", flush=True)

  code = errors.guarded(run, argv if argv is not None else sys.argv)
  return code if code in (0, errors.InterruptedRun.exit_code) else 2


if __name__ == "__main__":
  raise SystemExit(main())
