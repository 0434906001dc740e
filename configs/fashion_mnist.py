r"""Fashion-MNIST (the real files from Debian's dataset-fashion-mnist), LeNet-style CNN.

Standard small-CNN recipe: SGD momentum 0.9, cosine schedule, weight decay 5e-4,
batch 128, 15 epochs per phase.

  apt-get install -y dataset-fashion-mnist   # /usr/share/datasets/fashion-mnist
  python -m simsoft.main --config configs/fashion_mnist.py --workdir /tmp/simsoft/fmnist
  python -m simsoft.main --config configs/fashion_mnist.py:runlocal --workdir /tmp/simsoft/fmnist_local
  python -m simsoft.main --config configs/fashion_mnist.py:model=resnet20,similarity=softmax \
      --workdir /tmp/simsoft/fmnist_r20

With network access, `dataset=fashion_mnist` reads the same data through TFDS.

Expected results: added once measured (see RESULTS.md).
"""

from simsoft import config as config_lib


def get_config(arg=None):
  c = config_lib.small_cnn_recipe(config_lib.base_config(), "fashion_mnist_local")
  return config_lib.apply_args(c, arg)
