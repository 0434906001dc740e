"""`python -m simsoft.main --distributed ...` on a fake pod worker, really run.

tests/helpers/fake_gcloud.py keeps gs://BUCKET/... in $FAKE_GCLOUD_STATE/gcs/BUCKET/...;
this maps every gs:// path of the command line and of the loaded config
there, then runs simsoft.main in this process (one host: no
--distributed). A run whose workdir contains $FAKE_FAIL_RUN fails at once.
"""

import os
import sys

import ml_collections
from absl import flags

GS = "gs://"


def local(value):
  if isinstance(value, str) and value.startswith(GS):
    return os.path.join(
        os.environ["FAKE_GCLOUD_STATE"], "gcs", value[len(GS) :]
    )
  return value


def localize(config: ml_collections.ConfigDict) -> None:
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      localize(value)
    elif local(value) != value:
      config[key] = local(value)


def main(argv):
  assert argv[:2] == ["-m", "simsoft.main"], argv
  args = []
  for arg in argv[2:]:
    if arg == "--distributed":
      continue
    name, sep, value = arg.partition("=")
    args.append(name + sep + local(value) if sep else local(arg))
  workdir = args[args.index("--workdir") + 1]
  fail = os.environ.get("FAKE_FAIL_RUN")
  if fail and fail in workdir:
    print(f"Traceback (most recent call last): {workdir} failed", flush=True)
    return 1
  from simsoft import config_files
  from simsoft import main as simsoft_main

  argv = config_files.resolve_argv(["simsoft.main", *args])
  fv = flags.FlagValues()
  simsoft_main.define_flags(fv, sys_argv=argv)
  simsoft_main.parse_flags(argv, fv)
  localize(fv.config)
  return simsoft_main.main(argv, fv)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
