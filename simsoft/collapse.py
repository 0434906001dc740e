r"""Why the log-sum (SimLoss) form collapses: a diagnosis of finished runs.

SimLoss with target rows W (:math:`W_{yy} = 1 - m`, off-diagonal entries
> 0) is :math:`\ell = -\log \sum_j W_{yj} p_j`, with gradient in the logits

.. math::
  \frac{\partial \ell}{\partial z_j} = p_j - \frac{W_{yj}\, p_j}{\sum_k W_{yk} p_k}.

When an example of class y is predicted as class k with :math:`p_k \to 1`,
the loss tends to :math:`-\log W_{yk}` (bounded) and every gradient entry
tends to 0: the true class is pulled up with force
:math:`p_y (W_{yy}/W_{yk} - 1)`, which vanishes with :math:`p_y`. Cross-
entropy's pull is :math:`1 - p_y \to 1`. So once a whole class drifts into a
neighbour early in training, nothing brings it back: the class is absorbed.

  python -m simsoft.collapse --root SWEEP_ROOT [--experiment digits_lenet]

For every finished log-sum run it restores model B, predicts the training
split and reports: accuracy, the classes with training recall below 50 %
(absorbed, and where they went), the share of training examples that are
confident mistakes (:math:`\max p > 0.9`, wrong), and for those examples the
mean gradient norm :math:`\lVert \partial \ell / \partial z \rVert` under
SimLoss and under cross-entropy.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
from jax.typing import ArrayLike
import numpy as np
from absl import app, flags

from simsoft import config as config_lib
from simsoft import errors
from simsoft import losses
from simsoft import progress
from simsoft import sharding

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """CLI flags, defined only when run as a program (tests import this module beside sweep)."""
  flags.DEFINE_string(
      "root", None, "A sweep root (DIR/<experiment>/seed<s>/<run>)."
  )
  flags.DEFINE_string("experiment", "*", "Experiment name or glob.")
  flags.DEFINE_string("runs", "*log_sum*", "Run-name glob.")
  flags.DEFINE_string("out", "", "Write the rows as JSON here.")
  flags.mark_flags_as_required(["root"])


def logit_gradients(
    logits: ArrayLike, labels: ArrayLike, weights: ArrayLike
) -> tuple[jax.Array, jax.Array]:
  """Per-example d loss / d logits [N, C] of SimLoss (rows W) and of cross-entropy."""
  log_sum = jax.vmap(
      jax.grad(
          lambda z, y: losses.similarity_log_loss(z[None], y[None], weights)[0]
      )
  )
  ce = jax.vmap(
      jax.grad(
          lambda z, y: losses.similarity_cross_entropy(
              z[None], y[None], jnp.eye(weights.shape[0]), alpha=0.0
          )[0]
      )
  )
  return log_sum(logits, labels), ce(logits, labels)


def diagnose(workdir: str) -> dict:
  """Restores model B of a finished run and measures the collapse on its training split."""
  from simsoft import data as data_lib  # pylint: disable=g-import-not-at-top
  from simsoft import phases  # pylint: disable=g-import-not-at-top
  from simsoft.run import Run  # pylint: disable=g-import-not-at-top
  from simsoft import train_step as step_lib  # pylint: disable=g-import-not-at-top

  from simsoft import checkpoint as ckpt  # pylint: disable=g-import-not-at-top

  saved = ckpt.read_json(os.path.join(workdir, "config.json"))
  if saved is None:
    raise errors.MissingInputError(
        f"{workdir} has results.json but no config.json; is it a simsoft run?"
    )
  try:
    config = ml_collections.ConfigDict(saved)
    ds = data_lib.from_config(config.dataset)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    raise errors.DamagedFileError(
        f"{workdir}/config.json is not a usable run config ({ckpt.short_error(e)})"
    ) from None
  run = Run(
      config=config,
      workdir=workdir,
      mesh=sharding.make_mesh(jax.devices()[:1]),
      dataset=ds,
  )
  graphdef, state = phases.restore_final(run, "retrain", read_only=True)
  weights = losses.similarity_target_matrix(
      state["similarity"], **config_lib.loss_amount(config)
  )
  predict = jax.jit(
      step_lib.make_predict_fn(graphdef, mean=ds.mean, std=ds.std)
  )
  split = ds.split("train")
  images = np.asarray(split.images, np.float32)
  if split.images.dtype == np.uint8:
    images = images / 255.0
  logits = np.concatenate(
      [
          np.asarray(
              predict(
                  state["params"], state["model_state"], images[i : i + 512]
              )
          )
          for i in range(0, len(images), 512)
      ]
  )
  labels = np.asarray(split.labels)
  pred = logits.argmax(1)
  probs = np.asarray(jax.nn.softmax(logits))
  absorbed = {}
  for c in range(ds.num_classes):
    mine = labels == c
    recall = float(np.mean(pred[mine] == c))
    if recall < 0.5:
      absorbed[int(c)] = {
          "recall": recall,
          "predicted_as": int(np.bincount(pred[mine]).argmax()),
      }
  confident_wrong = (pred != labels) & (probs.max(1) > 0.9)
  row = {
      "workdir": workdir,
      "train_accuracy": float(np.mean(pred == labels)),
      "absorbed_classes": absorbed,
      "confident_mistakes": float(np.mean(confident_wrong)),
  }
  if confident_wrong.any():
    g_log, g_ce = logit_gradients(
        jnp.asarray(logits[confident_wrong]),
        jnp.asarray(labels[confident_wrong]),
        weights,
    )
    row["grad_norm_log_sum"] = float(jnp.linalg.norm(g_log, axis=1).mean())
    row["grad_norm_cross_entropy"] = float(jnp.linalg.norm(g_ce, axis=1).mean())
  return row


def main(argv: Sequence[str]) -> None:
  progress.configure_logging(FLAGS)
  code = errors.guarded(_main, argv)
  if code:
    sys.exit(code if code == errors.InterruptedRun.exit_code else 2)


def finished_runs(
    root: str, experiment: str = "*", runs: str = "*"
) -> list[str]:
  """The run directories under a sweep root that hold results.json.

  Raises:
    MissingInputError: the root is not a directory, or holds no such run.
  """
  if not root or not os.path.isdir(root):
    what = "is not a directory" if os.path.exists(root) else "does not exist"
    raise errors.MissingInputError(
        f"--root {root!r} {what}; give a sweep root (DIR/<experiment>/seed<s>/<run>)"
    )
  pattern = os.path.join(glob.escape(root), experiment, "seed*", runs)
  found = [
      w
      for w in sorted(glob.glob(pattern))
      if os.path.exists(os.path.join(w, "results.json"))
  ]
  if not found:
    raise errors.MissingInputError(
        f"--root {root} holds no finished run matching {experiment}/seed*/{runs}; "
        "check --experiment and --runs"
    )
  return found


def _main() -> None:
  rows = []
  if FLAGS.out and os.path.isdir(FLAGS.out):
    raise errors.OSFailure(f"--out {FLAGS.out} is a directory; give a file")
  for workdir in finished_runs(FLAGS.root, FLAGS.experiment, FLAGS.runs):
    row = diagnose(workdir)
    rows.append(row)
    where = {k: v["predicted_as"] for k, v in row["absorbed_classes"].items()}
    grads = (
        f"grad |log_sum| {row['grad_norm_log_sum']:.2e} vs CE {row['grad_norm_cross_entropy']:.3f}"
        if "grad_norm_log_sum" in row
        else "no confident mistakes"
    )
    print(
        f"{os.path.relpath(workdir, FLAGS.root)}: train acc {100 * row['train_accuracy']:.2f} %, "
        f"absorbed {where or 'none'}, confident mistakes {100 * row['confident_mistakes']:.2f} %, "
        f"{grads}",
        flush=True,
    )
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
