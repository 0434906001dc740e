r"""Online Label Smoothing (Zhang et al. 2021; github.com/zhangchbin/OnlineLabelSmoothing) on digits.

The peer's CIFAR script (``cifar/scripts/train_cifar_all_methods.py``,
``--method ols``), reproduced:
  - loss ``0.5 * CE + 0.5 * soft_cross_entropy(S[y])`` with S used as given:
    loss.form 'soft_target', loss.as_given, alpha = 0.5
    (simsoft.losses.weighted_cross_entropy on W = 0.5 I + 0.5 S);
  - first epoch: S = 0 (the peer's zero ``loss_lams``), i.e. 0.5 x CE:
    similarity.online.initial = 'zero';
  - after each epoch, row y = mean softmax of the epoch's correctly classified
    class-y training examples (correct_only), the uniform row 1/C for a class
    without one (fallback = 'uniform'), no post-processing (normalize=False);
  - SGD, Nesterov momentum 0.9, lr 0.1, weight decay 5e-4, batch 128, the
    learning rate x0.1 at 50 % and again at 75 % of the epochs (schedule 'step').
``:variant=fine_grained`` switches to the fine-grained script's S updates
(``fine-grained/solver.py``): S^0 = 1/C everywhere (initial_smoothing = 1),
rows frozen once their maximum reaches 0.88, plain momentum SGD.

  python -m simsoft.main --config configs/peers/ols.py --workdir /tmp/simsoft/ols
  python -m simsoft.main --config configs/peers/ols.py:variant=fine_grained --workdir W
  python -m simsoft.main --config configs/peers/ols.py:dataset=fashion_mnist_local,model=lenet --workdir W

Still differs from the peer: its models are CIFAR ResNets etc. (300 epochs in
its scripts), here an MLP on digits for 30 epochs per phase; its weight decay
covers every parameter, simsoft's kernels only; its ``argsort`` decides ties of
the top-1 prediction, simsoft's argmax takes the lower index; the fine-grained
loss is ``1.0 * soft + 1.0 * CE`` (twice the CIFAR one: simsoft has no loss
scale) with a MultiStep schedule at epochs 45 and 80 (here the 'step' schedule)
and fine-tuning from ImageNet weights.

Results: not measured yet.
"""

from simsoft import config as config_lib


def get_config(arg=None):
  own, args = config_lib.split_args(arg, variant=("cifar", "fine_grained"))
  c = config_lib.base_config()  # mlp, hidden layers (256, 256)
  c.batch_size = 128
  c.similarity.source = "online"
  c.similarity.online.correct_only = True
  c.similarity.online.fallback = "uniform"
  c.similarity.options.normalize = False  # the peer's rows as they are
  c.loss.form = "soft_target"
  c.loss.as_given = True
  c.loss.alpha = 0.5
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = True
  c.optimizer.weight_decay = 5e-4
  c.optimizer.warmup_epochs = 0.0
  c.optimizer.schedule = "step"
  if own["variant"] == "cifar":
    c.similarity.online.initial = "zero"
  else:
    c.similarity.online.initial_smoothing = 1.0  # S^0 = 1/C
    c.similarity.online.freeze_threshold = 0.88
    c.optimizer.nesterov = False
  return config_lib.apply_args(c, args)
