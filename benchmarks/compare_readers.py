"""CIFAR-10 (JPEG q75 copy) through the in-memory and the streaming reader: model A's accuracy.

  python -m benchmarks.compare_readers --root DIR [--seeds 0,1] [--epochs 2] [--model lenet]

For each seed, trains model A (the estimate phase: cross-entropy, then S)
once from configs/cifar10_jpeg.py (in memory, crop + flip on device, ten
steps per dispatch unrolled) and once from configs/cifar10_jpeg_grain.py
(the prepared ArrayRecord copy, JPEG decoding and pad + crop + flip in 2
grain workers), lr 0.05 with one warm-up epoch (the sweep's lenet recipe),
then scores each model A on the same 10,000 test images (the in-memory test
split; the prepared copy holds the same pixels). The two readers draw the
same batches; only the augmentation's random numbers differ, so the
accuracies should differ by no more than two seeds of one reader do.
Prints one line per run and a JSON summary. A finished run is not trained
again. The full comparison of the sweep's recipe is `--epochs 8`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

CONFIGS = {
    "memory": (
        "configs/cifar10_jpeg.py",
        [
            "--config.input.steps_per_dispatch=10",
            "--config.input.scan_unroll=True",
        ],
    ),
    "grain": (
        "configs/cifar10_jpeg_grain.py",
        ["--config.input.grain_workers=2"],
    ),
}


def train(root: str, reader: str, seed: int, epochs: int, model: str) -> str:
  """Runs the estimate phase (skipped when done); returns the workdir."""
  config, extra = CONFIGS[reader]
  workdir = os.path.join(root, f"{reader}-s{seed}")
  if os.path.exists(os.path.join(workdir, "estimate", "done.json")):
    return workdir
  cmd = [
      sys.executable,
      "-m",
      "simsoft.main",
      f"--config={config}:model={model},epochs={epochs},seed={seed}",
      "--config.optimizer.learning_rate=0.05",
      "--config.optimizer.warmup_epochs=1.0",
      "--config.phases=('estimate',)",
      *extra,
      f"--workdir={workdir}",
  ]
  start = time.time()
  with open(workdir + ".log", "w") as log:
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
  print(
      f"{reader} seed {seed}: trained in {time.time() - start:.0f} s",
      flush=True,
  )
  return workdir


def model_a_accuracy(workdir: str) -> float:
  """Model A's clean accuracy on the in-memory test split of its config's dataset."""
  import jax
  import ml_collections

  from simsoft import data as data_lib
  from simsoft import phases, sharding
  from simsoft import train_step as step_lib
  from simsoft.run import Run
  from simsoft.train import load_dataset

  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  config.phases = tuple(config.phases)
  ds = load_dataset(config)
  run = Run(
      config=config, workdir=workdir, mesh=sharding.make_mesh(), dataset=ds
  )
  graphdef, state = phases.restore_final(run, "estimate")
  predict = jax.jit(
      step_lib.make_predict_fn(graphdef, mean=ds.mean, std=ds.std)
  )
  correct = total = 0.0
  for b in data_lib.eval_batches(ds.split("test"), global_batch_size=1000):
    logits = np.asarray(
        predict(state["params"], state["model_state"], b["image"])
    )
    correct += float(((logits.argmax(-1) == b["label"]) * b["mask"]).sum())
    total += float(b["mask"].sum())
  return correct / total


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--root", required=True)
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--model", default="lenet")
  args = parser.parse_args(argv)
  os.makedirs(args.root, exist_ok=True)
  rows = {}
  for seed in (int(s) for s in args.seeds.split(",")):
    for reader in CONFIGS:
      workdir = train(args.root, reader, seed, args.epochs, args.model)
      rows[f"{reader}-s{seed}"] = accuracy = model_a_accuracy(workdir)
      print(
          f"{reader} seed {seed}: model A test accuracy {accuracy:.4f}",
          flush=True,
      )
  print(
      json.dumps({"epochs": args.epochs, "model": args.model, "accuracy": rows})
  )


if __name__ == "__main__":
  main()
