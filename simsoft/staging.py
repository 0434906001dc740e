"""What a run names, so that it can travel: the config file and the files its fields point to.

A pod's workers see neither the launching machine's files nor its paths.
launch/tpu_pod.sh asks this module, before it starts a run, for

  python -m simsoft.staging CONFIG [--config.FIELD=VALUE ...]

which loads the config as simsoft.main would (the colon's knobs and the
--config.* overrides applied) and prints, one per line, tab-separated:

  copy   LOCAL_PATH  inputs/...   a file to copy into the run's folder
  arg    ARG                      the worker's arguments, in order

The worker copies the run's inputs/ next to it (~/simsoft/inputs) and runs
from ~/simsoft, so the relative paths in its arguments point at the copies. A
config shipped with simsoft (configs/...) stays as it is (the workers'
installed wheel holds it); any other config file is copied. Every file field
(FILE_FIELDS) that names a local file is copied and set to the copy; a file
that cannot be read here is refused in one line, as is a local directory in a
field that names another run or a dataset folder (DIR_FIELDS: on a pod those
must be gs:// paths).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence

import ml_collections

from simsoft import config_files

# Config fields that name one input file.
FILE_FIELDS = (
    "similarity.path",
    "hierarchy_path",
    "evaluate.reference_similarity_path",
)
# Config fields that name a directory (another run's workdir, a dataset folder).
# (dataset.data_dir is not one: the pod sets it to the bucket's TFDS folder.)
DIR_FIELDS = ("estimate.model_from", "similarity.from_workdir")
INPUTS = "inputs"


class StagingError(ValueError):
  """A run names something that cannot travel (one line)."""


def _get(config: ml_collections.ConfigDict, dotted: str):
  node = config
  for part in dotted.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return None
    node = node[part]
  return node


def named_files(
    config: ml_collections.ConfigDict, prefix: str = ""
) -> Iterator[tuple[str, str]]:
  """(field, path) for every non-empty file field of a run config, or of each
  experiment of a sweep config (fields prefixed 'experiments.<name>.')."""
  if "experiments" in config:
    for name, experiment in config.experiments.items():
      yield from named_files(experiment, f"{prefix}experiments.{name}.")
    return
  for field in FILE_FIELDS:
    value = _get(config, field)
    if value:
      yield prefix + field, value


def named_dirs(config: ml_collections.ConfigDict) -> Iterator[tuple[str, str]]:
  """(field, path) for every non-empty directory field, evaluators' data_dir included."""
  for field in DIR_FIELDS:
    value = _get(config, field)
    if value:
      yield field, value
  for name, entry in config.evaluate.evaluators.items():
    if entry.get("data_dir"):
      yield f"evaluate.evaluators.{name}.data_dir", entry["data_dir"]


def load(spec: str, flags: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config of `--config SPEC FLAGS...`, loaded as simsoft.main loads it."""
  from absl import flags as absl_flags
  from ml_collections import config_flags

  fv = absl_flags.FlagValues()
  config_flags.DEFINE_config_file(
      "config", config_files.resolve(spec), flag_values=fv
  )
  fv(["staging", *flags])
  return fv.config


def _is_shipped(path: str) -> bool:
  shipped = os.path.realpath(config_files.configs_dir())
  return os.path.realpath(path).startswith(shipped + os.sep)


def _field_flag(arg: str) -> str | None:
  if arg.startswith("--config.") and "=" in arg:
    return arg[len("--config.") :].split("=", 1)[0]
  return None


def plan(
    spec: str, flags: Sequence[str] = ()
) -> tuple[list[tuple[str, str]], list[str]]:
  """([(local file, inputs/... path)], worker arguments: CONFIG then flags).

  Raises StagingError (one line) for a file that cannot be read here or a
  local directory where the workers need a gs:// path.
  """
  path, sep, arg = spec.partition(":")
  found = config_files.resolve(spec).partition(":")[0]
  if not os.path.isfile(found) or not os.access(found, os.R_OK):
    raise StagingError(
        f"config file {path!r}: not readable here (looked relative to "
        f"{os.getcwd()} and in {config_files.configs_dir()})"
    )
  copies = []
  if _is_shipped(found):
    rel = os.path.relpath(
        os.path.realpath(found), os.path.realpath(config_files.configs_dir())
    )
    worker_spec = f"configs/{rel}{sep}{arg}"
  else:
    remote = f"{INPUTS}/config/{os.path.basename(found)}"
    copies.append((os.path.abspath(found), remote))
    worker_spec = f"{remote}{sep}{arg}"
  try:
    config = load(spec, [a for a in flags if _field_flag(a)])
  except Exception as e:  # pylint: disable=broad-except
    message = str(e).strip().splitlines()
    raise StagingError(
        f"config {spec!r} does not load here: "
        f"{message[-1] if message else type(e).__name__}"
    ) from None
  for field, value in named_dirs(config):
    if "://" not in value:
      raise StagingError(
          f"config.{field}={value!r}: a local directory; on a pod it must be a "
          "gs:// path the workers can read"
      )
  overrides = {}
  for field, value in named_files(config):
    if "://" in value:
      continue
    if not os.path.isfile(value) or not os.access(value, os.R_OK):
      raise StagingError(
          f"config.{field}={value!r}: not a readable file here; the run's "
          "files are copied from this machine to its bucket folder"
      )
    remote = f"{INPUTS}/{field}/{os.path.basename(value)}"
    copies.append((os.path.abspath(value), remote))
    overrides[field] = remote
  args = [worker_spec]
  args += [a for a in flags if _field_flag(a) not in overrides]
  args += [f"--config.{f}={v}" for f, v in overrides.items()]
  return copies, args


def main(argv: Sequence[str]) -> int:
  if not argv or argv[0] in ("-h", "--help"):
    print(__doc__)
    return 0 if argv else 2
  try:
    copies, args = plan(argv[0], argv[1:])
  except StagingError as e:
    print(f"simsoft.staging: {e}", file=sys.stderr)
    return 2
  for local, remote in copies:
    print(f"copy\t{local}\t{remote}")
  for arg in args:
    print(f"arg\t{arg}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
