r"""CIFAR-100 (fine labels; coarse labels kept for super-class accuracy), ResNet-20.

The recipe the field uses for CIFAR ResNets: SGD momentum 0.9, lr 0.1, cosine
schedule, weight decay 5e-4, batch 128, 200 epochs per phase, random crop
(4-pixel padding) and horizontal flip. Data through TFDS: needs network or a
prepared data_dir (a gs:// bucket on Cloud TPU VMs).

  python -m simsoft.main --config configs/cifar100.py --workdir /tmp/simsoft/cifar100 \
      --config.dataset.data_dir=gs://YOUR_BUCKET/tensorflow_datasets
  python -m simsoft.main --config configs/cifar100.py:model=wrn,similarity=centroid --workdir ...
  python -m simsoft.main --config configs/cifar100.py:runlocal --workdir /tmp/simsoft/cifar100_local

Results: not measured yet. The data comes through TFDS, which the machines this
project was developed on cannot download; RESULTS.md covers the data available
offline (digits, Fashion-MNIST).
"""

from simsoft import config as config_lib


def get_config(arg=None):
  c = config_lib.cifar_recipe(config_lib.base_config(), "cifar100")
  return config_lib.apply_args(c, arg)
