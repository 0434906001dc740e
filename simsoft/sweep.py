"""Runs a grid of experiments (configs/sweep.py) and summarises it.

  python -m simsoft.sweep --config configs/sweep.py:digits --root DIR [--workers N] [--summary_only]

Layout: DIR/<experiment>/seed<s>/{base, label_smoothing, <source>-<form>}.
`base` trains model A (phases=estimate); every other run reuses that A
(config.estimate.model_from) and retrains B. Runs with a results.json are
skipped, unfinished ones resume, so a rerun finishes an interrupted sweep.
DIR/summary.md and DIR/summary.json hold mean and standard deviation over
seeds of every metric, CE (model A) against label smoothing and each
similarity setting (model B); DIR/summary_<experiment>.png and
DIR/severity_<experiment>.png plot them.

--workers N starts N worker processes, each pinned to its own share of the
CPU cores (on a small CPU box two single-core workers train ~1.4x more images
per second than one process on two cores). Workers claim runs through
DIR/.locks/ with flock, which the kernel releases if a worker dies, and a run
starts once its base has finished. Each worker logs to DIR/worker<i>.log.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from simsoft import config as config_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Sweep config (configs/sweep.py:GROUP).",
                                lock_config=True)
flags.DEFINE_string("root", None, "Directory of the sweep's runs and summary.")
flags.DEFINE_bool("summary_only", False, "Only rebuild the summary from finished runs.")
flags.DEFINE_integer("workers", 1, "Worker processes, each pinned to its share of the cores.")
flags.DEFINE_integer("worker_index", -1, "Internal: this process is worker i of --workers.")
flags.mark_flags_as_required(["config", "root"])

METRICS = (
    ("clean accuracy", lambda m: m["clean"]["accuracy"]),
    ("NLL", lambda m: m["clean"]["nll"]),
    ("ECE", lambda m: m["clean"]["ece"]),
    ("mean corrupted accuracy", lambda m: m.get("summary", {}).get("mean_corrupted_accuracy")),
    ("mistake severity", lambda m: m["clean"].get("mistake_severity")),
    ("super-class accuracy", lambda m: m["clean"].get("superclass_accuracy")),
)


def load_experiment_config(spec: str):
  """'configs/x.py:arg' -> the ConfigDict that file's get_config(arg) returns."""
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location(
      "experiment_config", path if os.path.isabs(path) else os.path.join(os.getcwd(), path))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg)


def variants(sweep) -> list[tuple[str, str, str]]:
  """(run name, source, form) of every model-B run."""
  out = [("label_smoothing", "uniform", "soft_target")]
  for source in sweep.sources.split(","):
    for form in sweep.forms.split(","):
      out.append((f"{source}-{form}", source, form))
  return out


def plan(sweep, root: str) -> list[tuple[str, object]]:
  """Every run of the sweep as (workdir, config): all bases, then the runs using them."""
  bases, runs = [], []
  for name in sweep.experiments.split(","):
    for seed in (int(s) for s in sweep.seeds.split(",")):
      def make(source, form, phases, model_from=""):
        c = load_experiment_config(sweep.specs[name])
        _apply_overrides(c, sweep.overrides)
        c.seed, c.phases, c.loss.alpha = seed, phases, sweep.alpha
        c.similarity.source, c.loss.form = source, form
        c.estimate.model_from = model_from
        return c
      base = os.path.join(root, name, f"seed{seed}", "base")
      bases.append((base, make("identity", "soft_target", "estimate")))
      for run_name, source, form in variants(sweep):
        runs.append((os.path.join(root, name, f"seed{seed}", run_name),
                     make(source, form, ",".join(config_lib.PHASES), base)))
  return bases + runs


def _apply_overrides(c, overrides: str) -> None:
  """'a.b=v;c.d=w' (';'-separated, so values may hold commas) -> fields set."""
  for item in overrides.split(";"):
    if item.strip():
      key, _, value = item.partition("=")
      config_lib.set_field(c, key.strip(), value.strip())


