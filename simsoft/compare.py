"""Merges runs into one table: mean and std over seeds, as Markdown, CSV and a figure.

    python -m simsoft.compare RUN_DIR [RUN_DIR ...] [--out DIR]

Each RUN_DIR holds results.json (``{'models': {'A': suite, 'B': suite}}``,
see :mod:`simsoft.report`) and optionally config.json with the run's config.
Runs are grouped by dataset.name, model.name, similarity.source, loss.form,
loss.alpha and the trained model (A or B), and by every other config field
whose value differs between the runs (loss.mass, similarity.shuffle, an
optimizer setting, ...), so only runs that differ in nothing but ``seed``
(and fields that do not change results, IGNORED_FIELDS) are pooled; the
command says which extra fields it grouped by. Missing fields show as ``-``. std is the sample standard deviation (ddof=1),
blank for a single seed. Writes DIR/comparison.md, comparison.csv and
comparison.png (DIR defaults to the current directory).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Mapping, Sequence

from simsoft import errors
from simsoft import results as results_lib

GROUP_FIELDS = (
    "dataset.name",
    "model.name",
    "similarity.source",
    "loss.form",
    "loss.alpha",
)
METRICS = results_lib.select(
    "clean_accuracy",
    "clean_nll",
    "clean_ece",
    "mean_corrupted_accuracy",
    "mistake_severity",
)
MISSING = "-"
# Fields that may differ between pooled runs: the seed, and those that change
# how a run goes but not what it measures (paths, checkpointing, input feeding).
IGNORED_FIELDS = (
    "seed",
    "phases",
    "log_every_steps",
    "eval_batch_size",
    "dataset.data_dir",
    "estimate.model_from",
    "similarity.from_workdir",
)
IGNORED_PREFIXES = ("checkpoint.", "input.", "train_eval.")


def _field(config: Mapping, dotted: str):
  """config['a']['b'] for 'a.b', or config['a.b'], or None."""
  if dotted in config:
    return config[dotted]
  node = config
  for part in dotted.split("."):
    if not isinstance(node, Mapping) or part not in node:
      return None
    node = node[part]
  return node


def _read_json(path: str, required: bool):
  if not os.path.exists(path):
    if required:
      raise FileNotFoundError(
          f"{path}: missing (each RUN_DIR needs a results.json)"
      )
    return None
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise errors.DamagedFileError(
        f"{path} is damaged: not valid JSON ({' '.join(str(e).split())[:120]})"
    ) from None
  if not isinstance(data, dict):
    raise errors.DamagedFileError(
        f"{path} is damaged: expected a JSON object, got {type(data).__name__}"
    )
  return data


def load_run(run_dir: str) -> list[dict]:
  """One record per trained model of a run: group fields, seed, metrics."""
  if not os.path.isdir(run_dir):
    raise errors.MissingInputError(
        f"RUN_DIR {run_dir} "
        f"{'is not a directory' if os.path.exists(run_dir) else 'does not exist'}"
        "; give a run's workdir (it holds results.json)"
    )
  results = _read_json(os.path.join(run_dir, "results.json"), required=True)
  config = _read_json(os.path.join(run_dir, "config.json"), required=False)
  if config is None:
    config = results.get("config") or {}
  models = results.get("models")
  if not isinstance(config, dict):
    raise errors.DamagedFileError(
        f"{run_dir}/results.json: 'config' must be an object, got "
        f"{type(config).__name__}"
    )
  if not isinstance(models, dict) or not models:
    raise errors.DamagedFileError(
        f"{run_dir}/results.json: no 'models' mapping"
    )
  bad = [
      m
      for m, suite in models.items()
      if not isinstance(suite, dict) or not isinstance(suite.get("clean"), dict)
  ]
  if bad:
    raise errors.DamagedFileError(
        f"{run_dir}/results.json: model {bad[0]!r} has no 'clean' metrics "
        "object; is this a simsoft results.json?"
    )
  records = []
  for model, suite in sorted(models.items()):
    # A run evaluated on pre-corrupted sets only (CIFAR-10-C) gives their mean
    # as its mean corrupted accuracy.
    summary = suite.get("summary") or suite.get("extra_summary") or {}
    suite = dict(suite, summary=summary)
    rec = {f: _field(config, f) for f in GROUP_FIELDS}
    rec.update(
        trained=model,
        seed=_field(config, "seed"),
        run_dir=run_dir,
        config=_flatten(config),
    )
    try:
      values = {m.key: m.get(suite) for m in METRICS}
    except (AttributeError, TypeError, KeyError, ValueError) as e:
      raise errors.DamagedFileError(
          f"{run_dir}/results.json: model {model!r}'s metrics are malformed "
          f"({type(e).__name__}: {str(e)[:80]})"
      ) from None
    for key, value in values.items():
      if value is not None and (
          isinstance(value, bool) or not isinstance(value, (int, float))
      ):
        raise errors.DamagedFileError(
            f"{run_dir}/results.json: model {model!r}'s {key} is {value!r:.40}, "
            "not a number"
        )
    rec.update(values)
    records.append(rec)
  return records


def _key_str(v) -> str:
  return MISSING if v is None else str(v)


def _flatten(tree: Mapping, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _ignored(field: str) -> bool:
  return field in IGNORED_FIELDS or field.startswith(IGNORED_PREFIXES)


def differing_fields(records: Sequence[Mapping]) -> list[str]:
  """Config fields beyond GROUP_FIELDS on which two runs that record them disagree."""
  values: dict[str, set] = {}
  for rec in records:
    for field, value in rec.get("config", {}).items():
      values.setdefault(field, set()).add(json.dumps(value, sort_keys=True))
  return sorted(
      f
      for f, v in values.items()
      if len(v) > 1 and f not in GROUP_FIELDS and not _ignored(f)
  )


def aggregate(
    records: Sequence[Mapping], extra_fields: Sequence[str] | None = None
) -> list[dict]:
  """Groups records by GROUP_FIELDS + `extra_fields` (default: differing_fields) + trained
  model; mean/std/n over seeds per metric."""
  extra = tuple(
      differing_fields(records) if extra_fields is None else extra_fields
  )
  fields = GROUP_FIELDS + extra
  groups: dict[tuple, list] = {}
  for rec in records:
    config = rec.get("config", {})
    key = tuple(_key_str(rec[f] if f in rec else config.get(f)) for f in fields)
    groups.setdefault(key + (rec["trained"],), []).append(rec)
  rows = []
  for key in sorted(groups):
    recs = groups[key]
    row = dict(zip(fields + ("trained",), key), extra_fields=extra)
    row["seeds"] = ",".join(sorted(_key_str(r["seed"]) for r in recs))
    row["n"] = len(recs)
    for m in METRICS:
      row[f"{m.key}_mean"], row[f"{m.key}_std"] = results_lib.mean_std(
          r[m.key] for r in recs
      )
    rows.append(row)
  return rows


def _extra(rows: Sequence[Mapping]) -> tuple:
  return tuple(rows[0]["extra_fields"]) if rows else ()


def to_markdown(rows: Sequence[Mapping]) -> str:
  extra = _extra(rows)
  header = [
      "dataset",
      "model",
      "similarity",
      "loss",
      "alpha",
      *extra,
      "trained",
      "seeds",
  ]
  header += [m.label for m in METRICS]
  cells = [
      [r[f] for f in GROUP_FIELDS + extra]
      + [r["trained"], f"{r['n']} ({r['seeds']})"]
      + [
          results_lib.format_mean_std(r[f"{m.key}_mean"], r[f"{m.key}_std"])
          for m in METRICS
      ]
      for r in rows
  ]
  return results_lib.markdown_table(header, cells) + "\n"


def write_csv(path: str, rows: Sequence[Mapping]) -> None:
  fields = list(GROUP_FIELDS + _extra(rows)) + ["trained", "n", "seeds"]
  fields += [f"{m.key}_{s}" for m in METRICS for s in ("mean", "std")]
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    for r in rows:
      w.writerow({k: ("" if r[k] is None else r[k]) for k in fields})


def _row_label(r: Mapping) -> str:
  parts = [r[f] for f in GROUP_FIELDS if r[f] != MISSING]
  parts += [f"{f}={r[f]}" for f in r.get("extra_fields", ()) if r[f] != MISSING]
  return f"{r['trained']}: " + " / ".join(parts)


def plot_summary(path: str, rows: Sequence[Mapping]) -> str:
  """Clean and mean corrupted accuracy per group: dots at the mean, whiskers ± std."""
  return results_lib.plot_summary(
      path,
      [_row_label(r) for r in rows],
      {
          m.label: [(r[f"{m.key}_mean"], r[f"{m.key}_std"]) for r in rows]
          for m in results_lib.PLOTTED_METRICS
      },
      models=[r["trained"] for r in rows],
      title="Runs grouped over seeds: mean ± std",
  )


def compare(run_dirs: Sequence[str], out_dir: str) -> dict[str, str]:
  """Loads, aggregates and writes the comparison; returns {'md', 'csv', 'png'} paths."""
  if not run_dirs:
    raise ValueError("compare needs at least one RUN_DIR")
  records = [rec for d in run_dirs for rec in load_run(d)]
  extra = differing_fields(records)
  if extra:
    print(
        f"runs differ in more than the seed: {', '.join(extra)}; grouped by "
        f"{'that field' if len(extra) == 1 else 'those fields'} too",
        flush=True,
    )
  rows = aggregate(records, extra)
  if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
    raise errors.OSFailure(
        f"--out {out_dir} exists and is not a directory; give a directory"
    )
  os.makedirs(out_dir, exist_ok=True)
  paths = {
      k: os.path.join(out_dir, f"comparison.{k}") for k in ("md", "csv", "png")
  }
  with open(paths["md"], "w") as f:
    f.write(to_markdown(rows))
  write_csv(paths["csv"], rows)
  plot_summary(paths["png"], rows)
  return paths


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m simsoft.compare", description=__doc__.split("\n")[0]
  )
  parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
  parser.add_argument(
      "--out", default=".", help="output directory (default: current directory)"
  )
  args = parser.parse_args(argv)

  def run() -> None:
    try:
      paths = compare(args.run_dirs, args.out)
    except errors.UserError:
      raise
    except (FileNotFoundError, ValueError) as e:  # a missing RUN_DIR file
      raise errors.MissingInputError(str(e)) from None
    with open(paths["md"]) as f:
      sys.stdout.write(f.read())
    print(f"wrote {paths['md']}, {paths['csv']}, {paths['png']}")

  code = errors.guarded(run, argv)
  return code if code in (0, errors.InterruptedRun.exit_code) else 2


if __name__ == "__main__":
  sys.exit(main())
