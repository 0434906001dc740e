"""Tests for simsoft.models: shapes, dtypes, parameter counts, BatchNorm modes, split/merge, sharding."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from simsoft.models import MODELS, classifier_kernel, create_model, param_count
from simsoft.models.resnet import BasicBlock

SHAPES = [(8, 8, 1), (28, 28, 1), (32, 32, 3)]
# Small variants keep the tests cheap; wrn-28-10 itself is only counted. WRN-10-1 and resnet20
# share their kernel shapes, and most of the run time on CPU is compiling the initializers of
# new shapes, so the concrete tests stay on 8x8x1 inputs, 10 classes and these two models.
SMALL_KWARGS = {"wrn": {"depth": 10, "width": 1, "dropout": 0.3}}


def _rngs(seed=0):
  # 'rbg' keys: XLA:CPU compiles a threefry sampler per kernel shape in ~1 s; rbg is ~4x cheaper.
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def _abstract(name, input_shape=(32, 32, 3), num_classes=10, **kwargs):
  return nnx.eval_shape(
      lambda: create_model(
          name,
          num_classes=num_classes,
          input_shape=input_shape,
          rngs=nnx.Rngs(0),
          **kwargs,
      )
  )


def _images(shape, batch=2, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch,) + shape, jnp.float32)


def test_import_without_tensorflow():
  code = "import sys, simsoft.models; assert 'tensorflow' not in sys.modules, 'tf imported'"
  subprocess.run([sys.executable, "-c", code], check=True)


# resnet32/56 are CifarResNet (resnet20's class) with more blocks: one shape each keeps tracing cheap
# (and resnet50, the slowest to trace: one float32 shape).
ALIASES = ("resnet32", "resnet56")
GRID = [
    (name, jnp.float32, shape)
    for name in sorted(MODELS)
    if name not in ALIASES + ("resnet50",)
    for shape in SHAPES
]
GRID += [(name, jnp.float32, (28, 28, 1)) for name in ALIASES + ("resnet50",)]
GRID += [(name, jnp.bfloat16, (32, 32, 3)) for name in sorted(MODELS)]


@pytest.mark.parametrize("name, dtype, shape", GRID)
def test_output_shapes_and_dtypes(name, dtype, shape):
  """Abstract forward (jax.eval_shape): shapes and dtypes for every registered name."""
  built = {}

  def forward(x):
    model = built["model"] = create_model(
        name,
        num_classes=7,
        input_shape=shape,
        rngs=nnx.Rngs(0),
        dtype=dtype,
        **SMALL_KWARGS.get(name, {}),
    )
    logits, features = model(x, return_features=True)
    return (
        logits,
        features,
        classifier_kernel(model),
        nnx.state(model, nnx.Param, nnx.BatchStat),
    )

  logits, features, kernel, variables = jax.eval_shape(forward, _images(shape))
  d = built["model"].feature_dim
  assert isinstance(d, int) and isinstance(built["model"].head, nnx.Linear)
  assert (logits.shape, logits.dtype) == ((2, 7), jnp.float32)
  assert (features.shape, features.dtype) == ((2, d), jnp.float32)
  assert (kernel.shape, kernel.dtype) == ((d, 7), jnp.float32)
  # Parameters and BatchNorm running statistics stay float32 whatever the compute dtype.
  assert {x.dtype for x in jax.tree.leaves(variables)} == {
      jnp.dtype(jnp.float32)
  }


def _small(name, dtype=jnp.float32, **kwargs):
  return create_model(
      name,
      num_classes=10,
      input_shape=(8, 8, 1),
      rngs=_rngs(),
      dtype=dtype,
      **(SMALL_KWARGS.get(name, {}) | kwargs),
  )


@pytest.mark.parametrize(
    "name, kwargs",
    [("mlp", {}), ("lenet", {}), ("resnet20", {"shortcut": "B"}), ("wrn", {})],
)
def test_forward_values_and_bfloat16(name, kwargs):
  """Real forward on 8x8x1: logits = features @ W + b; bf16 compute stays close to f32."""
  m32, m16 = _small(name, **kwargs), _small(name, jnp.bfloat16, **kwargs)
  m32.eval(), m16.eval()
  forward = nnx.jit(
      lambda a, b, x: (
          a(x, return_features=True),
          b(x, return_features=True),
          b(x),
      )
  )
  (l32, f32), (l16, f16), plain16 = forward(m32, m16, _images((8, 8, 1)))
  w, b = classifier_kernel(m32), m32.head.bias[...]
  assert l16.dtype == f16.dtype == plain16.dtype == jnp.float32
  np.testing.assert_array_equal(plain16, l16)
  assert np.all(np.isfinite(l32)) and np.all(np.isfinite(l16))
  np.testing.assert_allclose(
      l32, np.asarray(f32) @ np.asarray(w) + np.asarray(b), rtol=1e-4, atol=1e-4
  )
  scale = np.abs(l32).max() + 1e-3
  assert np.abs(np.asarray(l16) - np.asarray(l32)).max() < 0.1 * scale
  assert not np.array_equal(l16, l32)  # bf16 really was used


def test_parameter_counts():
  # ResNet-20, option A (no shortcut parameters); conv k*k*in*out (no bias), BN 2*ch, fc D*C+C:
  #   stem        3*3*3*16 + 2*16                                  =     464
  #   stage 16    3 blocks * 2 * (3*3*16*16 + 32)                  =  14,016
  #   stage 32    (3*3*16*32 + 64) + (3*3*32*32 + 64)
  #               + 2 blocks * 2 * (3*3*32*32 + 64)                =  51,072
  #   stage 64    (3*3*32*64 + 128) + (3*3*64*64 + 128)
  #               + 2 blocks * 2 * (3*3*64*64 + 128)               = 203,520
  #   head        64*10 + 10                                       =     650
  #   total                                                        = 269,722  (paper: 0.27M)
  # The often-quoted 272,474 is option B: + (16*32 + 64) + (32*64 + 128) = 2,752 for the two
  # 1x1 projection + BN shortcuts.
  assert param_count(_abstract("resnet20")) == 269_722
  assert param_count(_abstract("resnet20", shortcut="B")) == 272_474
  assert param_count(_abstract("resnet20", depth=32)) == 464_154  # paper 0.46M
  assert param_count(_abstract("resnet32")) == 464_154
  assert param_count(_abstract("resnet56")) == 853_018  # paper 0.85M
  # ResNet-18 (CIFAR): stem 1,856; layer1 147,968; layer2 525,568; layer3 2,099,712;
  # layer4 8,393,728; fc 5,130.
  assert param_count(_abstract("resnet18")) == 11_173_962
  # torchvision's resnet50 count; BN running statistics are not parameters
  assert (
      param_count(_abstract("resnet50", (224, 224, 3), num_classes=1000))
      == 25_557_032
  )
  # WRN-28-10: conv 432; groups 1,640,672 + 6,968,000 + 27,862,400; final BN 1,280; fc 6,410.
  assert param_count(_abstract("wrn")) == 36_479_194
  assert (
      param_count(_abstract("wrn", depth=16, width=8)) == 10_961_370
  )  # paper 11.0M
  # MLP on 8x8x1: (64*256 + 256) + (256*256 + 256) + (256*10 + 10).
  assert param_count(_abstract("mlp", (8, 8, 1))) == 85_002
  # LeNet on 28x28x1: (9*32 + 32) + (9*32*64 + 64) + (7*7*64*256 + 256) + (256*10 + 10).
  assert param_count(_abstract("lenet", (28, 28, 1))) == 824_458


def test_option_a_shortcut_is_subsample_and_zero_pad():
  block = BasicBlock(16, 32, 2, "A", dtype=jnp.float32, rngs=_rngs())
  block.conv2.kernel[...] = jnp.zeros_like(block.conv2.kernel[...])
  block.eval()  # bn2(0) = bias = 0, so out = relu(shortcut(x))
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 16))
  out = np.asarray(nnx.jit(lambda b, x: b(x))(block, x))
  expected = np.zeros((2, 3, 3, 32), np.float32)
  expected[..., 8:24] = np.maximum(np.asarray(x)[:, ::2, ::2, :], 0)
  np.testing.assert_allclose(out, expected, atol=1e-6)


def _batch_stats(model):
  return jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))


def test_batchnorm_train_updates_running_stats_eval_does_not():
  model = _small("resnet20")
  x = _images((8, 8, 1), batch=4)
  before = _batch_stats(model)

  model.eval()
  eval_logits = model(x)
  after_eval = _batch_stats(model)
  jax.tree.map(np.testing.assert_array_equal, before, after_eval)

  model.train()
  train_logits = model(x)
  # First BN: running mean = 0.9 * 0 + 0.1 * mean over (B, H, W) of the stem conv output.
  stem = np.asarray(model.conv(x))
  np.testing.assert_allclose(
      model.bn.mean[...], 0.1 * stem.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
      model.bn.var[...],
      0.9 + 0.1 * stem.var(axis=(0, 1, 2)),
      rtol=1e-5,
      atol=1e-6,
  )
  assert not np.allclose(train_logits, eval_logits)

  # nnx.view gives an eval-mode view without changing the model's own mode.
  view = nnx.view(
      model,
      use_running_average=True,
      deterministic=True,
      raise_if_not_found=False,
  )
  stats = _batch_stats(model)
  view(x)
  jax.tree.map(np.testing.assert_array_equal, stats, _batch_stats(model))
  assert model.bn.use_running_average is False


def test_dropout_only_in_train_mode():
  model = _small("wrn")
  x = _images((8, 8, 1), batch=4)
  model.eval()
  np.testing.assert_array_equal(model(x), model(x))
  model.train()
  assert not np.allclose(
      model(x), model(x)
  )  # each call draws a fresh dropout mask


def _jitted_forward(graphdef):
  @jax.jit
  def forward(params, rest, x):
    model = nnx.merge(graphdef, params, rest)
    logits = model(x)
    return logits, nnx.state(model, nnx.BatchStat)

  return forward


@pytest.mark.parametrize("train", [False, True])
def test_split_merge_under_jit_matches_eager(train):
  model = _small("resnet20")
  model.train() if train else model.eval()
  x = _images((8, 8, 1), batch=4, seed=1)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  logits, stats = _jitted_forward(graphdef)(params, rest, x)
  eager = model(x)
  np.testing.assert_allclose(logits, eager, rtol=1e-5, atol=1e-5)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      jax.tree.map(np.asarray, stats),
      _batch_stats(model),
  )


@pytest.mark.parametrize(
    "name, axis_type",
    [
        ("resnet20", jax.sharding.AxisType.Explicit),
        ("resnet20", jax.sharding.AxisType.Auto),
        ("mlp", jax.sharding.AxisType.Explicit),
        ("lenet", jax.sharding.AxisType.Explicit),
    ],
)
def test_batch_sharded_over_4_devices_matches_eager(name, axis_type):
  """Train-mode forward with the batch split over 4 devices equals the 1-device eager one
  (BatchNorm statistics are over the global batch)."""
  assert jax.device_count() >= 4
  mesh = jax.make_mesh(
      (4,), ("data",), axis_types=(axis_type,), devices=jax.devices()[:4]
  )
  model = _small(name)
  model.train()
  x = _images((8, 8, 1), batch=4, seed=1)
  graphdef, params, rest = nnx.split(nnx.clone(model), nnx.Param, ...)
  replicated = NamedSharding(mesh, P())
  logits, stats = _jitted_forward(graphdef)(
      jax.device_put(params, replicated),
      jax.device_put(rest, replicated),
      jax.device_put(x, NamedSharding(mesh, P("data"))),
  )
  assert len(logits.sharding.device_set) == 4
  np.testing.assert_allclose(logits, model(x), rtol=1e-5, atol=1e-5)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      jax.tree.map(np.asarray, stats),
      _batch_stats(model),
  )


def _create(name="resnet20", **overrides):
  args = dict(num_classes=10, input_shape=(8, 8, 1), rngs=nnx.Rngs(0))
  args.update(overrides)
  return nnx.eval_shape(lambda: create_model(name, **args))


@pytest.mark.parametrize(
    "name, kwargs, error, match",
    [
        (
            "vgg",
            {},
            ValueError,
            r"unknown model 'vgg'; known models: \['lenet', 'mlp', ",
        ),
        (
            "resnet20",
            {"width": 2},
            TypeError,
            r"'resnet20'.*\['width'\].*\['depth', 'shortcut'\]",
        ),
        ("resnet32", {"depth": 20}, TypeError, r"'resnet32'.*\['depth'\]"),
        ("lenet", {"hidden": (3,)}, TypeError, r"'lenet'.*\['hidden'\].*none"),
        (
            "resnet20",
            {"depth": 21},
            ValueError,
            r"depth must be one of \(20, 32, 44, 56, 110\)",
        ),
        ("resnet20", {"shortcut": "C"}, ValueError, r"shortcut must be 'A'"),
        ("wrn", {"depth": 27}, ValueError, r"wrn: depth must be 6n\+4"),
        ("wrn", {"width": 0}, ValueError, r"wrn: width"),
        ("wrn", {"dropout": 1.0}, ValueError, r"wrn: dropout"),
        ("mlp", {"hidden": (0,)}, ValueError, r"mlp: hidden"),
        ("mlp", {"num_classes": 0}, ValueError, r"num_classes"),
        (
            "mlp",
            {"input_shape": (8, 8)},
            ValueError,
            r"input_shape must be \(H, W, C\)",
        ),
        ("mlp", {"dtype": jnp.int32}, ValueError, r"dtype must be one of"),
        ("mlp", {"rngs": 0}, TypeError, r"rngs must be an nnx.Rngs"),
    ],
)
def test_bad_arguments(name, kwargs, error, match):
  with pytest.raises(error, match=match):
    _create(name, **kwargs)


@pytest.mark.parametrize(
    "name, images, match",
    [
        (
            "mlp",
            (2, 8, 8, 3),
            r"mlp: images must have shape \[B, 8, 8, 1\], got \[2, 8, 8, 3\]",
        ),
        ("lenet", (2, 64), r"lenet: images must have shape"),
        (
            "resnet20",
            (2, 8, 8, 3),
            r"resnet: images must have shape \[B, H, W, 1\]",
        ),
    ],
)
def test_bad_image_shape(name, images, match):
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(
        lambda x: create_model(
            name, num_classes=10, input_shape=(8, 8, 1), rngs=nnx.Rngs(0)
        )(x),
        jnp.zeros(images),
    )


@pytest.mark.parametrize("size", [8, 7, 28])
def test_lenet_pool_equals_nnx_max_pool_with_gradients(size):
  from simsoft.models import lenet

  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  reference = lambda v: nnx.max_pool(v, (2, 2), strides=(2, 2), padding="SAME")
  np.testing.assert_array_equal(lenet._pool(x), reference(x))
  g = jax.grad(lambda v: (lenet._pool(v) ** 2).sum())(x)
  g_ref = jax.grad(lambda v: (reference(v) ** 2).sum())(x)
  np.testing.assert_allclose(g, g_ref, rtol=1e-6)
