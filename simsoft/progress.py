"""Training progress: stdout lines with throughput and ETA, and TensorBoard event files.

TensorBoard event files are written with CLU's metric writers (process 0 only)
under <workdir>/<phase>/ for training and <workdir>/evaluate/{A,B}/ for the
test metrics; `tensorboard --logdir <workdir>` shows every phase:

  <phase>/       train/loss, train/accuracy, train/grad_norm (means over each
                 logging window), train/learning_rate, steps_per_s,
                 images_per_s, compile_seconds; validation/accuracy, /nll,
                 /ece (held-out metrics every config.train_eval period,
                 simsoft.train_eval); the similarity image (estimate: the S
                 model B trains with; retrain, online source: the final S).
                 The same scalars, one JSON object per line, in
                 <phase>/metrics.jsonl (what report.md's curves are drawn from)
  evaluate/A, evaluate/B
                 eval/clean_accuracy, eval/clean_nll, eval/clean_ece,
                 eval/mean_corrupted_accuracy (nll, ece), and
                 eval/corrupted_accuracy/<corruption> (mean over severities),
                 at the model's last training step
  evaluate/      the HParams dashboard's session (simsoft.hparams): the
                 config's knobs next to A's and B's final metrics

The ETA uses the steady-state step time: the first dispatch, which compiles
the step, is timed apart (compile_seconds) and left out.
"""

from __future__ import annotations

import contextlib
import json
import logging as std_logging
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jax.typing import ArrayLike
from absl import flags, logging


def clock(seconds: float) -> str:
  """Seconds as H:MM:SS."""
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


_clock = clock  # the old private name


def log(message: str) -> None:
  """One progress line through absl logging at INFO, from process 0 only.

  `python -m simsoft.main` shows simsoft's INFO lines (and other libraries'
  warnings) unless --verbosity is given; library users see them after
  absl.logging.set_verbosity(absl.logging.INFO).
  """
  if jax.process_index() == 0:
    logging.info("%s", message, stacklevel=2)


def configure_logging(fv: flags.FlagValues) -> None:
  """Without --verbosity: simsoft's progress (INFO) and every library's warnings.

  Orbax and CLU log every save at INFO, so their INFO lines are dropped; an
  explicit --verbosity (e.g. 0 for INFO, -1 for warnings only) applies to
  every library alike.
  """
  if "verbosity" in fv and fv["verbosity"].present:
    return
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_simsoft_info_or_any_warning)


def _simsoft_info_or_any_warning(record: std_logging.LogRecord) -> bool:
  return (
      record.levelno >= std_logging.WARNING or _PACKAGE_DIR in record.pathname
  )


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _NoEventsWriter:
  """Stands in for CLU's writer where CLU/TensorFlow is absent (stdout lines only)."""

  def write_scalars(self, step, scalars):
    del step, scalars

  def write_images(self, step, images):
    del step, images

  def write_hparams(self, hparams):
    del hparams

  def flush(self):
    pass

  def close(self):
    pass


def make_writer(logdir: str, *, asynchronous: bool = True) -> Any:
  """CLU's default writer for `logdir` (event files from process 0 only), or a no-op one."""
  try:
    from clu import metric_writers  # imports TensorFlow: only once training starts
  except ImportError as e:
    logging.warning(
        "no TensorBoard event files (%s); install 'simsoft[report]'", e
    )
    return _NoEventsWriter()
  return metric_writers.create_default_writer(
      logdir, just_logging=jax.process_index() > 0, asynchronous=asynchronous
  )


def flat_hparams(config: Mapping[str, Any] | Any) -> dict[str, Any]:
  """A config (ConfigDict or dict) as {'a.b': bool | int | float | str} for the hparams plugin."""
  tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  out = {}

  def walk(node, prefix):
    for key, value in node.items():
      name = f"{prefix}{key}"
      if isinstance(value, Mapping):
        walk(value, name + ".")
      elif isinstance(value, (bool, int, float, str)):
        out[name] = value
      else:
        out[name] = str(value)

  walk(tree, "")
  return out


