"""simsoft.results: the metric rows, mean ± std, the tables and the summary plot."""

import math
import subprocess
import sys

import pytest
from matplotlib import image as mimage

from simsoft import compare, report, results, sweep


def test_mean_std_is_the_sample_std_of_the_finite_values():
  mean, std = results.mean_std([0.9, None, 0.8, math.nan, math.inf])
  assert mean == pytest.approx(0.85)
  # ddof=1: sqrt((0.05**2 + 0.05**2) / (2 - 1))
  assert std == pytest.approx(0.05 * math.sqrt(2))
  mean, std = results.mean_std([1.0, 2.0, 4.0])
  assert mean == pytest.approx(7 / 3)
  assert std == pytest.approx(math.sqrt(7 / 3))  # (16 + 1 + 25) / 9 / 2
  assert results.mean_std([0.7]) == (0.7, None)
  assert results.mean_std([0.7], std_of_one=0.0) == (0.7, 0.0)
  assert results.mean_std([None, math.nan]) == (None, None)
  assert results.mean_std(iter([])) == (None, None)


def test_format_mean_std():
  assert results.format_mean_std(0.93, 0.0141421356) == "0.9300 ± 0.0141"
  assert results.format_mean_std(0.8065, 0.0092, percent=True) == "80.65 ± 0.92"
  assert results.format_mean_std(0.5, None) == "0.5000"
  assert results.format_mean_std(0.5, None, percent=True) == "50.00"
  assert results.format_mean_std(None, 0.1) == "n/a"


def test_metric_get_reads_a_suite_and_tolerates_missing_steps():
  nll, mca = results.select("clean_nll", "mean_corrupted_accuracy")
  suite = {"clean": {"nll": 0.25}, "summary": None}
  assert nll.get(suite) == 0.25
  assert mca.get(suite) is None
  assert nll.get({}) is None and nll.get({"clean": None}) is None
  assert nll.label == "NLL" and nll.table_label == "clean NLL"
  assert mca.table_label == mca.label == "mean corrupted accuracy"


def test_select_keeps_the_order_given_and_rejects_unknown_keys():
  rows = results.select("clean_ece", "clean_accuracy")
  assert [m.key for m in rows] == ["clean_ece", "clean_accuracy"]
  assert all(any(m is row for row in results.METRICS) for m in rows)
  with pytest.raises(KeyError, match="nope"):
    results.select("clean_accuracy", "nope")
  assert len({m.key for m in results.METRICS}) == len(results.METRICS)


def test_consumers_pick_their_rows_from_the_one_table():
  one = {m.key: m for m in results.METRICS}
  for chosen in (sweep.METRICS, sweep.PAIRED_METRICS, compare.METRICS):
    assert all(one[m.key] is m for m in chosen)
  assert [m.label for m in sweep.METRICS] == [
      "clean accuracy",
      "clean accuracy, corrupted images",
      "NLL",
      "ECE",
      "mean corrupted accuracy",
      "mistake severity",
      "super-class accuracy",
  ]
  assert [m.key for m in sweep.METRICS if m.percent] == [
      "clean_accuracy",
      "clean_on_corrupted_accuracy",
      "mean_corrupted_accuracy",
      "superclass_accuracy",
  ]
  assert [m.key for m in compare.METRICS] == [
      "clean_accuracy",
      "clean_nll",
      "clean_ece",
      "mean_corrupted_accuracy",
      "mistake_severity",
  ]
  assert report.MODEL_LABELS is results.MODEL_LABELS


def _row(name, *cells):
  """The fixed-width layout: name in 26, a model in 22, B - A in 10."""
  widths = (22, 22, 10)
  return name.ljust(26) + "".join(c.rjust(w) for c, w in zip(cells, widths))


