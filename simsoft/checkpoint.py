"""Orbax checkpoints of the train state, and the guards that keep one run per workdir.

Layout of a workdir:

  config.json                   the run's config (a restart must match it)
  .lock                         while a run holds the workdir: its host and pid
  estimate/provenance.json      written when the phase starts: the config fields
                                that define it and their hash
  estimate/checkpoints/<step>/  model A's train state (Orbax, async, last K kept)
  estimate/similarity/          S with its metadata (Orbax), similarity.npy/.json
  estimate/done.json            written last: the phase finished (with its provenance)
  retrain/...                   the same for model B, plus target.json
  results.json, report.md       the evaluate phase (results.json holds its provenance)

A restart is checked against config.json and against every recorded phase's
provenance, so a deleted config.json cannot let another config resume or
relabel a finished run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
import datetime
import fcntl
import hashlib
import json
import os
import socket
import time
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from simsoft import errors
from simsoft.errors import DamagedFileError, WorkdirBusyError, WorkdirError, warn
from simsoft.paths import resolve

# Fields a restart may change without mixing two runs.
# (profile.* only adds a trace; runs from before profile existed lack the fields.)
# (train_eval.* only adds held-out metrics, and runs from before it lack the fields.)
RESTART_MAY_CHANGE = (
    "phases",
    "profile.num_steps",
    "profile.first_step",
) + tuple(
    f"train_eval.{k}"
    for k in ("every_epochs", "every_steps", "split", "examples")
)

# The config sections that define each phase's output (the rest, such as
# input, checkpoint and log_every_steps, change how a run goes, not what it makes).
_TRAINING = (
    "dataset",
    "model",
    "optimizer",
    "batch_size",
    "seed",
    "hierarchy_path",
)
PHASE_FIELDS = {
    "estimate": _TRAINING + ("estimate", "similarity"),
    "retrain": _TRAINING + ("estimate", "similarity", "loss", "retrain"),
    "evaluate": _TRAINING
    + (
        "estimate",
        "similarity",
        "loss",
        "retrain",
        "evaluate",
        "eval_batch_size",
    ),
}
# Fields inside those sections that a phase does not depend on.
_NOT_DEFINING = {"estimate": ("similarity.from_workdir",)}
# Fields added after workdirs were written, with the value a config without
# them ran with: a saved config that lacks one reads as holding it, and a
# phase's provenance leaves one out at that value (its hash stays as it was).
ADDED_FIELDS = {
    "similarity.sparse_top_k": 0,
    "similarity.shard_rows": False,
    "dataset.reader": "memory",
    "dataset.grain.records_dir": "",
    "dataset.grain.image_size": 0,
    "dataset.grain.train_transform": "device",
    "dataset.grain.eval_transform": "none",
    "dataset.grain.stats_examples": 2000,
    "input.grain_workers": 2,
    "input.grain_threads": 2,
    "input.grain_buffer": 2,
}


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def config_differences(saved: dict, current: dict) -> list[str]:
  """Dotted names of the fields that differ between two config dicts."""
  a, b = _flatten(saved), _flatten(current)
  a = {**{k: v for k, v in ADDED_FIELDS.items() if k in b}, **a}
  return sorted(
      k
      for k in set(a) | set(b)
      if a.get(k, "<missing>") != b.get(k, "<missing>")
      and k not in RESTART_MAY_CHANGE
  )


def describe_differences(
    saved: dict, current: dict, diffs: list[str], limit: int = 6
) -> str:
  """'a.b (saved 1, now 2), ...' for the first `limit` differing fields."""
  a, b = _flatten(saved), _flatten(current)
  parts = [
      f"{k} (saved {a.get(k, '<missing>')!r}, now {b.get(k, '<missing>')!r})"
      for k in diffs[:limit]
  ]
  more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
  return ", ".join(parts) + more


# ----------------------------------------------------------------------------
# Provenance: the fields that define each phase, recorded when it starts.
# ----------------------------------------------------------------------------


def phase_fields(
    config: ml_collections.ConfigDict, phase: str
) -> dict[str, Any]:
  """{dotted field: value} of every config field `phase`'s output depends on."""
  full = json.loads(config.to_json())
  flat = _flatten({k: full[k] for k in PHASE_FIELDS[phase] if k in full})
  return {
      k: v
      for k, v in sorted(flat.items())
      if k not in _NOT_DEFINING.get(phase, ())
      and not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])
  }


