"""Training progress: a stdout line with throughput and ETA, and TensorBoard scalars.

TensorBoard event files are written with CLU's metric writers (process 0 only)
under <workdir>/<phase>/; `tensorboard --logdir <workdir>` shows every phase.
"""

from __future__ import annotations

import time

import jax
from absl import logging


def _clock(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _NoEventsWriter:
  """Stands in for CLU's writer where CLU/TensorFlow is absent (stdout lines only)."""

  def write_scalars(self, step, scalars):
    del step, scalars

  def flush(self):
    pass

  def close(self):
    pass


def _make_writer(logdir: str):
  try:
    from clu import metric_writers  # imports TensorFlow: only once training starts
  except ImportError as e:
    logging.warning("no TensorBoard event files (%s); install simsoft[report]", e)
    return _NoEventsWriter()
  return metric_writers.create_default_writer(
      logdir, just_logging=jax.process_index() > 0, asynchronous=True)


class Progress:
  """Reports `[phase] step s/T (epoch e/E) loss .. | img/s steps/s ETA` lines."""

  def __init__(self, phase: str, total_steps: int, *, start_step: int, batch_size: int,
               steps_per_epoch: int, logdir: str):
    self.phase, self.total, self.batch_size = phase, total_steps, batch_size
    self.steps_per_epoch = steps_per_epoch
    self._last_step, self._last_time = start_step, time.perf_counter()
    self._writer = _make_writer(logdir)

  def update(self, step: int, scalars: dict[str, float]) -> None:
    now = time.perf_counter()
    steps_per_s = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    rates = {"steps_per_s": steps_per_s, "images_per_s": steps_per_s * self.batch_size}
    self._writer.write_scalars(step, {**scalars, **rates})
    if jax.process_index() == 0:
      epochs = -(-self.total // self.steps_per_epoch)
      shown = " ".join(f"{k} {v:.4f}" for k, v in scalars.items())
      eta = (self.total - step) / steps_per_s if steps_per_s > 0 else 0.0
      print(f"[{self.phase}] step {step}/{self.total} (epoch {-(-step // self.steps_per_epoch)}"
            f"/{epochs}) {shown} | {rates['images_per_s']:,.0f} img/s "
            f"{steps_per_s:.1f} steps/s ETA {_clock(eta)}", flush=True)

  def close(self) -> None:
    self._writer.flush()
    self._writer.close()
