"""Estimation pass (forward + update_stats with features) vs plain evaluation pass.

Both passes run the same small flax.nnx CNN over the same device-resident
batches, one jitted step per batch, in one process; repeats alternate which
pass goes first. Prints one JSON line per repeat, a summary JSON line and a
short table. Target: median(estimate / evaluate) <= 1.10.

  python -m benchmarks.bench_similarity                    # random 28x28, 10 classes
  python -m benchmarks.bench_similarity --dataset digits   # sklearn digits, 8x8

With several devices the batch is sharded over a ('data',) mesh.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import flax.nnx as nnx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from simsoft.similarity import init_stats, update_stats


class SmallCNN(nnx.Module):
  """conv32-pool-conv64-pool-dense(features)-dense(classes); NHWC input."""

  def __init__(
      self,
      channels: int,
      num_classes: int,
      feature_dim: int,
      side: int,
      *,
      rngs,
  ):
    self.conv1 = nnx.Conv(channels, 32, (3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
    self.dense = nnx.Linear(64 * (side // 4) ** 2, feature_dim, rngs=rngs)
    self.head = nnx.Linear(feature_dim, num_classes, rngs=rngs)

  def features(self, x):
    x = nnx.avg_pool(nnx.relu(self.conv1(x)), (2, 2), (2, 2))
    x = nnx.avg_pool(nnx.relu(self.conv2(x)), (2, 2), (2, 2))
    return nnx.relu(self.dense(x.reshape(x.shape[0], -1)))

  def __call__(self, x):
    h = self.features(x)
    return self.head(h), h


def _data(name: str, n: int, seed: int):
  if name == "digits":
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    reps = -(-n // len(y))
    x = np.tile((x / 16.0).reshape(-1, 8, 8, 1), (reps, 1, 1, 1))[:n]
    return x.astype(np.float32), np.tile(y, reps)[:n].astype(np.int32), 10
  r = np.random.default_rng(seed)
  return (
      r.random((n, 28, 28, 1), np.float32),
      r.integers(0, 10, n).astype(np.int32),
      10,
  )


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--dataset", choices=["random", "digits"], default="random")
  ap.add_argument("--num_examples", type=int, default=4096)
  ap.add_argument("--batch_size", type=int, default=256)
  ap.add_argument("--feature_dim", type=int, default=128)
  ap.add_argument("--repeats", type=int, default=9)
  args = ap.parse_args()

  x, y, c = _data(args.dataset, args.num_examples, 0)
  model = SmallCNN(
      x.shape[-1], c, args.feature_dim, x.shape[1], rngs=nnx.Rngs(0)
  )
  graphdef, params = nnx.split(model)

  mesh = jax.make_mesh(
      (jax.device_count(),),
      ("data",),
      axis_types=(jax.sharding.AxisType.Explicit,),
  )
  batch_sharding = NamedSharding(mesh, P("data"))
  bs = args.batch_size
  batches = []
  for s in range(0, len(y), bs):  # pad the last batch; mask marks real examples
    xb, yb = x[s : s + bs], y[s : s + bs]
    pad = bs - len(yb)
    mb = np.arange(bs) < len(yb)
    xb = np.concatenate([xb, np.zeros((pad,) + xb.shape[1:], xb.dtype)])
    yb = np.concatenate([yb, np.zeros(pad, yb.dtype)])
    batches.append(
        tuple(jax.device_put(a, batch_sharding) for a in (xb, yb, mb))
    )
  params = jax.device_put(params, NamedSharding(mesh, P()))

  @jax.jit
  def eval_step(params, correct, xb, yb, mb):
    logits, _ = nnx.merge(graphdef, params)(xb)
    return correct + jnp.sum((jnp.argmax(logits, -1) == yb) & mb)

  @jax.jit
  def estimate_step(params, stats, xb, yb, mb):
    logits, feats = nnx.merge(graphdef, params)(xb)
    return update_stats(stats, logits, yb, feats, mb)

  def run_eval():
    correct = jnp.zeros((), jnp.int32)
    for xb, yb, mb in batches:
      correct = eval_step(params, correct, xb, yb, mb)
    return jax.block_until_ready(correct)

  def run_estimate():
    stats = init_stats(c, args.feature_dim)
    for xb, yb, mb in batches:
      stats = estimate_step(params, stats, xb, yb, mb)
    return jax.block_until_ready(stats)

  def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out

  _, correct = timed(run_eval)  # compile + warm up both
  _, stats = timed(run_estimate)
  assert int(correct) == int(
      stats.count_correct.sum()
  ), "the two passes disagree on accuracy"
  assert int(stats.count.sum()) == len(y)

  ratios, t_eval, t_est = [], [], []
  for r in range(args.repeats):
    order = (run_eval, run_estimate) if r % 2 == 0 else (run_estimate, run_eval)
    times = {fn.__name__: timed(fn)[0] for fn in order}
    t_eval.append(times["run_eval"])
    t_est.append(times["run_estimate"])
    ratios.append(t_est[-1] / t_eval[-1])
    print(
        json.dumps(
            {
                "repeat": r,
                "eval_s": round(t_eval[-1], 5),
                "estimate_s": round(t_est[-1], 5),
                "ratio": round(ratios[-1], 4),
            }
        )
    )

  summary = {
      "benchmark": "similarity_estimation_vs_eval",
      "device": jax.devices()[0].device_kind,
      "num_devices": jax.device_count(),
      "dataset": args.dataset,
      "num_examples": len(y),
      "batch_size": bs,
      "feature_dim": args.feature_dim,
      "num_classes": c,
      "repeats": args.repeats,
      "eval_median_s": round(statistics.median(t_eval), 5),
      "estimate_median_s": round(statistics.median(t_est), 5),
      "median_ratio": round(statistics.median(ratios), 4),
      "target_ratio": 1.10,
  }
  summary["meets_target"] = summary["median_ratio"] <= summary["target_ratio"]
  print(json.dumps(summary))
  print(f"\n{'pass':<12}{'median s':>12}{'examples/s':>14}")
  for name, key in (
      ("evaluate", "eval_median_s"),
      ("estimate", "estimate_median_s"),
  ):
    print(f"{name:<12}{summary[key]:>12.4f}{len(y) / summary[key]:>14.0f}")
  print(
      f"median ratio estimate/evaluate = {summary['median_ratio']:.3f} (target <= 1.10)"
  )


if __name__ == "__main__":
  main()
