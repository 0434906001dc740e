"""Model zoo: name -> Flax NNX classifier.

Every model maps images float32 [B, H, W, C] (already normalized) to logits float32 [B, C];
``model(images, return_features=True)`` returns ``(logits, features)`` with features float32
[B, D], the input of the final linear layer ``model.head`` (kernel [D, C], D = model.feature_dim).
Parameters are float32; ``dtype`` is the compute dtype.

Train/eval mode: models start in train mode (BatchNorm uses batch statistics and updates its
nnx.BatchStat running averages; Dropout is active). ``model.eval()`` / ``model.train()`` switch
in place (flax 0.12: ``Module.set_attributes(use_running_average=..., deterministic=...)``);
``nnx.view(model, use_running_average=True, deterministic=True, raise_if_not_found=False)``
returns an eval-mode view that shares the arrays and leaves ``model`` as it is.

Under jit, ``graphdef, params, rest = nnx.split(model, nnx.Param, ...)``: ``rest`` holds the
BatchNorm statistics (and, for ``wrn`` with dropout > 0, the dropout RNG count), which a
train-mode call updates; split the merged model again to carry them out of the step.
The mode is part of ``graphdef``, so switch it before splitting.

Example::

    model = create_model("resnet20", num_classes=10, input_shape=(32, 32, 3), rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def forward(params, rest, images):
        model = nnx.merge(graphdef, params, rest)
        logits = model(images)
        return logits, nnx.state(model, nnx.Not(nnx.Param))
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
from flax import nnx

from simsoft.models.layers import COMPUTE_DTYPES
from simsoft.models.lenet import LeNet
from simsoft.models.mlp import MLP
from simsoft.models.resnet import CifarResNet, ResNet18, resnet32, resnet56
from simsoft.models.resnet50 import ResNet50
from simsoft.models.wrn import WideResNet

__all__ = [
    "MODELS",
    "create_model",
    "default_kwargs",
    "classifier_kernel",
    "param_count",
]

MODELS: dict[str, Callable[..., nnx.Module]] = {
    "mlp": MLP,  # hidden=(256, 256)
    "lenet": LeNet,
    "resnet20": CifarResNet,  # depth=20 in {20, 32, 44, 56, 110}, shortcut='A' | 'B'
    "resnet32": resnet32,  # shortcut
    "resnet56": resnet56,  # shortcut
    "resnet18": ResNet18,
    "resnet50": ResNet50,  # ImageNet (bottleneck, v1.5)
    "wrn": WideResNet,  # depth=28, width=10, dropout=0.0
}

_COMMON = ("self", "num_classes", "input_shape", "rngs", "dtype")


def _model_parameters(constructor: Callable) -> list[inspect.Parameter]:
  # nnx.Module's metaclass hides a class's __init__ signature behind (*args, **kwargs).
  fn = constructor.__init__ if isinstance(constructor, type) else constructor
  return [
      p
      for p in inspect.signature(fn).parameters.values()
      if p.name not in _COMMON
  ]


def _model_kwargs(constructor: Callable) -> list[str]:
  return [p.name for p in _model_parameters(constructor)]


def default_kwargs(name: str) -> dict[str, Any]:
  """{keyword: default} of the model-specific options of MODELS[name] ({} if none)."""
  return {
      p.name: p.default
      for p in _model_parameters(MODELS[name])
      if p.default is not inspect.Parameter.empty
  }


def create_model(
    name: str,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    rngs: nnx.Rngs,
    dtype: DTypeLike = jnp.float32,
    **kwargs: Any,
) -> nnx.Module:
  """Build the model registered as ``name``.

  Args:
    name: a key of MODELS.
    num_classes: C >= 1, the number of logits.
    input_shape: (H, W, C) of one image, e.g. (28, 28, 1) or (32, 32, 3).
    rngs: parameter initialization (and dropout) randomness.
    dtype: compute dtype, jnp.float32 or jnp.bfloat16 (float16 also accepted); parameters
      stay float32 and logits/features are returned as float32.
    **kwargs: model-specific options (see MODELS); unknown ones raise TypeError.

  Raises:
    ValueError: unknown name (the message lists the known ones) or a bad argument value.
    TypeError: a keyword the model does not take, or rngs that is not an nnx.Rngs.
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)}")
  constructor = MODELS[name]
  accepted = _model_kwargs(constructor)
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown:
    raise TypeError(
        f"model {name!r} got unknown keyword argument(s) {unknown}; "
        f"it accepts {accepted or 'none'}"
    )
  if (
      isinstance(num_classes, bool)
      or not isinstance(num_classes, int)
      or num_classes < 1
  ):
    raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
  shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
  if (
      shape is None
      or len(shape) != 3
      or not all(
          isinstance(d, int) and not isinstance(d, bool) and d > 0
          for d in shape
      )
  ):
    raise ValueError(
        f"input_shape must be (H, W, C) of positive ints, got {input_shape!r}"
    )
  if not isinstance(rngs, nnx.Rngs):
    raise TypeError(f"rngs must be an nnx.Rngs, got {type(rngs).__name__}")
  if jnp.dtype(dtype) not in [jnp.dtype(d) for d in COMPUTE_DTYPES]:
    raise ValueError(
        f"dtype must be one of float32, bfloat16, float16, got {dtype!r}"
    )
  return constructor(
      num_classes=num_classes,
      input_shape=shape,
      rngs=rngs,
      dtype=jnp.dtype(dtype),
      **kwargs,
  )


def classifier_kernel(model: nnx.Module) -> jax.Array:
  """The head's weight matrix W [D, C], logits = features @ W + b."""
  return model.head.kernel[...]


def param_count(model: nnx.Module) -> int:
  """Number of scalars in the model's nnx.Param variables (BatchNorm statistics excluded).

  Works on abstract models from nnx.eval_shape as well.
  """
  return sum(
      math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))
  )
