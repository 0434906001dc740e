"""One pod job per sweep run: `simsoft.sweep --executor=tpu_pod` hands each run to launch/tpu_pod.sh.

  export TPU_NAME=simsoft-sweep ZONE=us-central2-b ACCELERATOR_TYPE=v4-8 BUCKET=gs://my-bucket
  python -m simsoft.sweep --config configs/sweep.py:cifar10 --root sweeps/c10 \\
      --executor=tpu_pod --workers 4

Each run of the grid becomes `bash launch/tpu_pod.sh up CONFIG RUN_NAME`, from
a checkout (the launchers are not in the wheel):

- RUN_NAME is SWEEP/<experiment>/seed<s>/<setting>, SWEEP the --root's last
  component (--executor_params=name=SWEEP), so the run's workdir is
  BUCKET/simsoft/RUN_NAME (checkpoints, logs, results).
- CONFIG is the run's whole config written as a Python literal to
  ROOT/.pod/<run>/pod_run.py, with estimate.model_from pointing at its
  base's workdir in the bucket and dataset.data_dir at
  BUCKET/tensorflow_datasets; tpu_pod.sh copies it (and any file its fields
  name) to the run's inputs/ as it does a user's config. up's output goes to
  ROOT/.pod/<run>/up.log.
- Concurrency: --workers slots, slot i using the slice TPU_NAME-i; a slot
  runs one run at a time. up creates the slice (a queued resource; SPOT=1
  spot, re-queued on preemption) unless it exists, sets it up, runs, and
  deletes only a slice it created: so each run gets a fresh slice (created
  and set up per run) unless slices TPU_NAME-0 ... TPU_NAME-(k-1) were
  created beforehand (`TPU_NAME=x-0 tpu_pod.sh create`), which are then
  reused in turn and left running (`tpu_pod.sh delete` them). Every other
  setting of tpu_pod.sh (SPOT, MAX_REQUEUES, KEEP_TPU, PREPARE, POLL_SECONDS,
  ...) comes from the environment; the wheel is built once (WHEEL).
- Records: when up ends with 0, the run's small records (RECORDS: results,
  config, done markers, S, target, report) are copied from the bucket into
  its directory under ROOT, with pod.json saying where the run lives. Resume
  (a run with results.json, or a base with estimate/done.json, is finished),
  claims (ROOT/.locks, taken by this process while the run's up runs),
  check_root and the summary then read ROOT as with the other executors. A
  run found finished in the bucket but not in ROOT (the sweep was stopped
  while its up ran) is copied, not run again; `--summary_only` copies every
  such run first.
- A failed run (up's exit code other than 0: the job failed, a re-queue
  limit, a slice that could not be made) is reported with its log's last
  line, the runs that use its base are skipped and the sweep exits 1. Run the
  same command again: unfinished runs are handed to up again with the same
  workdir, and simsoft resumes each from its last checkpoint in the bucket.
- Ctrl-C stops the ups (their jobs keep running, their slices are kept, as
  tpu_pod.sh up does); the next pass finds those slices and reuses them (the
  job restarts from its last checkpoint) but, not having created them, leaves
  them up: `tpu_pod.sh delete` them.
- wall_time.json of a run is the time of its up (slice creation, setup and
  re-queues included).
"""

from __future__ import annotations

import ast
import copy
import json
import os
import subprocess
import threading
import time
from typing import Any

import ml_collections

from simsoft import errors, staging, sweep_runs

LAUNCHER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "launch",
    "tpu_pod.sh",
)
SETTINGS = ("TPU_NAME", "ZONE", "ACCELERATOR_TYPE", "BUCKET")
# The record that marks a run finished: copied back last, so that a copy cut
# short is not taken for a finished run.
MARKER = {"base": "estimate/done.json", "run": "results.json"}
# A finished run's records copied back from the bucket (those it has).
RECORDS = (
    "config.json",
    "report.md",
    "estimate/similarity.npy",
    "estimate/similarity.json",
    "estimate/provenance.json",
    "retrain/target.json",
    "retrain/provenance.json",
    "retrain/done.json",
    "estimate/done.json",
    "results.json",
)
POD_RECORD = "pod.json"
PARAMS = ("name",)


