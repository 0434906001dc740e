"""--config flags parsed with every mistake as one line (simsoft.main, simsoft.sweep).

  rest = parse_flags(argv, fv, define=define_flags, required=(("config", "configs/x.py"),))

raises simsoft.errors.ConfigError with one line naming the flag, the field or
the file: an unknown flag or --config.<field> (with the closest field as a
suggestion), a config file that is missing or raises, a required flag left
out, stray arguments. `define(fv, sys_argv)` defines the command's flags in a
fresh FlagValues, so the config can be loaded again without the overrides
to name the fields it has.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Sequence

from absl import flags

from simsoft import errors

Define = Callable[[flags.FlagValues, Sequence[str]], None]


def _suggest(field: str, config: dict) -> str | None:
  """The field of `config` a misspelled or moved one most likely meant
  ('optimizer.lr' -> 'optimizer.learning_rate')."""
  from simsoft import checkpoint, config as config_lib  # pylint: disable=g-import-not-at-top

  fields = sorted(checkpoint._flatten(config))
  head, _, leaf = field.rpartition(".")
  alias = config_lib.ARG_ALIASES.get(leaf) or ""
  # 'optimizer.lr' -> 'optimizer.learning_rate', also inside a section
  # ('experiments.x.optimizer.lr', the sweep's run configs).
  aliases = (alias, f"{head}.{alias.rpartition('.')[2]}")
  moved = config_lib.MOVED_FIELDS.get(field)
  if field.startswith("model.kwargs.") and "model" in config:
    moved = f"model.{config['model']['name']}.{field[len('model.kwargs.'):]}"
  for candidate in (*aliases, moved):
    if candidate in fields:
      return candidate
  close = difflib.get_close_matches(field, fields, n=1, cutoff=0.75)
  return close[0] if close else None


def _unknown_flag(name: str, config: dict | None) -> str:
  if name.startswith("config."):
    field = name[len("config.") :]
    close = _suggest(field, config) if config else None
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


def flag_error_message(
    error: BaseException,
    argv: Sequence[str],
    define: Define,
    schema: Callable[[], dict] | None = None,
) -> str:
  """A one-line message for an exception raised while parsing the flags."""
  text = str(error)
  if isinstance(error, flags.UnrecognizedFlagError):
    config = (
        _config_without_overrides(argv, define) or (schema and schema())
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


def _config_without_overrides(
    argv: Sequence[str], define: Define
) -> dict | None:
  """The config that --config loads before any --config.<field> override, or None."""
  bare = [a for a in argv if not a.startswith("--config.")]
  fv = flags.FlagValues()
  define(fv, bare)
  try:
    fv(bare)
    return fv.config.to_dict()
  except Exception:  # pylint: disable=broad-except  # reported by the caller's own parse
    return None


def _unknown_override(
    argv: Sequence[str], define: Define, schema: Callable[[], dict] | None
) -> str | None:
  """The message for the first --config.<field> override that names no field of the config
  (of the loaded config if there is one, else of `schema()`)."""
  from simsoft import checkpoint  # pylint: disable=g-import-not-at-top

  config = _config_without_overrides(argv, define) or (
      schema() if schema else {}
  )
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


def parse_flags(
    argv: Sequence[str],
    fv: flags.FlagValues,
    *,
    define: Define,
    required: Sequence[tuple[str, str]],
    schema: Callable[[], dict] | None = None,
) -> list[str]:
  """absl's parser, with every mistake raised as a one-line ConfigError.

  Args:
    argv: the command line (argv[0] the program).
    fv: the flags `define` defined, parsed in place.
    define: (fv, sys_argv) -> None, defines the command's flags.
    required: (flag, example) pairs that must be given.
    schema: () -> the config's fields as a dict, named when --config itself
      could not be loaded.
  """
  try:
    rest = fv(argv)
    if fv["config"].present:
      fv.config.get("seed")  # a config that failed to load raises here
  except flags.Error as e:
    raise errors.ConfigError(flag_error_message(e, argv, define, schema)) from e
  except OSError as e:  # config_flags: the file could not be read
    raise errors.ConfigError(
        flag_error_message(e.__cause__ or e, argv, define, schema)
    ) from e
  except (AttributeError, KeyError) as e:  # --config.<field> names no field
    raise errors.ConfigError(
        _unknown_override(argv, define, schema) or errors.one_line(str(e))
    ) from e
  except Exception as e:  # pylint: disable=broad-except  # the config file raised while loading
    raise errors.ConfigError(
        _config_file_error(
            _config_arg(argv), f"{type(e).__name__}: {errors.one_line(str(e))}"
        )
    ) from e
  for name, example in required:
    if fv[name].value is None:
      raise errors.ConfigError(f"--{name} is required, e.g. --{name}={example}")
  if len(rest) > 1:
    raise errors.ConfigError(
        f"unexpected arguments {rest[1:]}; give options as --name=value (quote a value that "
        "holds spaces)"
    )
  return rest


def exiting(
    parse: Callable[[Sequence[str]], list[str]],
) -> Callable[[Sequence[str]], list[str]]:
  """`parse` for absl's app.run(flags_parser=...): a user error is one stderr line and its exit code."""

  def flags_parser(argv: Sequence[str]) -> list[str]:
    try:
      return parse(argv)
    except errors.UserError as e:
      errors.report(str(e), exc=e, argv=argv)
      sys.exit(e.exit_code)

  return flags_parser
