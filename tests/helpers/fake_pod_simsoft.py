"""`python -m simsoft.main --distributed ...` on a fake pod worker, really run.

tests/helpers/fake_gcloud.py keeps gs://BUCKET/... in $FAKE_GCLOUD_STATE/gcs/BUCKET/...;
this maps every gs:// path of the command line and of the loaded config
there, then runs simsoft.main in this process (one host: no
--distributed). A run whose workdir contains $FAKE_FAIL_RUN fails at once.

With $FAKE_REPLAY_ROOT (a local sweep root holding the same runs, finished)
the worker does not train: it checks that the config it was handed is that
run's config.json there, except the fields a pod changes (the bucket's
dataset.data_dir and estimate.model_from), and copies that run's directory to
its workdir, so a test of the executor's plumbing costs no training.
"""

import json
import os
import shutil
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
  replay = os.environ.get("FAKE_REPLAY_ROOT")
  if replay:
    return replay_run(fv.config, workdir, replay)
  localize(fv.config)
  return simsoft_main.main(argv, fv)


POD_FIELDS = (("dataset", "data_dir"), ("estimate", "model_from"))


def replay_run(config: ml_collections.ConfigDict, workdir: str, root: str):
  """Copies root/<the run> to `workdir` if `config` is its config.json (up to
  POD_FIELDS); the copy's config.json is `config`, as a pod run's would be."""
  # workdir: .../gcs/BUCKET/simsoft/SWEEP/<experiment>/seed<s>/<setting>
  run = os.path.join(*workdir.rstrip("/").split(os.sep)[-3:])
  source = os.path.join(root, run)
  handed = json.loads(config.to_json())
  with open(os.path.join(source, "config.json")) as f:
    expected = json.load(f)
  for section, field in POD_FIELDS:
    handed[section].pop(field), expected[section].pop(field)
  if handed != expected:
    print(f"replay: the config handed to {run} is not {source}'s", flush=True)
    return 1
  shutil.copytree(source, workdir, dirs_exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
