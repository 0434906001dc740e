"""RESULTS.md's tables quote the summaries in docs/results/ exactly, as rounded.

Each section listed in SECTIONS is matched with the summary json the sweep
wrote for it (`python -m simsoft.sweep ... --summary_only`). Every markdown
table in the section is read cell by cell and every number compared with the
json, to the precision it is printed at:

* a column named by a metric ("clean accuracy" or "clean", "mean corrupted
  accuracy" or "corrupted", "ECE"), optionally after a model ("mlp clean"):
  cells "mean ± std" or "mean" of that setting's row (accuracies in %);
* a column named by a comparison and a metric ("vs label smoothing, clean",
  "lenet vs shuffled S, corrupted"): cells "mean [lo, hi] (Holm p)", the
  paired difference in points, or a bare signed number, its one-sided 95 %
  upper bound mean + t_{0.95, n-1} sd / sqrt(n) (docs/results/upper_bounds.py);
* a column named by a comparison and a corruption family ("vs shuffled S,
  noise"): the same cells, from the summary's "comparisons by corruption
  family" (Holm over settings and families);
* with a class-structure json (docs/results/class_structure.py): a column
  "a->b" (Q[a, b] averaged over seeds), "<class> recall" (mean ± std, in %)
  and "<comparison>, <class> recall" ("mean [lo, hi] (p)", unadjusted p),
  "mistake severity" or "super-class accuracy" and "<comparison>, <that>"
  ("mean [lo, hi] (Holm p)", bold iff Holm p <= 0.05).

Row labels name a setting: "confusion m0.3", "confusion m0.3 shuffled",
"oracle m0.3" (the positive control's file S), "cross-entropy (A)".

A table, column or row label the test cannot read fails the test, so a new
table in a listed section is checked or flagged. To check another section
(say the CIFAR-10 results), add a Section to SECTIONS.
"""

import dataclasses
import importlib.util
import json
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "docs", "results")


@dataclasses.dataclass(frozen=True)
class Section:
  heading: str  # the "## ..." line that starts it, up to the next "## "
  summary: str  # file in docs/results/
  experiments: dict[str, str]  # column prefix ("" = none) -> experiment
  mass: float | None = None  # mass of row labels that name none
  class_structure: str | None = None  # docs/results/class_structure.py's json


SECTIONS = (
    Section(
        "## Fashion-MNIST, lenet, 54,000 images, 15 epochs, 10 seeds (H200)",
        "fmnist_summary.json",
        {"": "fmnist_lenet"},
        mass=0.1,
    ),
    Section(
        "## Digits, 5 seeds (CPU)",
        "digits_summary.json",
        {"mlp": "digits_mlp", "lenet": "digits_lenet"},
    ),
    Section(
        "## CIFAR-10 (JPEG q75 copy), lenet, 45,000 images, 8 epochs, 5 seeds"
        " (CPU)",
        "c10j_summary.json",
        {"": "c10j_lenet", "positive control": "c10j_lenet_pairflip"},
        class_structure="c10j_class_structure.json",
    ),
)

METRICS = {
    "clean": "clean accuracy",
    "clean accuracy": "clean accuracy",
    "corrupted": "mean corrupted accuracy",
    "mean corrupted accuracy": "mean corrupted accuracy",
    "ece": "ECE",
}
COMPARISONS = {
    "vs cross-entropy": "vs cross-entropy",
    "vs label smoothing": "vs label smoothing, same mass",
    "vs shuffled s": "vs shuffled S",
}
SECONDARY = ("mistake severity", "super-class accuracy")
FAMILIES = ("noise", "blur", "photometric", "occlusion")
SOURCES = (
    "label smoothing",
    "confusion",
    "softmax",
    "centroid",
    "online",
    "oracle",
)
SOURCE_KEYS = {"oracle": "file"}  # label -> sweep setting's source name
NUMBER = r"[+-]?\d+(?:\.\d+)?"
PAIRED = re.compile(
    rf"^({NUMBER}) \[({NUMBER}), ({NUMBER})\] \(({NUMBER}(?:e-?\d+)?)\)$"
)


