"""Smoke tests: every benchmark runs end to end in its tiny --smoke mode; helpers are exact.

No timing is asserted (benchmarks, not timed tests): only that each script
finishes, prints JSON lines with a summary, and computes its ratios from its
own timings correctly. The PyTorch ones are skipped without torch (CI has none).
"""

import importlib.util
import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import common, jax_lenet

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(
    not HAS_TORCH, reason="PyTorch not installed (benchmarks only)"
)


def _json_lines(text):
  return [
      json.loads(line) for line in text.splitlines() if line.startswith("{")
  ]


def _summary(capsys):
  records = _json_lines(capsys.readouterr().out)
  summaries = [r for r in records if r.get("summary")]
  assert len(summaries) == 1, records
  return summaries[0]


def _finite(x):
  return isinstance(x, float) and math.isfinite(x) and x > 0


# ----------------------------------------------------------------------------
# Helpers, against hand-computed values.
# ----------------------------------------------------------------------------


def test_summarize_paired_ratios_by_hand():
  timings = {
      "wall": {"a": [1.0, 2.0, 4.0], "b": [2.0, 2.0, 2.0]},
      "cpu": {"a": [1.0, 1.0, 1.0], "b": [1.5, 1.5, 3.0]},
  }
  rows = {
      r["variant"]: r
      for r in common.summarize(timings, base="a", batch_size=10)
  }
  b = rows["b"]
  assert b["step_ms"] == pytest.approx(2000.0)
  assert b["images_per_s"] == pytest.approx(5.0)
  assert b["time_ratio"] == pytest.approx(1.0)  # median of 2, 1, 0.5
  assert b["throughput_ratio"] == pytest.approx(1.0)  # median of 0.5, 1, 2
  assert b["time_ratio_min"] == pytest.approx(0.5) and b[
      "time_ratio_max"
  ] == pytest.approx(2.0)
  assert b["best_time_ratio"] == pytest.approx(2.0)  # min 2.0 / min 1.0
  assert b["cpu_time_ratio"] == pytest.approx(1.5)  # median of 1.5, 1.5, 3
  assert rows["a"]["time_ratio"] == 1.0


def test_interleave_rotates_order_and_counts_steps():
  calls = []
  variants = {
      name: (lambda n, name=name: calls.append((name, n))) for name in "xyz"
  }
  times = common.interleave(variants, steps=3, repeats=3, warmup=2)
  assert calls[:3] == [("x", 2), ("y", 2), ("z", 2)]
  order = [name for name, _ in calls[3:]]
  assert order == list("xyz") + list("yzx") + list("zxy")
  assert all(n == 3 for _, n in calls[3:])
  assert set(times) == {"wall", "cpu"} and all(
      len(v) == 3 for v in times["wall"].values()
  )


def test_jax_lenet_lowerings_compute_the_same_function():
  params = jax_lenet.init(
      jax.random.key(0), (9, 7, 2)
  )  # odd sizes exercise the -inf padding
  x = jax.random.normal(jax.random.key(1), (3, 9, 7, 2))

  def value_and_grad(**lowering):
    return jax.jit(
        jax.value_and_grad(
            lambda p: jnp.sum(jax_lenet.apply(p, x, **lowering) ** 2)
        )
    )(params)

  want_value, want_grad = value_and_grad()
  for lowering in [
      dict(pool="reshape"),
      dict(conv="shift"),
      dict(layout="NCHW", pool="reshape"),
  ]:
    value, grad = value_and_grad(**lowering)
    np.testing.assert_allclose(
        value, want_value, rtol=1e-4, err_msg=str(lowering)
    )
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(want_grad)):
      np.testing.assert_allclose(
          a, b, rtol=1e-3, atol=1e-4, err_msg=str(lowering)
      )


def test_jax_lenet_matches_simsoft_lenet_shapes():
  from flax import nnx

  from simsoft import models

  model = nnx.eval_shape(
      lambda: models.create_model(
          "lenet", num_classes=10, input_shape=(28, 28, 1), rngs=nnx.Rngs(0)
      )
  )
  params = jax.eval_shape(jax_lenet.init, jax.random.key(0))
  assert sum(
      math.prod(p.shape) for p in jax.tree.leaves(params)
  ) == models.param_count(model)


def test_all_reduce_table_by_hand():
  from benchmarks import bench_scaling

  rows = {r["model"]: r for r in bench_scaling.gradient_all_reduce_table()}
  assert rows["resnet18"]["params"] == 11_173_962
  assert rows["wrn-28-10"]["params"] == 36_479_194
  assert rows["resnet18"]["gradient_MB_f32"] == pytest.approx(
      4 * 11_173_962 / 1e6
  )
  # ring all-reduce: 2 x bytes over the per-chip ICI bandwidth
  assert rows["resnet18"]["TPU v5e all-reduce ms"] == pytest.approx(
      1e3 * 2 * 4 * 11_173_962 / 200e9
  )


# ----------------------------------------------------------------------------
# Each benchmark end to end, tiny.
# ----------------------------------------------------------------------------


