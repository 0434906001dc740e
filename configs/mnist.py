r"""MNIST through TFDS (needs network or a prepared data_dir), LeNet-style CNN.

  python -m simsoft.main --config configs/mnist.py --workdir /tmp/simsoft/mnist \
      --config.dataset.data_dir=gs://YOUR_BUCKET/tensorflow_datasets

Results: not measured yet. The data comes through TFDS, which the machines this
project was developed on cannot download; RESULTS.md covers the data available
offline (digits, Fashion-MNIST).
"""

from simsoft import config as config_lib


def get_config(arg=None):
  c = config_lib.small_cnn_recipe(config_lib.base_config(), "mnist")
  return config_lib.apply_args(c, arg)
