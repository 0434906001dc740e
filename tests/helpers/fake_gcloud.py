"""A stub `gcloud` for launch/tpu_pod.sh's tests: records every call and plays a pod.

tests/test_launch.py puts a `gcloud` shim on PATH that runs this file. State
lives in $FAKE_GCLOUD_STATE:

  calls.jsonl     one JSON line per call: {"argv": [...], "worker": N or null, "t": ...}
  state.json      queued resources and nodes (guarded by a lock), counters
  script.json     what to play (written by the test), e.g.
                    {"ssh_fail": {"match": "tpu_worker.sh status", "count": 3},
                     "cat_fail": 2, "preempt_after_checkpoint": 1,
                     "existing_node": "v4-16"}
  gcs/BUCKET/...  the buckets (gs://BUCKET/... maps here)
  workers/N/      each worker's $HOME

`compute tpus tpu-vm ssh --command CMD` runs CMD with bash on every worker at
once (HOME set to that worker's folder, SIMSOFT_WORKER_ID to its index), so the
real tpu_worker.sh runs; a worker's PATH has this gcloud, and stubs of sudo
and uv whose `uv venv` installs tests/helpers/fake_pod_python.sh as the
venv's python.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

STATE = os.environ["FAKE_GCLOUD_STATE"]
HERE = os.path.dirname(os.path.abspath(__file__))


def _flag(argv, name, default=None):
  for i, a in enumerate(argv):
    if a == name and i + 1 < len(argv):
      return argv[i + 1]
    if a.startswith(name + "="):
      return a.split("=", 1)[1]
  return default


def _positional(argv):
  """argv without --flags (and their values)."""
  out, skip = [], False
  for a in argv:
    if skip:
      skip = False
      continue
    if a.startswith("--"):
      if "=" not in a and a not in ("--force", "--quiet", "--spot", "-r"):
        skip = True
      continue
    if a in ("-r", "-q"):
      continue
    out.append(a)
  return out


class State:
  """state.json under an exclusive lock."""

  def __enter__(self):
    self.lock = open(os.path.join(STATE, "state.lock"), "w")
    fcntl.flock(self.lock, fcntl.LOCK_EX)
    path = os.path.join(STATE, "state.json")
    self.data = (
        json.load(open(path))
        if os.path.exists(path)
        else {"nodes": {}, "qrs": {}, "counters": {}}
    )
    return self.data

  def __exit__(self, *exc):
    with open(os.path.join(STATE, "state.json"), "w") as f:
      json.dump(self.data, f)
    self.lock.close()


def script():
  path = os.path.join(STATE, "script.json")
  return json.load(open(path)) if os.path.exists(path) else {}


def hosts(accelerator: str) -> int:
  gen, size = accelerator.rsplit("-", 1)
  size = int(size)
  if gen in ("v5litepod", "v6e"):
    return 1 if size <= 8 else size // 4
  return max(1, size // 8)


def gcs(url: str) -> str:
  assert url.startswith("gs://"), url
  return os.path.join(STATE, "gcs", url[len("gs://") :])


def worker_home(i: int) -> str:
  return os.path.join(STATE, "workers", str(i))


def kill_jobs():
  """Stops every worker's job, as a VM going away does (SIGTERM to the group)."""
  for pidfile in sorted(
      os.path.join(worker_home(i), "simsoft", "job.pid")
      for i in range(64)
      if os.path.isdir(worker_home(i))
  ):
    if os.path.exists(pidfile):
      try:
        os.killpg(int(open(pidfile).read()), signal.SIGTERM)
      except (ProcessLookupError, ValueError):
        pass


def new_node(data, name, accelerator, runtime, spot):
  data["nodes"][name] = dict(
      state="READY", accelerator=accelerator, runtime=runtime, spot=spot
  )
  for i in range(64):  # a fresh slice: fresh disks
    shutil.rmtree(worker_home(i), ignore_errors=True)
  for i in range(hosts(accelerator)):
    os.makedirs(worker_home(i))


def not_found(what):
  print(
      f"ERROR: (gcloud.compute.tpus) NOT_FOUND: {what} was not found",
      file=sys.stderr,
  )
  return 1


def maybe_preempt(data):
  """Plays a spot preemption once the run has a checkpoint (script.preempt_after_checkpoint)."""
  wanted = script().get("preempt_after_checkpoint", 0)
  done = data["counters"].get("preemptions", 0)
  if done >= wanted:
    return
  checkpoints = []
  for root, _, files in os.walk(os.path.join(STATE, "gcs")):
    checkpoints += [os.path.join(root, f) for f in files if f == "checkpoint"]
  if not checkpoints:
    return
  data["counters"]["preemptions"] = done + 1
  for name, node in data["nodes"].items():
    node["state"] = "PREEMPTED"
    for qr in data["qrs"].values():
      if qr["node"] == name:
        qr["state"] = "SUSPENDED"
  kill_jobs()


