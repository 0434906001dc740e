"""ImageNet ResNet-50 (He et al. 2016, v1.5): bottleneck blocks [3, 4, 6, 3].

Stem conv7x7(64) stride 2 - BN - ReLU - max-pool 3x3 stride 2; stages of
Bottleneck blocks (1x1 -> 3x3 -> 1x1 x4 channels) with 64/128/256/512 inner
widths, the stride on the 3x3 conv (v1.5, as torchvision and Flax's
ImageNet example) and projection shortcuts where the shape changes; global
average pool, head. D = 2048; 25,557,032 parameters for 1,000 classes (as
torchvision's resnet50), BN running statistics not counted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
from flax import nnx

from simsoft.models.layers import batch_norm, check_images, classify, conv


class Bottleneck(nnx.Module):
  """out = ReLU(BN(conv1x1(ReLU(BN(conv3x3_s(ReLU(BN(conv1x1(x))))))) + shortcut(x)).

  The last BN's scale starts at zero ("zero-init residual"), so each block
  starts as its shortcut.
  """

  expansion = 4

  def __init__(
      self,
      in_ch: int,
      width: int,
      stride: int,
      *,
      dtype: DTypeLike,
      rngs: nnx.Rngs,
  ):
    out_ch = width * self.expansion
    self.conv1 = conv(in_ch, width, 1, 1, dtype=dtype, rngs=rngs)
    self.bn1 = batch_norm(width, dtype=dtype, rngs=rngs)
    self.conv2 = conv(width, width, 3, stride, dtype=dtype, rngs=rngs)
    self.bn2 = batch_norm(width, dtype=dtype, rngs=rngs)
    self.conv3 = conv(width, out_ch, 1, 1, dtype=dtype, rngs=rngs)
    self.bn3 = batch_norm(
        out_ch,
        dtype=dtype,
        rngs=rngs,
        scale_init=nnx.initializers.zeros_init(),
    )
    project = stride != 1 or in_ch != out_ch
    self.proj = (
        conv(in_ch, out_ch, 1, stride, dtype=dtype, rngs=rngs)
        if project
        else None
    )
    self.proj_bn = (
        batch_norm(out_ch, dtype=dtype, rngs=rngs) if project else None
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = nnx.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    if self.proj is not None:
      x = self.proj_bn(self.proj(x))
    return nnx.relu(y + x)


class ResNet50(nnx.Module):
  """ResNet-50 for ImageNet-sized inputs (224 x 224; any H x W >= 32 works)."""

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
    self.conv = nnx.Conv(
        self.input_shape[-1],
        64,
        (7, 7),
        strides=2,
        padding=3,
        use_bias=False,
        kernel_init=nnx.initializers.he_normal(),
        dtype=dtype,
        param_dtype=jnp.float32,
        rngs=rngs,
    )
    self.bn = batch_norm(64, dtype=dtype, rngs=rngs)
    blocks, in_ch = [], 64
    for width, n, stride in zip(
        (64, 128, 256, 512), (3, 4, 6, 3), (1, 2, 2, 2)
    ):
      for i in range(n):
        blocks.append(
            Bottleneck(
                in_ch, width, stride if i == 0 else 1, dtype=dtype, rngs=rngs
            )
        )
        in_ch = width * Bottleneck.expansion
    self.blocks = nnx.List(blocks)
    self.feature_dim = in_ch
    self.head = nnx.Linear(
        in_ch, num_classes, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
    )

  def __call__(
      self, images: jax.Array, return_features: bool = False
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """images [B, H, W, C] -> logits [B, C] (and features [B, 2048])."""
    check_images(images, self.input_shape, "resnet50", spatial=False)
    x = nnx.relu(self.bn(self.conv(images.astype(self.dtype))))
    x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for block in self.blocks:
      x = block(x)
    return classify(self.head, jnp.mean(x, axis=(1, 2)), return_features)
