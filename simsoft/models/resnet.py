"""CIFAR ResNets: He et al. 2016 (ResNet-20/32/44/56/110) and the CIFAR ResNet-18.

Both use post-activation BasicBlocks, out = ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)),
and global average pooling before the head, so any H x W input works.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
from flax import nnx

from simsoft.models.layers import batch_norm, check_images, classify, conv

CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110)


class BasicBlock(nnx.Module):
  """Two 3x3 conv-BN layers plus a shortcut.

  shortcut = identity when shape is unchanged; otherwise
    'A': x[:, ::s, ::s, :] zero-padded to out_ch channels (parameter-free, He et al. option A),
    'B': BN(conv1x1 stride s) (projection, option B).
  """

  def __init__(
      self,
      in_ch: int,
      out_ch: int,
      stride: int,
      shortcut: str,
      *,
      dtype: DTypeLike,
      rngs: nnx.Rngs,
  ):
    self.conv1 = conv(in_ch, out_ch, 3, stride, dtype=dtype, rngs=rngs)
    self.bn1 = batch_norm(out_ch, dtype=dtype, rngs=rngs)
    self.conv2 = conv(out_ch, out_ch, 3, 1, dtype=dtype, rngs=rngs)
    self.bn2 = batch_norm(out_ch, dtype=dtype, rngs=rngs)
    self.stride = stride
    self.out_ch = out_ch
    reshape = stride != 1 or in_ch != out_ch
    self.pad_shortcut = reshape and shortcut == "A"
    project = reshape and shortcut == "B"
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
    y = self.bn2(self.conv2(y))
    if self.pad_shortcut:
      x = x[:, :: self.stride, :: self.stride, :]
      pad = self.out_ch - x.shape[-1]
      x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (pad // 2, pad - pad // 2)))
    elif self.proj is not None:
      x = self.proj_bn(self.proj(x))
    return nnx.relu(y + x)


def _stages(
    in_ch: int, widths, blocks, strides, shortcut: str, *, dtype, rngs
) -> nnx.List:
  layers = []
  for width, n, stride in zip(widths, blocks, strides):
    for i in range(n):
      layers.append(
          BasicBlock(
              in_ch,
              width,
              stride if i == 0 else 1,
              shortcut,
              dtype=dtype,
              rngs=rngs,
          )
      )
      in_ch = width
  return nnx.List(layers)


def _check_shortcut(shortcut: str, model: str) -> None:
  if shortcut not in ("A", "B"):
    raise ValueError(
        f"{model}: shortcut must be 'A' (zero-pad) or 'B' (projection), "
        f"got {shortcut!r}"
    )


class CifarResNet(nnx.Module):
  """ResNet-{6n+2} for CIFAR (He et al. 2016, Sec. 4.2): conv3x3(16)-BN-ReLU, 3 stages of n
  BasicBlocks with 16/32/64 channels (strides 1/2/2), global average pool, head. D = 64.

  With the paper's option-A shortcuts ResNet-20 has 269,722 parameters (~0.27M);
  shortcut='B' adds two 1x1 projections + BN (2,752 more: 272,474).
  """

  def __init__(
      self,
      *,
      num_classes: int,
      input_shape: tuple[int, int, int],
      rngs: nnx.Rngs,
      dtype: DTypeLike = jnp.float32,
      depth: int = 20,
      shortcut: str = "A",
  ):
    if depth not in CIFAR_RESNET_DEPTHS:
      raise ValueError(
          f"resnet: depth must be one of {CIFAR_RESNET_DEPTHS} (6n+2), "
          f"got {depth!r}"
      )
    _check_shortcut(shortcut, "resnet")
    n = (depth - 2) // 6
    self.input_shape = tuple(input_shape)
    self.dtype = dtype
    self.conv = conv(self.input_shape[-1], 16, 3, 1, dtype=dtype, rngs=rngs)
    self.bn = batch_norm(16, dtype=dtype, rngs=rngs)
    self.blocks = _stages(
        16, (16, 32, 64), (n, n, n), (1, 2, 2), shortcut, dtype=dtype, rngs=rngs
    )
    self.feature_dim = 64
    self.head = nnx.Linear(
        64, num_classes, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
    )

  def __call__(
      self, images: jax.Array, return_features: bool = False
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """images [B, H, W, C] -> logits [B, C] (and features [B, 64])."""
    check_images(images, self.input_shape, "resnet", spatial=False)
    x = nnx.relu(self.bn(self.conv(images.astype(self.dtype))))
    for block in self.blocks:
      x = block(x)
    return classify(self.head, jnp.mean(x, axis=(1, 2)), return_features)


def _alias(depth: int) -> Callable[..., CifarResNet]:
  def build(
      *,
      num_classes: int,
      input_shape: tuple[int, int, int],
      rngs: nnx.Rngs,
      dtype: DTypeLike = jnp.float32,
      shortcut: str = "A",
  ) -> CifarResNet:
    return CifarResNet(
        num_classes=num_classes,
        input_shape=input_shape,
        rngs=rngs,
        dtype=dtype,
        depth=depth,
        shortcut=shortcut,
    )

  build.__name__ = build.__qualname__ = f"resnet{depth}"
  build.__doc__ = f"CifarResNet with depth={depth}."
  return build


resnet32 = _alias(32)
resnet56 = _alias(56)


class ResNet18(nnx.Module):
  """CIFAR ResNet-18: conv3x3(64) stride 1 (no max-pool)-BN-ReLU, BasicBlocks [2, 2, 2, 2]
  with 64/128/256/512 channels (strides 1/2/2/2) and projection shortcuts, global average
  pool, head. D = 512; 11,173,962 parameters for 10 classes.
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
    self.conv = conv(self.input_shape[-1], 64, 3, 1, dtype=dtype, rngs=rngs)
    self.bn = batch_norm(64, dtype=dtype, rngs=rngs)
    self.blocks = _stages(
        64,
        (64, 128, 256, 512),
        (2, 2, 2, 2),
        (1, 2, 2, 2),
        "B",
        dtype=dtype,
        rngs=rngs,
    )
    self.feature_dim = 512
    self.head = nnx.Linear(
        512, num_classes, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
    )

  def __call__(
      self, images: jax.Array, return_features: bool = False
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """images [B, H, W, C] -> logits [B, C] (and features [B, 512])."""
    check_images(images, self.input_shape, "resnet18", spatial=False)
    x = nnx.relu(self.bn(self.conv(images.astype(self.dtype))))
    for block in self.blocks:
      x = block(x)
    return classify(self.head, jnp.mean(x, axis=(1, 2)), return_features)
