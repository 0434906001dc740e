"""Entry point: `python -m simsoft.main --config configs/default.py --workdir DIR`.

Installed (`pip install 'simsoft[all]'`) the same command is `simsoft --config
configs/default.py --workdir DIR`, from any directory: a config path that does
not exist there is looked up in the configs shipped with the package
(simsoft.config_files).

`--config` takes a config file with an optional `:arg` string of short knobs
(`configs/cifar10.py:model=resnet20,similarity=confusion,seed=1`; the knobs
are simsoft.config.ARG_ALIASES and a file's own), and any field is set with
`--config.<field>=<value>` (`--config.optimizer.learning_rate=0.05`,
`--config.phases="('retrain', 'evaluate')"`); the config is locked, so a
misspelled field is an error. On a multi-host slice (Cloud TPU
pod, several GPU hosts) pass --distributed so every process joins one job.

A user error (a bad flag, config file or value, another run's workdir, a
workdir in use, a damaged file, a NaN loss, Ctrl-C) ends with one line on
stderr, `simsoft: error: ...`, and a non-zero exit code (2 for usage errors;
see simsoft.errors); `--traceback` or SIMSOFT_TRACEBACK=1 adds the traceback.
"""

import os
import sys
from collections.abc import Callable, Sequence

from absl import app, flags
from ml_collections import config_flags

from simsoft import cli_flags, config_files, errors, extras

FLAGS = flags.FLAGS


def define_flags(
    fv: flags.FlagValues, sys_argv: Sequence[str] | None = None
) -> None:
  """Defines this command's flags in `fv` (`sys_argv`: where --config.* overrides are read;
  default sys.argv)."""
  config_flags.DEFINE_config_file(
      "config",
      None,
      "Config file, optionally with ':args'.",
      lock_config=True,
      flag_values=fv,
      sys_argv=sys_argv,
  )
  flags.DEFINE_string(
      "workdir",
      None,
      "Directory for checkpoints, S, metrics and reports.",
      flag_values=fv,
  )
  flags.DEFINE_bool(
      "distributed",
      False,
      "Call jax.distributed.initialize() (auto-detected on Cloud TPU and SLURM; "
      "else set --coordinator_address, --num_processes and --process_id).",
      flag_values=fv,
  )
  flags.DEFINE_string(
      "coordinator_address",
      None,
      "host:port of process 0 (multi-host).",
      flag_values=fv,
  )
  flags.DEFINE_integer(
      "num_processes", None, "Number of processes (multi-host).", flag_values=fv
  )
  flags.DEFINE_integer(
      "process_id", None, "This process's index (multi-host).", flag_values=fv
  )
  flags.DEFINE_bool(
      "traceback",
      False,
      "On an error, print its traceback too " "(or set SIMSOFT_TRACEBACK=1).",
      flag_values=fv,
  )


define_flags(FLAGS)


def parse_flags(argv: Sequence[str], fv: flags.FlagValues = FLAGS) -> list[str]:
  """absl's parser, with every mistake raised as a one-line ConfigError."""
  return cli_flags.parse_flags(
      argv, fv, define=define_flags, required=REQUIRED, schema=_schema
  )


REQUIRED = (("config", "configs/default.py"), ("workdir", "/tmp/simsoft/run1"))


def _schema() -> dict:
  from simsoft import config as config_lib  # pylint: disable=g-import-not-at-top

  return config_lib.base_config().to_dict()


# ----------------------------------------------------------------------------
# The run.
# ----------------------------------------------------------------------------


def run(fv: flags.FlagValues = FLAGS) -> None:
  """Joins the distributed job if asked, then runs the configured phases."""
  from simsoft import validate  # pylint: disable=g-import-not-at-top

  # Values first: a bad one is refused in seconds, before TensorFlow and the data.
  validate.check_values(fv.config)
  import jax  # pylint: disable=g-import-not-at-top

  if fv.distributed or fv.coordinator_address:
    jax.distributed.initialize(
        fv.coordinator_address, fv.num_processes, fv.process_id
    )
  if not ("verbosity" in fv and fv["verbosity"].present):
    _import_tensorflow_quietly()
  try:
    from simsoft import train  # pylint: disable=g-import-not-at-top  # after distributed init: TF

    train.train_and_evaluate(fv.config, fv.workdir)
  except ModuleNotFoundError as e:
    message = extras.missing_dependency_message(e)
    if message is None:
      raise
    raise errors.ConfigError(message) from None


def _import_tensorflow_quietly() -> None:
  """Imports TensorFlow with stderr closed: its C++ start-up log lines ignore TF_CPP_MIN_LOG_LEVEL."""
  saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 2)
  try:
    import tensorflow  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    pass  # the accelerator machine has no TF; simsoft.data says so when it is needed
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(null)


def guarded(fn: Callable[[], None], argv: Sequence[str]) -> int:
  """Runs fn(); a user error, an OSError or Ctrl-C becomes one stderr line and its exit code."""
  try:
    fn()
  except errors.UserError as e:
    errors.report(str(e), exc=e, argv=argv)
    return e.exit_code
  except OSError as e:  # read-only or full disk, a path under a file, ...
    errors.report(errors.os_error_message(e), exc=e, argv=argv)
    return errors.OSFailure.exit_code
  except KeyboardInterrupt as e:
    errors.report(
        "interrupted (Ctrl-C) outside training; nothing finished was lost; run the same "
        "command to resume",
        exc=e,
        argv=argv,
    )
    return errors.InterruptedRun.exit_code
  return 0


def main(argv: Sequence[str], fv: flags.FlagValues = FLAGS) -> int:
  from simsoft import progress  # pylint: disable=g-import-not-at-top  # imports jax

  progress.configure_logging(fv)
  return guarded(lambda: run(fv), argv)


def cli(argv: Sequence[str]) -> int:
  """The whole command in this process, with flags parsed into fresh FlagValues (for tests)."""
  argv = config_files.resolve_argv(list(argv))
  fv = flags.FlagValues()
  define_flags(fv, sys_argv=list(argv))
  try:
    parse_flags(argv, fv)
  except errors.UserError as e:
    errors.report(str(e), exc=e, argv=argv)
    return e.exit_code
  return main(argv, fv)


def console_main() -> None:
  """The `simsoft` console script (and `python -m simsoft.main`): --config paths not found
  here are looked up in the configs shipped with the package."""
  sys.argv = config_files.resolve_argv(sys.argv)
  app.run(main, flags_parser=cli_flags.exiting(parse_flags))


if __name__ == "__main__":
  console_main()
