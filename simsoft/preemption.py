"""SIGTERM as a preemption notice: finish the step, save, release the lock, exit 75.

A preempted Cloud TPU VM, a Kubernetes pod or a Slurm job gets SIGTERM and a
grace period before SIGKILL. The training loop asks :meth:`Notice.reached`
after every dispatched chunk of steps; when it says yes, the loop saves a
checkpoint at that step and raises :class:`simsoft.errors.Preempted` (exit
status 75), which releases the workdir's lock on its way out. The same
command resumes from that checkpoint, and since data order and randomness
are functions of (seed, step) the resumed run equals an uninterrupted one.

One process: a Python SIGTERM handler sets a flag. Several processes
(``jax.distributed.initialize``): JAX's preemption sync manager already
listens for SIGTERM on every host and agrees on a common sync point, which
Orbax's ``multihost.reached_preemption`` asks; every host then stops after
the same chunk and saves the same step. Its protocol compares a call counter
for equality with the fastest host's counter + 1, so the counter advances by
exactly one per call, across phases: the process's chunk count, not the step.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import threading
from collections.abc import Iterator

import jax
import orbax.checkpoint as ocp


def sync_service() -> bool:
  """True when JAX's preemption sync manager runs (jax.distributed initialized)."""
  from jax._src import distributed  # pylint: disable=g-import-not-at-top

  return (
      jax.distributed.is_initialized()
      and distributed.global_state.preemption_sync_manager is not None
  )


# Chunks dispatched by this process, every phase: the sync point's counter.
_CALLS = itertools.count(1)


class Notice:
  """Whether to stop for a preemption, asked once per chunk on every host."""

  def __init__(self, synced: bool):
    self.synced = synced
    self.signalled = False  # the Python handler's flag (one process)

  def reached(self) -> bool:
    """True at the chunk every host stops after (call after each chunk)."""
    if self.synced:
      return ocp.multihost.reached_preemption(next(_CALLS))
    return self.signalled


@contextlib.contextmanager
def listening() -> Iterator[Notice]:
  """A Notice; in one process SIGTERM sets its flag for the block's duration
  (main thread only). With the sync service JAX's own handler stays in place."""
  notice = Notice(sync_service())
  if notice.synced or threading.current_thread() is not threading.main_thread():
    yield notice
    return

  def handler(signum, frame):  # pylint: disable=unused-argument
    notice.signalled = True

  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield notice
  finally:
    signal.signal(signal.SIGTERM, previous)