def provenance(config: ml_collections.ConfigDict, phase: str) -> dict[str, Any]:
  """{'fields': ..., 'hash': sha256 of the fields}: what defines the phase's output."""
  fields = phase_fields(config, phase)
  digest = hashlib.sha256(
      json.dumps(fields, sort_keys=True).encode()
  ).hexdigest()
  return {"phase": phase, "hash": digest, "fields": fields}


def _recorded_provenance(workdir: str) -> list[tuple[str, str, dict]]:
  """(phase, file, provenance) for every phase this workdir has records of."""
  files = [
      ("estimate", "estimate/done.json"),
      ("estimate", "estimate/provenance.json"),
      ("retrain", "retrain/done.json"),
      ("retrain", "retrain/provenance.json"),
      ("evaluate", "results.json"),
  ]
  out = []
  for phase, name in files:
    record = read_json(os.path.join(workdir, name))
    if record is not None and isinstance(record.get("provenance"), dict):
      out.append((phase, os.path.join(workdir, name), record["provenance"]))
  return out


def check_provenance(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuses a config that differs from what a recorded phase of `workdir` ran with."""
  for phase, path, recorded in _recorded_provenance(workdir):
    now = provenance(config, phase)
    if recorded.get("hash") == now["hash"]:
      continue
    saved = recorded.get("fields", {})
    diffs = sorted(
        k
        for k in set(saved) | set(now["fields"])
        if saved.get(k, "<missing>") != now["fields"].get(k, "<missing>")
    )
    detail = (
        describe_differences(saved, now["fields"], diffs)
        if diffs
        else "the recorded hash"
    )
    raise WorkdirError(
        f"workdir {workdir} holds a {phase} phase made with another config ({path}); "
        f"differing fields: {detail}. Use a new --workdir, or the recorded values to resume"
    )


def write_provenance(
    workdir: str, config: ml_collections.ConfigDict, phase: str
) -> None:
  """Records which config fields define `phase` (before it writes anything else)."""
  write_json(
      os.path.join(workdir, phase, "provenance.json"),
      {"provenance": provenance(config, phase)},
  )


# ----------------------------------------------------------------------------
# The workdir guard: config.json and provenance, checked before anything is written.
# ----------------------------------------------------------------------------


def check_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Read-only: refuses a workdir that holds another run (config.json or a phase's provenance).

  Raises:
    WorkdirError: naming the differing fields and both values.
    DamagedFileError: config.json or a phase record is not readable JSON.
  """
  if resolve(workdir).exists() and not resolve(workdir).is_dir():
    raise WorkdirError(
        f"--workdir {workdir} is a file, not a directory; give a directory"
    )
  check_creatable(workdir, "--workdir")
  path = os.path.join(workdir, "config.json")
  saved = read_json(path)
  if saved is not None:
    current = json.loads(config.to_json())
    diffs = config_differences(saved, current)
    if diffs:
      raise WorkdirError(
          f"workdir {workdir} holds another run's config ({resolve(path)}); differing fields: "
          f"{describe_differences(saved, current, diffs)}. Use a new --workdir, or the same "
          "config to resume"
      )
  check_provenance(workdir, config)


def check_creatable(path: str, what: str) -> None:
  """A local directory that exists or can be made: its nearest existing
  ancestor is a writable directory (read-only file systems show here too).

  Raises:
    OSFailure: naming `what`, the path and the cause.
  """
  if "://" in os.fspath(path):
    return
  head = os.path.abspath(path)
  while not os.path.lexists(head):
    head = os.path.dirname(head)
  if not os.path.isdir(head):
    raise errors.OSFailure(
        f"{what} {path} lies under {head}, a regular file, not a directory; "
        "give a path whose parents are directories"
    )
  if not os.access(head, os.W_OK):
    raise errors.OSFailure(
        f"{what} {path}: {head} is not writable (read-only or permission "
        "denied); use a writable path"
    )


def guard_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
  """check_workdir, then saves config.json if the workdir has none."""
  check_workdir(workdir, config)
  path = resolve(workdir) / "config.json"
  if jax.process_index() == 0 and not path.exists():
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.to_json(indent=2))


# ----------------------------------------------------------------------------
# One run per workdir: a lock holding the host and pid.
# ----------------------------------------------------------------------------


