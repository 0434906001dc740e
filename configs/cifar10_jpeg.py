r"""CIFAR-10 (JPEG q75 copy): the image folder in ../shared/datasets/cifar10-jpeg.

All 60,000 CIFAR-10 images as 32x32 JPEG at quality 75 (its README gives the
source, checksums and caveat: not the original pixels, so accuracies are not
comparable with published CIFAR-10 figures, while comparisons between losses
on it are fair). Read from the zip files at run time, decoded once and cached
(simsoft.data.image_folder); 45,000 train / 5,000 validation (stratified,
seeded) / 10,000 test.

The CIFAR recipe (configs/cifar10.py): ResNet-20, SGD momentum 0.9, lr 0.1,
cosine, weight decay 5e-4, batch 128, 4-pixel pad + random crop + horizontal
flip; evaluated on the clean test set and on the CIFAR-10-C corruption
parameters (simsoft.corruptions) at severities 1-5; super-class accuracy and
mistake severity over vehicles {airplane, automobile, ship, truck} vs animals.

  python -m simsoft.main --config configs/cifar10_jpeg.py --workdir /tmp/simsoft/c10j
  python -m simsoft.main --config configs/cifar10_jpeg.py:model=lenet,epochs=15,mass=0.3 --workdir W
  python -m simsoft.main --config configs/cifar10_jpeg.py:runlocal --workdir /tmp/simsoft/c10j_local
  python -m simsoft.main --config configs/cifar10_jpeg.py \
      --config.dataset.data_dir=/path/to/cifar10-jpeg --workdir W   # another copy

The default data_dir is ../shared/datasets/cifar10-jpeg beside the checkout
($SIMSOFT_CIFAR10_JPEG overrides it); --config.dataset.data_dir points
elsewhere (a directory with train/ and test/ class folders, or train.zip and
test.zip).

Results: RESULTS.md, section "CIFAR-10 (JPEG q75 copy)" (configs/sweep.py:cifar10_jpeg).
"""

from simsoft import config as config_lib
from simsoft.data import cifar10_jpeg


def get_config(arg=None):
  c = config_lib.cifar_recipe(config_lib.base_config(), "cifar10_jpeg")
  c.dataset.data_dir = cifar10_jpeg.default_dir()
  return config_lib.apply_args(c, arg)
