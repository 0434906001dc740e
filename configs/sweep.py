r"""The paper's experiment on the real data available offline: digits and Fashion-MNIST.

For every experiment (dataset x model) and seed: one model A trained with
cross-entropy (the CE baseline), then model B retrained from the same
initialisation with label smoothing (uniform S) and with each similarity
source x loss form, all with the same alpha and the same training budget.

  python -m simsoft.sweep --config configs/sweep.py:digits --root /tmp/simsoft/sweep
  python -m simsoft.sweep --config configs/sweep.py:fashion_mnist --root /tmp/simsoft/sweep --workers 2
  python -m simsoft.sweep --config configs/sweep.py --root /tmp/simsoft/sweep   # everything

A rerun skips finished runs and resumes unfinished ones, so a sweep can be
finished across sessions. The summary (tables, figures) is written to
<root>/summary.md; RESULTS.md quotes it.
"""

import ml_collections

EXPERIMENTS = {
    "digits": (
        "digits_mlp=configs/default.py:model=mlp,epochs=30",
        "digits_lenet=configs/default.py:model=lenet,epochs=30",
    ),
    # 10,000 training images (class-stratified), test corruptions on the first
    # 1,000 test images: what fits a session on 2 CPU cores with --workers 2.
    # resnet20 first so the long runs are claimed before the short ones.
    "fashion_mnist": (
        "fmnist_resnet20=configs/fashion_mnist.py:model=resnet20,epochs=2,"
        "dataset.train_examples=10000,evaluate.corrupted_examples=1000",
        "fmnist_lenet=configs/fashion_mnist.py:model=lenet,epochs=3,"
        "dataset.train_examples=10000,evaluate.corrupted_examples=1000",
    ),
}


def get_config(arg="all"):
  c = ml_collections.ConfigDict()
  groups = EXPERIMENTS if arg in ("", "all", None) else {arg: EXPERIMENTS[arg]}
  c.experiments = ",".join(spec.split("=", 1)[0] for specs in groups.values() for spec in specs)
  c.specs = ml_collections.ConfigDict(
      {spec.split("=", 1)[0]: spec.split("=", 1)[1] for specs in groups.values() for spec in specs})
  c.seeds = "0,1,2"
  c.alpha = 0.5
  c.sources = "confusion,softmax,centroid,weights,online"
  c.forms = "soft_target,log_sum"
  # Applied to every run (';'-separated field=value): a lighter corruption grid.
  c.overrides = "evaluate.severities=1,3,5"
  return c