def _finished(workdir: str, phases: str) -> bool:
  if phases == "estimate":
    return os.path.exists(os.path.join(workdir, "estimate", "done.json"))
  return os.path.exists(os.path.join(workdir, "results.json"))


def _claim(root: str, workdir: str):
  """An exclusive flock on DIR/.locks/<run>.lock (an open file), or None if another holds it."""
  os.makedirs(os.path.join(root, ".locks"), exist_ok=True)
  name = os.path.relpath(workdir, root).replace(os.sep, "__")
  lock = open(os.path.join(root, ".locks", name + ".lock"), "w")
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    lock.close()
    return None
  return lock


def run_all(sweep, root: str, poll_seconds: float = 5.0) -> None:
  """Runs every unfinished run this process can claim, in plan order, until none is left.

  A run waits for its base (estimate.model_from) to finish; runs that other
  workers hold are left to them.
  """
  from simsoft import train  # imports TensorFlow (data); keep --help fast

  runs = plan(sweep, root)
  while True:
    pending = [(i, w, c) for i, (w, c) in enumerate(runs, 1) if not _finished(w, c.phases)]
    if not pending:
      return
    claimed = waiting = False
    for i, workdir, config in pending:
      base = config.estimate.model_from
      if base and not _finished(base, "estimate"):
        waiting = True
        continue
      lock = _claim(root, workdir)
      if lock is None:
        continue
      with lock:
        if _finished(workdir, config.phases):  # another worker finished it meanwhile
          continue
        start = time.time()
        print(f"=== sweep run {i}/{len(runs)}: {workdir}", flush=True)
        train.train_and_evaluate(config, workdir)
        with open(os.path.join(workdir, "wall_time.json"), "w") as f:
          json.dump({"seconds": time.time() - start}, f)
      claimed = True
      break  # rescan: a finished base may unblock earlier runs
    if not claimed:
      if not waiting:
        return  # everything left is held by other workers
      time.sleep(poll_seconds)


def start_workers(workers: int, root: str) -> int:
  """Starts `workers` copies of this command as worker processes; returns the worst exit code."""
  cpus = sorted(os.sched_getaffinity(0))
  shares = [cpus[i::workers] for i in range(workers)] if workers <= len(cpus) else [cpus] * workers
  procs = []
  for i in range(workers):
    log = open(os.path.join(root, f"worker{i}.log"), "a")
    cmd = [sys.executable, "-m", "simsoft.sweep", *sys.argv[1:], f"--worker_index={i}"]
    procs.append(subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT,
        preexec_fn=lambda share=shares[i]: os.sched_setaffinity(0, share)))
    print(f"worker {i}: cores {shares[i]}, log {log.name}", flush=True)
  codes = [p.wait() for p in procs]
  for i, code in enumerate(codes):
    if code:
      print(f"worker {i} failed with exit code {code}; see {root}/worker{i}.log", flush=True)
  return max(codes)


