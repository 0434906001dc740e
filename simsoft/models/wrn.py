"""Wide ResNet (Zagoruyko & Komodakis 2016), pre-activation blocks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
from flax import nnx

from simsoft.models.layers import batch_norm, check_images, classify, conv


class WideBlock(nnx.Module):
  """a = ReLU(BN(x)); out = conv3x3(Dropout(ReLU(BN(conv3x3_s(a))))) + shortcut, where
  shortcut = x if the shape is unchanged, else conv1x1_s(a) (as in the authors' code).
  """

  def __init__(
      self,
      in_ch: int,
      out_ch: int,
      stride: int,
      dropout: float,
      *,
      dtype: DTypeLike,
      rngs: nnx.Rngs,
  ):
    self.bn1 = batch_norm(in_ch, dtype=dtype, rngs=rngs)
    self.conv1 = conv(in_ch, out_ch, 3, stride, dtype=dtype, rngs=rngs)
    self.bn2 = batch_norm(out_ch, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None
    self.conv2 = conv(out_ch, out_ch, 3, 1, dtype=dtype, rngs=rngs)
    project = stride != 1 or in_ch != out_ch
    self.proj = (
        conv(in_ch, out_ch, 1, stride, dtype=dtype, rngs=rngs)
        if project
        else None
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    a = nnx.relu(self.bn1(x))
    y = nnx.relu(self.bn2(self.conv1(a)))
    if self.dropout is not None:
      y = self.dropout(y)
    y = self.conv2(y)
    return y + (x if self.proj is None else self.proj(a))


class WideResNet(nnx.Module):
  """WRN-depth-width: conv3x3(16), 3 groups of n = (depth - 4) / 6 WideBlocks with
  16k/32k/64k channels (strides 1/2/2), BN-ReLU, global average pool, head. D = 64k.

  WRN-28-10 has 36,479,194 parameters for 10 classes. dropout > 0 adds an nnx.Dropout that
  draws from rngs['dropout'] (falling back to rngs['default']) and is active in train mode.
  """

  def __init__(
      self,
      *,
      num_classes: int,
      input_shape: tuple[int, int, int],
      rngs: nnx.Rngs,
      dtype: DTypeLike = jnp.float32,
      depth: int = 28,
      width: int = 10,
      dropout: float = 0.0,
  ):
    if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
      raise ValueError(
          f"wrn: depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), "
          f"got {depth!r}"
      )
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
      raise ValueError(f"wrn: width must be a positive int, got {width!r}")
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"wrn: dropout must be in [0, 1), got {dropout!r}")
    n = (depth - 4) // 6
    self.input_shape = tuple(input_shape)
    self.dtype = dtype
    self.conv = conv(self.input_shape[-1], 16, 3, 1, dtype=dtype, rngs=rngs)
    blocks, in_ch = [], 16
    for width_k, stride in zip((16 * width, 32 * width, 64 * width), (1, 2, 2)):
      for i in range(n):
        blocks.append(
            WideBlock(
                in_ch,
                width_k,
                stride if i == 0 else 1,
                dropout,
                dtype=dtype,
                rngs=rngs,
            )
        )
        in_ch = width_k
    self.blocks = nnx.List(blocks)
    self.bn = batch_norm(in_ch, dtype=dtype, rngs=rngs)
    self.feature_dim = in_ch
    self.head = nnx.Linear(
        in_ch, num_classes, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
    )

  def __call__(
      self, images: jax.Array, return_features: bool = False
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """images [B, H, W, C] -> logits [B, C] (and features [B, 64 * width])."""
    check_images(images, self.input_shape, "wrn", spatial=False)
    x = self.conv(images.astype(self.dtype))
    for block in self.blocks:
      x = block(x)
    x = nnx.relu(self.bn(x))
    return classify(self.head, jnp.mean(x, axis=(1, 2)), return_features)
