"""One process of a 2-process CPU 'multi-host' run (gloo collectives, 2 devices each).

  python -m tests.helpers.multihost_worker PORT PROCESS_ID WORKDIR OUT.npz

Runs every phase of a tiny digits config through
simsoft.train.train_and_evaluate, then saves this process's copy of model A's
final parameters to OUT.npz.
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main(port: str, process_id: str, workdir: str, out: str) -> None:
  jax.distributed.initialize(
      f"localhost:{port}", num_processes=2, process_id=int(process_id)
  )
  assert jax.process_count() == 2 and jax.device_count() == 4, (
      jax.process_count(),
      jax.devices(),
  )
  from simsoft import config as config_lib
  from tests.helpers.tiny import final_params, tiny_config

  config = tiny_config("epochs=1")  # all three phases
  config.evaluate.evaluators = {
      "clean": {"type": "clean"},
      "corruptions": config_lib.corruptions_evaluator(
          corruptions=("gaussian_noise", "pixelate"), severities=(2,)
      ),
  }
  params = final_params(config, workdir)
  np.savez(out, **params)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(*sys.argv[1:])
