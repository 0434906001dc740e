"""A tiny sweep end to end: shared model A, resume by skipping, mean ± std summary."""

import json

import ml_collections
import numpy as np

from simsoft import sweep


def tiny_sweep():
  c = ml_collections.ConfigDict()
  c.experiments = "digits_tiny"
  c.specs = ml_collections.ConfigDict({"digits_tiny": "configs/default.py:epochs=1"})
  c.seeds = "0,1"
  c.alpha = 0.4
  c.sources = "confusion"
  c.forms = "soft_target"
  c.overrides = ("evaluate.evaluators=clean,corruptions;evaluate.corruptions=contrast,pixelate;"
                 "evaluate.severities=2;model.kwargs.hidden=(32,)")
  return c


def test_sweep_runs_resumes_and_summarises(tmp_path, monkeypatch):
  from tests.helpers.tiny import ROOT

  monkeypatch.chdir(ROOT)
  config = tiny_sweep()
  assert [name for name, _, _ in sweep.variants(config)] == ["label_smoothing", "confusion-soft_target"]
  sweep.run_all(config, str(tmp_path))
  seed0 = tmp_path / "digits_tiny" / "seed0"
  assert (seed0 / "base" / "estimate" / "done.json").exists()
  assert not (seed0 / "confusion-soft_target" / "estimate" / "checkpoints").exists()  # A shared
  saved = json.loads((seed0 / "confusion-soft_target" / "config.json").read_text())
  assert saved["loss"]["alpha"] == 0.4 and saved["evaluate"]["severities"] == "2"

  mtime = (seed0 / "label_smoothing" / "results.json").stat().st_mtime
  sweep.run_all(config, str(tmp_path))  # finished runs are skipped
  assert (seed0 / "label_smoothing" / "results.json").stat().st_mtime == mtime

  summary = sweep.summarise(config, str(tmp_path))["digits_tiny"]
  assert list(summary) == ["cross-entropy (A)", "label smoothing", "confusion-soft_target"]
  accs = [json.loads((tmp_path / "digits_tiny" / f"seed{s}" / "label_smoothing" / "results.json")
                     .read_text())["models"]["B"]["clean"]["accuracy"] for s in (0, 1)]
  mean, std = summary["label smoothing"]["clean accuracy"]
  assert summary["label smoothing"]["seeds"] == 2
  np.testing.assert_allclose([mean, std], [np.mean(accs), np.std(accs, ddof=1)], rtol=1e-9)
  assert set(summary["cross-entropy (A)"]["accuracy by corruption"]) == {"contrast", "pixelate"}
  markdown = (tmp_path / "summary.md").read_text()
  assert "| label smoothing | 2 |" in markdown and "pixelate" in markdown