def _mean_std(values):
  values = [v for v in values if v is not None and np.isfinite(v)]
  if not values:
    return None, None
  return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(sweep, root: str) -> dict:
  """summary.json / summary.md: mean ± std over seeds per experiment and setting."""
  summary = {}
  for name in sweep.experiments.split(","):
    rows = {}
    seeds = [int(s) for s in sweep.seeds.split(",")]
    settings = [("cross-entropy (A)", "label_smoothing", "A")] + [
        (run_name if run_name != "label_smoothing" else "label smoothing", run_name, "B")
        for run_name, _, _ in variants(sweep)]
    for label, run_name, model in settings:
      found, baselines = [], []
      for seed in seeds:
        path = os.path.join(root, name, f"seed{seed}", run_name, "results.json")
        if os.path.exists(path):
          with open(path) as f:
            models = json.load(f)["models"]
          found.append(models[model])
          baselines.append(models["A"])
      if not found:
        continue
      row = {"seeds": len(found)}
      for metric, get in METRICS:
        row[metric] = _mean_std([get(m) for m in found])
      if model == "B":
        row["paired vs CE"] = _paired(found, baselines)
      by = [m.get("summary", {}).get("accuracy_by_corruption") for m in found]
      if all(by):
        row["accuracy by corruption"] = {c: _mean_std([b[c] for b in by]) for c in by[0]}
      by = [m.get("summary", {}).get("accuracy_by_severity") for m in found]
      if all(by):
        row["accuracy by severity"] = {"0": row["clean accuracy"]} | {
            s: _mean_std([b[s] for b in by]) for s in by[0]}
      rows[label] = row
    summary[name] = rows
  with open(os.path.join(root, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(root, "summary.md"), "w") as f:
    f.write(to_markdown(summary) + wall_time_markdown(wall_times(sweep, root)))
  for name, rows in summary.items():
    if rows:
      plot_summary(name, rows, os.path.join(root, f"summary_{name}.png"))
    if any("accuracy by severity" in row for row in rows.values()):
      plot_severity(name, rows, os.path.join(root, f"severity_{name}.png"))
  return summary


PAIRED_METRICS = ("clean accuracy", "mean corrupted accuracy")


def _paired(models: list, baselines: list) -> dict:
  """B - A within each seed (same initialisation and batches): mean ± std, and wins."""
  out = {}
  for metric in PAIRED_METRICS:
    get = dict(METRICS)[metric]
    deltas = [get(b) - get(a) for b, a in zip(models, baselines)
              if get(b) is not None and get(a) is not None]
    if deltas:
      out[metric] = {"delta": _mean_std(deltas), "wins": sum(d > 0 for d in deltas),
                     "seeds": len(deltas)}
  return out


def wall_times(sweep, root: str) -> dict:
  """Per experiment: finished runs and their wall time (wall_time.json), bases and B runs apart."""
  out = {}
  for name in sweep.experiments.split(","):
    times = {"base": [], "model B": []}
    for seed in sweep.seeds.split(","):
      for run_name in ["base"] + [v[0] for v in variants(sweep)]:
        path = os.path.join(root, name, f"seed{seed}", run_name, "wall_time.json")
        if os.path.exists(path):
          with open(path) as f:
            times["base" if run_name == "base" else "model B"].append(json.load(f)["seconds"])
    out[name] = {kind: {"runs": len(t), "seconds": float(np.sum(t))} for kind, t in times.items()}
  return out


def wall_time_markdown(times: dict) -> str:
  lines = ["Wall time of the runs (summed over runs, whichever worker ran them):\n",
           "| experiment | base runs (model A) | s | model-B runs | s | total s |",
           "|---|---|---|---|---|---|"]
  for name, t in times.items():
    base, b = t["base"], t["model B"]
    lines.append(f"| {name} | {base['runs']} | {base['seconds']:,.0f} | {b['runs']} | "
                 f"{b['seconds']:,.0f} | {base['seconds'] + b['seconds']:,.0f} |")
  return "\n".join(lines) + "\n"


def plot_summary(name: str, rows: dict, path: str) -> str:
  """Clean and mean corrupted accuracy per setting, mean ± std over seeds, CE dashed."""
  from matplotlib.figure import Figure  # object API: no display needed

  panels = ("clean accuracy", "mean corrupted accuracy")
  labels = list(rows)
  fig = Figure(figsize=(11, 0.32 * len(labels) + 1.2))
  for ax, metric in zip(fig.subplots(1, len(panels), sharey=True), panels):
    means = [100 * (rows[l][metric][0] or np.nan) for l in labels]
    stds = [100 * (rows[l][metric][1] or 0.0) for l in labels]
    ax.errorbar(means, range(len(labels)), xerr=stds, fmt="o", capsize=3)
    baseline = rows.get("cross-entropy (A)", {}).get(metric, (None,))[0]
    if baseline is not None:
      ax.axvline(100 * baseline, linestyle="--", color="gray", label="cross-entropy (A)")
    ax.set_title(f"{name}: {metric} (%)")
    ax.grid(axis="x", alpha=0.3)
  fig.axes[0].set_yticks(range(len(labels)), labels)
  fig.axes[0].invert_yaxis()
  fig.savefig(path, dpi=110, bbox_inches="tight")
  return path


def plot_severity(name: str, rows: dict, path: str) -> str:
  """Accuracy against corruption severity (0 = clean), mean ± std over seeds:
  cross-entropy, label smoothing and every soft-target setting."""
  from matplotlib.figure import Figure

  fig = Figure(figsize=(7, 4.5))
  ax = fig.subplots()
  for label, row in rows.items():
    by = row.get("accuracy by severity")
    if not by or label.endswith("log_sum"):
      continue
    severities = sorted(by, key=int)
    means = np.array([100 * by[s][0] for s in severities])
    stds = np.array([100 * by[s][1] for s in severities])
    x = [int(s) for s in severities]
    style = dict(color="black", linewidth=2.5) if label == "cross-entropy (A)" else (
        dict(color="gray", linestyle="--") if label == "label smoothing" else {})
    line, = ax.plot(x, means, marker="o", label=label, **style)
    ax.fill_between(x, means - stds, means + stds, color=line.get_color(), alpha=0.12)
  ax.set_xlabel("corruption severity (0 = clean; mean over corruptions)")
  ax.set_ylabel("accuracy (%)")
  ax.set_title(f"{name}: accuracy under corruption (mean ± std over seeds)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  return path


def _cell(ms, pct):
  mean, std = ms if ms else (None, None)
  if mean is None:
    return "n/a"
  return f"{100 * mean:.2f} ± {100 * std:.2f}" if pct else f"{mean:.4f} ± {std:.4f}"


def to_markdown(summary: dict) -> str:
  parts = []
  for name, rows in summary.items():
    parts.append(f"### {name}\n")
    header = ["setting", "seeds"] + [m for m, _ in METRICS]
    parts.append("| " + " | ".join(header) + " |")
    parts.append("|" + "---|" * len(header))
    for label, row in rows.items():
      cells = [label, str(row["seeds"])] + [
          _cell(row[m], pct=m in ("clean accuracy", "mean corrupted accuracy", "super-class accuracy"))
          for m, _ in METRICS]
      parts.append("| " + " | ".join(cells) + " |")
    corr = {label: row["accuracy by corruption"] for label, row in rows.items()
            if "accuracy by corruption" in row}
    if corr:
      names = list(next(iter(corr.values())))
      parts.append("\nAccuracy (%) per corruption, mean over severities and seeds:\n")
      parts.append("| setting | " + " | ".join(names) + " |")
      parts.append("|" + "---|" * (len(names) + 1))
      for label, by in corr.items():
        parts.append(f"| {label} | " + " | ".join(f"{100 * by[n][0]:.2f}" for n in names) + " |")
    paired = {label: row["paired vs CE"] for label, row in rows.items() if row.get("paired vs CE")}
    if paired:
      parts.append("\nPaired difference to cross-entropy, B - A within each seed (same "
                   "initialisation and batches), points; wins = seeds where B is higher:\n")
      parts.append("| setting | " + " | ".join(f"{m} B - A | wins" for m in PAIRED_METRICS) + " |")
      parts.append("|" + "---|" * (2 * len(PAIRED_METRICS) + 1))
      for label, by in paired.items():
        cells = [f"{100 * by[m]['delta'][0]:+.2f} ± {100 * by[m]['delta'][1]:.2f} | "
                 f"{by[m]['wins']}/{by[m]['seeds']}" if m in by else "n/a | n/a"
                 for m in PAIRED_METRICS]
        parts.append(f"| {label} | " + " | ".join(cells) + " |")
    parts.append("")
  return "\n".join(parts) + "\n"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  os.makedirs(FLAGS.root, exist_ok=True)
  if FLAGS.worker_index >= 0:
    run_all(FLAGS.config, FLAGS.root)
    return
  if not FLAGS.summary_only:
    if FLAGS.workers > 1:
      code = start_workers(FLAGS.workers, FLAGS.root)
      if code:
        sys.exit(code)
    else:
      run_all(FLAGS.config, FLAGS.root)
  summarise(FLAGS.config, FLAGS.root)
  with open(os.path.join(FLAGS.root, "summary.md")) as f:
    print(f.read(), flush=True)


if __name__ == "__main__":
  app.run(main)
