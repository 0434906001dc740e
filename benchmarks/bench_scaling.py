"""Data-parallel scaling: simsoft's sharded step on 1, 2 and 4 simulated CPU devices.

One worker process per device count N (XLA_FLAGS=--xla_force_host_platform_device_count=N
set before JAX starts) builds simsoft's step as train.py does (state replicated,
batch sharded over the ('data',) mesh; XLA inserts the gradient all-reduce) and
waits; the parent asks the workers for blocks of steps in turn (rotating the
order each repeat), so their timings interleave while only one runs at a time.
The global batch is fixed (default 128), so on this fixed 2-core host the ideal
is equal images/s for every N: any loss is per-device overhead of the sharded
path (collectives, partitioned launches), not a hardware split.

Also prints, on paper, the gradient bytes one data-parallel step all-reduces
for resnet18 and wrn-28-10 and what that costs on TPU v4 / v5e ICI (see
RESULTS.md for the bandwidth figures and their sources).

  python -m benchmarks.bench_scaling                    # lenet, batch 128, ~3 minutes
  python -m benchmarks.bench_scaling --model resnet20 --image_size 32 --channels 3
  python -m benchmarks.bench_scaling --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Per-chip, one direction, all links together (see RESULTS.md for sources).
ICI_BYTES_PER_S = {"TPU v4": 300e9, "TPU v5e": 200e9}
PEAK_BF16_FLOPS = {"TPU v4": 275e12, "TPU v5e": 197e12}


def worker(args) -> None:
  """Child: build the sharded simsoft step, then serve 'steps n' requests on stdin."""
  import jax
  import optax

  from benchmarks import pipeline

  shape = (args.image_size, args.image_size, args.channels)
  split = pipeline.synthetic_split(max(args.batch_size, 256), shape, 10)
  path = pipeline.simsoft_step(
      model=args.model,
      split=split,
      num_classes=10,
      loss_fn=lambda logits, labels, s: optax.softmax_cross_entropy_with_integer_labels(
          logits, labels
      ),
      optimizer=pipeline.optimizer_config("sgd"),
      batch_size=args.batch_size,
  )
  batch = pipeline.device_batch(split, args.batch_size, path.run.batch_sharding)
  key = jax.random.key(0)
  state = path.state
  for _ in range(max(args.warmup, 1)):
    state, metrics = path.step(state, batch, key)
  jax.block_until_ready(metrics)
  print(
      json.dumps(
          {
              "ready": True,
              "devices": jax.device_count(),
              "batch_per_device": args.batch_size // jax.device_count(),
          }
      ),
      flush=True,
  )
  for line in sys.stdin:
    n = int(line.split()[1])
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
      state, metrics = path.step(state, batch, key)
    jax.block_until_ready(metrics)
    print(
        json.dumps(
            {
                "wall": (time.perf_counter() - wall) / n,
                "cpu": (time.process_time() - cpu) / n,
            }
        ),
        flush=True,
    )


def start_worker(n: int, args) -> subprocess.Popen:
  flags = (
      os.environ.get("XLA_FLAGS", "")
      .replace("--xla_force_host_platform_device_count=4", "")
      .strip()
  )
  env = dict(
      os.environ,
      XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={n}".strip(),
      JAX_PLATFORMS="cpu",
  )
  cmd = [
      sys.executable,
      "-m",
      "benchmarks.bench_scaling",
      "--worker",
      "--model",
      args.model,
      "--batch_size",
      str(args.batch_size),
      "--image_size",
      str(args.image_size),
      "--channels",
      str(args.channels),
      "--warmup",
      str(args.warmup),
  ]
  proc = subprocess.Popen(
      cmd,
      env=env,
      cwd=ROOT,
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
  )
  return proc


def _read(proc: subprocess.Popen) -> dict:
  line = proc.stdout.readline()
  if not line:
    raise RuntimeError(f"scaling worker exited with code {proc.wait()}")
  return json.loads(line)


def gradient_all_reduce_table(
    num_classes: int = 10, per_chip_batch: int = 128
) -> list[dict]:
  """Gradient bytes per data-parallel step and their ring all-reduce time on TPU ICI."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from simsoft import models as models_lib

  rows = []
  for label, name, kwargs in (
      ("resnet18", "resnet18", {}),
      ("wrn-28-10", "wrn", {"depth": 28, "width": 10}),
  ):
    model = nnx.eval_shape(
        lambda: models_lib.create_model(
            name,
            num_classes=num_classes,
            input_shape=(32, 32, 3),
            rngs=nnx.Rngs(0),
            **kwargs,
        )
    )
    params = models_lib.param_count(model)
    graphdef, p, rest = nnx.split(model, nnx.Param, ...)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    analysis = (
        jax.jit(lambda p, r, x: nnx.merge(graphdef, p, r, copy=True)(x))
        .lower(p, rest, x)
        .cost_analysis()
    )
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    fwd = float(analysis["flops"])
    grad_bytes = 4 * params
    row = {
        "model": label,
        "params": params,
        "gradient_MB_f32": grad_bytes / 1e6,
        "forward_GFLOP_per_image": fwd / 1e9,
    }
    for chip, bw in ICI_BYTES_PER_S.items():
      # ring (reduce-scatter + all-gather): each chip sends and receives 2 (N-1)/N x bytes
      t_comm = 2 * grad_bytes / bw
      t_compute = (
          3 * fwd * per_chip_batch / PEAK_BF16_FLOPS[chip]
      )  # fwd + 2x bwd at peak
      row[f"{chip} all-reduce ms"] = 1e3 * t_comm
      row[f"{chip} compute ms @peak (b{per_chip_batch}/chip)"] = 1e3 * t_compute
      row[f"{chip} comm/compute"] = t_comm / t_compute
    rows.append(row)
  return rows


