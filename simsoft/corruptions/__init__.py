"""Image corruptions with five severities, in JAX (Hendrycks and Dietterich 2019).

``corrupt(name, images, severity, key)`` maps float images ``[B, H, W, C]`` in
``[0, 1]`` (``C`` = 1 or 3, ``H, W >= 8``) to corrupted images of the same
shape and dtype, clipped to ``[0, 1]``. It is a pure function: jit it with
``name`` and ``severity`` static; the same key gives the same output.

Parameters are those of the CIFAR-10-C generation script
(hendrycks/robustness, ``ImageNet-C/create_c/make_cifar_c.py``), which are
defined for 32x32 images. Other sizes (8x8 digits, 28x28 Fashion-MNIST):

- ``gaussian_blur`` and ``defocus_blur``: sigma and disk radius stay in
  pixels, as in the script, for every size. They are already sub-pixel to
  one-pixel blurs (sigma 0.4-1, radius 0.3-1.5) that act on the pixel grid;
  shrinking them for small images makes the low severities the identity
  (on smooth 8x8 test images, mean absolute change at severities 1..5:
  unscaled 0.009-0.059; sigma scaled by sqrt(8/32) 1e-6, 9e-4, ..., 0.022;
  scaled linearly by 8/32 below 1e-4 at every severity) and collapses the
  discrete defocus disks, breaking their order. 28x28 is within the spacing
  between severities of 32x32. Above 32 px these values understate the blur
  (ImageNet-C uses sigma 1-6 at 224 px).
- ``pixelate``: the script's factor c is already a fraction of the side: each
  axis is box-resized to ``int(n * c)`` pixels and back (PIL's BOX filter).
- ``zoom_blur``: the script's zoom factors (1 to 1.25) are relative, and
  each axis of n pixels is cropped and zoomed on its own length; at 8x8 the
  smallest zooms round to the identity (severity 1 changes nothing there).
- ``saturate``: RGB only (one-channel images have no saturation: unchanged).
  Neither is in ``DEFAULT_SUITE``, which the configs run.
- ``motion_blur`` and ``snow``'s streaks (ImageMagick's motion blur): radius
  and sigma stay in pixels, as gaussian_blur's sigma; snow's flake zoom is
  relative, each axis zoomed on its own length.
- ``fog``: the diamond-square fractal is drawn on the smallest power-of-two
  square covering the image (8 for 8x8, 32 for 28x28) and cropped, as the
  script crops its 32x32 map: its coarsest level spans the image at every
  size. None of these three is in ``DEFAULT_SUITE``.
- ``occlusion`` (not in the script): a square of side ``round(f * min(H, W))``,
  f = 0.1 ... 0.5, at a uniformly random centre, clipped at the border,
  filled with middle grey 0.5 (Cutout, DeVries and Taylor 2017, in pixel space).
- ``glass_blur`` and ``spatter``: sigmas, the one-pixel swaps, Canny
  thresholds and the distance cap (20 px) stay in pixels (drops keep their
  pixel size); ``elastic_transform``: the script's lengths are fractions of
  its IMSIZE = 32, here of ``min(H, W)``; ``jpeg_compression``: 8x8 blocks at
  any size, edge-padded as libjpeg pads. Not in ``DEFAULT_SUITE`` (module
  docstrings: glass.py, digital.py, spatter.py).

Noise is drawn per element (per pixel and channel), as in the script.
"""

from __future__ import annotations

import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

# The corruptions and their parameter tables, one module per family; the
# names are re-exported here (``corruptions.gaussian_blur``, ...).
from simsoft.corruptions._ops import SEVERITIES
from simsoft.corruptions.blur import DEFOCUS_BLUR_RADIUS_ALIAS
from simsoft.corruptions.blur import defocus_blur
from simsoft.corruptions.blur import defocus_kernel
from simsoft.corruptions.blur import GAUSSIAN_BLUR_SIGMA
from simsoft.corruptions.blur import gaussian_blur
from simsoft.corruptions.blur import gaussian_blur_taps
from simsoft.corruptions.blur import PIXELATE_FACTOR
from simsoft.corruptions.blur import pixelate
from simsoft.corruptions.blur import pixelate_matrix
from simsoft.corruptions.blur import ZOOM_BLUR_STOPS
from simsoft.corruptions.blur import zoom_blur
from simsoft.corruptions.blur import zoom_blur_tables
from simsoft.corruptions.digital import ELASTIC_ALPHA_SIGMA_AFFINE
from simsoft.corruptions.digital import elastic_transform
from simsoft.corruptions.digital import JPEG_QUALITY
from simsoft.corruptions.digital import jpeg_compression
from simsoft.corruptions.glass import glass_blur
from simsoft.corruptions.glass import GLASS_BLUR_SIGMA_DELTA_ITERATIONS
from simsoft.corruptions.motion import MOTION_BLUR_RADIUS_SIGMA
from simsoft.corruptions.motion import motion_blur
from simsoft.corruptions.noise import GAUSSIAN_NOISE_SCALE
from simsoft.corruptions.noise import gaussian_noise
from simsoft.corruptions.noise import IMPULSE_NOISE_AMOUNT
from simsoft.corruptions.noise import impulse_noise
from simsoft.corruptions.noise import SHOT_NOISE_RATE
from simsoft.corruptions.noise import shot_noise
from simsoft.corruptions.noise import SPECKLE_NOISE_SCALE
from simsoft.corruptions.noise import speckle_noise
from simsoft.corruptions.occlusion import OCCLUSION_FILL
from simsoft.corruptions.occlusion import OCCLUSION_FRACTION
from simsoft.corruptions.occlusion import occlusion
from simsoft.corruptions.photometric import BRIGHTNESS_SHIFT
from simsoft.corruptions.photometric import brightness
from simsoft.corruptions.photometric import CONTRAST_FACTOR
from simsoft.corruptions.photometric import contrast
from simsoft.corruptions.photometric import SATURATE_SCALE_SHIFT
from simsoft.corruptions.photometric import saturate
from simsoft.corruptions.spatter import spatter
from simsoft.corruptions.spatter import SPATTER_PARAMS
from simsoft.corruptions.weather import FOG_PARAMS
from simsoft.corruptions.weather import fog
from simsoft.corruptions.weather import SNOW_PARAMS
from simsoft.corruptions.weather import snow

