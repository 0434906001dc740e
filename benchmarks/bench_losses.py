"""Loss overhead: simsoft's train step with each similarity loss vs plain optax cross-entropy.

The same jitted simsoft step (lenet on 28x28x1, batch 128, SGD momentum, as
configs/fashion_mnist.py) is built three times, differing only in the loss:

  optax_ce        optax.softmax_cross_entropy_with_integer_labels (baseline)
  soft_target     simsoft.losses.similarity_cross_entropy, alpha = 0.5
  log_sum         simsoft.losses.similarity_log_loss (SimLoss weights, alpha = 0.5)
  optax_ce_again  the baseline built a second time (A/A control: how far apart
                  two identical steps measure on this machine)

All take the same 16 device-resident random batches in turn and a dense
random S, and are
timed step by step, round robin, in one process (so load from other processes
hits all three alike). Target: median paired step-time ratio (loss / optax_ce)
<= 1.02; beside it: best_time_ratio (fastest step over fastest step), the
same ratio on process CPU time (steadier on a shared machine), XLA's cost
analysis of the compiled steps (flops and bytes ratios), and each loss with
its gradient timed alone (loss_alone_us), which bounds the step-time ratio the
loss can cause (implied_cpu_ratio).

  python -m benchmarks.bench_losses                 # ~1 minute on 2 idle cores
  python -m benchmarks.bench_losses --smoke         # 2 steps, checks the script
"""

from __future__ import annotations

import argparse
import statistics

import jax
import numpy as np
import optax

from benchmarks import common, pipeline
from simsoft import train_step as step_lib

TARGET = 1.02


def loss_fns(alpha: float) -> dict[str, step_lib.LossFn]:
  return {
      "optax_ce": lambda logits, labels, s: optax.softmax_cross_entropy_with_integer_labels(
          logits, labels
      ),
      "soft_target": step_lib.make_loss_fn("soft_target", alpha),
      "log_sum": step_lib.make_loss_fn("log_sum", alpha),
      # A/A control: the baseline again, built last; its ratio is the noise floor
      "optax_ce_again": lambda logits, labels, s: optax.softmax_cross_entropy_with_integer_labels(
          logits, labels
      ),
  }