def similarity_image(
    similarity: ArrayLike, *, max_pixels: int = 320
) -> np.ndarray:
  """S [C, C] as a uint8 image [1, H, W, 3]: one square block per entry, viridis colours
  (grayscale without matplotlib), scaled to S's range."""
  s = np.asarray(similarity, np.float64)
  lo, hi = float(s.min()), float(s.max())
  x = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
  cell = max(1, max_pixels // s.shape[0])
  x = np.kron(x, np.ones((cell, cell)))
  try:
    from matplotlib import colormaps

    rgb = colormaps["viridis"](x)[..., :3]
  except ImportError:
    rgb = np.repeat(x[..., None], 3, axis=-1)
  return np.round(255 * rgb).astype(np.uint8)[None]


_PHASE_WRITERS: dict[str, Any] = {}


def phase_writer(logdir: str) -> Any:
  """This process's one writer for a phase's `logdir`, opened on first use.

  The training progress and the similarity image written after training
  share it, so a phase run in one process leaves one event file (a resumed
  phase adds one per process, as every TensorBoard writer does).
  `phase_writers()` closes them at the end of the run.
  """
  if logdir not in _PHASE_WRITERS:
    _PHASE_WRITERS[logdir] = make_writer(logdir)
  return _PHASE_WRITERS[logdir]


@contextlib.contextmanager
def phase_writers() -> Iterator[None]:
  """Closes the phase writers opened inside the block when it ends."""
  try:
    yield
  finally:
    while _PHASE_WRITERS:
      _, writer = _PHASE_WRITERS.popitem()
      writer.close()


def write_similarity_image(
    logdir: str, step: int, similarity: ArrayLike, tag: str = "similarity"
) -> None:
  writer = phase_writer(logdir)
  writer.write_images(step, {tag: similarity_image(similarity)})
  writer.flush()


def evaluation_scalars(suite: Mapping) -> dict[str, float]:
  """The TensorBoard scalars of one model's results (simsoft.evaluators.run_suite)."""
  clean = suite["clean"]
  out = {
      "eval/clean_accuracy": clean["accuracy"],
      "eval/clean_nll": clean["nll"],
      "eval/clean_ece": clean["ece"],
  }
  for key, summary in (
      ("corrupted", suite.get("summary")),
      ("cifar10_c", suite.get("extra_summary")),
  ):
    if not summary:
      continue
    out[f"eval/mean_{key}_accuracy"] = summary["mean_corrupted_accuracy"]
    for metric in ("nll", "ece"):
      if summary.get(f"mean_corrupted_{metric}") is not None:
        out[f"eval/mean_{key}_{metric}"] = summary[f"mean_corrupted_{metric}"]
    for name, accuracy in summary.get("accuracy_by_corruption", {}).items():
      out[f"eval/{key}_accuracy/{name}"] = accuracy
  return {k: float(v) for k, v in out.items() if v is not None}


def write_evaluation(logdir: str, step: int, suite: Mapping) -> None:
  """One model's test metrics as scalars at its last training step."""
  writer = make_writer(logdir, asynchronous=False)
  writer.write_scalars(step, evaluation_scalars(suite))
  writer.flush()
  writer.close()


class Progress:
  """Reports `[phase] step s/T (epoch e/E) loss .. | img/s steps/s ETA` lines and scalars.

  Call `compiled(step)` once the first dispatch has finished (it compiles the
  step): rates and the ETA count only the steps after it.
  """

  def __init__(
      self,
      phase: str,
      total_steps: int,
      *,
      start_step: int,
      batch_size: int,
      steps_per_epoch: int,
      logdir: str,
      hparams: Mapping[str, Any] | None = None,
      log_every: int = 1,
  ):
    self.phase, self.total, self.batch_size = phase, total_steps, batch_size
    self.log_every, self._held_out_logged = log_every, start_step
    self.steps_per_epoch = steps_per_epoch
    self._start_time = time.perf_counter()
    self._last_step, self._last_time = start_step, self._start_time
    self._steady: tuple[int, float] | None = None
    self._writer = phase_writer(logdir)
    if hparams:
      self._writer.write_hparams(dict(hparams))
    self._metrics_path = os.path.join(logdir, METRICS_FILE)

  def compiled(self, step: int) -> None:
    """The first dispatch (compilation included) ended at `step`; steady timing starts."""
    now = time.perf_counter()
    self._steady = (step, now)
    self._last_step, self._last_time = step, now
    seconds = now - self._start_time
    self._writer.write_scalars(step, {"compile_seconds": seconds})
    log(
        f"[{self.phase}] compiled; first step(s) ran in {seconds:.1f}s "
        "(not counted in rates and ETA)",
    )

  def update(self, step: int, scalars: dict[str, float]) -> None:
    now = time.perf_counter()
    steps_per_s = (step - self._last_step) / max(now - self._last_time, 1e-9)
    steady = None
    if self._steady is not None and step > self._steady[0]:
      steady = (step - self._steady[0]) / max(now - self._steady[1], 1e-9)
    if step == self._last_step:  # only the compiled dispatch in this window
      steps_per_s = steady or 0.0
    self._last_step, self._last_time = step, now
    rates = {
        "steps_per_s": steps_per_s,
        "images_per_s": steps_per_s * self.batch_size,
    }
    self._writer.write_scalars(
        step,
        {
            **{k if "/" in k else f"train/{k}": v for k, v in scalars.items()},
            **rates,
        },
    )
    epochs = -(-self.total // self.steps_per_epoch)
    shown = " ".join(
        f"{k} {v:.4g}" if k == "learning_rate" else f"{k} {v:.4f}"
        for k, v in scalars.items()
    )
    self._append_metrics(
        step, {k if "/" in k else f"train/{k}": v for k, v in scalars.items()}
    )
    eta = f"ETA {clock((self.total - step) / steady)}" if steady else "ETA -"
    log(
        f"[{self.phase}] step {step}/{self.total} (epoch {-(-step // self.steps_per_epoch)}"
        f"/{epochs}) {shown} | {rates['images_per_s']:,.0f} img/s "
        f"{steps_per_s:.1f} steps/s {eta}"
    )

  def held_out(self, step: int, scalars: dict[str, float]) -> None:
    """Held-out metrics of the state after `step` (simsoft.train_eval)."""
    self._writer.write_scalars(step, scalars)
    self._append_metrics(step, scalars)
    if step - self._held_out_logged >= self.log_every or step == self.total:
      self._held_out_logged = step
      shown = " ".join(f"{k} {v:.4f}" for k, v in scalars.items())
      log(f"[{self.phase}] step {step}/{self.total} held-out {shown}")

  def _append_metrics(self, step: int, scalars: Mapping[str, float]) -> None:
    if jax.process_index() == 0 and "://" not in self._metrics_path:
      record = {"step": step, "epoch": step / self.steps_per_epoch}
      record.update({k: float(v) for k, v in scalars.items()})
      with open(self._metrics_path, "a") as f:
        f.write(json.dumps(record) + "\n")

  def close(self) -> None:
    """Flushes the events; the phase's writer stays open for what the phase
    writes after training (`phase_writers` closes it)."""
    self._writer.flush()


METRICS_FILE = "metrics.jsonl"


def read_metrics(logdir: str) -> list[dict[str, float]]:
  """<logdir>/metrics.jsonl as records sorted by step, the last record of a
  step and kind (train or held-out) kept (a resumed phase logs steps again)."""
  path = os.path.join(logdir, METRICS_FILE)
  if not os.path.exists(path):
    return []
  records = {}
  with open(path) as f:
    for line in f:
      if line.strip():
        record = json.loads(line)
        kind = tuple(sorted(k for k in record if k not in ("step", "epoch")))
        records[(record["step"], kind)] = record
  return [r for _, r in sorted(records.items())]


class EvalProgress:
  """`[evaluate] model A: 5/16 contrast s2 | 3.1 s, ETA 0:00:07` lines while a suite runs.

  Logged for the first and last test set and at most every `every_seconds`
  in between (process 0 only).
  """

  def __init__(self, label: str, total: int, *, every_seconds: float = 10.0):
    self.label, self.total, self.every_seconds = label, total, every_seconds
    self.done = 0
    self._start = self._last_print = time.perf_counter()

  def __call__(self, name: str) -> None:
    """Test set `name` is done."""
    self.done += 1
    done, total = self.done, self.total
    now = time.perf_counter()
    if done not in (1, total) and now - self._last_print < self.every_seconds:
      return
    self._last_print = now
    elapsed = now - self._start
    eta = clock(elapsed / done * (total - done))
    log(
        f"[evaluate] model {self.label}: {done}/{total} {name} | {elapsed:.1f}s, ETA {eta}",
    )