# (images [B, H, W, C], severity, key) -> images. The severity is an int in
# 1..5, or a scalar int jax.Array for the names in TRACEABLE_SEVERITY.
Corruption = Callable[[jax.Array, Any, jax.Array], jax.Array]

CORRUPTIONS: types.MappingProxyType[str, Corruption] = types.MappingProxyType(
    {
        "gaussian_noise": gaussian_noise,
        "shot_noise": shot_noise,
        "impulse_noise": impulse_noise,
        "speckle_noise": speckle_noise,
        "gaussian_blur": gaussian_blur,
        "defocus_blur": defocus_blur,
        "contrast": contrast,
        "brightness": brightness,
        "pixelate": pixelate,
        "occlusion": occlusion,
        "zoom_blur": zoom_blur,
        "saturate": saturate,
        "motion_blur": motion_blur,
        "snow": snow,
        "fog": fog,
        "glass_blur": glass_blur,
        "elastic_transform": elastic_transform,
        "jpeg_compression": jpeg_compression,
        "spatter": spatter,
    }
)
# The suite the configs run by default: the corruptions of before zoom_blur
# and saturate were added, so default runs stay comparable with RESULTS.md
# (name them, or 'all', to run the others).
DEFAULT_SUITE = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "gaussian_blur",
    "defocus_blur",
    "contrast",
    "brightness",
    "pixelate",
    "occlusion",
)

# Families of corruptions that act alike (a family's accuracy is the mean over
# its members): per-pixel noise, loss of fine detail, global intensity, and
# missing content. Of DEFAULT_SUITE only: a family missing a member in a
# run's results drops out of a sweep's summary (simsoft.sweep).
FAMILIES: types.MappingProxyType[str, tuple[str, ...]] = types.MappingProxyType(
    {
        "noise": (
            "gaussian_noise",
            "shot_noise",
            "impulse_noise",
            "speckle_noise",
        ),
        "blur": ("gaussian_blur", "defocus_blur", "pixelate"),
        "photometric": ("contrast", "brightness"),
        "occlusion": ("occlusion",),
    }
)
TRACEABLE_SEVERITY = frozenset(CORRUPTIONS)
"""Corruptions whose ``severity`` may be a traced int, so one compiled function
serves all five severities: scalar parameters, or kernels and resize matrices
looked up in a [5, ...] table of one shape (blurs padded to the widest)."""


def check_severity(severity: object) -> int:
  """Returns ``severity`` as an int, or raises ValueError unless it is in 1..5."""
  if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)):
    raise ValueError(f"severity must be an int in 1..5, got {severity!r}")
  if not 1 <= int(severity) <= 5:
    raise ValueError(f"severity must be in 1..5, got {severity}")
  return int(severity)


def get_corruption(name: str) -> Corruption:
  """The corruption registered as ``name``; ValueError listing known names otherwise."""
  if name not in CORRUPTIONS:
    raise ValueError(
        f"unknown corruption {name!r}; known: {sorted(CORRUPTIONS)}"
    )
  return CORRUPTIONS[name]


def corrupt(
    name: str,
    images: ArrayLike,
    severity: int | jax.Array,
    key: jax.Array,
) -> jax.Array:
  """Applies corruption ``name`` at ``severity`` to a batch of images.

  Args:
    name: a key of ``CORRUPTIONS`` (static under jit).
    images: float array [B, H, W, C] in [0, 1], C in {1, 3}, H, W >= 8.
    severity: int in 1..5, static under jit; for names in
      ``TRACEABLE_SEVERITY`` also a scalar integer jax array (may be traced;
      the caller keeps it in 1..5, out-of-range values are clamped).
    key: PRNG key; deterministic corruptions ignore it.

  Returns:
    [B, H, W, C], dtype of ``images``, clipped to [0, 1].
  """
  fn = get_corruption(name)
  if isinstance(severity, jax.Array):
    if name not in TRACEABLE_SEVERITY:
      raise ValueError(
          f"severity of {name!r} must be a static int in 1..5; a traced severity "
          f"works only for {sorted(TRACEABLE_SEVERITY)}"
      )
    if severity.shape != () or not jnp.issubdtype(severity.dtype, jnp.integer):
      raise ValueError(
          f"severity must be a scalar integer, got {severity.dtype}{severity.shape}"
      )
  else:
    severity = check_severity(severity)
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"images must be [B, H, W, C], got shape {images.shape}")
  if images.shape[-1] not in (1, 3):
    raise ValueError(
        f"images must have 1 or 3 channels, got shape {images.shape}"
    )
  if min(images.shape[1], images.shape[2]) < 8:
    raise ValueError(f"images must be at least 8x8, got shape {images.shape}")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(
        f"images must be floating point in [0, 1], got {images.dtype}"
    )
  out = fn(images.astype(jnp.float32), severity, key)
  return jnp.clip(out, 0.0, 1.0).astype(images.dtype)