def tpus(argv):
  kind, verb = argv[2], argv[3]
  pos = _positional(argv[4:])
  with State() as data:
    if kind == "queued-resources":
      qid = pos[0]
      if verb == "create":
        if qid in data["qrs"]:
          print(f"ERROR: {qid} already exists", file=sys.stderr)
          return 1
        node = _flag(argv, "--node-id")
        data["qrs"][qid] = dict(state="ACTIVE", node=node)
        new_node(
            data,
            node,
            _flag(argv, "--accelerator-type"),
            _flag(argv, "--runtime-version"),
            "--spot" in argv,
        )
        return 0
      if qid not in data["qrs"]:
        return not_found(qid)
      if verb == "describe":
        print(data["qrs"][qid]["state"])
        return 0
      if verb == "delete":
        qr = data["qrs"].pop(qid)
        data["nodes"].pop(qr["node"], None)
        kill_jobs()
        return 0
    name = pos[0].rstrip(":") if verb != "scp" else None
    if verb == "create":
      new_node(
          data,
          name,
          _flag(argv, "--accelerator-type"),
          _flag(argv, "--version"),
          "--spot" in argv,
      )
      return 0
    if verb == "scp":
      name = pos[-1].rstrip(":")
    if name not in data["nodes"]:
      return not_found(name)
    node = data["nodes"][name]
    if verb == "describe":
      maybe_preempt(data)
      fmt = _flag(argv, "--format", "")
      if "acceleratorType)" in fmt and "state" not in fmt:
        print(node["accelerator"])
      elif "acceleratorType" in fmt:
        print(f"{node['state']}\t{node['accelerator']}\t{node['runtime']}")
      else:
        print(node["state"])
      return 0
    if verb == "delete":
      data["nodes"].pop(name)
      kill_jobs()
      return 0
    workers = hosts(node["accelerator"])
    which = _flag(argv, "--worker")
    targets = range(workers) if which == "all" else [int(which)]
    if verb == "scp":
      for i in targets:
        for src in pos[:-1]:
          shutil.copy(src, worker_home(i))
      return 0
    if verb == "ssh":
      command = _flag(argv, "--command")
      rule = script().get("ssh_fail")
      if node["state"] != "READY":
        print("ssh: connect to host: Connection timed out", file=sys.stderr)
        return 255
      if rule and rule["match"] in command:
        seen = data["counters"].get("ssh_fail", 0)
        if seen < rule["count"]:
          data["counters"]["ssh_fail"] = seen + 1
          print("ssh: connect to host: Connection timed out", file=sys.stderr)
          return 255
  # ssh: run outside the lock (the workers call gcloud storage themselves),
  # on every worker at once as gcloud does.
  procs = []
  for i in targets:
    env = dict(
        os.environ,
        HOME=worker_home(i),
        SIMSOFT_WORKER_ID=str(i),
        PATH=os.path.join(STATE, "worker_bin")
        + os.pathsep
        + os.environ["PATH"],
    )
    procs.append(
        subprocess.Popen(["bash", "-c", command], env=env, cwd=worker_home(i))
    )
  codes = [p.wait() for p in procs]
  return next((c for c in codes if c), 0)


def storage(argv):
  verb = argv[1]
  worker = os.environ.get("SIMSOFT_WORKER_ID")
  pos = _positional(argv[2:])
  if verb == "cat":
    rule = script().get("cat_fail", 0)
    if rule and "SIMSOFT_WORKER_ID" not in os.environ:
      with State() as data:
        seen = data["counters"].get("cat_fail", 0)
        if seen < rule:
          data["counters"]["cat_fail"] = seen + 1
          print("ERROR: (gcloud.storage.cat) HTTPError 503", file=sys.stderr)
          return 1
    path = gcs(pos[0])
    if not os.path.isfile(path):
      print(
          "ERROR: (gcloud.storage.cat) The following URLs matched no objects "
          f"or files: {pos[0]}",
          file=sys.stderr,
      )
      return 1
    sys.stdout.write(open(path).read())
    return 0
  if verb in ("cp", "rsync"):
    src, dst = pos[0], pos[1]
    src = gcs(src) if src.startswith("gs://") else src
    dst = gcs(dst) if dst.startswith("gs://") else dst
    if not os.path.exists(src):
      print(f"ERROR: {pos[0]} matched no objects", file=sys.stderr)
      return 1
    if os.path.isdir(src):
      shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      tmp = dst + ".tmp"
      shutil.copy(src, tmp)
      if pos[0].startswith("gs://") and src.endswith(".json") and not worker:
        # A worker that really runs simsoft (fake_pod_simsoft.py) wrote its
        # bucket paths as local ones: out of the bucket they read gs:// again.
        with open(tmp) as f:
          text = f.read().replace(os.path.join(STATE, "gcs") + os.sep, "gs://")
        with open(tmp, "w") as f:
          f.write(text)
      os.replace(tmp, dst)
    return 0
  print(f"fake gcloud: storage {verb} not played", file=sys.stderr)
  return 2


def main(argv):
  worker = os.environ.get("SIMSOFT_WORKER_ID")
  with open(os.path.join(STATE, "calls.jsonl"), "a") as f:
    f.write(
        json.dumps(
            {
                "argv": argv,
                "worker": int(worker) if worker else None,
                "t": time.time(),
            }
        )
        + "\n"
    )
  if argv[:2] == ["compute", "tpus"]:
    return tpus(argv)
  if argv[:1] == ["storage"]:
    return storage(argv)
  print(f"fake gcloud: {' '.join(argv)} not played", file=sys.stderr)
  return 2


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