def settings(
    params: dict[str, Any], environ: dict[str, str] | None = None
) -> dict[str, str]:
  """TPU_NAME, ZONE, ACCELERATOR_TYPE, BUCKET from the environment, and the
  executor's parameters; one-line ConfigError for what is missing or wrong."""
  environ = os.environ if environ is None else environ
  unknown = sorted(set(params) - set(PARAMS))
  if unknown:
    raise errors.ConfigError(
        f"--executor_params={unknown[0]}: not a parameter of --executor=tpu_pod "
        f"(known: {', '.join(PARAMS)}; the slices' settings come from the "
        "environment, as for launch/tpu_pod.sh)"
    )
  missing = [v for v in SETTINGS if not environ.get(v)]
  if missing:
    raise errors.ConfigError(
        f"--executor=tpu_pod needs {', '.join(SETTINGS)} in the environment "
        f"(as launch/tpu_pod.sh does): set {', '.join(missing)}"
    )
  if not environ["BUCKET"].startswith("gs://"):
    raise errors.ConfigError(
        f"BUCKET={environ['BUCKET']!r} must be a gs:// URL (the runs' workdirs)"
    )
  if not os.path.isfile(LAUNCHER):
    raise errors.MissingInputError(
        f"--executor=tpu_pod runs {LAUNCHER}, which is not there: run the "
        "sweep from a checkout (the launchers are not in the wheel)"
    )
  return {v: environ[v] for v in SETTINGS} | {
      "name": str(params.get("name", "")),
  }


def sweep_name(root: str, name: str = "") -> str:
  """SWEEP: `name`, else the root's last component."""
  return name or os.path.basename(os.path.normpath(os.path.abspath(root)))


def remote_root(root: str, bucket: str, name: str = "") -> str:
  """BUCKET/simsoft/SWEEP: where the sweep's runs live in the bucket."""
  return f"{bucket.rstrip('/')}/simsoft/{sweep_name(root, name)}"


def run_name(workdir: str, root: str, name: str = "") -> str:
  """SWEEP/<experiment>/seed<s>/<setting>: tpu_pod.sh's RUN_NAME of a run."""
  rel = os.path.relpath(workdir, root).replace(os.sep, "/")
  return f"{sweep_name(root, name)}/{rel}"


def pod_fields(
    config: ml_collections.ConfigDict, root: str, remote: str, bucket: str
) -> dict[str, Any]:
  """The fields a run's config has on the pod that differ from its local plan:
  its base in the bucket, the bucket's TFDS folder, and each local file a
  field names as staged (inputs/<field>/<name>; simsoft.staging)."""
  fields = {"dataset.data_dir": f"{bucket.rstrip('/')}/tensorflow_datasets"}
  base = config.estimate.model_from
  if base and "://" not in base:
    rel = os.path.relpath(base, root).replace(os.sep, "/")
    fields["estimate.model_from"] = f"{remote}/{rel}"
  for field, value in staging.named_files(config):
    if "://" not in value:
      fields[field] = f"{staging.INPUTS}/{field}/{os.path.basename(value)}"
  return fields


def _with_fields(
    config: ml_collections.ConfigDict, fields: dict[str, Any]
) -> ml_collections.ConfigDict:
  out = copy.deepcopy(config)
  with out.unlocked():
    for dotted, value in fields.items():
      node = out
      *parents, leaf = dotted.split(".")
      for part in parents:
        node = node[part]
      node[leaf] = value
  return out


def as_run(
    config: ml_collections.ConfigDict, workdir: str
) -> ml_collections.ConfigDict:
  """The config a run directory's config.json was made with: the planned
  config, with the pod's fields (pod.json) where the run ran on a pod."""
  path = os.path.join(workdir, POD_RECORD)
  if not os.path.exists(path):
    return config
  with open(path) as f:
    return _with_fields(config, json.load(f)["fields"])