def cost(compiled) -> dict:
  """XLA's cost analysis of a compiled executable: flops, bytes accessed."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
    analysis = analysis[0] if analysis else {}
  return {
      "flops": float(analysis.get("flops", 0.0)),
      "bytes_accessed": float(analysis.get("bytes accessed", 0.0)),
  }


def loss_only(
    fns: dict,
    batch_size: int,
    num_classes: int,
    similarity: np.ndarray,
    *,
    inner: int,
    repeats: int,
) -> dict[str, float]:
  """Seconds per (loss + gradient w.r.t. logits) of each loss alone, on [B, C] logits.

  `inner` evaluations run in one jitted fori_loop (each depends on the last, so
  none is hoisted), so dispatch costs are amortized; CPU clock, median of
  interleaved repeats.
  """
  logits = jax.random.normal(jax.random.key(0), (batch_size, num_classes))
  labels = jax.random.randint(jax.random.key(1), (batch_size,), 0, num_classes)
  s = jax.numpy.asarray(similarity)
  variants = {}
  for name, fn in fns.items():
    grad = jax.grad(lambda z, fn=fn: fn(z, labels, s).mean())

    @jax.jit
    def many(z, grad=grad):
      return jax.lax.fori_loop(
          0, inner, lambda i, acc: acc + grad(z + 1e-3 * acc), z
      )

    jax.block_until_ready(many(logits))
    variants[name] = lambda n, many=many: [
        jax.block_until_ready(many(logits)) for _ in range(n)
    ]
  times = common.interleave(variants, steps=1, repeats=repeats, warmup=1)
  return {
      name: statistics.median(ts) / inner for name, ts in times["cpu"].items()
  }


def make_variant(
    path: pipeline.SimsoftPath, step, batches: list[dict], key: jax.Array
) -> common.Variant:
  """Steps through `batches` in turn (one fixed batch would be memorized, and a
  converged model's tiny gradients change the arithmetic the step does)."""
  holder = {"state": path.state, "i": 0}

  def run(n: int) -> None:
    state, i = holder["state"], holder["i"]
    for _ in range(n):
      state, metrics = step(state, batches[i % len(batches)], key)
      i += 1
    jax.block_until_ready(metrics)
    holder["state"], holder["i"] = state, i

  return run


def main(argv=None) -> list[dict]:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", default="lenet")
  ap.add_argument("--batch_size", type=int, default=128)
  ap.add_argument("--num_classes", type=int, default=10)
  ap.add_argument("--alpha", type=float, default=0.5)
  ap.add_argument(
      "--num_batches",
      type=int,
      default=16,
      help="distinct device-resident batches each variant steps through",
  )
  common.add_common_args(ap, steps=1, repeats=60)
  args = ap.parse_args(argv)
  common.apply_smoke(args)
  if args.smoke:
    args.batch_size, args.num_batches = 8, 2

  info = common.machine()
  split = pipeline.synthetic_split(
      args.batch_size * args.num_batches, (28, 28, 1), args.num_classes
  )
  rng = np.random.default_rng(1)
  similarity = rng.random((args.num_classes, args.num_classes)).astype(
      np.float32
  ) + np.eye(args.num_classes, dtype=np.float32)
  similarity /= similarity.sum(1, keepdims=True)
  variants, costs = {}, {}
  fns = loss_fns(args.alpha)
  if args.smoke:
    del fns[
        "optax_ce_again"
    ]  # a copy of the baseline: nothing new to check, one compile less
  for name, fn in fns.items():
    path = pipeline.simsoft_step(
        model=args.model,
        split=split,
        num_classes=args.num_classes,
        loss_fn=fn,
        optimizer=pipeline.optimizer_config("sgd"),
        batch_size=args.batch_size,
    )
    path.state["similarity"] = jax.device_put(similarity, path.run.replicated)
    batches = [
        pipeline.device_batch(
            split.take(
                np.arange(j * args.batch_size, (j + 1) * args.batch_size)
            ),
            args.batch_size,
            path.run.batch_sharding,
        )
        for j in range(args.num_batches)
    ]
    key = jax.random.key(0)
    compiled = path.step.lower(
        path.state, batches[0], key
    ).compile()  # compiled once
    variants[name] = make_variant(path, compiled, batches, key)
    costs[name] = cost(compiled)

  times = common.interleave(
      variants,
      steps=args.steps,
      repeats=args.repeats,
      warmup=args.warmup,
      on_repeat=lambda r, row: common.emit(
          {
              "bench": "losses",
              "repeat": r,
              **{k: 1e3 * v for k, v in row.items()},
          }
      ),
  )
  rows = common.summarize(times, base="optax_ce", batch_size=args.batch_size)
  alone = loss_only(
      fns,
      args.batch_size,
      args.num_classes,
      similarity,
      inner=10 if args.smoke else 200,
      repeats=args.repeats if args.smoke else 15,
  )
  base = next(r for r in rows if r["variant"] == "optax_ce")
  for row in rows:
    name = row["variant"]
    row["meets_target"] = (
        name.startswith("optax_ce") or row["time_ratio"] <= TARGET
    )
    row["flops_ratio"] = costs[name]["flops"] / costs["optax_ce"]["flops"]
    row["bytes_ratio"] = (
        costs[name]["bytes_accessed"] / costs["optax_ce"]["bytes_accessed"]
    )
    row["loss_alone_us"] = 1e6 * alone[name]
    # the step's CPU time if the loss were the only difference
    row["implied_cpu_ratio"] = 1.0 + (alone[name] - alone["optax_ce"]) / (
        1e-3 * base["cpu_step_ms"]
    )
  summary = {
      "bench": "losses",
      "summary": True,
      "model": args.model,
      "batch_size": args.batch_size,
      "steps": args.steps,
      "repeats": args.repeats,
      "target_time_ratio": TARGET,
      "rows": rows,
      "costs": costs,
      "machine": info,
  }
  common.emit(summary)
  common.table(
      rows,
      [
          "variant",
          "step_ms",
          "time_ratio",
          "best_time_ratio",
          "cpu_step_ms",
          "cpu_time_ratio",
          "flops_ratio",
          "bytes_ratio",
          "loss_alone_us",
          "implied_cpu_ratio",
          "meets_target",
      ],
      title=f"train step, {args.model} batch {args.batch_size}: step-time ratio to "
      f"optax_ce (target <= {TARGET}), median of {args.repeats} paired repeats",
  )
  return rows


if __name__ == "__main__":
  main()
