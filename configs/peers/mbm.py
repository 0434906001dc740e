r"""Making Better Mistakes (Bertinetto et al. 2020; github.com/fiveai/making-better-mistakes).

Both of the peer's hierarchy losses, on Fashion-MNIST with the 3-level tree
in configs/peers/fashion_mnist_hierarchy.json (``dataset=digits`` takes
configs/peers/digits_hierarchy.json, a hand-made shape grouping):
  - ``:method=soft_labels`` (default; ``--loss soft-labels``): targets
    softmax(-beta d(y, .) / max d) with d the LCA height
    (``better_mistakes/model/labels.py``): the 'hierarchy' source (beta 10)
    and the soft target with alpha = 1 (the target is that row exactly);
  - ``:method=hxe`` (``--loss hierarchical-cross-entropy``): loss form 'hxe'
    with the peer's exponential edge weights exp(-alpha depth), normalized
    (``trees.get_exponential_weighting``), alpha = 0.1.
The same hierarchy gives the evaluation's mistake severity: ``mistake LCA
height`` is the peer's average mistake severity (mean LCA height of the top-1
mistakes), ``mistake severity`` that over the largest height.
Optimizer as the peer's default family: Adam, no weight decay, constant rate, batch 256.

  python -m simsoft.main --config configs/peers/mbm.py --workdir /tmp/simsoft/mbm
  python -m simsoft.main --config configs/peers/mbm.py:method=hxe --config.loss.hxe.alpha=0.4 --workdir W
  python -m simsoft.main --config configs/peers/mbm.py --config.similarity.hierarchy.beta=30 --workdir W
  python -m simsoft.main --config configs/peers/mbm.py:dataset=digits,model=mlp --workdir W

Still differs from the peer: its loss for soft labels is ``nn.KLDivLoss()``
with mean reduction over batch x classes, i.e. (CE - H(t)) / C: the same
gradient divided by C (Adam makes the scale moot up to its epsilon); it
fine-tunes an ImageNet ResNet-18 with AMSGrad at lr 1e-5 for 200,000 steps,
here a LeNet from scratch with Adam at lr 1e-3 for 15 epochs per phase; it
sweeps beta over 4-30 and alpha over 0.1-0.9 with no single default
(its argparse defaults, 0, are the uniform target and plain CE), here beta 10
and alpha 0.1; its trees are tieredImageNet-H and iNaturalist19.

Results: not measured yet.
"""

import os

from simsoft import config as config_lib

HERE = os.path.dirname(os.path.abspath(__file__))
HIERARCHIES = {
    "digits": "digits_hierarchy.json",
    "fashion_mnist": "fashion_mnist_hierarchy.json",
    "fashion_mnist_local": "fashion_mnist_hierarchy.json",
}


def get_config(arg=None):
  own, args = config_lib.split_args(arg, method=("soft_labels", "hxe"))
  c = config_lib.small_cnn_recipe(
      config_lib.base_config(), "fashion_mnist_local"
  )
  c.batch_size = 256
  if own["method"] == "soft_labels":
    c.similarity.source = "hierarchy"
    c.similarity.hierarchy.beta = 10.0
    c.loss.form = "soft_target"
    c.loss.alpha = 1.0
  else:
    c.similarity.source = "identity"  # S is not used by HXE
    c.loss.form = "hxe"
    c.loss.hxe.alpha = 0.1
    c.loss.hxe.normalize = True
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 0.0
  c.optimizer.warmup_epochs = 0.0
  c.optimizer.schedule = "constant"
  c = config_lib.apply_args(c, args)
  if not c.hierarchy_path and c.dataset.name in HIERARCHIES:
    c.hierarchy_path = os.path.join(HERE, HIERARCHIES[c.dataset.name])
  return c
