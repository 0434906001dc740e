"""Runs a grid of experiments (configs/sweep.py) and summarizes it.

  python -m simsoft.sweep --config configs/sweep.py:digits --root DIR [--workers N] [--summary_only]

The sweep config (configs/sweep.py) holds each experiment's whole run config
(config.experiments.<name>) and the grid: seeds, masses, sources, ... Each
run is its experiment's config with the seed, the phases and its setting's
fields (Setting.fields) set.

Layout: DIR/<experiment>/seed<s>/{base, label_smoothing, <source>-<form>}.
`base` trains model A (phases ('estimate',)); every other run reuses that A
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

--executor hands each run to a job engine instead (submitit): `slurm` submits
one Slurm job per run, `submitit_local` one local process per run (what the
tests use); --workers is then the most jobs at a time (a run is submitted once
its base has finished), --executor_params sets the executor's parameters
(slurm_partition=gpu,gpus_per_node=1,timeout_min=240,...) and job logs go to
DIR/.submitit/. Runs, resume and summary are the same as with local workers:
the same run directories, finished runs skipped, the same DIR/.locks/ claim
(a run another process holds is left to it). `pip install 'simsoft[slurm]'`.
`tpu_pod` hands each run to launch/tpu_pod.sh (one pod job per run, --workers
slices at a time; simsoft.pod_sweep): the runs live in the bucket and each
finished run's records are copied back to DIR.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from simsoft import config as config_lib
from simsoft import cli_flags, config_files, errors, extras, pod_sweep
from simsoft import sweep_runs
from simsoft import results as results_lib

FLAGS = flags.FLAGS


def define_flags(
    fv: flags.FlagValues = FLAGS, sys_argv: Sequence[str] | None = None
) -> None:
  """The sweep's flags, defined only when it runs as a program: simsoft.main (imported
  beside it in tests) defines its own --config."""
  config_flags.DEFINE_config_file(
      "config",
      None,
      "Sweep config (configs/sweep.py:GROUP).",
      lock_config=True,
      flag_values=fv,
      sys_argv=sys_argv,
  )
  flags.DEFINE_string(
      "root", None, "Directory of the sweep's runs and summary.", flag_values=fv
  )
  flags.DEFINE_bool(
      "summary_only",
      False,
      "Only rebuild the summary from finished runs.",
      flag_values=fv,
  )
  flags.DEFINE_integer(
      "workers",
      1,
      "Worker processes, each pinned to its share of the cores.",
      flag_values=fv,
  )
  flags.DEFINE_enum(
      "executor",
      "local",
      EXECUTORS,
      "Who runs each run: local worker processes, one submitit job per "
      "run (slurm; submitit_local: local processes, for tests), or one pod "
      "job per run (tpu_pod: launch/tpu_pod.sh up; simsoft.pod_sweep).",
      flag_values=fv,
  )
  flags.DEFINE_list(
      "executor_params",
      [],
      "KEY=VALUE parameters of the submitit executor "
      "(slurm_partition=gpu,gpus_per_node=1,timeout_min=240); of tpu_pod: "
      "name=SWEEP (the runs' folder BUCKET/simsoft/SWEEP).",
      flag_values=fv,
  )
  flags.DEFINE_integer(
      "worker_index",
      -1,
      "Internal: this process is worker i of --workers.",
      flag_values=fv,
  )


EXECUTORS = ("local", "submitit_local", "slurm", "tpu_pod")
REQUIRED = (("config", "configs/sweep.py:digits"), ("root", "/tmp/sweep"))


def parse_flags(argv: Sequence[str]) -> list[str]:
  """The sweep's flags parsed, every mistake one line (simsoft.cli_flags)."""
  return cli_flags.parse_flags(
      argv, FLAGS, define=define_flags, required=REQUIRED
  )


# The summary's columns (their labels are summary.json's keys), and the metrics
# compared in pairs within each seed.
METRICS = results_lib.select(
    "clean_accuracy",
    "clean_on_corrupted_accuracy",
    "clean_nll",
    "clean_ece",
    "mean_corrupted_accuracy",
    "mistake_severity",
    "superclass_accuracy",
)
PAIRED_METRICS = results_lib.select("clean_accuracy", "mean_corrupted_accuracy")


@dataclasses.dataclass(frozen=True)
class Setting:
  """One model-B run per seed: its name (the run directory) and what it sets.

  `control` is the mass-matched label-smoothing run of the same form;
  `shuffled` the run with the same S, classes permuted (None where absent).
  """

  name: str
  source: str
  form: str
  amount: tuple[str, float]
  shuffle: bool = False
  control: str | None = None
  shuffled: str | None = None

  @property
  def fields(self) -> dict[str, Any]:
    """The dotted config fields this setting sets (simsoft.config.set_fields)."""
    kind, value = self.amount
    return {
        "similarity.source": self.source,
        "loss.form": self.form,
        "similarity.shuffle": self.shuffle,
        "loss.amount": kind,
        f"loss.{kind}": value,
    }


