"""One process of a tiny estimate-only run that a test preempts with SIGTERM.

  python -m tests.helpers.preempt_worker NUM_PROCESSES PORT PROCESS_ID WORKDIR OUT.npz

One process: 4 CPU devices, simsoft's own SIGTERM handler. Two: 2 devices
each, gloo collectives, jax.distributed (JAX's preemption sync service).
Exits with simsoft.main's status (75 when preempted, after the one error
line); when the phase finishes, saves this process's copy of the final
parameters to OUT.npz.
"""

import os
import sys

if __name__ == "__main__":  # imported by the tests for config() only
  NUM_PROCESSES = int(sys.argv[1])
  os.environ["XLA_FLAGS"] = (
      f"--xla_force_host_platform_device_count={4 // NUM_PROCESSES}"
  )
  os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402


def config():
  """The tiny config of these tests: 2 epochs of digits, checkpoints only at
  the end (so a checkpoint mid-phase is the preemption's)."""
  from tests.helpers.tiny import tiny_config  # pylint: disable=g-import-not-at-top

  c = tiny_config("epochs=2,phases=estimate")
  c.checkpoint.every_steps = 1000
  c.log_every_steps = 5
  return c


def final_params(workdir: str) -> dict[str, np.ndarray]:
  """This process's copy of the finished estimate phase's parameters (read
  only: a second train_and_evaluate could race process 0's done.json)."""
  from simsoft import phases, sharding, train  # pylint: disable=g-import-not-at-top
  from simsoft.run import Run  # pylint: disable=g-import-not-at-top

  c = config()
  run = Run(
      config=c,
      workdir=workdir,
      mesh=sharding.make_mesh(None),
      dataset=train.load_dataset(c),
  )
  _, state = phases.restore_final(run, "estimate", read_only=True)
  return {
      jax.tree_util.keystr(path): np.asarray(leaf.addressable_data(0))
      for path, leaf in jax.tree_util.tree_leaves_with_path(state["params"])
  }


def main(port: str, process_id: str, workdir: str, out: str) -> int:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if NUM_PROCESSES > 1:
    jax.distributed.initialize(
        f"localhost:{port}", NUM_PROCESSES, int(process_id)
    )
  from simsoft import main as main_lib, progress  # pylint: disable=g-import-not-at-top
  from simsoft import train  # pylint: disable=g-import-not-at-top

  progress.configure_logging(flags.FlagValues())
  code = main_lib.guarded(
      lambda: train.train_and_evaluate(config(), workdir), sys.argv
  )
  if code == 0:
    if NUM_PROCESSES > 1:  # process 0 writes done.json: wait for it
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      multihost_utils.sync_global_devices("phase finished")
    np.savez(out, **final_params(workdir))
  if NUM_PROCESSES > 1:
    jax.distributed.shutdown()
  return code


if __name__ == "__main__":
  sys.exit(main(*sys.argv[2:]))
