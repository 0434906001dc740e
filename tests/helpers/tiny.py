"""A tiny digits config and a way to read a finished phase's parameters."""

import importlib.util
import os

import jax
import numpy as np

ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)


def load_config(arg="", name="default"):
  """configs/<name>.py with `arg` after the colon."""
  spec = importlib.util.spec_from_file_location(
      f"{name}_config", os.path.join(ROOT, f"configs/{name}.py")
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def tiny_config(arg="epochs=1,phases=estimate", *, batch_size=32):
  """configs/default.py shrunk: one 64-unit hidden layer, clean evaluation only."""
  c = load_config(arg)
  c.model.mlp.hidden = (64,)
  c.batch_size = batch_size
  c.evaluate.evaluators = {"clean": {"type": "clean"}}
  c.checkpoint.every_steps = 10
  c.log_every_steps = 10
  c.train_eval.every_epochs = 0.0  # off: tests that need it turn it on
  return c


def final_params(config, workdir, devices=None) -> dict[str, np.ndarray]:
  """Runs config's phases, then returns this process's copy of the estimate phase's params."""
  from simsoft import phases, sharding, train
  from simsoft.run import Run

  train.train_and_evaluate(config, workdir, devices=devices)
  run = Run(
      config=config,
      workdir=workdir,
      mesh=sharding.make_mesh(devices),
      dataset=train.load_dataset(config),
  )
  _, state = phases.restore_final(run, "estimate")
  leaves = jax.tree_util.tree_leaves_with_path(state["params"])
  return {
      jax.tree_util.keystr(path): np.asarray(leaf.addressable_data(0))
      for path, leaf in leaves
  }
