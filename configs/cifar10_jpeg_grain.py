r"""CIFAR-10 (JPEG q75 copy) through the streaming reader instead of memory.

configs/cifar10_jpeg.py with dataset.reader='grain' (simsoft.data.streaming):
the prepared ArrayRecord copy of ../shared/datasets/cifar10-jpeg (the same
45,000 / 5,000 / 10,000 examples, in the in-memory loader's order, and the
same channel statistics), the JPEG bytes decoded in grain worker processes,
with the 4-pixel pad + random crop + flip on the host
(dataset.grain.train_transform='pad_crop_flip'; 'device' instead applies the
in-memory path's augmentation in the train step, and then trains exactly as
configs/cifar10_jpeg.py does).

  # once: the ArrayRecord copy (about a minute; under $SIMSOFT_CACHE_DIR/records,
  # the default dataset.grain.records_dir)
  python -m simsoft.data.prepare --name cifar10_jpeg \
      --data_dir ../shared/datasets/cifar10-jpeg \
      --out ~/.cache/simsoft/records/cifar10_jpeg-v0.1-s0
  python -m simsoft.main --config configs/cifar10_jpeg_grain.py --workdir /tmp/simsoft/c10j_grain
  python -m simsoft.main --config configs/cifar10_jpeg_grain.py:model=lenet,epochs=8,lr=0.05 --workdir W

Against the in-memory path: benchmarks/RESULTS.md, "Streaming input".
"""

from simsoft import config as config_lib
from simsoft.data import cifar10_jpeg


def get_config(arg=None):
  c = config_lib.cifar_recipe(config_lib.base_config(), "cifar10_jpeg")
  c.dataset.data_dir = cifar10_jpeg.default_dir()
  c.dataset.reader = "grain"
  c.dataset.grain.train_transform = "pad_crop_flip"
  return config_lib.apply_args(c, arg)