# What the base run (model A, cross-entropy) sets.
BASE_FIELDS = {"similarity.source": "identity", "loss.form": "soft_target"}


GRID_FIELDS = (
    "masses",
    "sources",
    "log_sum_sources",
    "shuffled",
    "alpha",
    "alpha_settings",
)


def grid_of(
    sweep: ml_collections.ConfigDict, experiment: str | None = None
) -> ml_collections.ConfigDict:
  """The grid fields of `experiment`: sweep.grids.<experiment>'s where it sets
  them (a positive control with its own source, say), else the sweep's."""
  own = sweep.get("grids", {}).get(experiment, {}) if experiment else {}
  return ml_collections.ConfigDict(
      {f: own.get(f, sweep[f]) for f in GRID_FIELDS}
  )


def variants(
    sweep: ml_collections.ConfigDict, experiment: str | None = None
) -> list[Setting]:
  """Every model-B setting of a sweep config (of one experiment), in summary order.

  The grid is `grid_of(sweep, experiment)`. For each mass m: label smoothing at m (the control), and for each source
  its soft-target run and its shuffled-S control (sweep.shuffled); the same
  in the log-sum form for sweep.log_sum_sources (with label smoothing in that
  form as their control). Then sweep.alpha_settings ((source, form) pairs) at
  sweep.alpha, the older alpha-mixed target.
  """
  sweep = grid_of(sweep, experiment)
  out = []
  for m in sweep.masses:
    forms = [("soft_target", sweep.sources)]
    if sweep.log_sum_sources:
      forms.append(("log_sum", sweep.log_sum_sources))
    for form, sources in forms:
      ls = f"label_smoothing-{form}-m{m:g}"
      out.append(Setting(ls, "uniform", form, ("mass", m)))
      for source in sources:
        name = f"{source}-{form}-m{m:g}"
        shuffled = f"{name}-shuffled" if sweep.shuffled else None
        out.append(
            Setting(
                name, source, form, ("mass", m), control=ls, shuffled=shuffled
            )
        )
        if shuffled:
          out.append(
              Setting(
                  shuffled, source, form, ("mass", m), shuffle=True, control=ls
              )
          )
  for source, form in sweep.alpha_settings:
    out.append(
        Setting(
            f"{source}-{form}-a{sweep.alpha:g}",
            source,
            form,
            ("alpha", sweep.alpha),
        )
    )
  return out


def plan(
    sweep: ml_collections.ConfigDict, root: str
) -> list[tuple[str, ml_collections.ConfigDict]]:
  """Every run of the sweep as (workdir, config): all bases, then the runs using them.

  Each run's config is its experiment's (sweep.experiments.<name>) with the
  seed, the phases and the setting's fields set.
  """
  bases, runs = [], []
  for name, experiment in sweep.experiments.items():
    for seed in sweep.seeds:

      def make(fields, phases, model_from=""):
        return config_lib.set_fields(
            copy.deepcopy(experiment),
            {
                "seed": seed,
                "phases": phases,
                "estimate.model_from": model_from,
                **fields,
            },
        )

      base = os.path.join(root, name, f"seed{seed}", "base")
      bases.append((base, make(BASE_FIELDS, ("estimate",))))
      for setting in variants(sweep, name):
        runs.append(
            (
                os.path.join(root, name, f"seed{seed}", setting.name),
                make(setting.fields, config_lib.PHASES, base),
            )
        )
  return bases + runs


def run_all(
    sweep: ml_collections.ConfigDict, root: str, poll_seconds: float = 5.0
) -> None:
  """Runs every unfinished run this process can claim, in plan order, until none is left.

  A run waits for its base (estimate.model_from) to finish; runs that other
  workers hold are left to them.
  """
  from simsoft import train  # imports TensorFlow (data); keep --help fast

  runs = plan(sweep, root)
  while True:
    pending = [
        (i, w, c)
        for i, (w, c) in enumerate(runs, 1)
        if not sweep_runs.finished(w, c.phases)
    ]
    if not pending:
      return
    claimed = waiting = False
    for i, workdir, config in pending:
      base = config.estimate.model_from
      if base and not sweep_runs.finished(base, ("estimate",)):
        waiting = True
        continue
      lock = sweep_runs.claim(root, workdir)
      if lock is None:
        continue
      with lock:
        if sweep_runs.finished(
            workdir, config.phases
        ):  # another worker finished it meanwhile
          continue
        start = time.time()
        _log(f"=== sweep run {i}/{len(runs)}: {workdir}")
        train.train_and_evaluate(config, workdir)
        with open(os.path.join(workdir, "wall_time.json"), "w") as f:
          json.dump({"seconds": time.time() - start}, f)
      claimed = True
      break  # rescan: a finished base may unblock earlier runs
    if not claimed:
      if not waiting:
        return  # everything left is held by other workers
      time.sleep(poll_seconds)