class WorkdirLock:
  """An exclusive flock on WORKDIR/.lock, with the holder's host and pid written in it.

  The kernel drops a flock when its process dies, so a lock file left by a
  killed run is free: the next run takes it over (with a warning). Released
  by deleting the file. Remote workdirs (gs://) are not locked.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(os.path.abspath(workdir), ".lock")
    self._fd = None

  def acquire(self) -> "WorkdirLock":
    if "://" in self.workdir or jax.process_index() != 0:
      return self
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    while self._fd is None:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise WorkdirBusyError(
            f"workdir {self.workdir} is in use by {_holder_text(holder)} ({self.path}); wait "
            "for that run to finish or stop it, or use another --workdir"
        ) from None
      if _same_file(fd, self.path):
        self._fd = fd
      else:  # the holder released (deleted) it between our open and flock: retry
        os.close(fd)
    previous = _read_fd(self._fd)
    if previous:
      warn(
          f"took over the lock of {_holder_text(previous)} in {self.workdir}: that process "
          "is gone (killed); resuming its run"
      )
    _write_fd(
        self._fd,
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
        },
    )
    return self

  def release(self) -> None:
    if self._fd is None:
      return
    with contextlib.suppress(FileNotFoundError):
      os.unlink(self.path)
    os.close(self._fd)
    self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def _same_file(fd: int, path: str) -> bool:
  try:
    return os.stat(path).st_ino == os.fstat(fd).st_ino
  except FileNotFoundError:
    return False


def _read_holder(fd: int, wait_s: float = 2.0) -> dict:
  """The holder's record; a holder that just took the lock writes it within moments."""
  deadline = time.time() + wait_s
  holder = _read_fd(fd)
  while not holder and time.time() < deadline:
    time.sleep(0.05)
    holder = _read_fd(fd)
  return holder


def _read_fd(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 4096).decode(errors="replace")
  try:
    return json.loads(text) if text.strip() else {}
  except json.JSONDecodeError:
    return {"text": text.strip()[:80]}


def _write_fd(fd: int, payload: dict) -> None:
  os.ftruncate(fd, 0)
  os.lseek(fd, 0, os.SEEK_SET)
  os.write(fd, json.dumps(payload).encode())
  os.fsync(fd)


def _holder_text(holder: dict) -> str:
  if "pid" not in holder:
    return f"another process ({holder.get('text', 'unknown holder')})"
  return f"pid {holder['pid']} on host {holder.get('host', '?')} (since {holder.get('since', '?')})"


# ----------------------------------------------------------------------------
# Checkpoints.
# ----------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
  """Silences absl logging (Orbax logs every unreadable file at ERROR) inside the block."""
  old = logging.get_verbosity()
  logging.set_verbosity(logging.FATAL)
  try:
    yield
  finally:
    logging.set_verbosity(old)


def make_manager(
    directory: str, *, every_steps: int, keep: int, read_only: bool = False
) -> ocp.CheckpointManager:
  """Async Orbax manager saving every `every_steps` steps, keeping the last `keep`
  (`read_only`: creates, cleans and saves nothing, for tools that only read)."""
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=every_steps,
      max_to_keep=keep,
      create=not read_only,
      cleanup_tmp_directories=not read_only,
      enable_async_checkpointing=not read_only,
      read_only=read_only,
  )
  return _Manager(resolve(directory), options=options)


class _Manager(ocp.CheckpointManager):
  """Orbax's manager, minus its own preemption queries.

  Its save() and finalize thread ask the preemption sync point with the step
  (for statistics), which would move JAX's call counter; the training loop
  asks it itself, once per chunk (simsoft.preemption), and forces the save.
  """

  def reached_preemption(self, step: int) -> bool:
    del step
    return False


def save_state(
    manager: ocp.CheckpointManager,
    step: int,
    state: Any,
    *,
    force: bool = False,
    iterator: Any = None,
) -> bool:
  """Starts an async save of `state` at `step` (skipped off-interval unless forced).

  With a grain `iterator` (the streaming reader), the checkpoint holds two
  items, as MaxText's: 'state' and 'iter' (grain's handler: one small JSON
  file of the iterator's position per process).

  Raises:
    OSFailure: this save, or the previous one still in flight, failed for an
      OS reason (no space left, read-only); the last committed checkpoint is
      intact (Orbax commits by renaming a finished temporary directory).
  """
  args = ocp.args.StandardSave(state)
  if iterator is not None:
    import grain  # pylint: disable=g-import-not-at-top

    args = ocp.args.Composite(
        state=args, iter=grain.checkpoint.CheckpointSave(iterator)
    )
  try:
    return manager.save(step, args=args, force=force)
  except Exception as e:  # pylint: disable=broad-except  # Orbax wraps OSErrors
    raise _save_failure(manager, step, e) from e


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  """Waits for the async save in flight; an OS failure as in save_state."""
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    raise _save_failure(manager, None, e) from e


