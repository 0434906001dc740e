"""JAX (simsoft's models) vs PyTorch on CPU: images/s side by side, and what closes the gap.

Models, optimizer and batch as issue 7 part 3: lenet (conv 32, conv 64, dense
256) on 28x28x1 and resnet20 on 32x32x3, Adam(1e-3), batch 128, one fixed
in-memory batch (so only the train step is timed), interleaved blocks in one
process. PyTorch twins live in benchmarks/torch_models.py.

Variants (throughput_ratio = images/s of the variant / images/s of torch_eager;
jax_vs_best_torch divides by the fastest PyTorch variant):

  torch_eager            model(x) -> cross_entropy -> backward -> Adam.step
  torch_channels_last    the same with channels_last memory format
  torch_compile          torch.compile(model) (inductor, C++ codegen)
  jax                    simsoft.models model, value_and_grad + optax.adam in one
                         jax.jit with donated params/opt_state (a plain JAX loop)
  attempts (lenet unless noted):
    jax_no_donation      no buffer donation
    jax_bf16             simsoft model with dtype=bfloat16 (both models)
    jax_fn_*             benchmarks/jax_lenet.py: the same lenet as plain JAX with
                         NCHW layout / reshape max-pool / im2col-by-shifts conv
    b256                 jax and torch_eager both at batch 256
    flag_*               XLA_FLAGS variants, each in a subprocess that times
                         torch_eager and jax interleaved (both models)
    one_thread_each      the same with single-threaded XLA and torch.set_num_threads(1)

  python -m benchmarks.bench_torch                     # everything, ~25 min on 2 cores
  python -m benchmarks.bench_torch --one_core          # the same, one core and thread each
  python -m benchmarks.bench_torch --models lenet --attempts none --no_compile
  python -m benchmarks.bench_torch --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# PyTorch's OpenMP threads busy-wait between parallel regions and then fight
# XLA's thread pool for the cores in this same process: with two threads each
# that made torch_eager lenet 375 ms/step instead of 61 (measured). Passive
# waiting keeps the comparison about the kernels. Read once, at torch's import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import common, jax_lenet
from simsoft import models as models_lib

INPUT_SHAPES = {"lenet": (28, 28, 1), "resnet20": (32, 32, 3)}
LEARNING_RATE = 1e-3

# name -> XLA_FLAGS tried in a subprocess (they must be set before JAX starts).
XLA_FLAG_ATTEMPTS = {
    "flag_single_thread_eigen": "--xla_cpu_multi_thread_eigen=false",
    "flag_fast_math": "--xla_cpu_enable_fast_math=true",
    "flag_xnn_fusion": "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce",
    "flag_xnn_graph": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "flag_ynn_fusion": "--xla_cpu_experimental_ynn_fusion_type="
    "dot,eltwise,reduce,individual_dot,individual_convolution",
    "flag_onednn": "--xla_cpu_use_onednn=true "
    "--xla_cpu_experimental_onednn_fusion_type=dot,eltwise,reduce",
    # one core each: XLA single-threaded and torch.set_num_threads(1), which also
    # takes busy-waiting thread pools out of the picture on a loaded machine
    "one_thread_each": "--xla_cpu_multi_thread_eigen=false",
}
TORCH_THREADS = {"one_thread_each": 1}
FN_ATTEMPTS = {
    "jax_fn": dict(),
    "jax_fn_nchw": dict(layout="NCHW"),
    "jax_fn_reshape_pool": dict(pool="reshape"),
    "jax_fn_shift_conv": dict(conv="shift"),
    "jax_fn_shift_conv_reshape_pool": dict(conv="shift", pool="reshape"),
}
IN_PROCESS_ATTEMPTS = ("jax_no_donation", "jax_bf16", *FN_ATTEMPTS, "b256")


def _batch(shape, batch_size, seed=0):
  r = np.random.default_rng(seed)
  return (
      r.random((batch_size,) + shape, np.float32),
      r.integers(0, 10, batch_size).astype(np.int32),
  )


# ----------------------------------------------------------------------------
# PyTorch
# ----------------------------------------------------------------------------


def torch_variant(
    model: str,
    batch_size: int,
    *,
    compile: bool = False,
    channels_last: bool = False,
) -> common.Variant:
  import torch
  import torch.nn.functional as F

  from benchmarks import torch_models

  torch.manual_seed(0)
  net = torch_models.create_model(
      model, num_classes=10, input_shape=INPUT_SHAPES[model]
  )
  x, y = _batch(INPUT_SHAPES[model], batch_size)
  x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
  y = torch.from_numpy(y).long()
  if channels_last:
    net = net.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
  forward = torch.compile(net) if compile else net
  net.train()

  def run(n: int) -> None:
    for _ in range(n):
      opt.zero_grad(set_to_none=True)
      loss = F.cross_entropy(forward(x), y)
      loss.backward()
      opt.step()
    loss.item()

  return run


# ----------------------------------------------------------------------------
# JAX
# ----------------------------------------------------------------------------


def _loop(step, params, opt_state, x, y) -> common.Variant:
  holder = {"p": params, "o": opt_state}

  def run(n: int) -> None:
    p, o = holder["p"], holder["o"]
    for _ in range(n):
      p, o, loss = step(p, o, x, y)
    jax.block_until_ready(loss)
    holder.update(p=p, o=o)

  return run


def jax_variant(
    model: str, batch_size: int, *, dtype=jnp.float32, donate: bool = True
) -> common.Variant:
  """simsoft.models model in a plain jitted step: ((params, rest), opt) -> updated, loss."""
  tx = optax.adam(LEARNING_RATE)
  build = lambda: models_lib.create_model(
      model,
      num_classes=10,
      input_shape=INPUT_SHAPES[model],
      rngs=nnx.Rngs(0),
      dtype=dtype,
  )
  graphdef = nnx.graphdef(nnx.eval_shape(build))

  @jax.jit
  def init():
    _, params, rest = nnx.split(build(), nnx.Param, ...)
    return (params, rest), tx.init(params)

  def step(state, opt_state, x, y):
    params, rest = state

    def loss_fn(p):
      m = nnx.merge(graphdef, p, rest, copy=True)
      logits = m(x)
      _, _, new_rest = nnx.split(m, nnx.Param, ...)
      return (
          optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
          new_rest,
      )

    (loss, new_rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), new_rest), opt_state, loss

  state, opt_state = init()
  x, y = map(jnp.asarray, _batch(INPUT_SHAPES[model], batch_size))
  step = jax.jit(step, donate_argnums=(0, 1) if donate else ())
  return _loop(step, state, opt_state, x, y)


def jax_fn_variant(batch_size: int, **lowering) -> common.Variant:
  """benchmarks/jax_lenet.py with the given lowering options, Adam, donated."""
  tx = optax.adam(LEARNING_RATE)
  params = jax.jit(jax_lenet.init)(jax.random.key(0))
  opt_state = tx.init(params)

  def step(p, o, x, y):
    loss, grads = jax.value_and_grad(
        lambda p: optax.softmax_cross_entropy_with_integer_labels(
            jax_lenet.apply(p, x, **lowering), y
        ).mean()
    )(p)
    updates, o = tx.update(grads, o, p)
    return optax.apply_updates(p, updates), o, loss

  x, y = map(jnp.asarray, _batch(INPUT_SHAPES["lenet"], batch_size))
  return _loop(jax.jit(step, donate_argnums=(0, 1)), params, opt_state, x, y)


# ----------------------------------------------------------------------------
# Groups of variants timed together
# ----------------------------------------------------------------------------


def _torch_available() -> bool:
  try:
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


def groups(model: str, args) -> dict[str, tuple[int, dict[str, callable]]]:
  """group name -> (batch size, {variant name: builder}); torch builders need torch."""
  b = args.batch_size
  main = {"torch_eager": lambda: torch_variant(model, b)}
  if not args.no_channels_last:
    main["torch_channels_last"] = lambda: torch_variant(
        model, b, channels_last=True
    )
  if not args.no_compile:
    main["torch_compile"] = lambda: torch_variant(model, b, compile=True)
  main["jax"] = lambda: jax_variant(model, b)
  out = {model: (b, main)}
  wanted = set(args.attempts)
  if "jax_no_donation" in wanted:
    main["jax_no_donation"] = lambda: jax_variant(model, b, donate=False)
  if "jax_bf16" in wanted:
    main["jax_bf16"] = lambda: jax_variant(model, b, dtype=jnp.bfloat16)
  if model == "lenet":
    for name, lowering in FN_ATTEMPTS.items():
      if name in wanted:
        main[name] = (lambda kw: lambda: jax_fn_variant(b, **kw))(lowering)
  if "b256" in wanted:
    big = 2 * b
    out[f"{model}_b{big}"] = (
        big,
        {
            "torch_eager": lambda: torch_variant(model, big),
            "jax": lambda: jax_variant(model, big),
        },
    )
  return out


def run_group(name: str, batch_size: int, builders: dict, args) -> list[dict]:
  variants = {}
  for vname, build in builders.items():
    variants[vname] = build()
  times = common.interleave(
      variants,
      steps=args.steps,
      repeats=args.repeats,
      warmup=args.warmup,
      on_repeat=lambda r, row: common.emit(
          {
              "bench": "torch",
              "group": name,
              "repeat": r,
              **{k: 1e3 * v for k, v in row.items()},
          }
      ),
  )
  rows = common.summarize(times, base="torch_eager", batch_size=batch_size)
  torch_rows = [r for r in rows if r["variant"].startswith("torch")]
  best = max(torch_rows, key=lambda r: r["images_per_s"])
  for r in rows:
    r["group"] = name
    r["vs_best_torch"] = r["images_per_s"] / best["images_per_s"]
    r["best_torch"] = best["variant"]
  return rows


def run_flag_attempt(name: str, flags: str, model: str, args) -> dict:
  """Times torch_eager and jax for `model` in a child process with XLA_FLAGS=flags."""
  env = dict(
      os.environ,
      XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip(),
  )
  threads = TORCH_THREADS.get(name, args.torch_threads)
  cmd = [
      sys.executable,
      "-m",
      "benchmarks.bench_torch",
      "--child",
      "--models",
      model,
      "--torch_threads",
      str(threads),
      "--attempts",
      "none",
      "--no_compile",
      "--no_channels_last",
      "--batch_size",
      str(args.batch_size),
      "--steps",
      str(args.steps),
      "--repeats",
      str(args.repeats),
      "--warmup",
      str(args.warmup),
  ]
  proc = subprocess.run(
      cmd,
      env=env,
      capture_output=True,
      text=True,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  if proc.returncode:
    return {"variant": name, "group": model, "error": proc.stderr[-2000:]}
  summary = json.loads(
      [line for line in proc.stdout.splitlines() if line.startswith("{")][-1]
  )
  jax_row = next(r for r in summary["rows"] if r["variant"] == "jax")
  return {**jax_row, "variant": name, "group": model, "xla_flags": flags}


def main(argv=None) -> list[dict]:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--models", default="lenet,resnet20")
  ap.add_argument("--batch_size", type=int, default=128)
  ap.add_argument(
      "--attempts",
      default="all",
      help="comma list of attempt names, 'all' or 'none' "
      f"(in-process: {', '.join(IN_PROCESS_ATTEMPTS)}; "
      f"XLA flags: {', '.join(XLA_FLAG_ATTEMPTS)})",
  )
  ap.add_argument(
      "--no_compile", action="store_true", help="skip torch.compile"
  )
  ap.add_argument("--no_channels_last", action="store_true")
  ap.add_argument(
      "--torch_threads",
      type=int,
      default=0,
      help="torch.set_num_threads (0: PyTorch's default, one per core)",
  )
  ap.add_argument(
      "--one_core",
      action="store_true",
      help="pin to CPU 0 with one thread each (XLA single-threaded Eigen, "
      "torch.set_num_threads(1)): per-core efficiency, free of the "
      "busy-waiting thread pools that swing on a loaded machine",
  )
  ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  common.add_common_args(ap, steps=3, repeats=7)
  args = ap.parse_args(argv)
  if args.one_core:
    # XLA reads XLA_FLAGS when the backend starts (first use), not at import;
    # children inherit both the affinity and the environment.
    if jax._src.xla_bridge.backends_are_initialized():
      raise RuntimeError(
          "--one_core must be set before JAX has started its backend"
      )
    os.sched_setaffinity(0, {0})
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    ).strip()
    args.torch_threads = 1
  common.apply_smoke(args)
  if args.smoke:
    args.batch_size = 4
    if args.models == ap.get_default("models"):
      args.models = "lenet"
  known = (*IN_PROCESS_ATTEMPTS, *XLA_FLAG_ATTEMPTS)
  if args.attempts == "all":
    args.attempts = list(known)
  elif args.attempts == "none":
    args.attempts = []
  else:
    args.attempts = [a.strip() for a in args.attempts.split(",") if a.strip()]
    unknown = sorted(set(args.attempts) - set(known))
    if unknown:
      raise ValueError(f"unknown --attempts {unknown}; known: {list(known)}")
  models = [m.strip() for m in args.models.split(",") if m.strip()]
  for m in models:
    if m not in INPUT_SHAPES:
      raise ValueError(
          f"unknown model {m!r} in --models; known: {sorted(INPUT_SHAPES)}"
      )
  if not _torch_available():
    raise SystemExit(
        "bench_torch needs PyTorch: pip install -r benchmarks/requirements.txt"
    )

  import torch

  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  info = common.machine()
  info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
  rows = []
  for model in models:
    for gname, (batch, builders) in groups(model, args).items():
      rows += run_group(gname, batch, builders, args)
    if not args.child:
      base = next(
          r for r in rows if r["group"] == model and r["variant"] == "jax"
      )
      best_torch = max(
          (
              r
              for r in rows
              if r["group"] == model and r["variant"].startswith("torch")
          ),
          key=lambda r: r["images_per_s"],
      )
      for name in args.attempts:
        if name in XLA_FLAG_ATTEMPTS:
          row = run_flag_attempt(name, XLA_FLAG_ATTEMPTS[name], model, args)
          if "error" not in row:
            # the child's jax / torch_eager ratio, re-expressed against this process's rows
            eager = next(
                r
                for r in rows
                if r["group"] == model and r["variant"] == "torch_eager"
            )
            row["vs_jax_default"] = (
                row["throughput_ratio"] / base["throughput_ratio"]
            )
            row["vs_best_torch"] = (
                row["throughput_ratio"]
                * eager["images_per_s"]
                / best_torch["images_per_s"]
            )
          common.emit({"bench": "torch", "flag_attempt": True, **row})
          rows.append(row)
  common.emit(
      {
          "bench": "torch",
          "summary": True,
          "models": models,
          "batch_size": args.batch_size,
          "steps": args.steps,
          "repeats": args.repeats,
          "rows": rows,
          "machine": info,
      }
  )
  common.table(
      rows,
      [
          "group",
          "variant",
          "step_ms",
          "images_per_s",
          "throughput_ratio",
          "vs_best_torch",
      ],
      title="images/s; throughput_ratio = variant / torch_eager (paired median); "
      "vs_best_torch = variant / fastest PyTorch variant; target jax >= 1.0",
  )
  return rows


if __name__ == "__main__":
  main()
