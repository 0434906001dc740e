"""One-sided 95 % upper bounds on the gain from the structure of S.

For each paired comparison of a summary json (``python -m simsoft.sweep``'s
summary.json: n, mean and sd of the per-seed differences), the one-sided 95 %
upper bound of the mean difference is

    upper = mean + t_{0.95, n-1} * sd / sqrt(n)

(the upper end of the two-sided 90 % interval): with 95 % confidence the
setting beats its control by less than that. Prints one markdown table per
experiment, in points of accuracy, for the two structure comparisons (vs
label smoothing at the same mass, vs shuffled S) on clean and mean corrupted
accuracy, and the largest bound of each column (over the soft-target
settings, whose bounds carry the answer, and over all; on digits the log-sum
rows are dominated by its collapses).

  python docs/results/upper_bounds.py docs/results/fmnist_summary.json docs/results/digits_summary.json
"""

import json
import math
import sys

from scipy import stats

COMPARISONS = ("vs label smoothing, same mass", "vs shuffled S")
COLUMN_NAMES = {"vs label smoothing, same mass": "vs label smoothing"}
METRICS = ("clean accuracy", "mean corrupted accuracy")
METRIC_NAMES = {
    "clean accuracy": "clean",
    "mean corrupted accuracy": "corrupted",
}


def upper_bound(comparison: dict, confidence: float = 0.95) -> float | None:
  """mean + t_{confidence, n-1} sd / sqrt(n) of one paired comparison, or None for n < 2."""
  n, mean, sd = comparison["n"], comparison["mean"], comparison["sd"]
  if n is None or n < 2 or sd is None:
    return None
  return mean + float(stats.t.ppf(confidence, n - 1)) * sd / math.sqrt(n)


def columns() -> list[tuple[str, str]]:
  """(comparison, metric) of each table column, in order."""
  return [(c, m) for c in COMPARISONS for m in METRICS]


def column_name(comparison: str, metric: str) -> str:
  return f"{COLUMN_NAMES.get(comparison, comparison)}, {METRIC_NAMES.get(metric, metric)}"


def bounds(experiment: dict) -> dict[str, dict[tuple[str, str], float | None]]:
  """Setting -> (comparison, metric) -> upper bound in points (x100), for one experiment."""
  out: dict[str, dict[tuple[str, str], float | None]] = {}
  for comparison, metric in columns():
    for setting, row in experiment["comparisons"][comparison][metric].items():
      upper = upper_bound(row)
      out.setdefault(setting, {})[(comparison, metric)] = (
          None if upper is None else 100 * upper
      )
  return out


def fmt(x: float | None) -> str:
  return "n/a" if x is None else f"{x:+.2f}"


def table(experiment: dict) -> str:
  """Markdown table: one row per setting, its upper bounds, then the largest per column."""
  cols = columns()
  rows = bounds(experiment)
  lines = [
      "| setting | " + " | ".join(column_name(*c) for c in cols) + " |",
      "|---" * (len(cols) + 1) + "|",
  ]
  for setting, values in rows.items():
    lines.append(
        f"| {setting} | " + " | ".join(fmt(values.get(c)) for c in cols) + " |"
    )
  for name, keep in (
      ("soft target", lambda setting: "-soft_target-" in setting),
      ("all", lambda setting: True),
  ):
    largest = []
    for c in cols:
      finite = [
          v[c] for s, v in rows.items() if keep(s) and v.get(c) is not None
      ]
      largest.append(fmt(max(finite)) if finite else "n/a")
    lines.append(f"| **largest ({name})** | " + " | ".join(largest) + " |")
  return "\n".join(lines)


def main(paths: list[str]) -> None:
  for path in paths:
    with open(path) as f:
      summary = json.load(f)
    for name, experiment in summary.items():
      print(f"### {name}\n")
      print(
          "One-sided 95 % upper bound of the paired difference, points"
          " (setting minus control):\n"
      )
      print(table(experiment) + "\n")


if __name__ == "__main__":
  main(sys.argv[1:])