def _save_failure(manager, step, error: Exception) -> Exception:
  """An OSError anywhere in `error`'s chain as one line; anything else unchanged."""
  cause = errors.caused_by_os_error(error)
  if cause is None:
    return error
  directory = os.fspath(manager.directory)
  try:  # let an earlier save still in flight commit: it is the one kept
    manager.wait_until_finished()
  except Exception:  # pylint: disable=broad-except
    pass
  try:
    latest = manager.latest_step()
  except Exception:  # pylint: disable=broad-except
    latest = None
  kept = (
      f"the last saved checkpoint, step {latest}, is intact and a rerun "
      "resumes from it"
      if latest is not None
      else "no checkpoint was saved before it"
  )
  what = f"checkpoint step {step}" if step is not None else "a checkpoint"
  return errors.OSFailure(
      f"saving {what}: {errors.os_error_message(cause, directory)}; {kept}"
  )


def restore_state(
    manager: ocp.CheckpointManager,
    abstract_state: Any,
    step: int | None = None,
    iterator: Any = None,
) -> Any:
  """Restores the latest (or given) step into `abstract_state`'s structure and shardings.

  A two-item checkpoint (save_state with an iterator) gives its 'state'; with
  `iterator`, its 'iter' item is restored into it too (grain set_state).
  """
  step = manager.latest_step() if step is None else step
  if not (manager.directory / str(step) / "state").exists():
    return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if iterator is not None:
    import grain  # pylint: disable=g-import-not-at-top

    items["iter"] = grain.checkpoint.CheckpointRestore(iterator)
  return manager.restore(step, args=ocp.args.Composite(**items)).state


def restore_latest_readable(
    manager: ocp.CheckpointManager,
    abstract_state: Any,
    *,
    phase: str,
    move_aside: bool = True,
    iterator: Any = None,
) -> Any:
  """The newest checkpoint that restores; damaged newer ones are moved aside with a warning.

  A damaged checkpoint moves to <phase>/damaged_checkpoints/<step>, so the
  run goes on from the older one and may save that step again.

  Raises:
    DamagedFileError: no kept checkpoint restores (names the phase, step and path).
  """
  directory = os.fspath(manager.directory)
  failures = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      with quiet_logs():
        state = restore_state(manager, abstract_state, step, iterator)
    except Exception as e:  # pylint: disable=broad-except  # any unreadable file
      failures.append((step, e))
      continue
    for bad, error in failures if move_aside else ():
      _move_aside(manager, directory, bad)
      warn(
          f"phase {phase!r}: checkpoint step {bad} ({os.path.join(directory, str(bad))}) is "
          f"damaged ({short_error(error)}); moved it to damaged_checkpoints/ and resumed from step {step}"
      )
    if failures and move_aside:
      manager.reload()
    return state
  step, error = failures[0]
  older = (
      "; no older checkpoint is kept"
      if len(failures) == 1
      else f"; the older ones ({', '.join(str(s) for s, _ in failures[1:])}) are damaged too"
  )
  raise DamagedFileError(
      f"phase {phase!r}: checkpoint step {step} at {os.path.join(directory, str(step))} cannot "
      f"be read ({short_error(error)}){older}. Delete {directory} to train the phase again "
      "(its done.json too, if any), or restore the files from a backup"
  )


def _move_aside(manager, directory: str, step: int) -> None:
  if jax.process_index() != 0:
    return
  aside = os.path.join(os.path.dirname(directory), "damaged_checkpoints")
  os.makedirs(aside, exist_ok=True)
  os.replace(os.path.join(directory, str(step)), os.path.join(aside, str(step)))


def short_error(error: BaseException) -> str:
  text = " ".join(str(error).split())
  return (
      f"{type(error).__name__}: {text[:160]}" if text else type(error).__name__
  )


def write_json(path: str, payload: dict) -> None:
  """Writes JSON atomically (tmp + rename) from process 0 only."""
  if jax.process_index() != 0:
    return
  target = resolve(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.parent / (target.name + ".tmp")
  tmp.write_text(json.dumps(payload, indent=2))
  tmp.replace(target)


def read_json(path: str) -> dict | None:
  """The JSON object at `path`, or None if there is no file.

  Raises:
    DamagedFileError: the file is not a readable JSON object (names the file).
  """
  target = resolve(path)
  if not target.exists():
    return None
  try:
    data = json.loads(target.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DamagedFileError(
        f"{target} is damaged (not valid JSON: {short_error(e)}); restore it from a "
        "backup, or delete it and rerun the same command"
    ) from None
  if not isinstance(data, dict):
    raise DamagedFileError(
        f"{target} is damaged (a JSON {type(data).__name__}, not an object); "
        "restore it from a backup, or delete it and rerun the same command"
    )
  return data
