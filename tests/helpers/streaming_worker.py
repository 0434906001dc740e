"""One process of a 2-process streaming run (gloo collectives, 2 devices each).

  python -m tests.helpers.streaming_worker PORT PROCESS_ID FOLDER RECORDS WORKDIR OUT.npz

Saves to OUT.npz the image ids this process streamed (one epoch of train
batches, one evaluation pass over 'train'), then runs every phase of the
tiny streaming config and adds this process's copy of model A's parameters.
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main(port, process_id, folder, records, workdir, out) -> None:
  jax.distributed.initialize(
      f"localhost:{port}", num_processes=2, process_id=int(process_id)
  )
  assert jax.process_count() == 2 and jax.device_count() == 4
  from simsoft import data as data_lib
  from simsoft.data import streaming
  from tests.helpers.streaming import image_id, stream_config
  from tests.helpers.tiny import final_params

  config = stream_config(folder, records)
  train = data_lib.from_config(config.dataset).split("train")
  steps = len(train) // 8
  # The shard comes from grain.sharding.ShardByJaxProcess (no process given).
  it = streaming.train_dataset(
      train, global_batch_size=8, seed=0, num_steps=steps
  )
  ids = {"train_ids": np.concatenate([image_id(b["image"]) for b in it])}
  ids["eval_ids"] = np.concatenate(
      [
          image_id(b["image"])[b["mask"] > 0]
          for b in data_lib.eval_batches(
              train,
              global_batch_size=8,
              process_index=jax.process_index(),
              process_count=2,
          )
      ]
  )
  params = final_params(config, workdir)
  np.savez(out, **ids, **params)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(*sys.argv[1:])
