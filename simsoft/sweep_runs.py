"""A sweep's run directories: whether a run finished, and who runs it.

Shared by simsoft.sweep (local workers, submitit) and simsoft.pod_sweep (one
pod job per run), which both read and claim the runs under one --root.
"""

from __future__ import annotations

import fcntl
import os


def finished(workdir: str, phases: tuple[str, ...]) -> bool:
  """A base run (estimate only) is finished with estimate/done.json, any other
  run with results.json."""
  if phases == ("estimate",):
    return os.path.exists(os.path.join(workdir, "estimate", "done.json"))
  return os.path.exists(os.path.join(workdir, "results.json"))


def claim(root: str, workdir: str):
  """An exclusive flock on ROOT/.locks/<run>.lock (an open file), or None if
  another process holds it."""
  os.makedirs(os.path.join(root, ".locks"), exist_ok=True)
  name = os.path.relpath(workdir, root).replace(os.sep, "__")
  lock = open(os.path.join(root, ".locks", name + ".lock"), "w")
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    lock.close()
    return None
  return lock
