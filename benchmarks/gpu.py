"""Accelerator benchmark: resnet18 and WRN-28-10 at 32x32 in bfloat16, JAX vs PyTorch.

Depends only on jax, flax, optax (and torch, optional): it imports simsoft.models
and simsoft.losses and nothing that pulls TensorFlow, TFDS or ml_collections,
so it runs on the accelerator machine as is. For each model and batch size
(default 256, 512, 1024) it times, on one fixed device-resident batch:

  jax     simsoft.models model with dtype=bfloat16 (float32 params), the
          simsoft soft-target loss (similarity_cross_entropy, alpha 0.1 with a
          uniform S: label smoothing), SGD momentum 0.9 + weight decay 5e-4, one
          jax.jit step with donated state
  torch   the twin in benchmarks/torch_models.py, channels_last, bf16 autocast,
          torch.compile, the same loss and optimizer (when torch is installed)

and reports images/s, step time and model FLOPs utilization: FLOPs per step
from XLA's cost analysis of the lowered JAX train step (the same count is used for
PyTorch's MFU; the models are identical) divided by step time and the chip's
peak dense bf16 rate (H100 SXM / H200: 989 TFLOP/s; --peak_tflops overrides).
JAX and PyTorch blocks alternate, medians of the repeats.

  python -m benchmarks.gpu                                  # on the GPU machine
  python -m benchmarks.gpu --models resnet18 --batch_sizes 512 --no_torch
  python -m benchmarks.gpu --smoke --models wrn10_1         # CPU check, ~30 s
"""

from __future__ import annotations

import os

# JAX would take 75% of GPU memory up front and starve PyTorch in the same process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from simsoft import losses
from simsoft import models as models_lib

# name -> (simsoft/torch registry name, kwargs)
MODEL_SPECS = {
    "resnet18": ("resnet18", {}),
    "wrn28_10": ("wrn", {"depth": 28, "width": 10}),
    "wrn16_4": ("wrn", {"depth": 16, "width": 4}),
    "wrn10_1": ("wrn", {"depth": 10, "width": 1}),
    "resnet20": ("resnet20", {}),
}
# Peak dense bf16 FLOP/s by device kind (substring match, first hit wins).
PEAK_BF16 = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12),
)
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
ALPHA = 0.1


def peak_flops(device_kind: str, override_tflops: float | None) -> float | None:
  if override_tflops:
    return override_tflops * 1e12
  for key, value in PEAK_BF16:
    if key.lower() in device_kind.lower():
      return value
  return None


def _emit(record: dict) -> None:
  print(json.dumps(record), flush=True)


def _batch(batch_size: int, seed: int = 0):
  r = np.random.default_rng(seed)
  return (
      r.standard_normal((batch_size,) + IMAGE_SHAPE).astype(np.float32),
      r.integers(0, NUM_CLASSES, batch_size).astype(np.int32),
  )


def _similarity() -> np.ndarray:
  return np.ones((NUM_CLASSES, NUM_CLASSES), np.float32)


# ----------------------------------------------------------------------------
# JAX
# ----------------------------------------------------------------------------


def _flops(stage) -> float | None:
  """'flops' of a Lowered/Compiled stage's cost analysis, or None where unavailable."""
  try:
    analysis = stage.cost_analysis()
  except Exception:  # some backends do not implement it
    return None
  analysis = (
      analysis[0]
      if isinstance(analysis, (list, tuple)) and analysis
      else analysis
  )
  return float((analysis or {}).get("flops", 0.0)) or None


def cpu_flops(fn, *args) -> float | None:
  """FLOPs of fn(*args) from XLA's cost analysis of its lowering for the CPU.

  On the GPU (jax 0.11.2, H200) the analysis of the GPU lowering counted
  1.07e10 FLOPs for a resnet18 step at batch 512 instead of 1.49e12: the
  convolutions were missing. The CPU lowering of the same function counts them,
  and the CPU backend exists on every JAX install.
  """
  cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  shapes = jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=cpu), args
  )
  return _flops(jax.jit(fn).lower(*shapes))


