"""Pieces shared by the model zoo: dtype checks, conv/BN factories, the classifier output."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
from flax import nnx

COMPUTE_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
he_normal = (
    nnx.initializers.he_normal()
)  # std = sqrt(2 / fan_in), truncated normal


def conv(
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int,
    *,
    dtype: DTypeLike,
    rngs: nnx.Rngs,
) -> nnx.Conv:
  """Bias-free kxk conv, PyTorch-style symmetric padding k//2 (so stride 2 gives ceil(H/2))."""
  return nnx.Conv(
      in_ch,
      out_ch,
      (kernel, kernel),
      strides=stride,
      padding=kernel // 2,
      use_bias=False,
      kernel_init=he_normal,
      dtype=dtype,
      param_dtype=jnp.float32,
      rngs=rngs,
  )


def batch_norm(
    ch: int,
    *,
    dtype: DTypeLike,
    rngs: nnx.Rngs,
    scale_init=nnx.initializers.ones_init(),
) -> nnx.BatchNorm:
  """BatchNorm with PyTorch defaults: running = 0.9 * running + 0.1 * batch, eps = 1e-5."""
  return nnx.BatchNorm(
      ch,
      momentum=0.9,
      epsilon=1e-5,
      scale_init=scale_init,
      dtype=dtype,
      param_dtype=jnp.float32,
      rngs=rngs,
  )


def check_images(
    images: jax.Array,
    input_shape: tuple[int, int, int],
    model: str,
    *,
    spatial: bool = True,
) -> None:
  """Raise ValueError unless images is [B, H, W, C] matching input_shape (only C if not spatial)."""
  shape = tuple(images.shape)
  expected = tuple(input_shape) if spatial else tuple(input_shape[-1:])
  if len(shape) != 4 or shape[4 - len(expected) :] != expected:
    want = (
        f"[B, {', '.join(map(str, input_shape))}]"
        if spatial
        else f"[B, H, W, {input_shape[-1]}]"
    )
    raise ValueError(
        f"{model}: images must have shape {want}, got {list(shape)}"
    )


def classify(
    head: nnx.Linear, features: jax.Array, return_features: bool
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """logits = head(features) in float32 [B, C]; with return_features also features float32 [B, D]."""
  logits = head(features).astype(jnp.float32)
  if return_features:
    return logits, features.astype(jnp.float32)
  return logits
