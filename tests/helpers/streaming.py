"""A small image folder whose pixels name each image, its prepared copy, and tiny configs."""

import os

import numpy as np

from tests.helpers.tiny import tiny_config

CLASSES = ("ant", "bee", "cat")
PER_CLASS = {"train": 16, "test": 5}  # 48 train (43 + 5 validation), 15 test


def image_id(images) -> np.ndarray:
  """The id written into pixel (0, 0) of each image [N, H, W, C] (uint8 or float in [0, 1])."""
  x = np.asarray(images)
  if x.dtype != np.uint8:
    x = np.rint(x * 255).astype(np.int64)
  x = x.astype(np.int64)
  return x[:, 0, 0, 0] + 256 * x[:, 0, 0, 1]


def make_folder(root: str) -> str:
  """root/{train,test}/<class>/<i>.png: 8x8 RGB noise, pixel (0, 0) = a unique id."""
  from PIL import Image

  rng = np.random.default_rng(0)
  uid = 0
  for split, n in PER_CLASS.items():
    for c in CLASSES:
      os.makedirs(os.path.join(root, split, c))
      for i in range(n):
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        pixels[0, 0, :2] = (uid % 256, uid // 256)
        Image.fromarray(pixels).save(os.path.join(root, split, c, f"{i}.png"))
        uid += 1
  return root


def stream_config(data_dir, records_dir, arg="epochs=1", *, reader="grain"):
  """tiny_config on the folder: batch 8, 5 steps per epoch, checkpoints every 2 steps."""
  c = tiny_config(arg, batch_size=8)
  c.dataset.name = "image_folder"
  c.dataset.data_dir = data_dir
  c.dataset.validation_fraction = 0.1
  c.dataset.reader = reader
  c.dataset.grain.records_dir = records_dir
  c.eval_batch_size = 8
  c.checkpoint.every_steps = 2
  c.log_every_steps = 2
  c.input.grain_workers = 0
  return c
