r"""MNIST through TFDS (needs network or a prepared data_dir), LeNet-style CNN.

  python -m simsoft.main --config configs/mnist.py --workdir /tmp/simsoft/mnist \
      --config.dataset.data_dir=gs://YOUR_BUCKET/tensorflow_datasets

Expected results: added once measured (see RESULTS.md).
"""

from simsoft import config as config_lib


def get_config(arg=None):
  c = config_lib.base_config()
  c.dataset.name = "mnist"
  c.dataset.validation_fraction = 0.1
  c.model.name = "lenet"
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.optimizer.learning_rate = 0.05
  c.estimate.epochs = c.retrain.epochs = 15
  c.checkpoint.every_steps = 500
  c.log_every_steps = 100
  return config_lib.apply_args(c, arg)