def run_one(config: ml_collections.ConfigDict, workdir: str, root: str) -> str:
  """One run, as a job engine's job: 'ran', 'done' (finished already) or 'held'
  (another process has claimed it). Claims it through DIR/.locks/ as the local
  workers do."""
  from simsoft import train  # imports TensorFlow (data)

  lock = sweep_runs.claim(root, workdir)
  if lock is None:
    return "held"
  with lock:
    if sweep_runs.finished(workdir, config.phases):
      return "done"
    start = time.time()
    _log(f"=== sweep run: {workdir}")
    train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "wall_time.json"), "w") as f:
      json.dump({"seconds": time.time() - start}, f)
  return "ran"


def _executor_params(params: Sequence[str]) -> dict[str, Any]:
  out = {}
  for item in params:
    key, sep, value = item.partition("=")
    if not sep:
      raise SystemExit(f"--executor_params: {item!r} is not KEY=VALUE")
    try:
      out[key] = json.loads(value)
    except json.JSONDecodeError:
      out[key] = value
  return out


def make_executor(kind: str, folder: str, params: dict[str, Any]):
  """A submitit executor ('submitit_local' or 'slurm') writing job files to `folder`."""
  import submitit  # pylint: disable=g-import-not-at-top

  if kind == "submitit_local":
    executor = submitit.LocalExecutor(folder=folder)
    # submitit's local default is a 2-minute limit per job: far too short.
    params = {"timeout_min": 24 * 60, **params}
  elif kind == "slurm":
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
  else:
    raise ValueError(f"unknown executor {kind!r}; use one of {EXECUTORS}")
  if params:
    executor.update_parameters(**params)
  return executor


def run_with_executor(
    sweep: ml_collections.ConfigDict,
    root: str,
    executor,
    parallel: int = 1,
    poll_seconds: float = 2.0,
) -> int:
  """Submits every unfinished run to `executor` (submitit's interface: submit,
  job.done(), job.result()), at most `parallel` at a time, each once its base
  has finished; returns the number of runs that failed (0: all finished)."""
  runs = plan(sweep, root)
  pending = [(w, c) for w, c in runs if not sweep_runs.finished(w, c.phases)]
  running, failed = {}, {}
  while pending or running:
    for workdir, job in list(running.items()):
      if not job.done():
        continue
      del running[workdir]
      try:
        outcome = job.result()
      except Exception as e:  # pylint: disable=broad-except
        failed[workdir] = str(e).strip().splitlines()[:1] or [type(e).__name__]
        logs = getattr(executor, "logs", os.path.join(root, ".submitit"))
        errors.warn(
            f"run {workdir} failed (job {job.job_id}): {failed[workdir][0]}; "
            f"its log is in {logs}"
        )
        continue
      _log(f"=== sweep run {outcome}: {workdir} (job {job.job_id})")
    submitted = False
    for workdir, config in list(pending):
      if len(running) >= max(1, parallel):
        break
      base = config.estimate.model_from
      if base and base in failed:
        pending.remove((workdir, config))
        failed[workdir] = ["its base failed"]
        continue
      if base and not sweep_runs.finished(base, ("estimate",)):
        continue
      job = executor.submit(run_one, config, workdir, root)
      running[workdir] = job
      pending.remove((workdir, config))
      submitted = True
      _log(f"=== sweep run submitted: {workdir} (job {job.job_id})")
    if not running and not submitted and pending:
      waiting_on = {c.estimate.model_from for _, c in pending}
      if not waiting_on & {w for w, _ in pending}:
        # Bases held by another process (local workers): wait for them.
        time.sleep(poll_seconds)
        continue
    if running:
      time.sleep(poll_seconds)
  for workdir, why in failed.items():
    errors.warn(f"not finished: {workdir}: {why[0]}")
  return len(failed)


def _log(message: str) -> None:
  from simsoft import progress  # imports jax: keep --help fast

  progress.log(message)


