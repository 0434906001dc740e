"""Two processes on localhost (gloo CPU collectives, 2 devices each) train like one process."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

from tests.helpers.tiny import ROOT, final_params, tiny_config


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_single_process(tmp_path):
  port = str(_free_port())
  workdir = tmp_path / "multi"
  outs = [tmp_path / f"params{i}.npz" for i in range(2)]
  env = {**os.environ, "PYTHONPATH": ROOT}
  procs = [
      subprocess.Popen(
          [
              sys.executable,
              "-m",
              "tests.helpers.multihost_worker",
              port,
              str(i),
              str(workdir),
              str(outs[i]),
          ],
          cwd=ROOT,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for i in range(2)
  ]
  logs = [p.communicate(timeout=300)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]

  results = json.loads((workdir / "results.json").read_text())
  assert set(results["models"]["B"]["corruptions"]) == {
      "gaussian_noise",
      "pixelate",
  }
  assert (workdir / "report.md").exists() and (
      workdir / "retrain" / "done.json"
  ).exists()

  first, second = (dict(np.load(o)) for o in outs)
  assert first.keys() == second.keys() and first
  for name in first:
    np.testing.assert_array_equal(first[name], second[name], err_msg=name)

  assert (
      jax.device_count() == 4
  )  # the same 4-device global mesh, in one process
  single = final_params(tiny_config(), str(tmp_path / "single"))
  for name in first:
    np.testing.assert_allclose(
        first[name], single[name], rtol=1e-4, atol=1e-5, err_msg=name
    )
