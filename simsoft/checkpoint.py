"""Orbax checkpoints of the train state, and the guard that keeps one run per workdir.

Layout of a workdir:

  config.json                   the run's config (a restart must match it)
  estimate/checkpoints/<step>/  model A's train state (Orbax, async, last K kept)
  estimate/similarity/          S with its metadata (Orbax), similarity.npy/.json
  estimate/done.json            written last: the phase finished
  retrain/checkpoints/<step>/   model B's train state
  retrain/done.json
  results.json, report.md       the evaluate phase
"""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from simsoft.paths import resolve

# Fields a restart may change without mixing two runs.
# (profile.* only adds a trace; runs from before profile existed lack the fields.)
RESTART_MAY_CHANGE = ("phases", "profile.num_steps", "profile.first_step")


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
  return sorted(k for k in set(a) | set(b)
                if a.get(k, "<missing>") != b.get(k, "<missing>")
                and k not in RESTART_MAY_CHANGE)


def guard_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Saves config.json in a new workdir; in an existing one, checks it matches.

  Raises:
    ValueError: the workdir holds another run's config; the message names the
      differing fields and both values.
  """
  path = resolve(workdir) / "config.json"
  current = json.loads(config.to_json())
  if path.exists():
    saved = json.loads(path.read_text())
    diffs = config_differences(saved, current)
    if diffs:
      a, b = _flatten(saved), _flatten(current)
      lines = [f"  {k}: saved {a.get(k, '<missing>')!r}, now {b.get(k, '<missing>')!r}" for k in diffs]
      raise ValueError(
          f"workdir {workdir} holds another run's config ({path}); differing fields:\n"
          + "\n".join(lines) + "\nUse a new --workdir, or the same config to resume.")
    return
  if jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.to_json(indent=2))


def make_manager(directory: str, *, every_steps: int, keep: int) -> ocp.CheckpointManager:
  """Async Orbax manager saving every `every_steps` steps, keeping the last `keep`."""
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=every_steps, max_to_keep=keep, create=True, cleanup_tmp_directories=True,
      enable_async_checkpointing=True)
  return ocp.CheckpointManager(resolve(directory), options=options)


def save_state(manager: ocp.CheckpointManager, step: int, state: Any, *, force: bool = False) -> bool:
  """Starts an async save of `state` at `step` (skipped off-interval unless forced)."""
  return manager.save(step, args=ocp.args.StandardSave(state), force=force)


def restore_state(manager: ocp.CheckpointManager, abstract_state: Any, step: int | None = None):
  """Restores the latest (or given) step into `abstract_state`'s structure and shardings."""
  step = manager.latest_step() if step is None else step
  return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))


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
  target = resolve(path)
  return json.loads(target.read_text()) if target.exists() else None