def config_source(config: ml_collections.ConfigDict, title: str) -> str:
  """A config file whose get_config() returns `config` (a Python literal)."""
  data = config.to_dict()
  text = repr(data)
  if ast.literal_eval(text) != data:
    raise errors.ConfigError(
        f"{title}: the run's config does not round-trip as a Python literal"
    )
  return (
      f'"""{title} (written by simsoft.sweep --executor=tpu_pod)."""\n\n'
      "import ml_collections\n\n"
      f"CONFIG = {text}\n\n\n"
      "def get_config(arg=None):\n"
      "  del arg\n"
      "  return ml_collections.ConfigDict(CONFIG)\n"
  )


def _gcloud(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      ["gcloud", *args], capture_output=True, text=True, check=False
  )


def fetch(remote_dir: str, workdir: str, base: bool, fields: dict) -> bool:
  """Copies a finished run's RECORDS from the bucket into `workdir` (its
  marker last, pod.json first); False (nothing marked finished) if the run
  has not finished there."""
  marker = MARKER["base" if base else "run"]
  os.makedirs(workdir, exist_ok=True)
  probe = os.path.join(workdir, ".pod_" + os.path.basename(marker))
  if _gcloud("storage", "cp", f"{remote_dir}/{marker}", probe).returncode:
    return False
  with open(os.path.join(workdir, POD_RECORD), "w") as f:
    json.dump({"workdir": remote_dir, "fields": fields}, f, indent=1)
  for record in RECORDS:
    if record == marker:
      continue
    local = os.path.join(workdir, *record.split("/"))
    os.makedirs(os.path.dirname(local), exist_ok=True)
    _gcloud("storage", "cp", f"{remote_dir}/{record}", local)  # optional
  final = os.path.join(workdir, *marker.split("/"))
  os.makedirs(os.path.dirname(final), exist_ok=True)
  os.replace(probe, final)
  return True


class PodJob:
  """A run handed to tpu_pod.sh up in a thread (submitit's job interface)."""

  def __init__(self, job_id: str, target=None, outcome: str | None = None):
    self.job_id = job_id
    self._outcome, self._error = outcome, None
    self._thread = None
    if target is not None:
      self._thread = threading.Thread(target=self._run, args=(target,))
      self._thread.start()

  def _run(self, target) -> None:
    try:
      self._outcome = target()
    except Exception as e:  # pylint: disable=broad-except
      self._error = e

  def done(self) -> bool:
    return self._thread is None or not self._thread.is_alive()

  def result(self) -> str:
    if self._thread is not None:
      self._thread.join()
    if self._error is not None:
      raise self._error
    return self._outcome


