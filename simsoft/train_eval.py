"""Held-out metrics during training, like big_vision's periodic evaluators.

  held_out = from_config(run, graphdef, steps_per_epoch)   # None when off
  if step % held_out.every == 0:
    scalars = held_out(state)   # {'validation/accuracy': ..., '/nll', '/ece'}

config.train_eval picks the split (`split`, 'validation' by default: the
held-out part of the training data, never the test split the final
evaluation reports), how often (`every_epochs`, or `every_steps` when > 0;
both 0: off) and how many of its images (`examples`, 0: all). The metrics
are those of the final evaluation (simsoft.metrics): accuracy, NLL (the
cross-entropy of the held-out images) and ECE. Evaluating reads the state
and changes nothing in it, so a run trains the same model with or without.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
from flax import nnx

from simsoft import robustness
from simsoft import train_step as step_lib
from simsoft.run import Run


@functools.lru_cache(maxsize=None)
def predict_jit(graphdef: nnx.GraphDef, mean, std) -> Callable:
  """One jitted predict per model structure (and normalization), shared by
  both training phases and the evaluate phase."""
  return jax.jit(step_lib.make_predict_fn(graphdef, mean=mean, std=std))


def every_steps(config, steps_per_epoch: int) -> int:
  """Steps between held-out evaluations (0: off)."""
  cfg = config.train_eval
  if cfg.every_steps > 0:
    return int(cfg.every_steps)
  return (
      max(1, round(cfg.every_epochs * steps_per_epoch))
      if cfg.every_epochs > 0
      else 0
  )


class HeldOut:
  """Accuracy, NLL and ECE of a training state on a held-out split (on device once)."""

  def __init__(self, run: Run, graphdef: nnx.GraphDef, every: int):
    cfg, ds = run.config.train_eval, run.dataset
    split = ds.split(cfg.split)
    if hasattr(
        split, "head"
    ):  # streamed (simsoft.data.streaming): read per pass
      self._batches = robustness.StreamBatches(
          split.head(cfg.examples), run.config.eval_batch_size, True, run.mesh
      )
    else:
      n = cfg.examples or len(split)
      images, labels = robustness.check_split(
          split.images[:n],
          split.labels[:n],
          ds.num_classes,
          f"{cfg.split} split",
      )
      self._batches = robustness.Batches(
          images, labels, run.config.eval_batch_size, True, run.mesh
      )
    self.every, self.prefix = every, cfg.split
    self._num_classes, self._mesh = ds.num_classes, run.mesh
    self._predict = predict_jit(graphdef, tuple(ds.mean), tuple(ds.std))

  def __call__(self, state: dict[str, Any]) -> dict[str, float]:
    predict = functools.partial(
        self._predict, state["params"], state["model_state"]
    )
    scorer = robustness.Scorer(
        predict, self._num_classes, None, None, mesh=self._mesh
    )
    m = scorer.evaluate(self._batches)
    return {
        f"{self.prefix}/{k}": float(m[k]) for k in ("accuracy", "nll", "ece")
    }


def from_config(
    run: Run, graphdef: nnx.GraphDef, steps_per_epoch: int
) -> HeldOut | None:
  """The held-out evaluator config.train_eval asks for, or None when it is off."""
  every = every_steps(run.config, steps_per_epoch)
  return HeldOut(run, graphdef, every) if every else None
