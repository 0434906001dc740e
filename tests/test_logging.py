"""Progress goes through absl logging: simsoft's INFO by default, --verbosity rules otherwise."""

import os
import re
import subprocess
import sys

from tests.helpers.tiny import ROOT

SIMSOFT_FILES = {
    name
    for _, _, names in os.walk(os.path.join(ROOT, "simsoft"))
    for name in names
    if name.endswith(".py")
}


def _from_simsoft(line: str) -> bool:
  """An absl INFO line logged from a simsoft module (I<date> <time> <tid> file.py:N] ...)."""
  match = re.match(r"^I\d{4} \S+ +\d+ (\S+):\d+\] ", line)
  return match is not None and match[1] in SIMSOFT_FILES


def _run(tmp_path, *flags):
  return subprocess.run(
      [
          sys.executable,
          "-m",
          "simsoft.main",
          "--config=configs/default.py:epochs=1,phases=estimate",
          f"--workdir={tmp_path / 'run'}",
          "--config.checkpoint.every_steps=5",
          *flags,
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
  )


def test_default_shows_simsoft_progress_only(tmp_path):
  out = _run(tmp_path)
  assert out.returncode == 0, out.stderr[-3000:]
  info = [line for line in out.stderr.splitlines() if line.startswith("I")]
  assert any("[estimate] step 17/17" in line for line in info), out.stderr
  assert any("[estimate] finished in" in line for line in info)
  # Orbax logs each of the 4 saves at INFO: dropped unless --verbosity asks.
  assert all(_from_simsoft(line) for line in info), info
  assert out.stdout == ""  # no result table in an estimate-only run


def test_verbosity_flag_applies_to_every_library(tmp_path):
  quiet = _run(tmp_path, "--verbosity=-1")
  assert quiet.returncode == 0, quiet.stderr[-3000:]
  assert "[estimate]" not in quiet.stderr
  loud = _run(tmp_path / "loud", "--verbosity=0")
  assert loud.returncode == 0, loud.stderr[-3000:]
  assert "[estimate] step 17/17" in loud.stderr
  assert any(
      line.startswith("I")
      and "progress.py" not in line
      and "train.py" not in line
      and "loop.py" not in line
      for line in loud.stderr.splitlines()
  ), "no other library's INFO line under --verbosity=0"