def _upper_bounds():
  spec = importlib.util.spec_from_file_location(
      "upper_bounds", os.path.join(RESULTS, "upper_bounds.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _results_md() -> str:
  with open(os.path.join(ROOT, "RESULTS.md")) as f:
    return f.read()


def section_text(text: str, heading: str) -> str:
  start = text.index(heading + "\n")
  end = text.find("\n## ", start + len(heading))
  return text[start : end if end >= 0 else len(text)]


def tables(text: str) -> list[list[list[str]]]:
  """The markdown tables of `text`: rows of stripped cells, separator dropped."""
  found, current = [], []
  for line in text.splitlines() + [""]:
    if line.startswith("|"):
      cells = [c.strip() for c in line.strip().strip("|").split("|")]
      if not all(re.fullmatch(r":?-+:?", c) for c in cells):
        current.append(cells)
    elif current:
      found.append(current)
      current = []
  return found


def setting_key(label: str, mass: float | None) -> str:
  """'confusion log-sum m0.1', 'confusion, log-sum' (mass given) -> json row key."""
  if label == "cross-entropy (A)":
    return label
  m = re.fullmatch(
      rf"({'|'.join(SOURCES)}),?( log-sum)?(?: m(0\.\d+))?( shuffled)?", label
  )
  if not m or (m.group(3) is None and mass is None):
    raise ValueError(f"unreadable setting label {label!r}")
  source, log_sum, m_, shuffled = m.groups()
  form = "log_sum" if log_sum else "soft_target"
  source = SOURCE_KEYS.get(source, source).replace(" ", "_")
  key = f"{source}-{form}-m{m_ or mass}"
  return key + ("-shuffled" if shuffled else "")


def column(header: str, section: Section) -> tuple[str, str | None, str]:
  """Header -> (experiment, comparison or None for the rows, metric)."""
  text = header.lower()
  prefix = ""
  for p in section.experiments:
    if p and (
        text == p or text.startswith(p + " ") or text.startswith(p + ",")
    ):
      prefix, text = p, text[len(p) :].lstrip(" ,")
  if prefix not in section.experiments:
    raise ValueError(f"column {header!r} names no experiment of {section}")
  experiment = section.experiments[prefix]
  if text in METRICS:
    return experiment, None, METRICS[text]
  comparison, _, metric = text.rpartition(", ")
  if comparison in COMPARISONS and metric in METRICS:
    return experiment, COMPARISONS[comparison], METRICS[metric]
  if comparison in COMPARISONS and metric in FAMILIES:
    return experiment, COMPARISONS[comparison], "family " + metric
  if re.fullmatch(r"[a-z]+->[a-z]+", text):
    return experiment, None, "q " + text
  if text.endswith(" recall"):
    return experiment, COMPARISONS.get(comparison), "recall"
  if (metric or text) in SECONDARY:
    return experiment, COMPARISONS.get(comparison), "metric " + (metric or text)
  raise ValueError(f"unreadable column {header!r}")


def assert_printed(printed: str, value: float, what: str) -> None:
  """`printed` is `value` rounded to the decimals it shows (half a unit of slack)."""
  decimals = len(printed.split(".")[1]) if "." in printed else 0
  assert (
      abs(float(printed) - value) <= 0.5 * 10**-decimals + 1e-9
  ), f"{what}: RESULTS.md says {printed}, the summary {value!r}"


def check_mean_std(cell, mean, std, scale, what):
  """A "mean ± std" or "mean" cell."""
  parts = cell.split(" ± ")
  assert_printed(parts[0], scale * mean, what + " (mean)")
  if len(parts) == 2:
    assert_printed(parts[1], scale * std, what + " (std)")


def check_paired(paired, row, scale, what, p_key="p_holm"):
  """The groups of a "mean [lo, hi] (p)" cell against a paired comparison."""
  mean, lo, hi, p = paired.groups()
  assert_printed(mean, scale * row["mean"], what + " (mean)")
  assert_printed(lo, scale * row["ci"][0], what + " (ci low)")
  assert_printed(hi, scale * row["ci"][1], what + " (ci high)")
  assert_printed(p, row[p_key], what + f" ({p_key})")


def check_class_cell(cell, classes, experiment, comparison, metric, key):
  """A cell of Q, of one class's recall or of a secondary metric, against
  class_structure.py's json (recall: unadjusted p; metrics: Holm p)."""
  what = f"{experiment} / {key} / {comparison or 'rows'} / {metric}"
  if metric.startswith("q "):
    value = classes[experiment]["q"][key][metric.removeprefix("q ")]
    assert_printed(cell, value, what)
    return
  if metric == "recall":
    figure, scale, p_key = classes[experiment]["recall"], 100.0, "p"
  else:
    name = metric.removeprefix("metric ")
    figure, p_key = classes[experiment]["metrics"][name], "p_holm"
    scale = 100.0 if "accuracy" in name else 1.0
  if comparison is None:
    check_mean_std(cell, *figure["rows"][key], scale, what)
    return
  if not cell:  # a baseline's own row
    assert key not in figure["comparisons"][comparison], f"{what}: left blank"
    return
  row = figure["comparisons"][comparison][key]
  paired = PAIRED.match(cell.replace("**", ""))
  assert paired, f"{what}: unreadable cell {cell!r}"
  check_paired(paired, row, scale, what, p_key)
  if p_key == "p_holm":
    bold = cell.startswith("**")
    assert bold == (row["p_holm"] <= 0.05), f"{what}: bold iff Holm p <= 0.05"


def check_cell(cell, summary, experiment, comparison, metric, key, bounds):
  what = f"{experiment} / {key} / {comparison or 'rows'} / {metric}"
  scale = 100.0 if "accuracy" in metric else 1.0
  if comparison is None:
    check_mean_std(cell, *summary[experiment]["rows"][key][metric], scale, what)
    return
  if metric.startswith("family "):
    by_family = summary[experiment]["comparisons by corruption family"]
    row = by_family[comparison][metric.removeprefix("family ")][key]
    scale = 100.0
  else:
    row = summary[experiment]["comparisons"][comparison][metric][key]
  paired = PAIRED.match(cell.replace("**", ""))
  if paired:
    check_paired(paired, row, scale, what)
    bold = cell.startswith("**")
    assert bold == row["significant_holm"], f"{what}: bold iff significant"
  elif re.fullmatch(NUMBER, cell):
    upper = bounds.upper_bound(row)
    assert_printed(cell, scale * upper, what + " (one-sided 95 % upper bound)")
  else:
    raise AssertionError(f"{what}: unreadable cell {cell!r}")


def check_section(text: str, section: Section) -> int:
  """Checks every table of the section; returns how many numbers were checked."""
  with open(os.path.join(RESULTS, section.summary)) as f:
    summary = json.load(f)
  classes = None
  if section.class_structure:
    with open(os.path.join(RESULTS, section.class_structure)) as f:
      classes = json.load(f)
  bounds = _upper_bounds()
  checked = 0
  body = section_text(text, section.heading)
  found = tables(body)
  assert found, f"no table in {section.heading!r}"
  for table in found:
    header, *rows = table
    mass = section.mass
    m = re.search(r"mass (0\.\d+)", header[0])
    if m:
      mass = float(m.group(1))
    columns = [column(h, section) for h in header[1:]]
    for row in rows:
      assert len(row) == len(header), f"ragged row {row}"
      key = setting_key(row[0].replace("**", ""), mass)
      for cell, (experiment, comparison, metric) in zip(row[1:], columns):
        if metric == "recall" or metric.startswith(("q ", "metric ")):
          assert classes, f"{section.heading}: no class-structure json"
          check_class_cell(cell, classes, experiment, comparison, metric, key)
        else:
          check_cell(cell, summary, experiment, comparison, metric, key, bounds)
        checked += 1
  return checked


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: s.summary)
def test_tables_match_the_summary(section):
  assert check_section(_results_md(), section) > 0


def test_a_wrong_digit_fails():
  text = _results_md()
  section = SECTIONS[0]
  good = "| cross-entropy (A) | 92.62 ± 0.16 |"
  assert good in text
  with pytest.raises(AssertionError, match="says 92.63"):
    check_section(text.replace(good, good.replace("92.62", "92.63")), section)


def test_labels_and_columns_are_read_as_meant():
  assert setting_key("confusion, log-sum", 0.1) == "confusion-log_sum-m0.1"
  assert setting_key("label smoothing m0.3", None) == (
      "label_smoothing-soft_target-m0.3"
  )
  assert setting_key("centroid m0.3 shuffled", None) == (
      "centroid-soft_target-m0.3-shuffled"
  )
  with pytest.raises(ValueError):
    setting_key("confusion", None)
  digits = SECTIONS[1]
  assert column("lenet corrupted", digits) == (
      "digits_lenet",
      None,
      "mean corrupted accuracy",
  )
  assert column("mlp vs shuffled S, clean", digits) == (
      "digits_mlp",
      "vs shuffled S",
      "clean accuracy",
  )
  with pytest.raises(ValueError):
    column("resnet clean", digits)


def test_cifar_labels_families_and_class_columns_are_read_as_meant():
  cifar = SECTIONS[2]
  assert setting_key("oracle m0.3 shuffled", None) == (
      "file-soft_target-m0.3-shuffled"
  )
  assert column("vs shuffled S, blur", cifar) == (
      "c10j_lenet",
      "vs shuffled S",
      "family blur",
  )
  assert column("positive control vs label smoothing, cat recall", cifar) == (
      "c10j_lenet_pairflip",
      "vs label smoothing, same mass",
      "recall",
  )
  assert column("cat->dog", cifar) == ("c10j_lenet", None, "q cat->dog")
  assert column("vs shuffled S, mistake severity", cifar) == (
      "c10j_lenet",
      "vs shuffled S",
      "metric mistake severity",
  )
  with pytest.raises(ValueError):
    column("vs shuffled S, weather", cifar)


@pytest.mark.parametrize(
    "good, bad, message",
    [
        ("| confusion | 0.41 | 0.46 |", "| confusion | 0.41 | 0.47 |", "0.47"),
        (
            "| confusion | 53.64 ± 1.49 | +2.26 [+0.42, +4.10] (0.027) |",
            "| confusion | 53.64 ± 1.49 | +2.26 [+0.42, +4.10] (0.018) |",
            "0.018",
        ),
        (
            "| confusion m0.3 | -0.18 [-0.92, +0.56] (0.93) |",
            "| confusion m0.3 | -0.18 [-0.92, +0.65] (0.93) |",
            "0.65",
        ),
        (
            "| **-0.021 [-0.028, -0.014] (0.0092)** |",
            "| **-0.021 [-0.028, -0.014] (0.0097)** |",
            "0.0097",
        ),
    ],
    ids=["q", "cat recall", "family", "mistake severity"],
)
def test_a_wrong_cifar_figure_fails(good, bad, message):
  text = _results_md()
  assert good in text
  with pytest.raises(AssertionError, match=f"says [+]?{message}"):
    check_section(text.replace(good, bad), SECTIONS[2])


def test_class_structure_json_is_recomputed_from_the_summary():
  spec = importlib.util.spec_from_file_location(
      "class_structure", os.path.join(RESULTS, "class_structure.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  with open(os.path.join(RESULTS, "c10j_summary.json")) as f:
    summary = json.load(f)["c10j_lenet"]
  with open(os.path.join(RESULTS, "c10j_class_structure.json")) as f:
    saved = json.load(f)["c10j_lenet"]
  rows, comparisons = summary["rows"], summary["comparisons"]
  names = module.CIFAR10
  q = module.q_pairs(rows, names, [("cat", "dog")])
  confusion = "confusion-soft_target-m0.3"
  assert q[confusion]["cat->dog"] == rows[confusion]["Q, mean over seeds"][3][5]
  assert q[confusion]["cat->dog"] == saved["q"][confusion]["cat->dog"]
  metrics = {
      m: module.paired(rows, comparisons, lambda s, m=m: rows[s]["per seed"][m])
      for m in ("mistake severity", "super-class accuracy")
  }
  module.add_holm(metrics)
  assert metrics == saved["metrics"]
  # By hand: confusion m0.3 - shuffled, seed by seed, then the mean.
  per_seed = rows[confusion]["per seed"]["mistake severity"]
  shuffled = rows[confusion + "-shuffled"]["per seed"]["mistake severity"]
  mean = sum(per_seed[s] - shuffled[s] for s in per_seed) / len(per_seed)
  got = metrics["mistake severity"]["comparisons"]["vs shuffled S"][confusion]
  assert abs(got["mean"] - mean) < 1e-12
