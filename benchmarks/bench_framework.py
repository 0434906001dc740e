"""Framework overhead: simsoft's training path vs a minimal hand-written jax.jit loop.

Same model (lenet, 28x28x1), optimizer (simsoft's SGD momentum 0.9 + weight
decay + cosine schedule, the optax transformation make_optimizer returns),
batch size 128, in one process, interleaved blocks of steps:

  simsoft        loop.train_model's loop (without checkpoints): the step from
                 simsoft.train_step.make_train_step, fed and jitted by
                 simsoft.input_pipeline's HostInput (numpy batches from
                 train_batches + make_array_from_process_local_data, state
                 donated, batch sharded over the ('data',) mesh)
  simsoft_device its DeviceInput (split on device, batch gathered on device),
                 one step per dispatch (config.input default); _scan_k: k steps
                 per dispatch in a lax.scan (config.input.steps_per_dispatch=k),
                 _unrolled with config.input.scan_unroll=True
  handwritten    params/opt_state donated to a jax.jit step (normalize, forward,
                 cross-entropy, grad, optax update) fed numpy batches by a
                 permutation + jax.device_put: the minimal loop a user would write
  handwritten_resident   the same step on one device-resident batch (no host input)
  scan_k / dispatch_k    k steps in one jitted lax.scan over k device-resident
                 batches vs the same k steps dispatched one by one (for the
                 on-device fast path's design; issue 7 part 4); scan_k_unrolled
                 is the scan with unroll=True (no while loop left in the HLO)

Target: images/s ratio simsoft / handwritten >= 0.95 (and simsoft_device /
handwritten_resident, the two on-device loops). With --train_model also
times simsoft.loop.train_model itself end to end (checkpoint + logging
included) as the slope of wall time over two run lengths.

  python -m benchmarks.bench_framework            # ~10 minutes on 2 cores (rolled scans are slow on CPU)
  python -m benchmarks.bench_framework --train_model
  python -m benchmarks.bench_framework --smoke
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import common, pipeline
from simsoft import data as data_lib
from simsoft import models as models_lib
from simsoft import sharding
from simsoft import train_step as step_lib

TARGET = 0.95


def simsoft_variant(
    path: pipeline.SimsoftPath, feeder, log_every: int
) -> common.Variant:
  """loop.train_model's loop without checkpoints: feeder.run chunks, a sync at each log."""
  key = jax.jit(lambda: jax.random.key(0), out_shardings=path.run.replicated)()
  holder = {"state": jax.tree.map(jnp.copy, path.state), "done": 0}
  k = feeder.max_steps_per_dispatch

  def run(n: int) -> None:  # n steps, in chunks of k
    state, done = holder["state"], holder["done"]
    for _ in range(-(-n // k)):
      state, metrics = feeder.run(state, key, k)
      done += k
      if done % log_every < k:
        {name: float(v) for name, v in metrics.items()}
    jax.block_until_ready(metrics)
    holder["state"], holder["done"] = state, done

  return run


def handwritten(
    model: str,
    split: data_lib.ArraySplit,
    num_classes: int,
    tx: optax.GradientTransformation,
    mean,
    std,
):
  """(params, opt_state, step) of the minimal loop; step(params, opt, x, y) -> (params, opt, loss)."""

  def build():
    m = models_lib.create_model(
        model,
        num_classes=num_classes,
        input_shape=split.image_shape,
        rngs=nnx.Rngs(0),
    )
    return nnx.split(m, nnx.Param, ...)

  graphdef = nnx.graphdef(
      nnx.eval_shape(
          lambda: models_lib.create_model(
              model,
              num_classes=num_classes,
              input_shape=split.image_shape,
              rngs=nnx.Rngs(0),
          )
      )
  )

  @jax.jit
  def init():
    _, params, rest = build()
    return params, rest, tx.init(params)

  params, rest, opt_state = init()
  mean, std = jnp.asarray(mean), jnp.asarray(std)

  def step(params, opt_state, x, y):
    def loss(p):
      logits = nnx.merge(graphdef, p, rest, copy=True)((x - mean) / std)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  return params, opt_state, step


def host_fed(step_jit, params, opt_state, split, batch_size) -> common.Variant:
  images = split.images
  holder = {
      "p": params,
      "o": opt_state,
      "i": 0,
      "perm": np.random.default_rng(0).permutation(len(split)),
  }
  steps = len(split) // batch_size

  def run(n: int) -> None:
    p, o, i, perm = holder["p"], holder["o"], holder["i"], holder["perm"]
    for _ in range(n):
      if i == steps:
        perm, i = np.random.default_rng(i).permutation(len(split)), 0
      idx = perm[i * batch_size : (i + 1) * batch_size]
      x = jax.device_put(images[idx].astype(np.float32) * np.float32(1 / 255))
      y = jax.device_put(split.labels[idx])
      p, o, loss = step_jit(p, o, x, y)
      i += 1
    jax.block_until_ready(loss)
    holder.update(p=p, o=o, i=i, perm=perm)

  return run


def resident(step_jit, params, opt_state, x, y) -> common.Variant:
  holder = {"p": params, "o": opt_state}

  def run(n: int) -> None:
    p, o = holder["p"], holder["o"]
    for _ in range(n):
      p, o, loss = step_jit(p, o, x, y)
    jax.block_until_ready(loss)
    holder.update(p=p, o=o)

  return run


def scan_and_dispatch(step, step_jit, params, opt_state, xs, ys):
  """Variants running k = len(xs) steps per unit: scan, fully unrolled scan, dispatch."""
  k = xs.shape[0]

  def chunk(p, o, xs, ys, unroll):
    (p, o), _ = jax.lax.scan(
        lambda c, xy: (step(*c, *xy)[:2], None), (p, o), (xs, ys), unroll=unroll
    )
    return p, o

  def scanned(unroll):
    fn = jax.jit(
        lambda p, o, xs, ys: chunk(p, o, xs, ys, unroll), donate_argnums=(0, 1)
    )
    holder = {
        "p": jax.tree.map(jnp.copy, params),
        "o": jax.tree.map(jnp.copy, opt_state),
    }

    def run(n: int) -> None:  # n counted in steps; rounds up to whole chunks
      p, o = holder["p"], holder["o"]
      for _ in range(-(-n // k)):
        p, o = fn(p, o, xs, ys)
      jax.block_until_ready(p)
      holder.update(p=p, o=o)

    return run

  holder = {
      "p": jax.tree.map(jnp.copy, params),
      "o": jax.tree.map(jnp.copy, opt_state),
  }

  def dispatch_run(n: int) -> None:
    p, o = holder["p"], holder["o"]
    for _ in range(-(-n // k)):
      for j in range(k):
        p, o, loss = step_jit(p, o, xs[j], ys[j])
    jax.block_until_ready(p)
    holder.update(p=p, o=o)

  return scanned(1), scanned(True), dispatch_run


def train_model_slope(model, split, batch_size, epochs_pair, repeats):
  """Seconds per step of simsoft.loop.train_model: slope of wall time over two lengths."""
  from simsoft import config as config_lib
  from simsoft import loop
  from simsoft.run import Run

  mean, std = data_lib.channel_stats(split.images)
  ds = data_lib.Dataset(
      name="bench",
      num_classes=10,
      class_names=tuple(map(str, range(10))),
      image_shape=split.image_shape,
      mean=mean,
      std=std,
      augmentation="none",
      splits={"train": split},
  )
  steps_per_epoch = len(split) // batch_size
  slopes = []
  for _ in range(repeats):
    walls = []
    for epochs in epochs_pair:
      c = config_lib.base_config()
      c.model.name, c.batch_size = model, batch_size
      c.estimate.epochs = epochs
      c.checkpoint.every_steps, c.log_every_steps = 500, 100
      with tempfile.TemporaryDirectory() as workdir:
        run = Run(
            config=c, workdir=workdir, mesh=sharding.make_mesh(), dataset=ds
        )
        start = time.perf_counter()
        loop.train_model(
            run,
            "estimate",
            loss_form="soft_target",
            amount={"alpha": 0.0},
            similarity=np.eye(10, dtype=np.float32),
        )
        walls.append(time.perf_counter() - start)
    slopes.append(
        (walls[1] - walls[0])
        / ((epochs_pair[1] - epochs_pair[0]) * steps_per_epoch)
    )
  return slopes


def main(argv=None) -> list[dict]:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", default="lenet")
  ap.add_argument("--batch_size", type=int, default=128)
  ap.add_argument(
      "--num_examples",
      type=int,
      default=8192,
      help="training examples held in memory (real Fashion-MNIST if installed)",
  )
  ap.add_argument(
      "--scan_k", type=int, default=10, help="steps per lax.scan chunk"
  )
  ap.add_argument(
      "--train_model",
      action="store_true",
      help="also time simsoft.loop.train_model end to end (imports TensorFlow)",
  )
  common.add_common_args(ap, steps=10, repeats=11)
  args = ap.parse_args(argv)
  common.apply_smoke(args)
  if args.smoke:
    args.batch_size, args.num_examples, args.scan_k = 8, 64, 2

  info = common.machine()
  split, source = pipeline.fashion_mnist_or_synthetic(args.num_examples)
  mean, std = data_lib.channel_stats(split.images)
  opt_cfg = pipeline.optimizer_config("sgd")
  steps_per_epoch = len(split) // args.batch_size

  path = pipeline.simsoft_step(
      model=args.model,
      split=split,
      num_classes=10,
      loss_fn=step_lib.make_loss_fn("soft_target", 0.0),
      optimizer=opt_cfg,
      batch_size=args.batch_size,
  )
  tx = step_lib.make_optimizer(
      opt_cfg,
      steps_per_epoch=steps_per_epoch,
      total_steps=100 * steps_per_epoch,
  )
  params, opt_state, step = handwritten(args.model, split, 10, tx, mean, std)
  step_jit = jax.jit(step, donate_argnums=(0, 1))
  copy = lambda t: jax.tree.map(jnp.copy, t)
  x0 = jnp.asarray(split.images[: args.batch_size].astype(np.float32) / 255)
  y0 = jnp.asarray(split.labels[: args.batch_size])
  k = args.scan_k
  idx = np.arange(k * args.batch_size) % len(split)
  xs = jnp.asarray(
      split.images[idx]
      .astype(np.float32)
      .reshape((k, args.batch_size) + split.image_shape)
      / 255
  )
  ys = jnp.asarray(split.labels[idx].reshape(k, args.batch_size))
  scan_run, unrolled_run, dispatch_run = scan_and_dispatch(
      step, step_jit, params, opt_state, xs, ys
  )

  feeders = {
      "simsoft": pipeline.simsoft_feeder(path, "host"),
      "simsoft_device": pipeline.simsoft_feeder(path, "device"),
      f"simsoft_device_scan_{k}": pipeline.simsoft_feeder(
          path, "device", steps_per_dispatch=k
      ),
      f"simsoft_device_scan_{k}_unrolled": pipeline.simsoft_feeder(
          path, "device", steps_per_dispatch=k, scan_unroll=True
      ),
  }
  variants = {
      "handwritten": host_fed(
          step_jit, copy(params), copy(opt_state), split, args.batch_size
      ),
      **{
          name: simsoft_variant(path, f, log_every=100)
          for name, f in feeders.items()
      },
      "handwritten_resident": resident(
          step_jit, copy(params), copy(opt_state), x0, y0
      ),
      f"dispatch_{k}": dispatch_run,
      f"scan_{k}": scan_run,
      f"scan_{k}_unrolled": unrolled_run,
  }
  steps = (
      -(-args.steps // k) * k
  )  # whole scan chunks, same count for every variant
  times = common.interleave(
      variants,
      steps=steps,
      repeats=args.repeats,
      warmup=max(args.warmup, k),
      on_repeat=lambda r, row: common.emit(
          {
              "bench": "framework",
              "repeat": r,
              **{n: 1e3 * v for n, v in row.items()},
          }
      ),
  )
  rows = common.summarize(times, base="handwritten", batch_size=args.batch_size)
  byname = {r["variant"]: r for r in rows}
  byname["simsoft"]["meets_target"] = (
      byname["simsoft"]["throughput_ratio"] >= TARGET
  )
  device_vs_resident = statistics.median(
      [
          r / d
          for r, d in zip(
              times["wall"]["handwritten_resident"],
              times["wall"]["simsoft_device"],
          )
      ]
  )
  byname["simsoft_device"]["vs_handwritten_resident"] = device_vs_resident
  byname["simsoft_device"]["meets_target"] = device_vs_resident >= TARGET
  paired = lambda a, b: statistics.median(
      [x / y for x, y in zip(times["wall"][a], times["wall"][b])]
  )
  scan_ratio = paired(f"dispatch_{k}", f"scan_{k}")
  unrolled_ratio = paired(f"dispatch_{k}", f"scan_{k}_unrolled")

  extra = {}
  if args.train_model:
    pair = (1, 2) if args.smoke else (1, 4)
    n = min(len(split), (16 if args.smoke else 64) * args.batch_size)
    slopes = train_model_slope(
        args.model,
        split.take(np.arange(n)),
        args.batch_size,
        pair,
        1 if args.smoke else 3,
    )
    per_step = statistics.median(slopes)
    hand = statistics.median(times["wall"]["handwritten"])
    extra["train_model"] = {
        "step_ms": 1e3 * per_step,
        "images_per_s": args.batch_size / per_step,
        "throughput_ratio_vs_handwritten_median": hand / per_step,
        "slopes_ms": [1e3 * s for s in slopes],
        "epochs_pair": pair,
        "examples": n,
    }
    rows.append(
        {
            "variant": "train_model (slope)",
            "step_ms": 1e3 * per_step,
            "images_per_s": args.batch_size / per_step,
            "throughput_ratio": hand / per_step,
        }
    )

  common.emit(
      {
          "bench": "framework",
          "summary": True,
          "model": args.model,
          "data": source,
          "batch_size": args.batch_size,
          "steps": steps,
          "repeats": args.repeats,
          "target_throughput_ratio": TARGET,
          "rows": rows,
          "scan_speedup_over_dispatch": scan_ratio,
          "unrolled_scan_speedup_over_dispatch": unrolled_ratio,
          **extra,
          "machine": info,
      }
  )
  common.table(
      rows,
      [
          "variant",
          "step_ms",
          "images_per_s",
          "throughput_ratio",
          "best_time_ratio",
          "cpu_time_ratio",
          "vs_handwritten_resident",
          "meets_target",
      ],
      title=f"{args.model} batch {args.batch_size} on {source}: images/s ratio to the "
      f"hand-written loop (target simsoft >= {TARGET}); lax.scan over {k} steps "
      f"is {scan_ratio:.2f}x the per-step dispatch speed ({unrolled_ratio:.2f}x unrolled)",
  )
  return rows


if __name__ == "__main__":
  main()
