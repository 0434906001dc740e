"""Loss overhead: simsoft's train step with each similarity loss vs plain optax cross-entropy.

The same jitted simsoft step (lenet on 28x28x1, batch 128, SGD momentum, as
configs/fashion_mnist.py) is built three times, differing only in the loss:

  optax_ce        optax.softmax_cross_entropy_with_integer_labels (baseline)
  soft_target     simsoft.losses.similarity_cross_entropy, alpha = 0.5
  log_sum         simsoft.losses.similarity_log_loss (SimLoss weights, alpha = 0.5)

All three take the same device-resident batch and a dense random S, and are
timed in interleaved blocks in one process. Target: median step-time ratio
(loss / optax_ce) <= 1.02.

  python -m benchmarks.bench_losses                 # ~2 minutes on 2 cores
  python -m benchmarks.bench_losses --smoke         # 2 steps, checks the script
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import optax

from benchmarks import common, pipeline
from simsoft import train_step as step_lib

TARGET = 1.02


def loss_fns(alpha: float) -> dict[str, step_lib.LossFn]:
  return {
      "optax_ce": lambda logits, labels, s: optax.softmax_cross_entropy_with_integer_labels(
          logits, labels),
      "soft_target": step_lib.make_loss_fn("soft_target", alpha),
      "log_sum": step_lib.make_loss_fn("log_sum", alpha),
  }


def make_variant(path: pipeline.SimsoftPath, batch: dict, key: jax.Array) -> common.Variant:
  holder = {"state": path.state}

  def run(n: int) -> None:
    state = holder["state"]
    for _ in range(n):
      state, metrics = path.step(state, batch, key)
    jax.block_until_ready(metrics)
    holder["state"] = state

  return run


def main(argv=None) -> list[dict]:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", default="lenet")
  ap.add_argument("--batch_size", type=int, default=128)
  ap.add_argument("--num_classes", type=int, default=10)
  ap.add_argument("--alpha", type=float, default=0.5)
  common.add_common_args(ap, steps=10, repeats=15)
  args = ap.parse_args(argv)
  common.apply_smoke(args)
  if args.smoke:
    args.batch_size = 8

  info = common.machine()
  split = pipeline.synthetic_split(args.batch_size, (28, 28, 1), args.num_classes)
  rng = np.random.default_rng(1)
  similarity = rng.random((args.num_classes, args.num_classes)).astype(np.float32) + np.eye(
      args.num_classes, dtype=np.float32)
  similarity /= similarity.sum(1, keepdims=True)
  variants = {}
  for name, fn in loss_fns(args.alpha).items():
    path = pipeline.simsoft_step(model=args.model, split=split, num_classes=args.num_classes,
                                 loss_fn=fn, optimizer=pipeline.optimizer_config("sgd"),
                                 batch_size=args.batch_size)
    path.state["similarity"] = jax.device_put(similarity, path.run.replicated)
    batch = pipeline.device_batch(split, args.batch_size, path.run.batch_sharding)
    variants[name] = make_variant(path, batch, jax.random.key(0))

  times = common.interleave(
      variants, steps=args.steps, repeats=args.repeats, warmup=args.warmup,
      on_repeat=lambda r, row: common.emit(
          {"bench": "losses", "repeat": r, **{k: 1e3 * v for k, v in row.items()}}))
  rows = common.summarize(times, base="optax_ce", batch_size=args.batch_size)
  for row in rows:
    row["meets_target"] = row["variant"] == "optax_ce" or row["time_ratio"] <= TARGET
  summary = {"bench": "losses", "summary": True, "model": args.model,
             "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
             "target_time_ratio": TARGET, "rows": rows, "machine": info}
  common.emit(summary)
  common.table(rows, ["variant", "step_ms", "images_per_s", "time_ratio", "time_ratio_min",
                      "time_ratio_max", "meets_target"],
               title=f"train step, {args.model} batch {args.batch_size}: step-time ratio to "
                     f"optax_ce (target <= {TARGET}), median of {args.repeats} paired repeats")
  return rows


if __name__ == "__main__":
  main()
