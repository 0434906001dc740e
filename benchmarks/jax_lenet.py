r"""simsoft's LeNet written as plain JAX functions, with switchable lowering choices.

Used by bench_torch to find which part of the model XLA:CPU is slow at. The
network is simsoft.models' lenet (conv3x3(32)-ReLU-maxpool2-conv3x3(64)-ReLU-
maxpool2-Dense(256)-ReLU-head, 'SAME' padding); the options only change how it
is lowered:

  layout  'NHWC' (simsoft's) or 'NCHW' (PyTorch's) for the convolutions
  pool    'window': lax.reduce_window (what nnx.max_pool emits; its gradient is
          a select_and_scatter) or 'reshape': pad odd sizes with -inf, reshape
          [B, H/2, 2, W/2, 2, C] and max over the 2x2 axes (gradient: a compare
          and a select, which XLA fuses)
  conv    'xla': lax.conv_general_dilated, or 'shift': im2col by 9 shifted
          slices concatenated to [B, H, W, 9 C] and one matmul with the
          [9 C, O] kernel (gradients: a matmul and pads/slices)

Every choice computes the same function (up to float rounding).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def init(
    key: jax.Array, input_shape=(28, 28, 1), num_classes: int = 10
) -> dict:
  """He-normal kernels (HWIO convs, [in, out] dense), zero biases."""
  h, w, c = input_shape
  flat = math.ceil(math.ceil(h / 2) / 2) * math.ceil(math.ceil(w / 2) / 2) * 64
  k = jax.random.split(key, 4)
  he = lambda key, shape, fan_in: jax.random.normal(key, shape) * np.sqrt(
      2.0 / fan_in
  )
  return {
      "conv1": he(k[0], (3, 3, c, 32), 9 * c),
      "bias1": jnp.zeros(32),
      "conv2": he(k[1], (3, 3, 32, 64), 9 * 32),
      "bias2": jnp.zeros(64),
      "dense": he(k[2], (flat, 256), flat),
      "bias3": jnp.zeros(256),
      "head": he(k[3], (256, num_classes), 256),
      "bias4": jnp.zeros(num_classes),
  }


def _conv(x, kernel, layout: str, conv: str):
  if conv == "xla":
    dims = (layout, "HWIO", layout)
    return lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=dims
    )
  if conv != "shift" or layout != "NHWC":
    raise ValueError(
        f"conv must be 'xla' or 'shift' (NHWC only), got {conv!r} with {layout}"
    )
  _, h, w, c = x.shape
  kh, kw = kernel.shape[:2]
  padded = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  cols = jnp.concatenate(
      [
          padded[:, i : i + h, j : j + w, :]
          for i in range(kh)
          for j in range(kw)
      ],
      axis=-1,
  )
  return cols @ kernel.reshape(kh * kw * c, -1)


def _pool(x, layout: str, pool: str):
  spatial = (1, 2) if layout == "NHWC" else (2, 3)
  if pool == "window":
    dims = tuple(2 if a in spatial else 1 for a in range(4))
    return lax.reduce_window(x, -jnp.inf, lax.max, dims, dims, "SAME")
  if pool != "reshape":
    raise ValueError(f"pool must be 'window' or 'reshape', got {pool!r}")
  pads = [(0, x.shape[a] % 2 if a in spatial else 0) for a in range(4)]
  x = jnp.pad(x, pads, constant_values=-jnp.inf)
  shape = []
  for a, d in enumerate(x.shape):
    shape += [d // 2, 2] if a in spatial else [d]
  return x.reshape(shape).max(axis=(spatial[0] + 1, spatial[1] + 2))


def apply(
    params: dict,
    images: jax.Array,
    *,
    layout: str = "NHWC",
    pool: str = "window",
    conv: str = "xla",
    dtype=jnp.float32,
) -> jax.Array:
  """images float32 [B, H, W, C] -> logits float32 [B, num_classes]."""
  cast = lambda a: a.astype(dtype)
  x = cast(images)
  if layout == "NCHW":
    x = x.transpose(0, 3, 1, 2)
  bias = (
      (lambda b: cast(b))
      if layout == "NHWC"
      else (lambda b: cast(b)[:, None, None])
  )
  x = _pool(
      jax.nn.relu(
          _conv(x, cast(params["conv1"]), layout, conv) + bias(params["bias1"])
      ),
      layout,
      pool,
  )
  x = _pool(
      jax.nn.relu(
          _conv(x, cast(params["conv2"]), layout, conv) + bias(params["bias2"])
      ),
      layout,
      pool,
  )
  if layout == "NCHW":
    x = x.transpose(0, 2, 3, 1)  # flatten in simsoft's (H, W, C) order
  x = jax.nn.relu(
      x.reshape(x.shape[0], -1) @ cast(params["dense"]) + cast(params["bias3"])
  )
  return (x @ cast(params["head"]) + cast(params["bias4"])).astype(jnp.float32)