def start_workers(workers: int, root: str) -> int:
  """Starts `workers` copies of this command as worker processes; returns the worst exit code."""
  cpus = sorted(os.sched_getaffinity(0))
  shares = (
      [cpus[i::workers] for i in range(workers)]
      if workers <= len(cpus)
      else [cpus] * workers
  )
  procs = []
  for i in range(workers):
    log = open(os.path.join(root, f"worker{i}.log"), "a")
    cmd = [
        sys.executable,
        "-m",
        "simsoft.sweep",
        *sys.argv[1:],
        f"--worker_index={i}",
    ]
    procs.append(
        subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda share=shares[i]: os.sched_setaffinity(0, share),
        )
    )
    _log(f"worker {i}: cores {shares[i]}, log {log.name}")
  codes = [p.wait() for p in procs]
  for i, code in enumerate(codes):
    if code:
      errors.warn(
          f"worker {i} failed with exit code {code}; see {root}/worker{i}.log"
      )
  return max(codes)


def _mean_std(values):
  """Mean and std over seeds; the std of one seed is 0.0 in summary.json."""
  return results_lib.mean_std(values, std_of_one=0.0)


def _results(root: str, experiment: str, seed: str, run: str) -> dict | None:
  path = os.path.join(root, experiment, f"seed{seed}", run, "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


CE = "cross-entropy (A)"
COMPARISONS = (
    "vs cross-entropy",
    "vs label smoothing, same mass",
    "vs shuffled S",
)


def summarize(sweep: ml_collections.ConfigDict, root: str) -> dict:
  """summary.json / summary.md: per experiment, mean ± std over seeds of every
  metric, and paired comparisons with 95 % intervals, t-test p-values and Holm.
  """
  summary = {}
  seeds = [str(s) for s in sweep.seeds]
  for name in sweep.experiments:
    settings = variants(sweep, name)
    results = {
        (st.name, seed): _results(root, name, seed, st.name)
        for st in settings
        for seed in seeds
    }
    model_a = {}
    for (_, seed), r in results.items():
      if r is not None:
        model_a.setdefault(seed, r["models"]["A"])
    per_setting = {CE: model_a}
    for st in settings:
      found = {
          seed: results[(st.name, seed)]["models"]["B"]
          for seed in seeds
          if results[(st.name, seed)] is not None
      }
      if found:
        per_setting[st.name] = found
    rows = {}
    for label, by_seed in per_setting.items():
      if not by_seed:
        continue
      models = list(by_seed.values())
      row = {"seeds": len(models)}
      for metric in METRICS:
        row[metric.label] = _mean_std([metric.get(m) for m in models])
      if label != CE:
        targets = [results[(label, seed)].get("target") for seed in by_seed]
        masses = [t["mean_off_target_mass"] for t in targets if t]
        row["off-target mass"] = _mean_std(masses)
        row |= _q_structure([t.get("q") for t in targets if t])
      row["per seed"] = {
          m.label: dict(zip(by_seed, (m.get(model) for model in models)))
          for m in METRICS
      }
      per_class = [m.get("clean", {}).get("per_class_accuracy") for m in models]
      if all(per_class):
        row["per seed"]["per-class accuracy"] = dict(zip(by_seed, per_class))
      by = [m.get("summary", {}).get("accuracy_by_corruption") for m in models]
      if all(by):
        row["accuracy by corruption"] = {
            c: _mean_std([b[c] for b in by]) for c in by[0]
        }
        row["per seed"]["accuracy by corruption"] = {
            c: dict(zip(by_seed, (b[c] for b in by))) for c in by[0]
        }
      by = [m.get("summary", {}).get("accuracy_by_severity") for m in models]
      if all(by):
        row["accuracy by severity"] = {
            "0": row["clean accuracy, corrupted images"]
        } | {sev: _mean_std([b[sev] for b in by]) for sev in by[0]}
      rows[label] = row
    margins = dict(sweep.get("margins", {}))
    summary[name] = {
        "rows": rows,
        "margins": margins,
        "comparisons": _comparisons(settings, per_setting, seeds, margins),
        **_corruption_comparisons(settings, per_setting, seeds),
    }
  with open(os.path.join(root, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(root, "summary.md"), "w") as f:
    f.write(to_markdown(summary) + wall_time_markdown(wall_times(sweep, root)))
  for name, exp in summary.items():
    if exp["rows"]:
      plot_summary(name, exp["rows"], os.path.join(root, f"summary_{name}.png"))
    if any("accuracy by severity" in row for row in exp["rows"].values()):
      plot_severity(
          name, exp["rows"], os.path.join(root, f"severity_{name}.png")
      )
  return summary


def _q_structure(records: list[dict | None]) -> dict:
  """Mean ± std over seeds of Q's mean row entropy and largest entry
  (simsoft.target.off_target_structure), and Q averaged over seeds."""
  records = [r for r in records if r]
  if not records:
    return {}
  out = {
      "Q row entropy": _mean_std([r["mean_q_row_entropy"] for r in records]),
      "Q row entropy, uniform": records[0]["uniform_q_row_entropy"],
      "Q largest entry": _mean_std([r["mean_q_row_max"] for r in records]),
  }
  qs = [r.get("off_target_distribution") for r in records]
  if all(q is not None for q in qs):
    out["Q, mean over seeds"] = np.round(np.mean(qs, axis=0), 4).tolist()
  return out


def _pairs(settings: list[Setting]) -> dict[str, list[tuple[str, str]]]:
  """{comparison: [(setting, baseline), ...]}: each setting against
  cross-entropy (model A of the same seed), against its mass-matched label
  smoothing, and against its shuffled-S control."""
  return {
      "vs cross-entropy": [(st.name, CE) for st in settings],
      "vs label smoothing, same mass": [
          (st.name, st.control)
          for st in settings
          if st.control and not st.shuffle
      ],
      "vs shuffled S": [
          (st.name, st.shuffled) for st in settings if st.shuffled
      ],
  }


def _deltas(
    per_setting: dict, setting: str, baseline: str, seeds: list[str], get
) -> dict[str, float]:
  """{seed: get(setting's model) - get(baseline's model)} over the seeds both have."""
  b, a = per_setting.get(setting, {}), per_setting.get(baseline, {})
  out = {}
  for s in seeds:
    if s in b and s in a:
      vb, va = get(b[s]), get(a[s])
      if vb is not None and va is not None:
        out[s] = vb - va
  return out


def _paired(deltas: dict[str, float], baseline: str, margin=None) -> dict:
  """paired_difference + one-sided bounds and TOST (simsoft.significance) of
  per-seed deltas, with the deltas themselves and the baseline's name."""
  from simsoft import significance  # scipy: only the summary needs it

  values = list(deltas.values())
  return (
      significance.paired_difference(values)
      | significance.bounds(values, margin=margin)
      | {"baseline": baseline, "deltas": deltas}
  )


def _with_holm(tables: list[dict]) -> None:
  """Holm over every entry of `tables` together: p_holm, significant_holm."""
  from simsoft import significance  # scipy: only the summary needs it

  entries = [t for table in tables for t in table.values()]
  adjusted, rejected = significance.holm([t["p"] for t in entries])
  for t, adj, rej in zip(entries, adjusted, rejected):
    t |= {"p_holm": adj, "significant_holm": rej}


def _comparisons(
    settings: list[Setting],
    per_setting: dict,
    seeds: list[str],
    margins: dict | None = None,
) -> dict:
  """{comparison: {metric: {setting: paired difference, bounds, TOST, holm}}}.

  Per seed difference setting - baseline (see _pairs); Holm runs over the
  settings of one comparison and metric; the TOST margin of a metric is
  margins[metric.key] (none where absent).
  """
  margins = margins or {}
  out = {}
  for comparison, todo in _pairs(settings).items():
    out[comparison] = {}
    for metric in PAIRED_METRICS:
      table = {}
      for setting, baseline in todo:
        deltas = _deltas(per_setting, setting, baseline, seeds, metric.get)
        if deltas:
          table[setting] = _paired(deltas, baseline, margins.get(metric.key))
      _with_holm([table])
      out[comparison][metric.label] = table
  return out


def _family_accuracy(members: tuple[str, ...]):
  """model results -> mean accuracy over the family's corruptions (None if any is missing)."""

  def get(model: dict) -> float | None:
    by = model.get("summary", {}).get("accuracy_by_corruption") or {}
    if not all(c in by for c in members):
      return None
    return float(np.mean([by[c] for c in members]))

  return get


def _corruption_comparisons(
    settings: list[Setting], per_setting: dict, seeds: list[str]
) -> dict:
  """The paired comparisons per corruption family and per corruption.

  'comparisons by corruption family': {comparison: {family: {setting: ...}}},
  a family's accuracy being the mean over its corruptions
  (simsoft.corruptions.FAMILIES) and the evaluated severities; Holm runs
  over every setting and family of one comparison. 'comparisons by
  corruption': the same per corruption, without a correction (description).
  """
  from simsoft import corruptions  # jax: only the summary needs it

  families = {
      name: members
      for name, members in corruptions.FAMILIES.items()
      if any(
          _family_accuracy(members)(model) is not None
          for by_seed in per_setting.values()
          for model in by_seed.values()
      )
  }
  if not families:
    return {}
  names = [c for members in families.values() for c in members]
  by_family, by_corruption = {}, {}
  for comparison, todo in _pairs(settings).items():
    tables = {f: {} for f in families}
    single = {c: {} for c in names}
    for setting, baseline in todo:
      for family, members in families.items():
        get = _family_accuracy(members)
        deltas = _deltas(per_setting, setting, baseline, seeds, get)
        if deltas:
          tables[family][setting] = _paired(deltas, baseline)
      for c in names:
        get = _family_accuracy((c,))
        deltas = _deltas(per_setting, setting, baseline, seeds, get)
        if deltas:
          single[c][setting] = _paired(deltas, baseline)
    _with_holm(list(tables.values()))
    by_family[comparison] = tables
    by_corruption[comparison] = single
  return {
      "corruption families": {f: list(m) for f, m in families.items()},
      "comparisons by corruption family": by_family,
      "comparisons by corruption": by_corruption,
  }


def wall_times(sweep: ml_collections.ConfigDict, root: str) -> dict:
  """Per experiment: finished runs and their wall time (wall_time.json), bases and B runs apart."""
  out = {}
  for name in sweep.experiments:
    times = {"base": [], "model B": []}
    for seed in sweep.seeds:
      for run_name in ["base"] + [v.name for v in variants(sweep, name)]:
        path = os.path.join(
            root, name, f"seed{seed}", run_name, "wall_time.json"
        )
        if os.path.exists(path):
          with open(path) as f:
            times["base" if run_name == "base" else "model B"].append(
                json.load(f)["seconds"]
            )
    out[name] = {
        kind: {"runs": len(t), "seconds": float(np.sum(t))}
        for kind, t in times.items()
    }
  return out


def wall_time_markdown(times: dict) -> str:
  lines = [
      "Wall time of the runs (summed over runs, whichever worker ran them):\n",
      "| experiment | base runs (model A) | s | model-B runs | s | total s |",
      "|---|---|---|---|---|---|",
  ]
  for name, t in times.items():
    base, b = t["base"], t["model B"]
    lines.append(
        f"| {name} | {base['runs']} | {base['seconds']:,.0f} | {b['runs']} | "
        f"{b['seconds']:,.0f} | {base['seconds'] + b['seconds']:,.0f} |"
    )
  return "\n".join(lines) + "\n"


def plot_summary(name: str, rows: dict, path: str) -> str:
  """Clean and mean corrupted accuracy per setting, mean ± std over seeds, CE dashed."""
  return results_lib.plot_summary(
      path,
      list(rows),
      {
          f"{name}: {m.label}": [rows[label][m.label] for label in rows]
          for m in results_lib.PLOTTED_METRICS
      },
      baseline=CE,
      percent=True,
  )


def plot_severity(name: str, rows: dict, path: str) -> str:
  """Accuracy against corruption severity (0 = clean, on the corrupted images),
  mean ± std over seeds: cross-entropy and every non-shuffled soft-target setting.
  """
  from matplotlib.figure import Figure

  fig = Figure(figsize=(7, 4.5))
  ax = fig.subplots()
  for label, row in rows.items():
    by = row.get("accuracy by severity")
    if (
        not by
        or "log_sum" in label
        or label.endswith("shuffled")
        or None in by["0"]
    ):
      continue
    severities = sorted(by, key=int)
    means = np.array([100 * by[s][0] for s in severities])
    stds = np.array([100 * by[s][1] for s in severities])
    x = [int(s) for s in severities]
    style = (
        dict(color="black", linewidth=2.5)
        if label == CE
        else (
            dict(color="gray", linestyle="--")
            if label.startswith("label_smoothing")
            else {}
        )
    )
    (line,) = ax.plot(x, means, marker="o", label=label, **style)
    ax.fill_between(
        x, means - stds, means + stds, color=line.get_color(), alpha=0.12
    )
  ax.set_xlabel("corruption severity (0 = clean; mean over corruptions)")
  ax.set_ylabel("accuracy (%)")
  ax.set_title(f"{name}: accuracy under corruption (mean ± std over seeds)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.savefig(path, dpi=110, bbox_inches="tight")
  return path


def _paired_cell(d: dict) -> str:
  """'+0.52 [+0.10, +0.94] p=0.03 Holm 0.09 U95 +0.85' in points; ' ≡' marks
  equivalence within the margin (TOST), ' **' significance after Holm."""
  if d["ci"] is None:
    return f"{100 * d['mean']:+.2f} (n={d['n']})"
  mark = " **" if d["significant_holm"] else ""
  if d.get("equivalent"):
    mark += " ≡"
  upper = (
      "" if d.get("upper_95") is None else f" U95 {100 * d['upper_95']:+.2f}"
  )
  return (
      f"{100 * d['mean']:+.2f} [{100 * d['ci'][0]:+.2f}, {100 * d['ci'][1]:+.2f}] "
      f"p={d['p']:.3g} Holm {d['p_holm']:.3g}{upper}{mark}"
  )


def _comparison_tables(comparisons: dict, what: str, intro: str) -> list[str]:
  """One Markdown table per comparison: rows settings, columns `what` (metrics or families)."""
  parts = []
  for comparison, by_column in comparisons.items():
    settings = list(
        dict.fromkeys(s for table in by_column.values() for s in table)
    )
    if not settings:
      continue
    parts.append(f"\n{intro.format(comparison=comparison)}\n")
    cells = []
    for setting in settings:
      baseline = next(
          by_column[m][setting]["baseline"]
          for m in by_column
          if setting in by_column[m]
      )
      cells.append(
          [setting, baseline]
          + [
              _paired_cell(by_column[m][setting])
              if setting in by_column[m]
              else "n/a"
              for m in by_column
          ]
      )
    parts.append(
        results_lib.markdown_table(["setting", "baseline", *by_column], cells)
    )
  return parts


def to_markdown(summary: dict) -> str:
  """summary.md's tables: per experiment, mean ± std over seeds of each
  metric, accuracy per corruption and the paired comparisons."""
  parts = []
  for name, exp in summary.items():
    rows = exp["rows"]
    parts.append(f"### {name}\n")
    header = ["setting", "seeds", "off-target mass"] + [
        m.label for m in METRICS
    ]
    cells = []
    for label, row in rows.items():
      mass = row.get("off-target mass")
      cells.append(
          [
              label,
              str(row["seeds"]),
              "0" if mass is None else f"{mass[0]:.4f}",
          ]
          + [
              results_lib.format_mean_std(
                  *(row[m.label] or (None, None)), percent=m.percent
              )
              for m in METRICS
          ]
      )
    parts.append(results_lib.markdown_table(header, cells))
    corr = {
        label: row["accuracy by corruption"]
        for label, row in rows.items()
        if "accuracy by corruption" in row
    }
    if corr:
      names = list(next(iter(corr.values())))
      parts.append(
          "\nAccuracy (%) per corruption, mean over severities and seeds:\n"
      )
      parts.append(
          results_lib.markdown_table(
              ["setting", *names],
              (
                  [label] + [f"{100 * by[n][0]:.2f}" for n in names]
                  for label, by in corr.items()
              ),
          )
      )
    q_rows = {
        label: row for label, row in rows.items() if "Q row entropy" in row
    }
    if q_rows:
      uniform = next(iter(q_rows.values()))["Q row entropy, uniform"]
      parts.append(
          "\nWhere the off-target mass goes: Q's mean row entropy (nats; "
          f"uniform {uniform:.2f}) and mean largest entry, mean ± std over seeds:\n"
      )
      parts.append(
          results_lib.markdown_table(
              ["setting", "Q row entropy", "Q largest entry"],
              (
                  [
                      label,
                      results_lib.format_mean_std(*row["Q row entropy"]),
                      results_lib.format_mean_std(*row["Q largest entry"]),
                  ]
                  for label, row in q_rows.items()
              ),
          )
      )
    margins = exp.get("margins") or {}
    margin_text = (
        "; ≡ = equivalent within the margin fixed before the run ("
        + ", ".join(f"{k} ±{100 * v:g} points" for k, v in margins.items())
        + ", TOST at 0.05)"
        if margins
        else ""
    )
    parts += _comparison_tables(
        exp["comparisons"],
        "metric",
        "Paired difference {comparison} (setting - baseline within each seed), "
        "points: mean [95 % CI], paired t-test p, Holm-adjusted p over the settings, "
        "U95 = one-sided 95 % upper bound; ** = significant after Holm at 0.05"
        + margin_text
        + ":",
    )
    parts += _comparison_tables(
        exp.get("comparisons by corruption family", {}),
        "family",
        "Paired difference {comparison} per corruption family (mean accuracy "
        "over the family's corruptions and severities), points; Holm over the "
        "settings and families of this comparison:",
    )
    parts.append("")
  return "\n".join(parts) + "\n"


def check_flags(fv: flags.FlagValues = FLAGS) -> None:
  """--workers, --root and the runs already under the root, before anything is written."""
  if fv.workers < 1:
    raise errors.ConfigError(
        f"--workers={fv.workers} must be >= 1 (the processes or jobs at a time)"
    )
  check_root(fv.config, fv.root, summary_only=fv.summary_only)


def _field(tree: dict, dotted: str) -> Any:
  for key in dotted.split("."):
    if not isinstance(tree, dict) or key not in tree:
      return None
    tree = tree[key]
  return tree


def _same_file(a: Any, b: Any) -> bool:
  """Two paths to files with the same bytes (the same sweep config run from
  another checkout names its data files by another absolute path)."""
  if not (isinstance(a, str) and isinstance(b, str) and a and b):
    return False
  if not (os.path.isfile(a) and os.path.isfile(b)):
    return False
  with open(a, "rb") as f, open(b, "rb") as g:
    return f.read() == g.read()


def check_root(
    sweep: ml_collections.ConfigDict, root: str, *, summary_only: bool = False
) -> None:
  """The root is a directory (or can be made); the runs in it are this sweep's.

  Raises:
    ConfigError: an empty --root, or (summary_only) a root without one
      finished run of this config.
    OSFailure: the root is a file or lies under one, or is not writable.
    WorkdirError: runs whose config.json differs from this sweep's plan
      (naming the runs and the fields).
  """
  from simsoft import checkpoint as ckpt  # pylint: disable=g-import-not-at-top

  if not root:
    raise errors.ConfigError("--root is empty; give the sweep's directory")
  if os.path.lexists(root) and not os.path.isdir(root):
    raise errors.OSFailure(
        f"--root {root} exists and is not a directory; give a directory"
    )
  if not summary_only:
    ckpt.check_creatable(root, "--root")
  runs = plan(sweep, root)
  foreign = []
  for workdir, config in runs:
    saved = ckpt.read_json(os.path.join(workdir, "config.json"))
    if saved is None:
      continue
    current = json.loads(pod_sweep.as_run(config, workdir).to_json())
    diffs = [
        field
        for field in ckpt.config_differences(saved, current)
        if not _same_file(_field(saved, field), _field(current, field))
    ]
    if diffs:
      foreign.append(
          f"{os.path.relpath(workdir, root)} ("
          f"{ckpt.describe_differences(saved, current, diffs)})"
      )
  if foreign:
    raise errors.WorkdirError(
        f"--root {root} holds {len(foreign)} run(s) of another sweep config: "
        f"{'; '.join(foreign[:3])}{'; ...' if len(foreign) > 3 else ''}. Use a "
        "new --root, or the config those runs were made with"
    )
  if summary_only and not any(
      os.path.exists(os.path.join(w, "results.json")) for w, _ in runs
  ):
    others = sorted(
        glob.glob(
            os.path.join(glob.escape(root), "*", "seed*", "*", "results.json")
        )
    )
    hint = (
        f" (it holds {len(others)} finished run(s) of other experiments or "
        f"settings, e.g. {os.path.relpath(os.path.dirname(others[0]), root)})"
        if others
        else ""
    )
    raise errors.MissingInputError(
        f"--root {root} holds no finished run of this sweep config{hint}; "
        "nothing to summarize"
    )


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from simsoft import progress  # imports jax: keep --help fast

  progress.configure_logging(FLAGS)
  code = errors.guarded(_main_with_extras, argv)
  if code:
    sys.exit(code)


def _main_with_extras() -> None:
  try:
    _main()
  except ModuleNotFoundError as e:
    message = extras.missing_dependency_message(e)
    if message is None:
      raise
    raise errors.ConfigError(message) from None


def _main():
  pod = None
  if FLAGS.worker_index < 0:
    # The pods' settings are checked before anything is written.
    if FLAGS.executor == "tpu_pod":
      pod = pod_sweep.PodExecutor(
          FLAGS.root, FLAGS.workers, _executor_params(FLAGS.executor_params)
      )
      if FLAGS.summary_only:  # runs finished in the bucket, copied here first
        os.makedirs(FLAGS.root, exist_ok=True)
        pod.fetch_all(plan(FLAGS.config, FLAGS.root))
    check_flags(FLAGS)
  os.makedirs(FLAGS.root, exist_ok=True)
  if FLAGS.worker_index >= 0:
    run_all(FLAGS.config, FLAGS.root)
    return
  if not FLAGS.summary_only:
    if pod is not None:
      if run_with_executor(FLAGS.config, FLAGS.root, pod, FLAGS.workers):
        sys.exit(1)
    elif FLAGS.executor != "local":
      folder = os.path.join(FLAGS.root, ".submitit")
      executor = make_executor(
          FLAGS.executor, folder, _executor_params(FLAGS.executor_params)
      )
      if run_with_executor(FLAGS.config, FLAGS.root, executor, FLAGS.workers):
        sys.exit(1)
    elif FLAGS.workers > 1:
      code = start_workers(FLAGS.workers, FLAGS.root)
      if code:
        sys.exit(code)
    else:
      run_all(FLAGS.config, FLAGS.root)
  summarize(FLAGS.config, FLAGS.root)
  with open(os.path.join(FLAGS.root, "summary.md")) as f:
    print(f.read(), flush=True)


def run() -> None:
  """The `simsoft-sweep` console script (and `python -m simsoft.sweep`)."""
  define_flags()
  sys.argv = config_files.resolve_argv(sys.argv)
  app.run(main, flags_parser=cli_flags.exiting(parse_flags))


if __name__ == "__main__":
  run()
