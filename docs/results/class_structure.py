"""Per-class figures of a sweep summary: where Q puts its mass, and one class's recall.

Two questions a summary's tables do not answer directly:

* Does the estimated Q find the data's known neighbours? For each source
  setting, Q averaged over seeds (summary.json rows' "Q, mean over seeds",
  Q = S without its diagonal, rows normalized) is read at the named pairs
  (``Q[a, b]``, the share of class a's off-target mass that goes to b; a
  uniform row gives 1 / (C - 1)), and each row's largest entry is listed.
* Does a setting change one class's recall? The per-seed per-class
  accuracies (rows' "per seed" / "per-class accuracy") give paired
  differences setting - baseline within each seed, summarized as in the
  sweep (simsoft.significance: mean, 95 % interval, paired t-test p), no
  multiplicity correction (a secondary figure).

  python docs/results/class_structure.py SUMMARY.json OUT.json \
      --experiments c10j_lenet,c10j_lenet_pairflip \
      [--pairs cat:dog,automobile:truck,deer:horse] [--recall cat] \
      [--class_names airplane,automobile,...]

Writes OUT.json ({experiment: {"q": ..., "recall": ...}}) and prints it as
markdown.
"""

import argparse
import json

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


def recall(rows: dict, names: list[str], name: str, comparisons: dict) -> dict:
  """Recall of class `name`: per-setting mean ± std and paired differences.

  `comparisons` is the summary's {comparison: {metric: {setting: {...,
  "baseline": b}}}}: every (setting, baseline) pair found there is compared
  on this class's recall.
  """
  k = names.index(name)

  def per_seed(setting):
    by_seed = rows[setting]["per seed"]["per-class accuracy"]
    return {seed: acc[k] for seed, acc in by_seed.items()}

  out = {"rows": {}, "comparisons": {}}
  for setting, row in rows.items():
    values = list(per_seed(setting).values())
    out["rows"][setting] = [
        float(np.mean(values)),
        float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
    ]
  for comparison, by_metric in comparisons.items():
    pairs = {s: c["baseline"] for s, c in by_metric["clean accuracy"].items()}
    out["comparisons"][comparison] = {}
    for setting, baseline in pairs.items():
      a, b = per_seed(baseline), per_seed(setting)
      deltas = [b[s] - a[s] for s in b if s in a]
      out["comparisons"][comparison][setting] = significance.paired_difference(
          deltas
      ) | {"baseline": baseline}
  return out


def _markdown(result: dict) -> str:
  lines = []
  for setting, entry in result["q"].items():
    pairs = ", ".join(f"{k} {v:.2f}" for k, v in entry.items() if "->" in k)
    lines.append(f"- {setting}: {pairs} (uniform {entry['uniform']:.2f})")
  if "recall" in result:
    name = result["recall"]["class"]
    for comparison, by in result["recall"]["comparisons"].items():
      for setting, c in by.items():
        ci = c["ci"] or [float("nan")] * 2
        lines.append(
            f"- {name} recall, {setting} {comparison} ({c['baseline']}):"
            f" {100 * c['mean']:+.2f} [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"
            f" points, p = {c['p']}"
        )
  return "\n".join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("summary")
  parser.add_argument("out")
  parser.add_argument("--experiments", required=True)
  parser.add_argument("--pairs", default="cat:dog,automobile:truck,deer:horse")
  parser.add_argument("--recall", default=None)
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
    experiment = summary[name]
    result = {"q": q_pairs(experiment["rows"], names, pairs)}
    if args.recall:
      result["recall"] = {"class": args.recall} | recall(
          experiment["rows"], names, args.recall, experiment["comparisons"]
      )
    out[name] = result
    print(f"### {name}\n{_markdown(result)}")
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