def test_format_table_by_hand():
  a = {
      "clean": {
          "accuracy": 0.9,
          "nll": 0.3,
          "ece": 0.05,
          "mistake_distance": 2.5,
      },
      "summary": {
          "mean_corrupted_accuracy": 0.6,
          "mce": 0.4,
          "accuracy_by_corruption": {"contrast": 0.7, "fog": 0.5},
      },
  }
  b = {
      "clean": {"accuracy": 0.92, "nll": 0.25, "ece": 0.04},
      "summary": {
          "mean_corrupted_accuracy": 0.65,
          "mce": 0.35,
          "accuracy_by_corruption": {"contrast": 0.75, "fog": 0.5},
      },
  }
  paired = {"difference": 0.02, "ci": [-0.01, 0.05], "n": 100}
  text = results.format_table(
      {
          "models": {"A": a, "B": b},
          "comparison": {"clean_accuracy_paired": paired},
      }
  )
  header = _row("metric", "A: cross-entropy", "B: similarity loss", "B - A")
  under = _row(
      "accuracy under corruption",
      "A: cross-entropy",
      "B: similarity loss",
      "B - A",
  )
  assert len(header) == 80
  assert text.split("\n") == [
      header,
      "-" * 80,
      _row("clean accuracy", "0.9000", "0.9200", "+0.0200"),
      _row("clean NLL", "0.3000", "0.2500", "-0.0500"),
      _row("clean ECE", "0.0500", "0.0400", "-0.0100"),
      # mistake severity, super-class and CIFAR-10-C: no model has them.
      _row("mistake LCA height", "2.5000", "-"),
      _row("mean corrupted accuracy", "0.6000", "0.6500", "+0.0500"),
      _row("1 - mean corrupted acc.", "0.4000", "0.3500", "-0.0500"),
      "B - A clean accuracy +2.00 points, 95 % CI [-1.00, +5.00] "
      "(paired, 100 test images)",
      "",
      under,
      "-" * 80,
      _row("contrast", "0.7000", "0.7500", "+0.0500"),
      _row("fog", "0.5000", "0.5000", "+0.0000"),
  ]
  # One model: no B - A column; no per-corruption table without its grid.
  alone = results.format_table({"models": {"A": {"clean": a["clean"]}}})
  assert alone.split("\n")[:3] == [
      "metric".ljust(26) + "A: cross-entropy".rjust(22),
      "-" * 48,
      "clean accuracy".ljust(26) + "0.9000".rjust(22),
  ]
  assert "accuracy under corruption" not in alone
  assert results.format_table({"models": {}}) == "metric".ljust(26) + "\n" + (
      "-" * 26
  )


def test_markdown_table():
  assert (
      results.markdown_table(["a", "b"], [["1", "2"], ["3", "4"]])
      == "| a | b |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |"
  )
  assert results.markdown_table(["a"], []) == "| a |\n|---|"


def test_report_and_sweep_tables_show_their_rows():
  suite = {
      "clean": {
          "accuracy": 0.9,
          "nll": 0.3,
          "ece": 0.05,
          "superclass_accuracy": 0.95,
      }
  }
  assert report._clean_table({"A": suite}).split("\n") == [
      "| model | accuracy [95 % CI] | NLL | ECE | mistake severity "
      "| super-class accuracy |",
      "|---|---|---|---|---|---|",
      "| A: cross-entropy | 90.00% | 0.3000 | 0.0500 | n/a | 95.00% |",
  ]
  row = {m.label: (0.5, 0.25) for m in sweep.METRICS} | {"seeds": 2}
  row["super-class accuracy"] = (None, None)
  md = sweep.to_markdown({"e": {"rows": {"x": row}, "comparisons": {}}})
  assert md.split("\n")[2:5] == [
      "| setting | seeds | off-target mass | clean accuracy "
      "| clean accuracy, corrupted images | NLL | ECE | mean corrupted accuracy "
      "| mistake severity | super-class accuracy |",
      "|" + "---|" * 10,
      "| x | 2 | 0 | 50.00 ± 25.00 | 50.00 ± 25.00 | 0.5000 ± 0.2500 "
      "| 0.5000 ± 0.2500 | 50.00 ± 25.00 | 0.5000 ± 0.2500 | n/a |",
  ]


def test_plot_summary_writes_a_png(tmp_path):
  path = str(tmp_path / "summary.png")
  labels = ["base", "A: x", "B: x", "other"]
  panels = {
      "clean accuracy": [(0.9, 0.01), (0.8, None), (0.85, 0.02), (None, None)],
      "mean corrupted accuracy": [
          (0.6, 0.0),
          (0.5, 0.1),
          (0.55, 0.0),
          (0.4, 0),
      ],
  }
  assert (
      results.plot_summary(
          path,
          labels,
          panels,
          models=["A", "A", "B", "C"],
          baseline="base",
          title="t",
          percent=True,
      )
      == path
  )
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  img = mimage.imread(path)
  assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 400
  results.plot_summary(str(tmp_path / "plain.png"), labels, panels)
  assert (tmp_path / "plain.png").stat().st_size > 1000
  with pytest.raises(ValueError, match="3 cells for 4 labels"):
    results.plot_summary(path, labels, {"x": panels["clean accuracy"][:3]})
  with pytest.raises(ValueError, match="1 models for 4 labels"):
    results.plot_summary(path, labels, panels, models=["A"])


def test_importing_results_needs_neither_tensorflow_nor_matplotlib():
  code = (
      "import sys, simsoft.results; "
      "print(sorted(m for m in ('tensorflow', 'matplotlib', 'simsoft.train', "
      "'jax') if m in sys.modules))"
  )
  out = subprocess.run(
      [sys.executable, "-c", code], capture_output=True, text=True, check=True
  )
  assert out.stdout.strip() == "[]"
