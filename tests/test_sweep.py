"""A tiny sweep end to end: shared model A, resume by skipping, mean ± std summary."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from simsoft import sweep
from tests.helpers import tiny_sweep as tiny_sweep_config
from tests.helpers.tiny import ROOT


def tiny_sweep():
  return tiny_sweep_config.get_config()


def test_sweep_runs_resumes_and_summarises(tmp_path, monkeypatch):
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
  a_accs = [json.loads((tmp_path / "digits_tiny" / f"seed{s}" / "label_smoothing" / "results.json")
                       .read_text())["models"]["A"]["clean"]["accuracy"] for s in (0, 1)]
  deltas = np.subtract(accs, a_accs)
  paired = summary["label smoothing"]["paired vs CE"]["clean accuracy"]
  np.testing.assert_allclose(paired["delta"], [np.mean(deltas), np.std(deltas, ddof=1)], rtol=1e-9)
  assert paired["wins"] == int(np.sum(deltas > 0)) and paired["seeds"] == 2
  assert "paired vs CE" not in summary["cross-entropy (A)"]
  by_severity = summary["label smoothing"]["accuracy by severity"]
  assert by_severity["0"] == summary["label smoothing"]["clean accuracy"]
  assert set(by_severity) == {"0", "2"}
  for figure in ("summary_digits_tiny.png", "severity_digits_tiny.png"):
    with open(tmp_path / figure, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  times = sweep.wall_times(config, str(tmp_path))["digits_tiny"]
  assert times["base"]["runs"] == 2 and times["model B"]["runs"] == 4
  walls = [json.loads(p.read_text())["seconds"]
           for p in (tmp_path / "digits_tiny").glob("seed*/*/wall_time.json")]
  assert times["base"]["seconds"] + times["model B"]["seconds"] == pytest.approx(sum(walls))
  markdown = (tmp_path / "summary.md").read_text()
  assert "| digits_tiny | 2 |" in markdown
  assert "| label smoothing | 2 |" in markdown and "pixelate" in markdown


def test_a_run_another_worker_holds_is_left_to_it(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  config = tiny_sweep()
  config.seeds = "0"
  held = str(tmp_path / "digits_tiny" / "seed0" / "label_smoothing")
  lock = sweep._claim(str(tmp_path), held)  # as another worker would
  assert lock is not None and sweep._claim(str(tmp_path), held) is None
  sweep.run_all(config, str(tmp_path), poll_seconds=0.1)
  assert (tmp_path / "digits_tiny" / "seed0" / "confusion-soft_target" / "results.json").exists()
  assert not os.path.exists(os.path.join(held, "results.json"))
  lock.close()  # the holder died: the kernel drops its flock
  sweep.run_all(config, str(tmp_path), poll_seconds=0.1)
  assert os.path.exists(os.path.join(held, "results.json"))


def test_two_workers_share_the_runs(tmp_path):
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT)
  out = subprocess.run(
      [sys.executable, "-m", "simsoft.sweep", "--config", "tests/helpers/tiny_sweep.py",
       "--root", str(tmp_path), "--workers", "2"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout + out.stderr
  config = tiny_sweep()
  for workdir, run_config in sweep.plan(config, str(tmp_path)):
    assert sweep._finished(workdir, run_config.phases), workdir
  logs = [(tmp_path / f"worker{i}.log").read_text() for i in (0, 1)]
  started = [log.count("=== sweep run") for log in logs]
  assert sum(started) == len(sweep.plan(config, str(tmp_path))) and min(started) > 0, started
  assert "| label smoothing | 2 |" in out.stdout
