"""Timing helpers every benchmark shares: interleaved repeats, paired ratios, output.

A variant is a callable `run(n)` that performs n training steps and blocks until
they are done. `interleave` times every variant once per repeat, rotating which
goes first, so slow drifts of a shared machine hit all variants alike; ratios are
taken per repeat (paired) and summarized by their median.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence

Variant = Callable[[int], None]


def machine() -> dict:
  """Date, host and software facts recorded with every result."""
  import jax

  cpu = platform.processor() or "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(
          line.split(":", 1)[1].strip()
          for line in f
          if line.startswith("model name")
      )
  except (OSError, StopIteration):
    pass
  try:
    load = os.getloadavg()[0]
  except OSError:
    load = None
  return {
      "date": datetime.datetime.now(datetime.timezone.utc).strftime(
          "%Y-%m-%d %H:%M UTC"
      ),
      "cpu": cpu,
      "cpu_count": os.cpu_count(),
      "load_1min": load,
      "jax": jax.__version__,
      "backend": jax.default_backend(),
      "devices": jax.device_count(),
      "device_kind": jax.devices()[0].device_kind,
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
  }


def timed(run: Variant, steps: int) -> tuple[float, float]:
  """(wall seconds, process CPU seconds) per step of run(steps)."""
  wall, cpu = time.perf_counter(), time.process_time()
  run(steps)
  return (time.perf_counter() - wall) / steps, (
      time.process_time() - cpu
  ) / steps


def interleave(
    variants: Mapping[str, Variant],
    *,
    steps: int,
    repeats: int,
    warmup: int = 2,
    on_repeat: Callable[[int, dict], None] | None = None,
) -> dict[str, dict[str, list[float]]]:
  """Per-step seconds of each variant, one entry per repeat, on two clocks.

  Returns {'wall': {name: [...]}, 'cpu': {name: [...]}}. 'cpu' is the CPU time
  of this process (all its threads): it counts the work done, not the time
  spent waiting for cores that other processes hold, so it is the steadier
  clock on a shared machine (about 3x smaller spread here); 'wall' is what a
  user waits for. Every variant first runs `warmup` steps (compilation,
  caches). In repeat r the variants run in the order rotated by r.
  """
  if steps < 1 or repeats < 1:
    raise ValueError(
        f"steps and repeats must be >= 1, got steps={steps}, repeats={repeats}"
    )
  names = list(variants)
  for name in names:
    variants[name](max(warmup, 1))
  times = {
      "wall": {name: [] for name in names},
      "cpu": {name: [] for name in names},
  }
  for r in range(repeats):
    k = r % len(names)
    row = {}
    for name in names[k:] + names[:k]:
      wall, cpu = timed(variants[name], steps)
      times["wall"][name].append(wall)
      times["cpu"][name].append(cpu)
      row[name] = wall
    if on_repeat is not None:
      on_repeat(r, row)
  return times


def paired_ratios(
    times: Mapping[str, Sequence[float]], base: str
) -> dict[str, list[float]]:
  """times[name][r] / times[base][r] for every name and repeat r."""
  return {
      name: [t / b for t, b in zip(ts, times[base])]
      for name, ts in times.items()
  }


def spread(values: Sequence[float]) -> dict:
  """Median, min, max and relative interquartile range of a sample."""
  values = sorted(values)
  med = statistics.median(values)
  if len(values) >= 4:
    q = statistics.quantiles(values, n=4)
    iqr = (q[2] - q[0]) / med if med else 0.0
  else:
    iqr = (values[-1] - values[0]) / med if med else 0.0
  return {"median": med, "min": values[0], "max": values[-1], "rel_iqr": iqr}


def summarize(
    timings: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    base: str,
    batch_size: int,
) -> list[dict]:
  """One row per variant from interleave()'s timings, ratios against `base`.

  Wall clock: step_ms (median), images_per_s = batch_size / median step,
  time_ratio = median_r(t_variant[r] / t_base[r]) (lower is better),
  throughput_ratio = median_r(t_base[r] / t_variant[r]) (higher is better),
  best_time_ratio = min_r t_variant / min_r t_base (the least disturbed blocks).
  CPU clock: cpu_step_ms and cpu_time_ratio, the same paired median on process
  CPU time.
  """
  wall, cpu = timings["wall"], timings["cpu"]
  ratios = paired_ratios(wall, base)
  cpu_ratios = paired_ratios(cpu, base)
  rows = []
  for name, ts in wall.items():
    s = spread(ts)
    rows.append(
        {
            "variant": name,
            "step_ms": 1e3 * s["median"],
            "images_per_s": batch_size / s["median"],
            "time_ratio": statistics.median(ratios[name]),
            "throughput_ratio": statistics.median(
                [1.0 / x for x in ratios[name]]
            ),
            "time_ratio_min": min(ratios[name]),
            "time_ratio_max": max(ratios[name]),
            "best_time_ratio": s["min"] / min(wall[base]),
            "best_images_per_s": batch_size / s["min"],
            "step_rel_iqr": s["rel_iqr"],
            "cpu_step_ms": 1e3 * statistics.median(cpu[name]),
            "cpu_time_ratio": statistics.median(cpu_ratios[name]),
            "cpu_rel_iqr": spread(cpu[name])["rel_iqr"],
            "repeats": len(ts),
        }
    )
  return rows


def emit(record: dict) -> None:
  """One JSON line on stdout."""
  print(json.dumps(record, default=_jsonable), flush=True)


def _jsonable(x):
  try:
    return float(x)
  except (TypeError, ValueError):
    return str(x)


def table(
    rows: Sequence[Mapping], columns: Sequence[str], title: str = ""
) -> None:
  """A short fixed-width table on stdout (floats to 3 significant digits)."""

  def fmt(v):
    if isinstance(v, float):
      return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)

  cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
  widths = [
      max(len(c), *(len(row[i]) for row in cells))
      for i, c in enumerate(columns)
  ]
  if title:
    print(title)
  print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
  for row in cells:
    print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
  sys.stdout.flush()


def add_common_args(parser, *, steps: int, repeats: int) -> None:
  """--steps, --repeats, --warmup, --smoke (2 steps, 1 repeat, tiny sizes)."""
  parser.add_argument(
      "--steps", type=int, default=steps, help="steps per timed block"
  )
  parser.add_argument(
      "--repeats", type=int, default=repeats, help="interleaved repeats"
  )
  parser.add_argument(
      "--warmup", type=int, default=2, help="untimed steps per variant first"
  )
  parser.add_argument(
      "--smoke",
      action="store_true",
      help="tiny run (2 steps, 1 repeat) to check the script end to end",
  )


def apply_smoke(args) -> None:
  if args.smoke:
    args.steps, args.repeats, args.warmup = 2, 1, 1
