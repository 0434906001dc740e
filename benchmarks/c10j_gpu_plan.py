r"""Sizes the CIFAR-10 (JPEG q75 copy) GPU sweep to the throughput just measured.

Used by benchmarks/c10j_gpu_session.sh between its throughput probe and the
sweep: reads the probe logs (WORKERS concurrent `simsoft.main` runs of
resnet20, the sweep's own training config, killed after a few seconds of
steady stepping), then picks the largest tier of the protocol whose runs fit
the seconds left with at least --min_epochs epochs per model, and the epochs
that fill them:

  core         configs/sweep.py:cifar10_jpeg_gpu: cross-entropy, label smoothing,
               confusion and shuffled confusion at mass 0.3;
  control      configs/sweep.py:cifar10_jpeg_gpu_control: the same and the
               positive control (pair-flip labels, the file S) at mass 0.3;
  control_m01  that and mass 0.1 (after 0.3, so a cut-off sweep loses 0.1 first).

The time model: the sweep's workers take runs in plan order, bases first, so a
tier of n runs, b <= W of them bases, takes 1 + ceil((n - b) / W) rounds of
one run per worker (a model-B run waits for its base). Each round costs its start (the probe's
launch-to-first-step for the first round, its compile time again for the first
model-B round, Costs.later_start_s for the rest, which find their programs in
the compilation cache), the training (epochs x training images / the
per-process rate the probe measured with W processes sharing the GPU) and, for
model-B rounds, the evaluation of models A and B (clean + corruptions) at
--eval_speedup times the training rate, plus --eval_fixed_s.
Deliberately conservative; plan.json keeps the prediction so that a session can
compare it with the sweep's wall time.

  python -m benchmarks.c10j_gpu_plan --probe_dir /tmp/c10j_probe --seconds 380 \
      --workers 8 --seeds 5 --json plan.json --env plan.env
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import glob
import json
import math
import os
import re
import shlex
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SWEEP_FILE = os.path.join(HERE, "..", "configs", "sweep.py")
EXPERIMENTS = {
    "core": ("cifar10_jpeg_gpu", None),
    "control": ("cifar10_jpeg_gpu_control", None),
    "control_m01": ("cifar10_jpeg_gpu_control", (0.3, 0.1)),
}
TIERS = tuple(EXPERIMENTS)

_RATE = re.compile(r"\| ([\d,]+) img/s")
_COMPILED = re.compile(r"compiled; first step\(s\) ran in ([\d.]+)s")
# absl's prefix: I1206 23:29:17.636717 ...
_CLOCK = re.compile(r"^[IWE]\d{4} (\d\d):(\d\d):(\d\d(?:\.\d+)?) ")
_START = re.compile(r"^probe start (\d\d):(\d\d):(\d\d(?:\.\d+)?)")


@dataclasses.dataclass
class Probe:
  """One probe process: its steady img/s readings, compile and launch-to-first-step seconds."""

  rates: list[float]
  compile_s: float | None
  startup_s: float | None

  @property
  def rate(self) -> float | None:
    """The mean of the last three readings after the first (all processes stepping by then)."""
    steady = self.rates[1:] or self.rates
    return statistics.mean(steady[-3:]) if steady else None


def _seconds(h: str, m: str, s: str) -> float:
  return 3600 * int(h) + 60 * int(m) + float(s)


def parse_probe_log(text: str) -> Probe:
  """The readings of one probe log (a 'probe start HH:MM:SS' line, then simsoft.main's)."""
  rates, compile_s, startup_s, start = [], None, None, None
  for line in text.splitlines():
    if start is None and (m := _START.match(line)):
      start = _seconds(*m.groups())
    if compile_s is None and (m := _COMPILED.search(line)):
      compile_s = float(m.group(1))
      clock = _CLOCK.match(line)
      if clock and start is not None:
        startup_s = (_seconds(*clock.groups()) - start) % 86400
      continue
    if compile_s is not None and (m := _RATE.search(line)):
      rates.append(float(m.group(1).replace(",", "")))
  return Probe(rates, compile_s, startup_s)


def read_probes(probe_dir: str) -> list[Probe]:
  probes = []
  for path in sorted(glob.glob(os.path.join(probe_dir, "probe*.log"))):
    with open(path, errors="replace") as f:
      probes.append(parse_probe_log(f.read()))
  return probes


@dataclasses.dataclass(frozen=True)
class Costs:
  """What one run costs, from the probe (seconds; images per second per process).

  first_start_s: launch to first step (imports, dataset, compile), the first round;
  compile_s: the first model-B round's (its train step and evaluation differ
  from the bases'); later rounds hit the persistent compilation cache
  (JAX_COMPILATION_CACHE_DIR: S is an input of the step, so runs of one
  experiment share their programs) and pay later_start_s.
  """

  rate: float
  first_start_s: float
  compile_s: float
  eval_s: float
  later_start_s: float = 15.0
  base_extra_s: float = 10.0


def rounds(runs: int, bases: int, workers: int) -> tuple[int, int]:
  """(base rounds, model-B rounds) of a tier on `workers` workers."""
  base_rounds = math.ceil(bases / workers)
  # A model-B run waits for its base: the first base round's free workers
  # idle, a later base round's take model-B runs of the bases done before.
  free = base_rounds * workers - bases if base_rounds > 1 else 0
  return base_rounds, max(math.ceil((runs - bases - free) / workers), 1)


def predicted_seconds(
    epochs: int,
    runs: int,
    bases: int,
    workers: int,
    train_images: int,
    c: Costs,
) -> float:
  """The sweep's wall time: per round of one run per worker, its start, training
  and (model-B rounds) evaluation, at the per-process rate the probe measured.
  """
  base_rounds, b_rounds = rounds(runs, bases, workers)
  starts = (
      c.first_start_s
      + c.compile_s
      + (base_rounds + b_rounds - 2) * c.later_start_s
  )
  train = epochs * train_images / c.rate
  return (
      starts
      + (base_rounds + b_rounds) * train
      + base_rounds * c.base_extra_s
      + b_rounds * c.eval_s
  )


def epochs_that_fit(
    seconds: float,
    runs: int,
    bases: int,
    workers: int,
    train_images: int,
    c: Costs,
) -> int:
  """The most epochs per model whose predicted time is within `seconds` (0 if none)."""
  one = predicted_seconds(1, runs, bases, workers, train_images, c)
  zero = predicted_seconds(0, runs, bases, workers, train_images, c)
  if seconds < one:
    return 0
  return int((seconds - zero) // (one - zero))


def count_runs(group: str, masses, seeds: int) -> tuple[int, int, list[str]]:
  """(runs, bases, experiments) of configs/sweep.py:group with `masses` and `seeds` seeds."""
  import importlib.util  # pylint: disable=g-import-not-at-top

  from simsoft import sweep  # pylint: disable=g-import-not-at-top

  spec = importlib.util.spec_from_file_location("sweep_config", SWEEP_FILE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(group)
  config.seeds = tuple(range(seeds))
  if masses:
    config.masses = tuple(masses)
  runs = sweep.plan(config, "/nonexistent")
  bases = sum(c.phases == ("estimate",) for _, c in runs)
  return len(runs), bases, list(config.experiments)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--probe_dir", required=True)
  p.add_argument("--seconds", type=float, required=True, help="for the sweep")
  p.add_argument("--workers", type=int, required=True)
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--train_images", type=int, default=45000)
  p.add_argument(
      "--eval_images",
      type=int,
      default=2 * (10000 + 31 * 10000),
      help="images one model-B run evaluates (models A and B, clean + 10 x 3 corruptions)",
  )
  p.add_argument("--eval_speedup", type=float, default=4.0)
  p.add_argument("--eval_fixed_s", type=float, default=20.0)
  p.add_argument("--min_epochs", type=int, default=10)
  p.add_argument("--max_epochs", type=int, default=40)
  p.add_argument("--fallback_rate", type=float, default=1500.0)
  p.add_argument(
      "--tier", default="", help="force a tier (core, control, control_m01)"
  )
  p.add_argument("--epochs", type=int, default=0, help="force the epochs")
  p.add_argument("--json", required=True)
  p.add_argument("--env", required=True)
  a = p.parse_args(argv)

  probes = read_probes(a.probe_dir)
  measured = [x.rate for x in probes if x.rate]
  notes = []
  if measured:
    rate = statistics.median(measured)
  else:
    rate = a.fallback_rate
    notes.append(f"no probe rate: assumed {rate:g} img/s per process")
  compiles = [x.compile_s for x in probes if x.compile_s is not None]
  startups = [x.startup_s for x in probes if x.startup_s is not None]
  costs = Costs(
      rate=rate,
      first_start_s=max(startups, default=90.0),
      compile_s=max(compiles, default=60.0) + 10.0,
      eval_s=a.eval_fixed_s + a.eval_images / (a.eval_speedup * rate),
  )
  tiers = {}
  for tier, (group, masses) in EXPERIMENTS.items():
    runs, bases, experiments = count_runs(group, masses, a.seeds)
    fit = epochs_that_fit(
        a.seconds, runs, bases, a.workers, a.train_images, costs
    )
    tiers[tier] = dict(
        group=group,
        masses=masses,
        experiments=experiments,
        runs=runs,
        bases=bases,
        rounds=rounds(runs, bases, a.workers),
        epochs_that_fit=fit,
    )
  if a.tier:
    tier = a.tier
  else:
    fitting = [t for t in TIERS if tiers[t]["epochs_that_fit"] >= a.min_epochs]
    tier = fitting[-1] if fitting else "core"
  epochs = a.epochs or min(max(tiers[tier]["epochs_that_fit"], 1), a.max_epochs)
  if not a.epochs and tiers[tier]["epochs_that_fit"] < a.min_epochs:
    notes.append(
        f"only {tiers[tier]['epochs_that_fit']} epochs fit the core tier "
        f"(wanted {a.min_epochs}); running {epochs}"
    )
  chosen = tiers[tier]
  plan = dict(
      time=datetime.datetime.now().isoformat(timespec="seconds"),
      tier=tier,
      epochs=epochs,
      workers=a.workers,
      seeds=a.seeds,
      seconds_for_sweep=round(a.seconds),
      predicted_sweep_seconds=round(
          predicted_seconds(
              epochs,
              chosen["runs"],
              chosen["bases"],
              a.workers,
              a.train_images,
              costs,
          )
      ),
      rate_img_s_per_process=round(rate),
      rates_per_probe=[
          round(r) if r else None for r in (x.rate for x in probes)
      ],
      aggregate_img_s=round(rate * a.workers),
      costs=dataclasses.asdict(costs),
      tiers=tiers,
      notes=notes,
  )
  with open(a.json, "w") as f:
    json.dump(plan, f, indent=1)
  masses = chosen["masses"]
  with open(a.env, "w") as f:
    f.write(f"TIER={tier}\nGROUP={chosen['group']}\nEPOCHS={epochs}\n")
    f.write(f"EXPERIMENTS={shlex.quote(' '.join(chosen['experiments']))}\n")
    f.write(
        "MASSES="
        + shlex.quote(
            f"({', '.join(f'{m:g}' for m in masses)},)" if masses else ""
        )
        + "\n"
    )
  print(json.dumps({k: plan[k] for k in plan if k != "tiers"}, indent=1))
  for t, v in tiers.items():
    print(
        f"tier {t}: {v['runs']} runs ({v['bases']} bases), rounds {v['rounds']}, "
        f"epochs that fit {v['epochs_that_fit']}"
    )
  return 0


if __name__ == "__main__":
  sys.exit(main())
