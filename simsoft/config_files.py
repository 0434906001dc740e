"""Where config files are, in a checkout or an installed package, and how --config finds one.

A checkout keeps its configs in configs/ at the top; a wheel ships the same
files as simsoft/configs (setup.py maps one to the other). `--config` takes a
file path as always; a relative path that does not exist from the current
directory is looked up in the shipped configs, so

  simsoft --config configs/default.py:epochs=1 --workdir W   # any directory
  simsoft --config default.py:epochs=1 --workdir W           # the same file

work after `pip install 'simsoft[all]'` as they do in a checkout. In Python,
`load_config('default.py', relative_to=HERE)` returns a file's config (the
sweep config builds its experiments so).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence

import ml_collections

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def configs_dir() -> str:
  """The shipped configs: simsoft/configs when installed, else the checkout's configs/."""
  installed = os.path.join(_PACKAGE_DIR, "configs")
  if os.path.isfile(os.path.join(installed, "default.py")):
    return installed
  return os.path.join(os.path.dirname(_PACKAGE_DIR), "configs")


def resolve(spec: str, *, relative_to: str | None = None) -> str:
  """'path.py[:args]' -> the same spec with the path made to point at an existing file.

  Tried in order: the path as given (relative to `relative_to`, default the
  current directory); then, for a relative path, the shipped configs
  directory, with a leading 'configs/' dropped. A spec that matches nothing is
  returned as given, so the config loader reports the missing file.
  """
  path, sep, arg = spec.partition(":")
  if not path or os.path.isabs(path):
    return spec
  candidates = [os.path.join(relative_to or os.getcwd(), path)]
  tail = path[len("configs/") :] if path.startswith("configs/") else path
  candidates.append(os.path.join(configs_dir(), tail))
  for candidate in candidates:
    if os.path.isfile(candidate):
      return os.path.normpath(candidate) + sep + arg
  return spec


def resolve_argv(argv: Sequence[str], flag: str = "config") -> list[str]:
  """argv with the value of --<flag> (as '--flag=v' or '--flag v') resolved by `resolve`."""
  out, args = [], list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    if arg.startswith(f"--{flag}="):
      arg = f"--{flag}=" + resolve(arg.split("=", 1)[1])
    elif arg == f"--{flag}" and i + 1 < len(args):
      out.append(arg)
      i += 1
      arg = resolve(args[i])
    out.append(arg)
    i += 1
  return out


def load_config(
    path: str, arg: str | None = None, *, relative_to: str | None = None
) -> ml_collections.ConfigDict:
  """The ConfigDict that config file `path`'s get_config(arg) returns.

  `arg` is the text after the colon (the file's knobs). A relative path is
  looked up as `resolve` does: relative to `relative_to` (default the current
  directory), then in the shipped configs, a leading 'configs/' dropped; so a
  config that loads another runs from any directory, in a checkout or installed.
  """
  found = resolve(path, relative_to=relative_to)
  if not os.path.isfile(found):
    raise FileNotFoundError(
        f"config file {path!r} not found (looked relative to "
        f"{relative_to or os.getcwd()} and in {configs_dir()})"
    )
  spec = importlib.util.spec_from_file_location(
      "simsoft_config_" + os.path.basename(found)[:-3], found
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)
