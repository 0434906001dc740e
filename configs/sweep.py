r"""The evidence sweep: does the structure of S matter beyond the amount of smoothing?

Every soft target is (1 - m) onehot(y) + m Q_y (loss.amount='mass'): the same
off-target mass m for every setting, S deciding only where it goes. For every
experiment (dataset x model) and seed: model A trained with cross-entropy, then
model B retrained from the same initialization and batch order with
  - label smoothing at mass m (Q uniform: the amount without structure);
  - each similarity source at mass m, and its shuffled-S control (the same S,
    classes permuted by a seeded derangement: the values without the structure);
  - the same in the log-sum (SimLoss) form for `log_sum_sources`;
  - `alpha_settings` at alpha (the older alpha-mixed target, whose log-sum runs
    collapsed in the first round; kept to measure that).

  python -m simsoft.sweep --config configs/sweep.py:digits --root DIR --workers 2
  python -m simsoft.sweep --config configs/sweep.py:fashion_mnist --root DIR --workers 8 \
      --config.experiments.fmnist_lenet.input.steps_per_dispatch=20   # one GPU

Each experiment is a whole run config (config.experiments.<name>, built from
a file of configs/ here), so any of its fields can be set from the command
line; the sweep's own fields are lists: `--config.seeds="(0, 1)"`,
`--config.masses="(0.1, 0.3)"`, `--config.sources="('confusion',)"`.

A rerun skips finished runs and resumes unfinished ones. The summary
(DIR/summary.md, .json, figures) gives mean ± std over seeds, and paired
differences to cross-entropy, to label smoothing at the same mass and to the
shuffled control with 95 % intervals, paired t-test p-values and Holm's
correction over the settings of each experiment. RESULTS.md quotes it.

Measured (RESULTS.md): digits (5 seeds, CPU, 2,322 s summed over 270 runs) and
Fashion-MNIST (10 seeds, one H200, 424 s wall with 8 workers): no source beats
label smoothing at the same mass or its shuffled control after Holm;
Fashion-MNIST CE 92.62 ± 0.16 % clean / 87.55 ± 0.23 % corrupted, label
smoothing m0.1 93.05 ± 0.21 % / 86.29 ± 0.41 %; the log-sum form collapses on
digits (29 of 40 lenet runs lose whole classes).
"""

import os

import ml_collections

from simsoft import config as config_lib
from simsoft import config_files

HERE = os.path.dirname(os.path.abspath(__file__))
CIFAR_EPOCHS = 8

# Group (the text after the colon) -> {experiment: (config file, model, epochs per model)}.
EXPERIMENTS = {
    "digits": {
        "digits_mlp": ("default.py", "mlp", 30),
        "digits_lenet": ("default.py", "lenet", 30),
    },
    # All 54,000 training images, lenet to convergence (15 epochs per model),
    # corruptions on the whole 10,000-image test set.
    "fashion_mnist": {"fmnist_lenet": ("fashion_mnist.py", "lenet", 15)},
    # CIFAR-10 (JPEG q75 copy), all 45,000 training images, lenet sized to
    # the 2-core CPU budget (RESULTS.md); and the positive control: the same
    # with pair-flip label noise (55 % of cats labelled dog in train and
    # validation) and an S whose dog row points back to cat.
    "cifar10_jpeg": {
        "c10j_lenet": ("cifar10_jpeg.py", "lenet", CIFAR_EPOCHS),
        "c10j_lenet_pairflip": ("cifar10_jpeg.py", "lenet", CIFAR_EPOCHS),
    },
}
MASSES = {
    "digits": (0.1, 0.3),
    "fashion_mnist": (0.1,),
    "cifar10_jpeg": (0.1, 0.3),
}
SOURCES = {"cifar10_jpeg": ("confusion",)}
LOG_SUM_SOURCES = {"cifar10_jpeg": ()}
# Experiments whose fields or grid differ from their group's.
POSITIVE_CONTROL_S = os.path.join(
    HERE, "positive_control", "cifar10_dog_to_cat.json"
)
EXPERIMENT_FIELDS = {
    "c10j_lenet_pairflip": {
        "dataset.label_noise.flips": ("cat->dog",),
        "dataset.label_noise.rate": 0.55,
        "similarity.path": POSITIVE_CONTROL_S,
    },
}
# Equivalence margins (fractions of accuracy) fixed before a group's run
# (RESULTS.md): the summary's TOST and "≡" marks. None for the earlier rounds.
MARGINS = {
    "cifar10_jpeg": dict(clean_accuracy=0.005, mean_corrupted_accuracy=0.01),
}
GRIDS = {
    "c10j_lenet_pairflip": dict(
        masses=(0.3,), sources=("file",), log_sum_sources=()
    ),
}
# The alpha-mixed log-sum runs that collapsed on digits lenet in round one.
ALPHA_SETTINGS = {"digits": (("confusion", "log_sum"), ("online", "log_sum"))}


def experiment(
    path: str, model: str, epochs: int, fields: dict | None = None
) -> ml_collections.ConfigDict:
  """The run config of `path` (next to this file) with this model and epochs,
  a lighter corruption grid (severities 1, 3, 5) than the file's, and `fields`
  (dotted names) set."""
  c = config_files.load_config(path, relative_to=HERE)
  c.model.name = model
  c.estimate.epochs = c.retrain.epochs = epochs
  config_lib.set_severities(c, (1, 3, 5))
  if path == "cifar10_jpeg.py":
    # lenet on CPU: lr 0.1 without warm-up diverges in its first steps;
    # ten steps per dispatch, unrolled, is XLA:CPU's fastest loop.
    c.optimizer.learning_rate = 0.05
    c.optimizer.warmup_epochs = 1.0
    c.input.steps_per_dispatch = 10
    c.input.scan_unroll = True
    c.checkpoint.every_steps = 500
  return config_lib.set_fields(c, fields or {})


def get_config(arg="all"):
  c = ml_collections.ConfigDict()
  if arg not in ("", "all", None) and arg not in EXPERIMENTS:
    raise config_lib.ConfigError(
        f"unknown experiment group {arg!r}; use one of {list(EXPERIMENTS)} or all"
    )
  groups = EXPERIMENTS if arg in ("", "all", None) else {arg: EXPERIMENTS[arg]}
  # In this order (not sorted): the sweep runs and summarizes them so.
  c.experiments = ml_collections.ConfigDict(
      {
          name: experiment(*spec, EXPERIMENT_FIELDS.get(name))
          for specs in groups.values()
          for name, spec in specs.items()
      },
      sort_keys=False,
  )
  # Per-experiment grid fields (simsoft.sweep.grid_of), over the sweep's below.
  c.grids = ml_collections.ConfigDict(
      {name: GRIDS[name] for name in c.experiments if name in GRIDS}
  )
  c.seeds = (0, 1, 2, 3, 4)
  c.masses = MASSES.get(arg, (0.1,))
  c.sources = SOURCES.get(arg, ("confusion", "softmax", "centroid", "online"))
  c.log_sum_sources = LOG_SUM_SOURCES.get(arg, ("confusion",))
  c.shuffled = True
  c.alpha = 0.5
  c.alpha_settings = ALPHA_SETTINGS.get(arg, ())
  c.margins = ml_collections.ConfigDict(MARGINS.get(arg, {}))
  return c