def main(argv=None) -> list[dict]:
  from benchmarks import common

  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", default="lenet")
  ap.add_argument(
      "--batch_size",
      type=int,
      default=128,
      help="global batch, fixed for every N",
  )
  ap.add_argument("--image_size", type=int, default=28)
  ap.add_argument("--channels", type=int, default=1)
  ap.add_argument("--devices", default="1,2,4")
  ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  common.add_common_args(ap, steps=5, repeats=9)
  args = ap.parse_args(argv)
  if args.worker:
    return worker(args)
  common.apply_smoke(args)
  if args.smoke:
    args.batch_size = 8
  counts = [int(n) for n in args.devices.split(",")]
  for n in counts:
    if n < 1 or args.batch_size % n:
      raise ValueError(
          f"--batch_size {args.batch_size} must divide by every device count, "
          f"got {n}"
      )

  procs = {n: start_worker(n, args) for n in counts}
  try:
    ready = {n: _read(p) for n, p in procs.items()}
    times = {"wall": {n: [] for n in counts}, "cpu": {n: [] for n in counts}}
    for r in range(args.repeats):
      order = counts[r % len(counts) :] + counts[: r % len(counts)]
      row = {}
      for n in order:
        procs[n].stdin.write(f"steps {args.steps}\n")
        procs[n].stdin.flush()
        out = _read(procs[n])
        times["wall"][n].append(out["wall"])
        times["cpu"][n].append(out["cpu"])
        row[str(n)] = 1e3 * out["wall"]
      common.emit({"bench": "scaling", "repeat": r, "step_ms_by_devices": row})
  finally:
    for p in procs.values():
      p.stdin.close()
      p.wait(timeout=60)

  timings = {
      clock: {f"{n} devices": v for n, v in d.items()}
      for clock, d in times.items()
  }
  rows = common.summarize(
      timings, base=f"{counts[0]} devices", batch_size=args.batch_size
  )
  for row, n in zip(rows, counts):
    row["devices"] = n
    row["batch_per_device"] = ready[n]["batch_per_device"]
  paper = gradient_all_reduce_table()
  info = common.machine()
  info["devices"] = "per worker: " + ",".join(map(str, counts))
  common.emit(
      {
          "bench": "scaling",
          "summary": True,
          "model": args.model,
          "global_batch": args.batch_size,
          "steps": args.steps,
          "repeats": args.repeats,
          "rows": rows,
          "all_reduce_on_paper": paper,
          "machine": info,
      }
  )
  common.table(
      rows,
      [
          "variant",
          "batch_per_device",
          "step_ms",
          "images_per_s",
          "throughput_ratio",
          "best_time_ratio",
          "cpu_time_ratio",
      ],
      title=f"{args.model}, global batch {args.batch_size} on {os.cpu_count()} cores: "
      f"throughput ratio to {counts[0]} device(s) (ideal 1.0)",
  )
  common.table(
      paper,
      list(paper[0]),
      title="data-parallel gradient all-reduce per step, "
      "on paper (f32 gradients, ring)",
  )
  return rows


if __name__ == "__main__":
  main()