class PodExecutor:
  """submit(fn, config, workdir, root): the run on a pod slice through
  tpu_pod.sh up (fn, simsoft.sweep.run_one, is what the job engines run; here
  simsoft.main runs on the pod instead), one run per slot at a time."""

  def __init__(
      self, root: str, slots: int, params: dict[str, Any] | None = None
  ):
    self.settings = settings(params or {})
    self.root = root
    self.remote = remote_root(
        root, self.settings["BUCKET"], self.settings["name"]
    )
    self._free = list(range(max(1, slots)))
    self._lock = threading.Lock()
    self._wheel = os.environ.get("WHEEL", "")
    self.logs = os.path.join(root, ".pod")  # each run's up.log

  def _env(self, slot: int) -> dict[str, str]:
    env = dict(os.environ, WHEEL=self._wheel)
    env["TPU_NAME"] = f"{self.settings['TPU_NAME']}-{slot}"
    env.pop("QUEUED_ID", None)  # the slot's own: TPU_NAME-qr
    env.pop("RUN_NAME", None)
    return env

  def build_wheel(self) -> str:
    """The wheel every slot installs (built once; WHEEL names a built one)."""
    if not self._wheel:
      out = subprocess.run(
          ["bash", LAUNCHER, "wheel"],
          capture_output=True,
          text=True,
          check=False,
      )
      if out.returncode:
        raise errors.OSFailure(
            f"could not build the wheel for the pods: {out.stderr.strip()[-300:]}"
        )
      self._wheel = out.stdout.strip().splitlines()[-1]
    return self._wheel

  def fields(self, config: ml_collections.ConfigDict) -> dict[str, Any]:
    return pod_fields(config, self.root, self.remote, self.settings["BUCKET"])

  def remote_dir(self, workdir: str) -> str:
    rel = os.path.relpath(workdir, self.root).replace(os.sep, "/")
    return f"{self.remote}/{rel}"

  def fetch_finished(self, workdir: str, config) -> bool:
    """Copies the run's records from the bucket if it finished there."""
    return fetch(
        self.remote_dir(workdir),
        workdir,
        config.phases == ("estimate",),
        self.fields(config),
    )

  def submit(self, fn, config, workdir: str, root: str) -> PodJob:
    del fn  # the run goes to a pod: simsoft.main runs there
    name = run_name(workdir, root, self.settings["name"])
    lock = sweep_runs.claim(root, workdir)
    if lock is None:
      return PodJob(name, outcome="held")
    self.build_wheel()
    with self._lock:
      slot = self._free.pop(0)

    def job() -> str:
      try:
        if self.fetch_finished(workdir, config):
          return "done"
        return self._up(config, workdir, name, slot)
      finally:
        lock.close()
        with self._lock:
          self._free.append(slot)
          self._free.sort()

    return PodJob(name, job)

  def _up(self, config, workdir: str, name: str, slot: int) -> str:
    folder = os.path.join(
        self.root, ".pod", os.path.relpath(workdir, self.root)
    )
    os.makedirs(folder, exist_ok=True)
    spec = os.path.join(folder, "pod_run.py")
    fields = self.fields(config)
    # The files a field names travel as they are (tpu_pod.sh stages them);
    # only the base and the data folder are the pod's own.
    pod_config = _with_fields(
        config,
        {
            k: fields[k]
            for k in ("dataset.data_dir", "estimate.model_from")
            if k in fields
        },
    )
    with open(spec, "w") as f:
      f.write(config_source(pod_config, f"Sweep run {name}"))
    start = time.time()
    log_path = os.path.join(folder, "up.log")
    with open(log_path, "w") as log:
      code = subprocess.run(
          ["bash", LAUNCHER, "up", spec, name],
          stdout=log,
          stderr=subprocess.STDOUT,
          env=self._env(slot),
          check=False,
      ).returncode
    if code:
      with open(log_path) as f:
        # The reason, not the clean-up line that follows it.
        lines = [
            line.strip()
            for line in f
            if line.strip() and not line.startswith("tpu_pod.sh: failed (exit")
        ]
      raise RuntimeError(
          f"tpu_pod.sh up exited {code} on slice "
          f"{self.settings['TPU_NAME']}-{slot}: "
          f"{lines[-1] if lines else 'no output'} (log {log_path})"
      )
    if not self.fetch_finished(workdir, config):
      raise RuntimeError(
          f"tpu_pod.sh up ended but {self.remote_dir(workdir)} has no "
          f"{MARKER['base' if config.phases == ('estimate',) else 'run']}"
      )
    with open(os.path.join(workdir, "wall_time.json"), "w") as f:
      # Slice creation, setup and any re-queue included.
      json.dump(
          {"seconds": time.time() - start, "measured": "tpu_pod.sh up"}, f
      )
    return "ran"

  def fetch_all(self, runs) -> int:
    """Copies every run finished in the bucket but not here; their number."""
    return sum(
        self.fetch_finished(w, c)
        for w, c in runs
        if not sweep_runs.finished(w, c.phases)
    )
