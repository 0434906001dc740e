r"""SimLoss (Kobs et al. 2020; github.com/konstantinkobs/SimLoss) on digits 0-9 as ordinal classes.

The peer's loss, ``age_estimation/loss.py`` and
``image_classification/simloss/models/loss.py``:
:math:`\ell = -\log \sum_j W_{yj} p_j` with W used as given. Here: loss.form
'log_sum' with loss.as_given and alpha = 1 (W = S exactly), S from the
'ordinal' source, :math:`S_{ij} = r^{|i-j|}` (the peer's age matrix,
``SimLoss.__generate_w``), built with normalize=False so it stays as given.
Its other matrix, lower-bounded cosine similarity of class embeddings
(``run.py``: ``max(0, (S - b) / (1 - b))`` on word2vec cosines, b = 0.5), is the
'embedding' source: ``:similarity=embedding --config.similarity.path=EMB.npy``
([C, D]).
Optimizer as the peer: Adam, lr 1e-3, no weight decay, constant rate.

  python -m simsoft.main --config configs/peers/simloss.py --workdir /tmp/simsoft/simloss
  python -m simsoft.main --config configs/peers/simloss.py --config.similarity.ordinal.ratio=0.8 --workdir W
  python -m simsoft.main --config configs/peers/simloss.py:similarity=embedding \
      --config.similarity.path=E.npy --workdir W

Still differs from the peer: it adds 1e-8 inside the log (simsoft uses a
weighted logsumexp, finite without it); it trains up to 200 (age) or 1000
(CIFAR-100) epochs with early stopping on validation MAE/accuracy (patience
10/20) and batch 1024, here 30 epochs per phase and batch 64 (digits has ~1,150
training images: batch 1024 would be one step per epoch); its ratio r is swept
over 0.0-0.9 (0.0 is cross-entropy) with no single default, here r = 0.5;
classes are digits (ordinal by value), not ages.

Results: not measured yet.
"""

from simsoft import config as config_lib


def get_config(arg=None):
  c = config_lib.base_config()  # mlp, hidden layers (256, 256)
  c.similarity.source = "ordinal"
  c.similarity.ordinal.ratio = 0.5
  c.similarity.options.normalize = False  # S as given
  c.loss.form = "log_sum"
  c.loss.as_given = True
  c.loss.alpha = 1.0
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 0.0
  c.optimizer.warmup_epochs = 0.0
  c.optimizer.schedule = "constant"
  return config_lib.apply_args(c, arg)
