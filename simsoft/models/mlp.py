"""Multi-layer perceptron on flattened images."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
from flax import nnx

from simsoft.models.layers import check_images, classify, he_normal


class MLP(nnx.Module):
  """flatten -> [Dense(h) -> ReLU] for h in hidden -> head Dense(C).

  features = output of the last hidden ReLU, D = hidden[-1] (H*W*C when hidden is empty).
  """

  def __init__(
      self,
      *,
      num_classes: int,
      input_shape: tuple[int, int, int],
      rngs: nnx.Rngs,
      dtype: DTypeLike = jnp.float32,
      hidden: Sequence[int] = (256, 256),
  ):
    hidden = tuple(hidden)
    if not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden
    ):
      raise ValueError(
          f"mlp: hidden must be a sequence of positive ints, got {hidden!r}"
      )
    self.input_shape = tuple(input_shape)
    self.dtype = dtype
    sizes = (math.prod(self.input_shape),) + hidden
    self.layers = nnx.List(
        [
            nnx.Linear(
                d_in,
                d_out,
                kernel_init=he_normal,
                dtype=dtype,
                param_dtype=jnp.float32,
                rngs=rngs,
            )
            for d_in, d_out in zip(sizes[:-1], sizes[1:])
        ]
    )
    self.feature_dim = sizes[-1]
    self.head = nnx.Linear(
        self.feature_dim,
        num_classes,
        dtype=dtype,
        param_dtype=jnp.float32,
        rngs=rngs,
    )

  def __call__(
      self, images: jax.Array, return_features: bool = False
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """images [B, H, W, C] -> logits [B, C] (and features [B, D])."""
    check_images(images, self.input_shape, "mlp")
    x = images.reshape(images.shape[0], -1).astype(self.dtype)
    for layer in self.layers:
      x = nnx.relu(layer(x))
    return classify(self.head, x, return_features)