def jax_setup(spec: str, batch_size: int, dtype=jnp.bfloat16):
  """(run(n), flops per step, compile seconds) for the JAX step of one model and batch."""
  name, kwargs = MODEL_SPECS[spec]
  build = lambda: models_lib.create_model(
      name,
      num_classes=NUM_CLASSES,
      input_shape=IMAGE_SHAPE,
      rngs=nnx.Rngs(0),
      dtype=dtype,
      **kwargs,
  )
  graphdef = nnx.graphdef(nnx.eval_shape(build))
  tx = optax.chain(
      optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9)
  )
  similarity = jnp.asarray(_similarity())

  @jax.jit
  def init():
    _, params, rest = nnx.split(build(), nnx.Param, ...)
    return params, rest, tx.init(params)

  def step(params, rest, opt_state, x, y):
    def loss_fn(p):
      model = nnx.merge(graphdef, p, rest, copy=True)
      logits = model(x)
      _, _, new_rest = nnx.split(model, nnx.Param, ...)
      loss = losses.similarity_cross_entropy(
          logits, y, similarity, alpha=ALPHA
      ).mean()
      return loss, new_rest

    (loss, new_rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_rest, opt_state, loss

  params, rest, opt_state = init()
  x, y = map(jnp.asarray, _batch(batch_size))
  start = time.perf_counter()
  lowered = jax.jit(step, donate_argnums=(0, 1, 2)).lower(
      params, rest, opt_state, x, y
  )
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  flops = cpu_flops(step, params, rest, opt_state, x, y)
  state = {"p": params, "r": rest, "o": opt_state}

  def run(n: int) -> None:
    p, r, o = state["p"], state["r"], state["o"]
    for _ in range(n):
      p, r, o, loss = compiled(p, r, o, x, y)
    float(loss)
    state.update(p=p, r=r, o=o)

  return run, flops, compile_s


# ----------------------------------------------------------------------------
# PyTorch
# ----------------------------------------------------------------------------


def torch_setup(spec: str, batch_size: int, *, compile: bool):
  """(run(n), setup seconds) for the PyTorch twin: channels_last, bf16 autocast, compile."""
  import torch
  import torch.nn.functional as F

  from benchmarks import torch_models

  device = "cuda" if torch.cuda.is_available() else "cpu"
  torch.backends.cudnn.benchmark = True
  torch.manual_seed(0)
  name, kwargs = MODEL_SPECS[spec]
  net = (
      torch_models.create_model(
          name, num_classes=NUM_CLASSES, input_shape=IMAGE_SHAPE, **kwargs
      )
      .to(device)
      .to(memory_format=torch.channels_last)
  )
  opt = torch.optim.SGD(
      net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4
  )
  xs, ys = _batch(batch_size)
  x = (
      torch.from_numpy(xs)
      .permute(0, 3, 1, 2)
      .contiguous(memory_format=torch.channels_last)
      .to(device)
  )
  y = torch.from_numpy(ys).long().to(device)
  s = torch.from_numpy(_similarity()).to(device)
  rows = s / s.sum(1, keepdim=True)
  targets = (1 - ALPHA) * F.one_hot(y, NUM_CLASSES).float() + ALPHA * rows[y]
  forward = torch.compile(net) if compile else net
  net.train()

  def run(n: int) -> None:
    for _ in range(n):
      opt.zero_grad(set_to_none=True)
      with torch.autocast(device_type=device, dtype=torch.bfloat16):
        logits = forward(x)
      loss = F.cross_entropy(logits.float(), targets)
      loss.backward()
      opt.step()
    loss.item()

  start = time.perf_counter()
  run(2)  # compile, cudnn autotuning
  return run, time.perf_counter() - start


# ----------------------------------------------------------------------------


def measure(spec: str, batch_size: int, args, peak: float | None) -> list[dict]:
  runs, setup_s = {}, {}
  run, flops, setup_s["jax"] = jax_setup(spec, batch_size)
  runs["jax"] = run
  if not args.no_torch:
    runs["torch"], setup_s["torch"] = torch_setup(
        spec, batch_size, compile=not args.no_compile
    )
  for r in runs.values():
    r(args.warmup)
  times = {k: [] for k in runs}
  names = list(runs)
  for rep in range(args.repeats):
    for k in names[rep % len(names) :] + names[: rep % len(names)]:
      start = time.perf_counter()
      runs[k](args.steps)
      times[k].append((time.perf_counter() - start) / args.steps)
  rows = []
  for k, ts in times.items():
    t = statistics.median(ts)
    rows.append(
        {
            "model": spec,
            "framework": k,
            "batch_size": batch_size,
            "step_ms": 1e3 * t,
            "images_per_s": batch_size / t,
            "min_step_ms": 1e3 * min(ts),
            "tflops_per_s": flops / t / 1e12 if flops else None,
            "mfu": flops / t / peak if flops and peak else None,
            "flops_per_step": flops,
            "setup_s": setup_s[k],
            "repeats": len(ts),
        }
    )
  if "torch" in times:
    ratio = statistics.median(
        [tt / tj for tj, tt in zip(times["jax"], times["torch"])]
    )
    for row in rows:
      row["jax_over_torch_throughput"] = ratio
  return rows


def main(argv=None) -> list[dict]:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument(
      "--models",
      default="resnet18,wrn28_10",
      help=f"comma list of {sorted(MODEL_SPECS)}",
  )
  ap.add_argument("--batch_sizes", default="256,512,1024")
  ap.add_argument("--steps", type=int, default=20, help="steps per timed block")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--warmup", type=int, default=5)
  ap.add_argument("--no_torch", action="store_true")
  ap.add_argument(
      "--no_compile",
      action="store_true",
      help="PyTorch eager (no torch.compile)",
  )
  ap.add_argument("--peak_tflops", type=float, default=None)
  ap.add_argument(
      "--max_minutes",
      type=float,
      default=8.0,
      help="skip the remaining configurations after this long (partial results)",
  )
  ap.add_argument(
      "--smoke",
      action="store_true",
      help="batch 4, 2 steps, 1 repeat (CPU check)",
  )
  args = ap.parse_args(argv)
  if args.smoke:
    args.batch_sizes, args.steps, args.repeats, args.warmup = "4", 2, 1, 1
  models = [m.strip() for m in args.models.split(",") if m.strip()]
  unknown = [m for m in models if m not in MODEL_SPECS]
  if unknown:
    raise ValueError(
        f"unknown --models {unknown}; known: {sorted(MODEL_SPECS)}"
    )
  batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
  if not args.no_torch:
    try:
      import torch  # noqa: F401  (only whether it imports)
    except ImportError:
      print("torch not installed: JAX only", file=sys.stderr)
      args.no_torch = True

  device = jax.devices()[0]
  peak = peak_flops(device.device_kind, args.peak_tflops)
  info = {
      "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
      "device_kind": device.device_kind,
      "platform": device.platform,
      "peak_bf16_flops": peak,
      "jax": jax.__version__,
      "flax": __import__("flax").__version__,
      "optax": optax.__version__,
      "torch": None if args.no_torch else __import__("torch").__version__,
      "tensorflow_imported": "tensorflow" in sys.modules,
      "ml_collections_imported": "ml_collections" in sys.modules,
      "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
  }
  _emit({"bench": "gpu", "machine": info})
  start, rows = time.perf_counter(), []
  for spec in models:
    for b in batch_sizes:
      if (time.perf_counter() - start) / 60 > args.max_minutes:
        _emit(
            {
                "bench": "gpu",
                "skipped": [spec, b],
                "reason": "--max_minutes reached",
            }
        )
        continue
      try:
        out = measure(spec, b, args, peak)
      except (
          Exception
      ) as e:  # out of memory at a large batch must not lose the others
        _emit(
            {
                "bench": "gpu",
                "model": spec,
                "batch_size": b,
                "error": repr(e)[:500],
            }
        )
        continue
      for row in out:
        _emit({"bench": "gpu", **row})
      rows += out
  _emit({"bench": "gpu", "summary": True, "rows": rows, "machine": info})
  cols = [
      "model",
      "framework",
      "batch_size",
      "step_ms",
      "images_per_s",
      "tflops_per_s",
      "mfu",
      "jax_over_torch_throughput",
  ]
  print("  ".join(cols))
  for row in rows:
    print(
        "  ".join(
            f"{row.get(c):.3g}"
            if isinstance(row.get(c), float)
            else str(row.get(c))
            for c in cols
        )
    )
  return rows


if __name__ == "__main__":
  main()
