"""Small LeNet-style CNN."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
from flax import nnx

from simsoft.models.layers import check_images, classify, he_normal


def _pool(x: jax.Array) -> jax.Array:
  """2x2 max-pool, stride 2, 'SAME' (odd sizes padded with -inf at the end: 7 -> 4).

  Equal to nnx.max_pool(x, (2, 2), strides=(2, 2), padding='SAME'), written as
  the max of four strided slices: the reduce_window form's gradient
  (select_and_scatter) runs as a slow generic loop on XLA:CPU, this one fuses
  (benchmarks/RESULTS.md: +55 % lenet training throughput on CPU for the
  equivalent reshape form). Slices, unlike a reshape, keep a sharded batch
  axis valid under Explicit-sharding meshes.
  """
  _, h, w, _ = x.shape
  x = jnp.pad(
      x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf
  )
  return jnp.maximum(
      jnp.maximum(x[:, 0::2, 0::2], x[:, 0::2, 1::2]),
      jnp.maximum(x[:, 1::2, 0::2], x[:, 1::2, 1::2]),
  )


class LeNet(nnx.Module):
  """conv3x3(32) -> ReLU -> maxpool2 -> conv3x3(64) -> ReLU -> maxpool2 -> Dense(256) -> ReLU -> head.

  'SAME' padding throughout; the flattened size is ceil(H/4) * ceil(W/4) * 64. D = 256.
  """

  def __init__(
      self,
      *,
      num_classes: int,
      input_shape: tuple[int, int, int],
      rngs: nnx.Rngs,
      dtype: DTypeLike = jnp.float32,
  ):
    self.input_shape = tuple(input_shape)
    self.dtype = dtype
    h, w, c = self.input_shape
    kw = dict(
        padding="SAME",
        kernel_init=he_normal,
        dtype=dtype,
        param_dtype=jnp.float32,
        rngs=rngs,
    )
    self.conv1 = nnx.Conv(c, 32, (3, 3), **kw)
    self.conv2 = nnx.Conv(32, 64, (3, 3), **kw)
    flat = (
        math.ceil(math.ceil(h / 2) / 2) * math.ceil(math.ceil(w / 2) / 2) * 64
    )
    self.dense = nnx.Linear(
        flat,
        256,
        kernel_init=he_normal,
        dtype=dtype,
        param_dtype=jnp.float32,
        rngs=rngs,
    )
    self.feature_dim = 256
    self.head = nnx.Linear(
        256, num_classes, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
    )

  def __call__(
      self, images: jax.Array, return_features: bool = False
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """images [B, H, W, C] -> logits [B, C] (and features [B, 256])."""
    check_images(images, self.input_shape, "lenet")
    x = images.astype(self.dtype)
    x = _pool(nnx.relu(self.conv1(x)))
    x = _pool(nnx.relu(self.conv2(x)))
    x = nnx.relu(self.dense(x.reshape(x.shape[0], -1)))
    return classify(self.head, x, return_features)
