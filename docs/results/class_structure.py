"""Class-level figures of a sweep summary: where Q puts its mass, and what it changes.

Three questions a summary's tables do not answer directly:

* Does the estimated Q find the data's known neighbours? For each source
  setting, Q averaged over seeds (summary.json rows' "Q, mean over seeds",
  Q = S without its diagonal, rows normalized) is read at the named pairs
  (``Q[a, b]``, the share of class a's off-target mass that goes to b; a
  uniform row gives 1 / (C - 1)), and each row's largest entry is listed.
* Does a setting change one class's recall? (``--recall cat``: the rows'
  per-seed per-class accuracies.)
* Does it change other per-seed metrics of the rows? (``--metrics``, e.g.
  "mistake severity,super-class accuracy".)

Each per-seed quantity is summarized as mean ± sample std over seeds, and
compared for every (setting, baseline) pair of the summary's comparisons by
the paired differences setting - baseline within each seed
(simsoft.significance: mean, 95 % interval, paired t-test p). These are
secondary figures, not fixed before a run: recall comes without a
multiplicity correction; the --metrics' structure comparisons (vs label
smoothing at the same mass, vs shuffled S) get Holm's correction over all
of them in one experiment ("p_holm").

  python docs/results/class_structure.py SUMMARY.json OUT.json \\
      --experiments c10j_lenet,c10j_lenet_pairflip \\
      [--pairs cat:dog,automobile:truck,deer:horse] [--recall cat] \\
      [--metrics "mistake severity,super-class accuracy"] \\
      [--class_names airplane,automobile,...]

Writes OUT.json ({experiment: {"q": ..., "recall": ..., "metrics": ...}})
and prints it as markdown.
"""

import argparse
import json
from collections.abc import Callable

import numpy as np

from simsoft import significance

CIFAR10 = "airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck".split(
    ","
)


def q_pairs(
    rows: dict, names: list[str], pairs: list[tuple[str, str]]
) -> dict[str, dict]:
  """{setting: {"a->b": Q[a, b], ..., "largest": {a: [b, Q[a, b]]}}} for settings with Q."""
  out = {}
  for setting, row in rows.items():
    q = row.get("Q, mean over seeds")
    if q is None:
      continue
    q = np.asarray(q)
    entry = {
        f"{a}->{b}": float(q[names.index(a), names.index(b)]) for a, b in pairs
    }
    entry["uniform"] = 1.0 / (len(names) - 1)
    entry["largest"] = {
        names[i]: [names[int(np.argmax(q[i]))], float(np.max(q[i]))]
        for i in range(len(names))
    }
    out[setting] = entry
  return out


def paired(
    rows: dict, comparisons: dict, per_seed: Callable[[str], dict]
) -> dict:
  """Mean ± std of per_seed(setting) ({seed: value}) and its paired differences.

  `comparisons` is the summary's {comparison: {metric: {setting: {...,
  "baseline": b}}}}; every (setting, baseline) pair found under its clean
  accuracy is compared.
  """
  out = {"rows": {}, "comparisons": {}}
  for setting in rows:
    values = list(per_seed(setting).values())
    out["rows"][setting] = [
        float(np.mean(values)),
        float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
    ]
  for comparison, by_metric in comparisons.items():
    out["comparisons"][comparison] = {}
    for setting, c in by_metric["clean accuracy"].items():
      a, b = per_seed(c["baseline"]), per_seed(setting)
      deltas = [b[s] - a[s] for s in b if s in a]
      out["comparisons"][comparison][setting] = significance.paired_difference(
          deltas
      ) | {"baseline": c["baseline"]}
  return out


STRUCTURE = ("vs label smoothing, same mass", "vs shuffled S")


def add_holm(metrics: dict) -> None:
  """Adds "p_holm" to every structure comparison of `metrics`, one family."""
  entries = [
      c
      for figure in metrics.values()
      for comparison in STRUCTURE
      for c in figure["comparisons"].get(comparison, {}).values()
  ]
  adjusted, _ = significance.holm([c["p"] for c in entries])
  for c, p in zip(entries, adjusted):
    c["p_holm"] = p


def _markdown(result: dict) -> str:
  lines = []
  for setting, entry in result["q"].items():
    pairs = ", ".join(f"{k} {v:.2f}" for k, v in entry.items() if "->" in k)
    lines.append(f"- {setting}: {pairs} (uniform {entry['uniform']:.2f})")
  figures = dict(result.get("metrics", {}))
  if "recall" in result:
    figures[result["recall"]["class"] + " recall"] = result["recall"]
  for label, figure in figures.items():
    for comparison, by in figure["comparisons"].items():
      for setting, c in by.items():
        ci = c["ci"] or [float("nan")] * 2
        lines.append(
            f"- {label}, {setting} {comparison} ({c['baseline']}):"
            f" {c['mean']:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}], p = {c['p']}"
            f" (Holm {c.get('p_holm', '-')})"
        )
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("summary")
  parser.add_argument("out")
  parser.add_argument("--experiments", required=True)
  parser.add_argument("--pairs", default="cat:dog,automobile:truck,deer:horse")
  parser.add_argument("--recall", default=None)
  parser.add_argument("--metrics", default="")
  parser.add_argument("--class_names", default=",".join(CIFAR10))
  args = parser.parse_args()
  with open(args.summary) as f:
    summary = json.load(f)
  names = args.class_names.split(",")
  pairs = []
  for pair in args.pairs.split(","):
    a, b = pair.split(":")
    pairs += [(a, b), (b, a)]
  out = {}
  for name in args.experiments.split(","):
    rows, comparisons = summary[name]["rows"], summary[name]["comparisons"]
    result = {"q": q_pairs(rows, names, pairs)}
    if args.recall:
      k = names.index(args.recall)
      result["recall"] = {"class": args.recall} | paired(
          rows,
          comparisons,
          lambda s, k=k, rows=rows: {
              seed: acc[k]
              for seed, acc in rows[s]["per seed"]["per-class accuracy"].items()
          },
      )
    result["metrics"] = {
        metric: paired(
            rows,
            comparisons,
            lambda s, m=metric, rows=rows: rows[s]["per seed"][m],
        )
        for metric in filter(None, args.metrics.split(","))
    }
    add_holm(result["metrics"])
    out[name] = result
    print(f"### {name}\n{_markdown(result)}")
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