def test_bench_losses_smoke(capsys):
  from benchmarks import bench_losses

  bench_losses.main(["--smoke", "--model", "mlp"])
  summary = _summary(capsys)
  rows = {r["variant"]: r for r in summary["rows"]}
  assert set(rows) == {"optax_ce", "soft_target", "log_sum"}
  assert rows["optax_ce"]["time_ratio"] == 1.0
  for row in rows.values():
    assert _finite(row["step_ms"]) and _finite(row["flops_ratio"])
    assert row["flops_ratio"] == pytest.approx(
        1.0, abs=0.01
    )  # the loss is a tiny part


def test_bench_large_c_smoke(capsys):
  from benchmarks import bench_large_c

  bench_large_c.main(["--smoke"])
  summary = _summary(capsys)
  assert [r["C"] for r in summary["rows"]] == [10, 300]
  for row in summary["rows"]:
    for name in ("soft_dense", "log_dense", "soft_sparse", "log_sparse"):
      assert _finite(row[f"{name}_ms"]) and _finite(row[f"{name}_ratio"])
    assert row["sparse_S_MB"] == pytest.approx(8 * row["C"] * row["k"] / 1e6)
  assert summary["estimation"]["scatter_add_ms"] > 0
  for row in summary["kept_mass"]:
    assert 0 < row["row_mass_kept_min"] <= row["row_mass_kept_mean"] <= 1


def test_bench_framework_smoke(capsys):
  from benchmarks import bench_framework

  bench_framework.main(["--smoke", "--model", "mlp"])
  summary = _summary(capsys)
  names = {r["variant"] for r in summary["rows"]}
  assert {
      "simsoft",
      "simsoft_device",
      "simsoft_device_scan_2",
      "simsoft_device_scan_2_unrolled",
      "handwritten",
      "handwritten_resident",
      "scan_2",
      "scan_2_unrolled",
      "dispatch_2",
  } <= names
  assert _finite(summary["scan_speedup_over_dispatch"])


def test_bench_scaling_smoke():
  # subprocess: the parent must not inherit this process's 4 devices in its own timings
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "benchmarks.bench_scaling",
          "--smoke",
          "--model",
          "mlp",
          "--devices",
          "1,4",
      ],
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = [r for r in _json_lines(proc.stdout) if r.get("summary")][0]
  rows = {r["variant"]: r for r in summary["rows"]}
  assert (
      rows["4 devices"]["batch_per_device"] == 2
      and rows["1 devices"]["batch_per_device"] == 8
  )


def test_gpu_smoke_imports_no_tensorflow():
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "benchmarks.gpu",
          "--smoke",
          "--models",
          "wrn10_1",
          "--no_compile",
          "--no_torch",
      ],
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = [r for r in _json_lines(proc.stdout) if r.get("summary")][0]
  assert not summary["machine"]["tensorflow_imported"]
  assert not summary["machine"]["ml_collections_imported"]
  (row,) = summary["rows"]
  assert row["framework"] == "jax" and _finite(row["flops_per_step"])


@needs_torch
def test_torch_twins_have_simsoft_param_counts():
  from flax import nnx

  from benchmarks import torch_models
  from simsoft import models

  for name, shape, kwargs in [
      ("lenet", (28, 28, 1), {}),
      ("resnet20", (32, 32, 3), {}),
      ("wrn", (32, 32, 3), {"depth": 10, "width": 2}),
  ]:
    jax_model = nnx.eval_shape(
        lambda: models.create_model(
            name, num_classes=10, input_shape=shape, rngs=nnx.Rngs(0), **kwargs
        )
    )
    twin = torch_models.create_model(
        name, num_classes=10, input_shape=shape, **kwargs
    )
    assert torch_models.param_count(twin) == models.param_count(jax_model), name


@needs_torch
def test_bench_torch_smoke(capsys):
  from benchmarks import bench_torch

  bench_torch.main(
      [
          "--smoke",
          "--no_compile",
          "--no_channels_last",
          "--attempts",
          "jax_fn_reshape_pool,flag_fast_math",
      ]
  )
  summary = _summary(capsys)
  rows = [r for r in summary["rows"] if "error" not in r]
  names = {r["variant"] for r in rows}
  assert {
      "torch_eager",
      "jax",
      "jax_fn_reshape_pool",
      "flag_fast_math",
  } <= names
  assert all(_finite(r["throughput_ratio"]) for r in rows)


def test_gpu_flop_count_comes_from_the_cpu_lowering_by_hand():
  from benchmarks import gpu

  # A matmul [64, 32] x [32, 16] is 2 * 64 * 32 * 16 FLOPs. A 3x3 SAME conv, 8 -> 4
  # channels, on [2, 5, 5, 8]: XLA counts only taps inside the image, per axis
  # 2 + 3 + 3 + 3 + 2 = 13, so 2 * 2 images * 13 * 13 * 8 * 4 (padding is free).
  assert (
      gpu.cpu_flops(lambda a, b: a @ b, jnp.ones((64, 32)), jnp.ones((32, 16)))
      == 65536
  )
  conv = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  assert (
      gpu.cpu_flops(conv, jnp.ones((2, 5, 5, 8)), jnp.ones((3, 3, 8, 4)))
      == 2 * 2 * 13 * 13 * 8 * 4
  )
