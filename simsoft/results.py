"""How a results.json's metrics are named, read, aggregated and rendered.

A model's results (one entry of results.json's ``models``, the suite that
:func:`simsoft.evaluators.run_suite` returns) hold many numbers; METRICS is
the one table of those that the tables and figures show: a key, a label,
where the value lies in the suite and whether it reads as a percentage. Each
consumer picks its rows by key (:func:`select`): the fixed-width A/B table
printed after training (:func:`format_table`), report.md's clean table
(simsoft.report), the sweep summary (simsoft.sweep) and the multi-run
comparison (simsoft.compare). Over seeds a metric is summarized by
:func:`mean_std` and written by :func:`format_mean_std`; :func:`plot_summary`
draws such means with their spread, one row per setting.

Imports numpy only (matplotlib inside :func:`plot_summary`), so reading
results needs neither TensorFlow nor the training code.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence

import numpy as np

MODEL_LABELS = {"A": "A: cross-entropy", "B": "B: similarity loss"}
_MODEL_COLOURS = {"A": "tab:blue", "B": "tab:orange"}


@dataclasses.dataclass(frozen=True)
class Metric:
  """One metric row: what it is called, where it is read, how it is shown.

  Attributes:
    key: identifier (simsoft.compare's records and CSV columns).
    label: name in Markdown tables, figures and simsoft.sweep's summary.json.
    path: keys leading from a model's results dict to the value.
    percent: shown as a percentage by the tables that show percentages.
    long_label: name in the fixed-width A/B table, where a row stands without
      a column that says "clean"; None: the label.
  """

  key: str
  label: str
  path: tuple[str, ...]
  percent: bool = False
  long_label: str | None = None

  def get(self, suite: Mapping) -> float | None:
    """The value in a model's results dict, or None where any step is missing."""
    node = suite
    for part in self.path:
      if not isinstance(node, Mapping):
        return None
      node = node.get(part)
    return node

  @property
  def table_label(self) -> str:
    """The row's name in the fixed-width A/B table."""
    return self.long_label or self.label


METRICS = (
    Metric("clean_accuracy", "clean accuracy", ("clean", "accuracy"), True),
    Metric(
        "clean_on_corrupted_accuracy",
        "clean accuracy, corrupted images",
        ("clean_on_corrupted_images", "accuracy"),
        True,
    ),
    Metric("clean_nll", "NLL", ("clean", "nll"), long_label="clean NLL"),
    Metric("clean_ece", "ECE", ("clean", "ece"), long_label="clean ECE"),
    Metric(
        "mistake_severity", "mistake severity", ("clean", "mistake_severity")
    ),
    Metric(
        "mistake_distance", "mistake LCA height", ("clean", "mistake_distance")
    ),
    Metric(
        "superclass_accuracy",
        "super-class accuracy",
        ("clean", "superclass_accuracy"),
        True,
    ),
    Metric(
        "mean_corrupted_accuracy",
        "mean corrupted accuracy",
        ("summary", "mean_corrupted_accuracy"),
        True,
    ),
    Metric(
        "mce",
        "mean corruption error",
        ("summary", "mce"),
        True,
        long_label="1 - mean corrupted acc.",
    ),
    Metric(
        "cifar10_c_accuracy",
        "CIFAR-10-C accuracy",
        ("extra_summary", "mean_corrupted_accuracy"),
        True,
    ),
)


def select(*keys: str) -> tuple[Metric, ...]:
  """The rows of METRICS with these keys, in the order given."""
  by_key = {m.key: m for m in METRICS}
  unknown = [k for k in keys if k not in by_key]
  if unknown:
    raise KeyError(f"unknown metric(s) {unknown}; known: {list(by_key)}")
  return tuple(by_key[k] for k in keys)


# The rows of the fixed-width A/B table, and the metrics a summary figure shows.
TABLE_METRICS = select(
    "clean_accuracy",
    "clean_nll",
    "clean_ece",
    "mistake_severity",
    "mistake_distance",
    "superclass_accuracy",
    "mean_corrupted_accuracy",
    "mce",
    "cifar10_c_accuracy",
)
PLOTTED_METRICS = select("clean_accuracy", "mean_corrupted_accuracy")


def mean_std(
    values: Iterable[float | None], *, std_of_one: float | None = None
) -> tuple[float | None, float | None]:
  """Mean and sample standard deviation (ddof=1) of the finite values.

  None, NaN and infinities are left out. (None, None) when no value is left;
  the std of a single value is `std_of_one` (None: unknown).
  """
  kept = [v for v in values if v is not None and np.isfinite(v)]
  if not kept:
    return None, None
  std = float(np.std(kept, ddof=1)) if len(kept) > 1 else std_of_one
  return float(np.mean(kept)), std


def format_mean_std(
    mean: float | None, std: float | None, *, percent: bool = False
) -> str:
  """'0.9300 ± 0.0141' (or '93.00 ± 1.41' in percent); the mean alone without
  a std; 'n/a' without a mean."""
  if mean is None:
    return "n/a"
  scale, digits = (100, 2) if percent else (1, 4)
  text = f"{scale * mean:.{digits}f}"
  return text if std is None else f"{text} ± {scale * std:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
  """A Markdown table (no trailing newline) of string cells."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines)


def _fixed_width(
    title: str,
    keys: Sequence[str],
    rows: Iterable[tuple[str, Sequence[float | None]]],
) -> str:
  """Columns per model key and B - A where there are two; '-' for a missing
  value; a row with no value is left out."""
  header = f"{title:<26}" + "".join(f"{MODEL_LABELS[k]:>22}" for k in keys)
  if len(keys) == 2:
    header += f"{'B - A':>10}"
  lines = [header, "-" * len(header)]
  for name, values in rows:
    if all(v is None for v in values):
      continue
    line = f"{name:<26}" + "".join(
        f"{v:>22.4f}" if v is not None else f"{'-':>22}" for v in values
    )
    if len(keys) == 2 and None not in values:
      line += f"{values[1] - values[0]:>+10.4f}"
    lines.append(line)
  return "\n".join(lines)


def format_table(results: Mapping) -> str:
  """A small fixed-width table: one row per metric, columns A, B and B - A.

  `results` is a results.json payload (``{'models': {'A': ..., 'B': ...},
  'comparison': optional}``). The paired 95 % interval of B - A in clean
  accuracy follows where the comparison has it, then the accuracy per
  corruption where every model has it.
  """
  models = results["models"]
  keys = [k for k in ("A", "B") if k in models]
  text = _fixed_width(
      "metric",
      keys,
      (
          (m.table_label, [m.get(models[k]) for k in keys])
          for m in TABLE_METRICS
      ),
  )
  paired = (results.get("comparison") or {}).get("clean_accuracy_paired")
  if paired:
    lo, hi = paired["ci"]
    text += (
        f"\nB - A clean accuracy {100 * paired['difference']:+.2f} points, 95 % CI "
        f"[{100 * lo:+.2f}, {100 * hi:+.2f}] (paired, {paired['n']} test images)"
    )
  robustness_table = _robustness_table(models, keys)
  return text + ("\n\n" + robustness_table if robustness_table else "")


def _robustness_table(models: Mapping, keys: Sequence[str]) -> str:
  """Accuracy per corruption (mean over severities), one row per corruption;
  '' unless every model has it."""
  by = {
      k: (models[k].get("summary") or {}).get("accuracy_by_corruption")
      for k in keys
  }
  if not keys or not all(by.values()):
    return ""
  return _fixed_width(
      "accuracy under corruption",
      keys,
      ((name, [by[k][name] for k in keys]) for name in by[keys[0]]),
  )


def plot_summary(
    path: str,
    labels: Sequence[str],
    panels: Mapping[str, Sequence[Sequence[float | None]]],
    *,
    models: Sequence[str] | None = None,
    baseline: str | None = None,
    title: str | None = None,
    percent: bool = False,
) -> str:
  """One row per label, one panel per metric: a dot at the mean, whiskers ± std.

  Args:
    path: the PNG to write.
    labels: the rows, top to bottom.
    panels: {panel title: one (mean, std) per label}; a None mean is not
      drawn, a None std draws no whisker.
    models: per label the trained model: 'A' and 'B' in their colours and
      named in a legend by MODEL_LABELS, any other grey; None: one colour,
      no legend.
    baseline: the label whose means are drawn as a dashed vertical line in
      each panel (none where no row has that label or its mean is None).
    title: the figure's title, above the panels'.
    percent: draws 100 x the values, ' (%)' after each panel's title.

  Returns:
    path.
  """
  from matplotlib.figure import Figure  # object API: no display needed

  labels = list(labels)
  n = len(labels)
  if models is not None and len(models) != n:
    raise ValueError(f"{len(models)} models for {n} labels")
  for name, cells in panels.items():
    if len(cells) != n:
      raise ValueError(f"panel {name!r} has {len(cells)} cells for {n} labels")
  if models is None:
    series = [(np.ones(n, bool), {})]
  else:
    series = [
        (
            np.array([m == k for m in models]),
            dict(color=c, label=MODEL_LABELS[k]),
        )
        for k, c in _MODEL_COLOURS.items()
    ]
    series.append(
        (
            np.array([m not in _MODEL_COLOURS for m in models]),
            dict(color="gray"),
        )
    )
  scale = 100 if percent else 1
  y = np.arange(n)
  fig = Figure(figsize=(11, 0.32 * n + 1.2))
  axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
  for ax, (name, cells) in zip(axes, panels.items()):
    mean = np.array([np.nan if m is None else scale * m for m, _ in cells])
    std = np.array([0.0 if s is None else scale * s for _, s in cells])
    for sel, style in series:
      if sel.any():
        ax.errorbar(
            mean[sel], y[sel], xerr=std[sel], fmt="o", capsize=3, **style
        )
    if baseline in labels and np.isfinite(mean[labels.index(baseline)]):
      ax.axvline(
          mean[labels.index(baseline)],
          linestyle="--",
          color="gray",
          label=baseline,
      )
    ax.set_title(f"{name} (%)" if percent else name)
    ax.grid(axis="x", alpha=0.3)
  axes[0].set_yticks(y, labels)
  axes[0].invert_yaxis()
  if models is not None:
    axes[0].legend(fontsize="small", loc="best")
  if title:  # above the panels' titles; the tight bounding box takes it in
    fig.suptitle(title, y=1.0, va="bottom")
  fig.savefig(path, dpi=110, bbox_inches="tight")
  return path
