"""Small LeNet-style CNN."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from simsoft.models.layers import check_images, classify, he_normal


def _pool(x: jax.Array) -> jax.Array:
    # 'SAME' keeps odd sizes: 7 -> 4, so 8x8 and 28x28 inputs both survive two pools.
    return nnx.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")


class LeNet(nnx.Module):
    """conv3x3(32) -> ReLU -> maxpool2 -> conv3x3(64) -> ReLU -> maxpool2 -> Dense(256) -> ReLU -> head.

    'SAME' padding throughout; the flattened size is ceil(H/4) * ceil(W/4) * 64. D = 256.
    """

    def __init__(self, *, num_classes: int, input_shape: tuple[int, int, int], rngs: nnx.Rngs,
                 dtype=jnp.float32):
        self.input_shape = tuple(input_shape)
        self.dtype = dtype
        h, w, c = self.input_shape
        kw = dict(padding="SAME", kernel_init=he_normal, dtype=dtype, param_dtype=jnp.float32,
                  rngs=rngs)
        self.conv1 = nnx.Conv(c, 32, (3, 3), **kw)
        self.conv2 = nnx.Conv(32, 64, (3, 3), **kw)
        flat = math.ceil(math.ceil(h / 2) / 2) * math.ceil(math.ceil(w / 2) / 2) * 64
        self.dense = nnx.Linear(flat, 256, kernel_init=he_normal, dtype=dtype,
                                param_dtype=jnp.float32, rngs=rngs)
        self.feature_dim = 256
        self.head = nnx.Linear(256, num_classes, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, images: jax.Array, return_features: bool = False):
        """images [B, H, W, C] -> logits [B, C] (and features [B, 256])."""
        check_images(images, self.input_shape, "lenet")
        x = images.astype(self.dtype)
        x = _pool(nnx.relu(self.conv1(x)))
        x = _pool(nnx.relu(self.conv2(x)))
        x = nnx.relu(self.dense(x.reshape(x.shape[0], -1)))
        return classify(self.head, x, return_features)
