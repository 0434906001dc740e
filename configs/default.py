r"""Default: the whole pipeline on the embedded digits data (sklearn's 1,797 real 8x8 digits).

An MLP trained with cross-entropy (model A) gives the confusion-based class
similarity S on the held-out validation split; a fresh MLP (model B) retrains
with the soft-target similarity loss; both are evaluated on the clean and
corrupted test split. About a minute on 2 CPU cores.

  python -m simsoft.main --config configs/default.py --workdir /tmp/simsoft/default
  python -m simsoft.main --config configs/default.py:similarity=centroid,form=log_sum,seed=1 \
      --workdir /tmp/simsoft/default_centroid

Measured (RESULTS.md; seeds 0-2, 30 epochs per phase, the sweep's severities
1, 3, 5): model A (cross-entropy) 96.38 ± 0.48 % clean accuracy, 93.60 ± 0.30 %
mean corrupted accuracy; model B (confusion, soft target, alpha 0.5)
97.59 ± 0.32 % and 94.02 ± 0.31 %. With model=lenet: A 97.68 ± 0.43 %, B 97.96 ± 0.58 %.
"""

from simsoft import config as config_lib


def get_config(arg=None):
  c = config_lib.apply_args(config_lib.base_config(), arg)
  if c.model.name == "mlp":
    c.model.kwargs.hidden = (256, 256)  # a field, so --config.model.kwargs.hidden can override it
  return c
