"""Host input throughput of the streaming reader against the train step's consumption.

  python -m benchmarks.bench_input [--workers 0,1,2,4] [--steps 20] [--out FILE.json]

Measures, in images per second per host (all of this machine's cores):

  prepare      `simsoft.data.prepare` of the CIFAR-10 (JPEG q75 copy)
               (../shared/datasets/cifar10-jpeg) into $SIMSOFT_CACHE_DIR/records,
               once; reused afterwards (its time is reported when it ran)
  cifar10      simsoft.data.streaming.train_dataset over that copy: ArrayRecord
               read + JPEG decode (32 x 32) + pad/crop/flip, batches of 128,
               by number of grain worker processes (0: in this process, 2
               reader threads)
  imagenet     the ImageNet pipeline on synthetic ImageNet-sized JPEGs (500 x 375,
               quality 90, smooth gradients plus noise; written once):
               decode + Inception crop to 224 + flip, batches of 32
  train step   the train step that consumes them on this machine's CPU: ResNet-20
               at 32 x 32, batch 128 (the CIFAR-10 recipe), float32

Throughput is timed after the first `--warmup` batches (worker start-up),
over `--steps` batches, with one batch buffered per worker (so the buffer
filled during start-up is a small part of the timed batches); `one_core` is
the same work in a plain loop in this process, without grain, per wall
second and per CPU second (`one_core_cpu`, steadier on a shared machine). Every figure
depends on how busy the machine is: the load average is recorded with the
results.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchmarks import common

CIFAR_BATCH, IMAGENET_BATCH = 128, 32


def _records_root() -> str:
  from simsoft.data import image_folder

  return os.path.join(image_folder.cache_dir(), "records")


def cifar_records() -> tuple[str, float | None]:
  """The prepared CIFAR-10 (JPEG q75 copy), and the seconds preparing took (None: reused)."""
  from simsoft.data import cifar10_jpeg, prepare, streaming

  out = streaming.default_records_dir("cifar10_jpeg", 0.1, 0)
  if os.path.exists(os.path.join(out, "meta.json")):
    return out, None
  start = time.perf_counter()
  prepare.prepare(
      cifar10_jpeg.default_dir(),
      out,
      name="cifar10_jpeg",
      class_groups=cifar10_jpeg.CLASS_GROUPS,
      group_names=cifar10_jpeg.GROUP_NAMES,
      expected_classes=cifar10_jpeg.CIFAR10_CLASS_NAMES,
  )
  return out, time.perf_counter() - start


def imagenet_like_records(n: int = 512) -> str:
  """n synthetic 500 x 375 JPEGs in 4 classes, prepared (written once)."""
  from PIL import Image

  from simsoft.data import prepare

  root = os.path.join(_records_root(), "bench-imagenet-like")
  out = os.path.join(root, "records")
  if os.path.exists(os.path.join(out, "meta.json")):
    return out
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:375, 0:500]
  for split, count in (("train", n), ("test", 16)):
    for i in range(count):
      folder = os.path.join(root, "folder", split, f"c{i % 4}")
      os.makedirs(folder, exist_ok=True)
      a, b, c = rng.uniform(0.005, 0.03, 3)
      base = np.stack(
          [
              np.sin(a * xx + b * yy),
              np.cos(b * xx - c * yy),
              np.sin(c * (xx + yy)),
          ],
          -1,
      )
      pixels = 127 + 100 * base + rng.normal(0, 8, base.shape)
      Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
          os.path.join(folder, f"{i}.jpg"), quality=90
      )
  prepare.prepare(os.path.join(root, "folder"), out, validation_fraction=0.0)
  return out


def _split(records: str, **options):
  import ml_collections

  from simsoft import config as config_lib
  from simsoft import data as data_lib

  c = config_lib.base_config().dataset
  c.name = "cifar10_jpeg" if "cifar10" in records else "image_folder"
  c.reader = "grain"
  c.validation_fraction = 0.1 if "cifar10" in records else 0.0
  c.grain = ml_collections.ConfigDict(
      dict(c.grain.to_dict(), records_dir=records, **options)
  )
  return data_lib.from_config(c).split("train")


def input_rate(
    split, batch: int, workers: int, steps: int, warmup: int
) -> float:
  """Images per second of train_dataset with `workers` processes, after `warmup` batches."""
  from simsoft.data import streaming

  it = iter(
      streaming.train_dataset(
          split,
          global_batch_size=batch,
          seed=0,
          num_steps=warmup + steps,
          process_index=0,
          process_count=1,
          workers=workers,
          threads=2,
          buffer=1,
      )
  )
  try:
    for _ in range(warmup):
      next(it)
    start = time.perf_counter()
    for _ in range(steps):
      next(it)
    return steps * batch / (time.perf_counter() - start)
  finally:
    it.close()


def core_rate(split, count: int) -> tuple[float, float]:
  """(images per wall second, per CPU second) of read + decode + train transform
  in a plain loop in this process (one core; the CPU clock ignores time spent
  waiting for a core on a shared machine)."""
  order = np.random.default_rng(0).permutation(len(split))[:count]
  start, cpu = time.perf_counter(), time.process_time()
  for i, index in enumerate(order):
    split.read_train(int(index), np.random.default_rng(i))
  return (
      count / (time.perf_counter() - start),
      count / (time.process_time() - cpu),
  )


def step_rate(steps: int) -> float:
  """Images per second of the ResNet-20 train step (batch 128, 32 x 32) on this CPU."""
  import jax
  import jax.numpy as jnp

  from benchmarks import pipeline
  from simsoft import train_step as step_lib

  split = pipeline.synthetic_split(CIFAR_BATCH, (32, 32, 3), 10)
  path = pipeline.simsoft_step(
      model="resnet20",
      split=split,
      num_classes=10,
      loss_fn=step_lib.make_loss_fn("soft_target", alpha=0.0),
      optimizer=pipeline.optimizer_config(),
      batch_size=CIFAR_BATCH,
  )
  batch = path.run.global_batch(
      {
          "image": split.images.astype(np.float32) / 255,
          "label": split.labels,
      }
  )
  key = jax.random.key(0)
  state, metrics = path.step(path.state, batch, key)  # compiles
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = path.step(state, batch, key)
  jax.block_until_ready(metrics)
  del jnp
  return steps * CIFAR_BATCH / (time.perf_counter() - start)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workers", default="0,1,2,4")
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--out", default="")
  parser.add_argument(
      "--one_core", action="store_true", help="only the one-core rates"
  )
  args = parser.parse_args(argv)
  workers = [int(w) for w in args.workers.split(",")]
  results = {"machine": common.machine()}
  cifar, prepared = cifar_records()
  results["prepare_seconds"] = prepared
  splits = {
      "cifar10": (_split(cifar, train_transform="pad_crop_flip"), CIFAR_BATCH),
      "imagenet": (
          _split(
              imagenet_like_records(),
              image_size=224,
              train_transform="random_resized_crop",
              eval_transform="resize_center_crop",
          ),
          IMAGENET_BATCH,
      ),
  }
  for name, (split, batch) in splits.items():
    wall, cpu = core_rate(split, 20 * batch)
    results[name] = {"one_core": round(wall, 1), "one_core_cpu": round(cpu, 1)}
    print(
        f"{name:9s} one core, no grain: {wall:8.1f} images/s "
        f"({cpu:.1f} per CPU second)"
    )
    if args.one_core:
      continue
    for w in workers:
      rate = input_rate(split, batch, w, args.steps, args.warmup)
      results[name][f"workers={w}"] = round(rate, 1)
      print(f"{name:9s} workers={w}: {rate:8.1f} images/s", flush=True)
  if not args.one_core:
    results["train_step_resnet20"] = round(step_rate(args.steps), 1)
    print(
        f"train step (ResNet-20, batch 128, CPU): "
        f"{results['train_step_resnet20']:.1f} images/s"
    )
  results["load_after"] = os.getloadavg()[0]
  print(json.dumps(results, indent=1))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  main()
