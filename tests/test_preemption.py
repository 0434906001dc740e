"""SIGTERM (a preemption notice) mid-phase: the step finishes, a checkpoint is
saved (every host at the same step), the lock is released, exit status 75;
the same command resumes to the uninterrupted run's parameters.

One process (simsoft's SIGTERM handler) and two (gloo, jax.distributed:
JAX's preemption sync service through Orbax), each a real process
preempted once (tests/helpers/preempt_worker.py), resumed here.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from simsoft import train
from tests.helpers import preempt_worker
from tests.helpers.tiny import ROOT

LINE = re.compile(
    r"^simsoft: error: preempted \(SIGTERM\) in phase 'estimate' at step "
    r"(\d+) of (\d+); saved checkpoint step (\d+); run the same command to resume$"
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run's final parameters (one process, 4 devices)."""
  workdir = str(tmp_path_factory.mktemp("reference") / "run")
  train.train_and_evaluate(preempt_worker.config(), workdir)
  return preempt_worker.final_params(workdir)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _preempt(tmp_path, workdir, processes: int) -> list[tuple[int, str]]:
  """Starts the workers, sends SIGTERM to the last once process 0 has logged
  a step; returns each worker's (exit status, output)."""
  port = str(_free_port())
  logs = [tmp_path / f"log{i}" for i in range(processes)]
  procs = [
      subprocess.Popen(
          [
              sys.executable,
              "-m",
              "tests.helpers.preempt_worker",
              str(processes),
              port,
              str(i),
              str(workdir),
              str(tmp_path / f"params{i}.npz"),
          ],
          cwd=ROOT,
          env={**os.environ, "PYTHONPATH": ROOT},
          stdout=open(logs[i], "w"),  # a pipe left unread would block a worker
          stderr=subprocess.STDOUT,
      )
      for i in range(processes)
  ]
  start = time.time()
  while "[estimate] step " not in logs[0].read_text():
    assert all(p.poll() is None for p in procs), logs[0].read_text()[-3000:]
    assert time.time() - start < 240
    time.sleep(0.05)
  procs[-1].send_signal(signal.SIGTERM)
  for p in procs:
    p.wait(timeout=240)
  return [(p.returncode, log.read_text()) for p, log in zip(procs, logs)]


def _stopped_at(status: int, output: str) -> int:
  """The preempted step, from the one error line (after checking it and the status)."""
  assert "Traceback" not in output, output[-3000:]
  errors = [
      line for line in output.splitlines() if line.startswith("simsoft: error:")
  ]
  assert status == 75 and len(errors) == 1, (status, output[-3000:])
  step, total, saved = map(int, LINE.match(errors[0]).groups())
  assert 0 < step <= total and saved == step, errors[0]
  return step


def _resume_and_compare(workdir, reference, **tolerance):
  train.train_and_evaluate(preempt_worker.config(), str(workdir))
  resumed = preempt_worker.final_params(str(workdir))
  assert resumed.keys() == reference.keys() and resumed
  for name in resumed:
    if tolerance:
      np.testing.assert_allclose(resumed[name], reference[name], **tolerance)
    else:
      np.testing.assert_array_equal(resumed[name], reference[name], name)


def test_sigterm_saves_releases_and_resumes_identically(tmp_path, reference):
  workdir = tmp_path / "run"
  ((status, output),) = _preempt(tmp_path, workdir, processes=1)
  step = _stopped_at(status, output)
  # every_steps is 1000: the only checkpoint is the preemption's
  assert sorted(os.listdir(workdir / "estimate" / "checkpoints")) == [str(step)]
  assert not (workdir / ".lock").exists()
  assert not (workdir / "estimate" / "done.json").exists()
  _read_only_tools_refuse_it(workdir)
  _resume_and_compare(workdir, reference)


def _read_only_tools_refuse_it(workdir):
  """simsoft.collapse's restore of a half-finished run: refused, nothing written
  (it used to train the missing steps into the run it reads)."""
  from simsoft import errors, phases, sharding  # pylint: disable=g-import-not-at-top
  from simsoft.run import Run  # pylint: disable=g-import-not-at-top
  from tests.test_bad_inputs import snapshot  # pylint: disable=g-import-not-at-top

  before = snapshot(workdir)
  config = preempt_worker.config()
  run = Run(
      config=config,
      workdir=str(workdir),
      mesh=sharding.make_mesh(None),
      dataset=train.load_dataset(config),
  )
  with pytest.raises(errors.MissingInputError, match="has not finished"):
    phases.restore_final(run, "estimate", read_only=True)
  assert snapshot(workdir) == before


def test_two_processes_stop_at_the_same_step(tmp_path, reference):
  """SIGTERM reaches process 1 only; both agree on the step, save it, exit 75.
  The checkpoint resumes (here in one process on the same 4-device mesh) to
  the reference within test_multihost's tolerance (gloo's sums round in
  another order than one process's)."""
  workdir = tmp_path / "run"
  outcomes = _preempt(tmp_path, workdir, processes=2)
  steps = [_stopped_at(status, output) for status, output in outcomes]
  assert steps[0] == steps[1], steps
  assert sorted(os.listdir(workdir / "estimate" / "checkpoints")) == [
      str(steps[0])
  ]
  assert not (workdir / ".lock").exists()
  _resume_and_compare(workdir, reference, rtol=1e-4, atol=1e-5)
