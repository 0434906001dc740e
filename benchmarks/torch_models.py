"""PyTorch twins of simsoft's models, for speed comparisons only (never imported by simsoft).

Architectures match simsoft.models (layer sizes, strides, shortcuts, BatchNorm
eps 1e-5 and running-average momentum 0.1, i.e. flax momentum 0.9), in NCHW.
Parameter counts match simsoft.models.param_count for the same num_classes.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn


class LeNet(nn.Module):
  """conv3x3(32)-ReLU-maxpool2-conv3x3(64)-ReLU-maxpool2-Dense(256)-ReLU-head ('SAME' pads)."""

  def __init__(self, num_classes: int = 10, input_shape=(28, 28, 1)):
    super().__init__()
    h, w, c = input_shape
    self.conv1 = nn.Conv2d(c, 32, 3, padding=1)
    self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
    flat = (
        math.ceil(math.ceil(h / 2) / 2) * math.ceil(math.ceil(w / 2) / 2) * 64
    )
    self.dense = nn.Linear(flat, 256)
    self.head = nn.Linear(256, num_classes)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.conv1(x)), 2, ceil_mode=True)
    x = F.max_pool2d(F.relu(self.conv2(x)), 2, ceil_mode=True)
    return self.head(F.relu(self.dense(x.flatten(1))))


def _bn(ch):
  return nn.BatchNorm2d(ch, eps=1e-5, momentum=0.1)


class BasicBlock(nn.Module):
  """Post-activation block; shortcut 'A' (strided slice + zero channel pad) or 'B' (1x1 conv + BN)."""

  def __init__(self, in_ch, out_ch, stride, shortcut):
    super().__init__()
    self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
    self.bn1 = _bn(out_ch)
    self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
    self.bn2 = _bn(out_ch)
    self.stride, self.out_ch = stride, out_ch
    reshape = stride != 1 or in_ch != out_ch
    self.pad = reshape and shortcut == "A"
    self.proj = (
        nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), _bn(out_ch)
        )
        if reshape and shortcut == "B"
        else None
    )

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    if self.pad:
      x = x[:, :, :: self.stride, :: self.stride]
      pad = self.out_ch - x.shape[1]
      x = F.pad(x, (0, 0, 0, 0, pad // 2, pad - pad // 2))
    elif self.proj is not None:
      x = self.proj(x)
    return F.relu(y + x)


class _ResNet(nn.Module):

  def __init__(
      self, in_ch, stem, widths, blocks, strides, shortcut, num_classes
  ):
    super().__init__()
    self.conv = nn.Conv2d(in_ch, stem, 3, 1, 1, bias=False)
    self.bn = _bn(stem)
    layers, c = [], stem
    for width, n, stride in zip(widths, blocks, strides):
      for i in range(n):
        layers.append(BasicBlock(c, width, stride if i == 0 else 1, shortcut))
        c = width
    self.blocks = nn.Sequential(*layers)
    self.head = nn.Linear(c, num_classes)

  def forward(self, x):
    x = self.blocks(F.relu(self.bn(self.conv(x))))
    return self.head(x.mean((2, 3)))


def resnet20(num_classes: int = 10, input_shape=(32, 32, 3)) -> nn.Module:
  """CIFAR ResNet-20, option-A shortcuts (269,722 parameters for 10 classes)."""
  return _ResNet(
      input_shape[-1], 16, (16, 32, 64), (3, 3, 3), (1, 2, 2), "A", num_classes
  )


def resnet18(num_classes: int = 10, input_shape=(32, 32, 3)) -> nn.Module:
  """CIFAR ResNet-18 (11,173,962 parameters for 10 classes)."""
  return _ResNet(
      input_shape[-1],
      64,
      (64, 128, 256, 512),
      (2, 2, 2, 2),
      (1, 2, 2, 2),
      "B",
      num_classes,
  )


class WideBlock(nn.Module):

  def __init__(self, in_ch, out_ch, stride):
    super().__init__()
    self.bn1 = _bn(in_ch)
    self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
    self.bn2 = _bn(out_ch)
    self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
    self.proj = (
        nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
        if stride != 1 or in_ch != out_ch
        else None
    )

  def forward(self, x):
    a = F.relu(self.bn1(x))
    y = self.conv2(F.relu(self.bn2(self.conv1(a))))
    return y + (x if self.proj is None else self.proj(a))


class WideResNet(nn.Module):
  """WRN-depth-width, pre-activation (36,479,194 parameters for WRN-28-10, 10 classes)."""

  def __init__(
      self,
      num_classes: int = 10,
      input_shape=(32, 32, 3),
      depth: int = 28,
      width: int = 10,
  ):
    super().__init__()
    n = (depth - 4) // 6
    self.conv = nn.Conv2d(input_shape[-1], 16, 3, 1, 1, bias=False)
    layers, c = [], 16
    for w, stride in zip((16 * width, 32 * width, 64 * width), (1, 2, 2)):
      for i in range(n):
        layers.append(WideBlock(c, w, stride if i == 0 else 1))
        c = w
    self.blocks = nn.Sequential(*layers)
    self.bn = _bn(c)
    self.head = nn.Linear(c, num_classes)

  def forward(self, x):
    x = F.relu(self.bn(self.blocks(self.conv(x))))
    return self.head(x.mean((2, 3)))


MODELS = {
    "lenet": LeNet,
    "resnet20": resnet20,
    "resnet18": resnet18,
    "wrn": WideResNet,
}


def create_model(
    name: str, *, num_classes: int, input_shape, **kwargs
) -> nn.Module:
  """The PyTorch twin of simsoft.models.create_model(name, ...)."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
  return MODELS[name](
      num_classes=num_classes, input_shape=tuple(input_shape), **kwargs
  )


def param_count(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())
