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

import difflib
import os
import sys
from collections.abc import Callable, Sequence

from absl import app, flags
from ml_collections import config_flags

from simsoft import config_files, errors, extras

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


# ----------------------------------------------------------------------------
# Command-line mistakes -> one line.
# ----------------------------------------------------------------------------


def _suggest(field: str, config: dict | None = None) -> str | None:
  """The config field a misspelled or moved one most likely meant
  ('optimizer.lr' -> 'optimizer.learning_rate'); `config` is the loaded one, if any.
  """
  from simsoft import checkpoint, config as config_lib  # pylint: disable=g-import-not-at-top

  alias = config_lib.ARG_ALIASES.get(field.rsplit(".", 1)[-1])
  if alias:
    return alias
  config = config or config_lib.base_config().to_dict()
  fields = sorted(checkpoint._flatten(config))
  moved = config_lib.MOVED_FIELDS.get(field)
  if field.startswith("model.kwargs."):  # now the model's own section
    moved = f"model.{config['model']['name']}.{field[len('model.kwargs.'):]}"
  if moved in fields:
    return moved
  close = difflib.get_close_matches(field, fields, n=1, cutoff=0.75)
  return close[0] if close else None


def _unknown_flag(name: str, config: dict | None = None) -> str:
  if name.startswith("config."):
    field = name[len("config.") :]
    close = _suggest(field, config)
    hint = f"did you mean --config.{close}? " if close else ""
    return (
        f"--{name}: the config has no field {field!r}; {hint}the fields are listed in "
        "simsoft/config.py"
    )
  return f"unknown flag --{name}; see --helpfull for the flags"


def _config_file_error(value: str, last_line: str) -> str:
  """--config failed in the file or in the text after the colon: `last_line` is 'Type: message'."""
  kind, _, message = last_line.partition(": ")
  if kind.endswith("ConfigError"):
    return f"--config {value}: {message}"
  return (
      f"--config {value}: the config file is broken ({kind.rsplit('.', 1)[-1]}: {message}); "
      "fix it, or use a file from configs/ such as configs/default.py"
  )


def flag_error_message(error: BaseException, argv: Sequence[str]) -> str:
  """A one-line message for an exception raised while parsing the flags."""
  text = str(error)
  if isinstance(error, flags.UnrecognizedFlagError):
    config = (
        _config_without_overrides(argv)
        if error.flagname.startswith("config.")
        else None
    )
    return _unknown_flag(error.flagname, config)
  if "Failed loading config file" in text:
    reason = text.strip().splitlines()[-1].strip()
    path = next(
        (a.split("=", 1)[-1] for a in argv if a.startswith("--config=")), None
    )
    path = path or next(
        (argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), "?"
    )
    return (
        f"--config {path}: cannot load the config file ({reason}); give an existing file "
        "such as configs/default.py"
    )
  if "Error whilst parsing config file" in text:
    value = text.split(":", 1)[0].partition("=")[2]
    return _config_file_error(value, text.strip().splitlines()[-1].strip())
  first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
  return first[len("flag ") :] if first.startswith("flag ") else first


def _config_arg(argv) -> str:
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return "?"


def _config_without_overrides(argv) -> dict | None:
  """The config that --config loads before any --config.<field> override, or None."""
  bare = [a for a in argv if not a.startswith("--config.")]
  fv = flags.FlagValues()
  define_flags(fv, sys_argv=bare)
  try:
    fv(bare)
    return fv.config.to_dict()
  except Exception:  # pylint: disable=broad-except  # reported by the caller's own parse
    return None


def _unknown_override(argv) -> str | None:
  """The message for the first --config.<field> override that names no field of the config
  (of the loaded config if there is one, else of the shared schema)."""
  from simsoft import checkpoint, config as config_lib  # pylint: disable=g-import-not-at-top

  config = _config_without_overrides(argv) or config_lib.base_config().to_dict()
  leaves = checkpoint._flatten(config)
  fields = {  # every field and section
      ".".join(parts[:i])
      for parts in (leaf.split(".") for leaf in leaves)
      for i in range(1, len(parts) + 1)
  }
  for arg in argv[1:]:
    if arg.startswith("--config."):
      name = arg[2:].split("=", 1)[0]
      if name[len("config.") :] not in fields:
        return _unknown_flag(name, config)
  return None


def parse_flags(argv: Sequence[str], fv: flags.FlagValues = FLAGS) -> list[str]:
  """absl's parser, with every mistake raised as a one-line ConfigError."""
  try:
    rest = fv(argv)
    if fv["config"].present:
      fv.config.get("seed")  # a config that failed to load raises here
  except flags.Error as e:
    raise errors.ConfigError(flag_error_message(e, argv)) from e
  except OSError as e:  # config_flags: the file could not be read
    raise errors.ConfigError(flag_error_message(e.__cause__ or e, argv)) from e
  except (AttributeError, KeyError) as e:  # --config.<field> names no field
    raise errors.ConfigError(
        _unknown_override(argv) or errors.one_line(str(e))
    ) from e
  except Exception as e:  # pylint: disable=broad-except  # the config file raised while loading
    raise errors.ConfigError(
        _config_file_error(
            _config_arg(argv), f"{type(e).__name__}: {errors.one_line(str(e))}"
        )
    ) from e
  for name, example in (
      ("config", "configs/default.py"),
      ("workdir", "/tmp/simsoft/run1"),
  ):
    if fv[name].value is None:
      raise errors.ConfigError(f"--{name} is required, e.g. --{name}={example}")
  if len(rest) > 1:
    raise errors.ConfigError(
        f"unexpected arguments {rest[1:]}; give options as --name=value (quote a value that "
        "holds spaces)"
    )
  return rest


# ----------------------------------------------------------------------------
# The run.
# ----------------------------------------------------------------------------


def run(fv: flags.FlagValues = FLAGS) -> None:
  """Joins the distributed job if asked, then runs the configured phases."""
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
  """Runs fn(); a user error or Ctrl-C becomes one stderr line and its exit code."""
  try:
    fn()
  except errors.UserError as e:
    errors.report(str(e), exc=e, argv=argv)
    return e.exit_code
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


def _app_flags_parser(argv):
  try:
    return parse_flags(argv)
  except errors.UserError as e:
    errors.report(str(e), exc=e, argv=argv)
    sys.exit(e.exit_code)


def console_main() -> None:
  """The `simsoft` console script (and `python -m simsoft.main`): --config paths not found
  here are looked up in the configs shipped with the package."""
  sys.argv = config_files.resolve_argv(sys.argv)
  app.run(main, flags_parser=_app_flags_parser)


if __name__ == "__main__":
  console_main()
