"""Entry point: `python -m simsoft.main --config configs/default.py --workdir DIR`.

Installed (`pip install 'simsoft[all]'`) the same command is `simsoft --config
configs/default.py --workdir DIR`, from any directory: a config path that does
not exist there is looked up in the configs shipped with the package
(simsoft.config_files).

`--config` takes a config file with an optional `:arg` string
(`configs/cifar10.py:model=resnet20,similarity=confusion,seed=1`), and single
fields can be overridden (`--config.optimizer.learning_rate=0.05`); the config
is locked, so a misspelled field is an error. On a multi-host slice (Cloud TPU
pod, several GPU hosts) pass --distributed so every process joins one job.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from simsoft import config_files, extras

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file, optionally with ':args'.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, S, metrics and reports.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() (auto-detected on Cloud TPU and SLURM; "
                  "else set --coordinator_address, --num_processes and --process_id).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax and CLU log every save at INFO.
  import jax

  if FLAGS.distributed or FLAGS.coordinator_address:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  try:
    from simsoft import train  # after distributed init: it imports TF via the data module

    logging.info("JAX processes %d/%d, devices %d local / %d global", jax.process_index() + 1,
                 jax.process_count(), jax.local_device_count(), jax.device_count())
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except ModuleNotFoundError as e:
    message = extras.missing_dependency_message(e)
    if message is None:
      raise
    raise SystemExit(message) from None


def run():
  """The `simsoft` console script (and `python -m simsoft.main`)."""
  sys.argv = config_files.resolve_argv(sys.argv)
  app.run(main)


if __name__ == "__main__":
  run()
