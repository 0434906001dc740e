"""A tiny sweep end to end: shared model A, resume by skipping, mean ± std summary."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from simsoft import sweep, sweep_runs
from tests.helpers import tiny_sweep as tiny_sweep_config
from tests.helpers.tiny import ROOT


def tiny_sweep():
  return tiny_sweep_config.get_config()


LS, CONF, SHUF = (
    "label_smoothing-soft_target-m0.2",
    "confusion-soft_target-m0.2",
    "confusion-soft_target-m0.2-shuffled",
)


def _b(tmp_path, seed, run, get):
  results = json.loads(
      (
          tmp_path / "digits_tiny" / f"seed{seed}" / run / "results.json"
      ).read_text()
  )
  return get(results)


def test_sweep_runs_resumes_and_summarizes(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  config = tiny_sweep()
  settings = sweep.variants(config)
  assert [s.name for s in settings] == [LS, CONF, SHUF]
  assert (
      settings[1].control == LS
      and settings[1].shuffled == SHUF
      and settings[2].shuffle
  )
  sweep.run_all(config, str(tmp_path))
  seed0 = tmp_path / "digits_tiny" / "seed0"
  assert (seed0 / "base" / "estimate" / "done.json").exists()
  assert not (seed0 / CONF / "estimate" / "checkpoints").exists()  # A shared
  saved = json.loads((seed0 / CONF / "config.json").read_text())
  assert saved["loss"]["amount"] == "mass" and saved["loss"]["mass"] == 0.2
  assert (
      saved["evaluate"]["evaluators"]["corruptions"]["severities"] == [2]
      and not saved["similarity"]["shuffle"]
  )
  assert json.loads((seed0 / SHUF / "config.json").read_text())["similarity"][
      "shuffle"
  ]

  # The target each run trained with: mass 0.2 for every class, whatever S is.
  for run in (LS, CONF, SHUF):
    target = _b(tmp_path, 0, run, lambda r: r["target"])
    np.testing.assert_allclose(target["off_target_mass"], 0.2, atol=1e-6)
    assert target["amount"] == {"mass": 0.2}
  # The shuffled control's S is the real run's S with classes permuted.
  s_real = np.load(seed0 / CONF / "estimate" / "similarity.npy")
  s_shuf = np.load(seed0 / SHUF / "estimate" / "similarity.npy")
  perm = _b(tmp_path, 0, SHUF, lambda r: r["target"]["shuffle_permutation"])
  assert sorted(perm) == list(range(10)) and all(
      p != i for i, p in enumerate(perm)
  )
  np.testing.assert_allclose(s_shuf, s_real[np.ix_(perm, perm)], rtol=1e-6)

  mtime = (seed0 / LS / "results.json").stat().st_mtime
  sweep.run_all(config, str(tmp_path))  # finished runs are skipped
  assert (seed0 / LS / "results.json").stat().st_mtime == mtime

  summary = sweep.summarize(config, str(tmp_path))["digits_tiny"]
  rows = summary["rows"]
  assert list(rows) == ["cross-entropy (A)", LS, CONF, SHUF]
  clean = lambda r: r["models"]["B"]["clean"]["accuracy"]
  accs = [_b(tmp_path, s, LS, clean) for s in (0, 1)]
  assert rows[LS]["seeds"] == 2
  np.testing.assert_allclose(
      rows[LS]["clean accuracy"],
      [np.mean(accs), np.std(accs, ddof=1)],
      rtol=1e-9,
  )
  np.testing.assert_allclose(
      rows[CONF]["off-target mass"], [0.2, 0.0], atol=1e-6
  )
  assert set(rows["cross-entropy (A)"]["accuracy by corruption"]) == {
      "contrast",
      "brightness",
      "pixelate",
  }
  # Every run directory's config carries its directory's seed.
  for path in (tmp_path / "digits_tiny").glob("seed*/*/config.json"):
    seed = int(path.parent.parent.name[len("seed") :])
    assert json.loads(path.read_text())["seed"] == seed, path
  # Mean corrupted accuracy: the mean of every cell of each run, then over seeds.
  cells = lambda r: [
      m["accuracy"]
      for by in r["models"]["B"]["corruptions"].values()
      for m in by.values()
  ]
  mca = []
  for s in (0, 1):
    all_cells = _b(tmp_path, s, CONF, cells)
    assert len(all_cells) == 3  # contrast, brightness, pixelate at severity 2
    assert _b(
        tmp_path,
        s,
        CONF,
        lambda r: r["models"]["B"]["summary"]["mean_corrupted_accuracy"],
    ) == pytest.approx(np.mean(all_cells))
    mca.append(np.mean(all_cells))
  np.testing.assert_allclose(
      rows[CONF]["mean corrupted accuracy"][0], np.mean(mca), rtol=1e-9
  )
  # Per-seed values are kept, so every test can be recomputed from the json.
  assert rows[LS]["per seed"]["clean accuracy"] == {"0": accs[0], "1": accs[1]}
  by_corr = lambda r: r["models"]["B"]["summary"]["accuracy_by_corruption"]
  assert rows[CONF]["per seed"]["accuracy by corruption"]["contrast"] == {
      s: _b(tmp_path, int(s), CONF, by_corr)["contrast"] for s in ("0", "1")
  }
  # Where Q puts the mass: row entropy from each seed's S, by numpy.
  entropies = []
  for s in (0, 1):
    S = np.load(
        tmp_path
        / "digits_tiny"
        / f"seed{s}"
        / CONF
        / "estimate"
        / "similarity.npy"
    )
    off = S.astype(np.float64) * (1 - np.eye(10))
    q = off / off.sum(1, keepdims=True)
    entropies.append(
        np.mean(
            -np.sum(np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0), 1)
        )
    )
  np.testing.assert_allclose(
      rows[CONF]["Q row entropy"][0], np.mean(entropies), rtol=1e-5
  )
  np.testing.assert_allclose(rows[LS]["Q row entropy"][0], np.log(9), rtol=1e-6)
  np.testing.assert_allclose(rows[LS]["Q largest entry"][0], 1 / 9, rtol=1e-6)

  # Paired comparisons: per-seed differences, t-interval, Holm over the settings.
  a_accs = [
      _b(tmp_path, s, LS, lambda r: r["models"]["A"]["clean"]["accuracy"])
      for s in (0, 1)
  ]
  vs_ce = summary["comparisons"]["vs cross-entropy"]["clean accuracy"]
  assert set(vs_ce) == {LS, CONF, SHUF}
  deltas = np.subtract(accs, a_accs)
  mean, half = np.mean(deltas), 12.706204736174705 * np.std(
      deltas, ddof=1
  ) / np.sqrt(2)
  np.testing.assert_allclose(vs_ce[LS]["mean"], mean, rtol=1e-9)
  np.testing.assert_allclose(
      vs_ce[LS]["ci"], [mean - half, mean + half], rtol=1e-9, atol=1e-12
  )
  assert (
      vs_ce[LS]["wins"] == int(np.sum(deltas > 0))
      and vs_ce[LS]["baseline"] == "cross-entropy (A)"
  )
  assert vs_ce[LS]["deltas"] == {"0": deltas[0], "1": deltas[1]}
  # One-sided 95 % bound, t_{0.95, 1} = 6.3138, and the TOST at margin 0.05.
  se = np.std(deltas, ddof=1) / np.sqrt(2)
  np.testing.assert_allclose(
      vs_ce[LS]["upper_95"], mean + 6.313751514675041 * se, rtol=1e-9
  )
  assert summary["margins"] == {"clean_accuracy": 0.05}
  if se > 0:
    p_tost = max(
        stats.t.sf((mean + 0.05) / se, 1), stats.t.cdf((mean - 0.05) / se, 1)
    )
    np.testing.assert_allclose(vs_ce[LS]["p_tost"], p_tost, rtol=1e-9)
    assert vs_ce[LS]["equivalent"] == (p_tost < 0.05)
  vs_ce_corr = summary["comparisons"]["vs cross-entropy"][
      "mean corrupted accuracy"
  ]
  assert vs_ce_corr[LS]["margin"] is None and vs_ce_corr[LS]["p_tost"] is None
  vs_ls = summary["comparisons"]["vs label smoothing, same mass"][
      "clean accuracy"
  ]
  assert set(vs_ls) == {CONF}  # the shuffled control is not itself compared
  conf = [_b(tmp_path, s, CONF, clean) for s in (0, 1)]
  np.testing.assert_allclose(
      vs_ls[CONF]["mean"], np.mean(np.subtract(conf, accs)), rtol=1e-9
  )
  vs_shuf = summary["comparisons"]["vs shuffled S"]["clean accuracy"]
  shuf = [_b(tmp_path, s, SHUF, clean) for s in (0, 1)]
  np.testing.assert_allclose(
      vs_shuf[CONF]["mean"], np.mean(np.subtract(conf, shuf)), rtol=1e-9
  )
  ps = [vs_ce[s]["p"] for s in (LS, CONF, SHUF)]
  if None not in ps:
    order = np.argsort(ps)
    expect = np.maximum.accumulate(
        [min(1, (3 - i) * ps[j]) for i, j in enumerate(order)]
    )
    np.testing.assert_allclose(
        [vs_ce[(LS, CONF, SHUF)[j]]["p_holm"] for j in order], expect
    )

  # Corruption families: only those whose every member was evaluated
  # (photometric = contrast + brightness; blur lacks two of its three).
  assert summary["corruption families"] == {
      "photometric": ["contrast", "brightness"]
  }
  fam = summary["comparisons by corruption family"]["vs shuffled S"]
  photometric = lambda r: np.mean(
      [by_corr(r)["contrast"], by_corr(r)["brightness"]]
  )
  expect = [
      _b(tmp_path, s, CONF, photometric) - _b(tmp_path, s, SHUF, photometric)
      for s in (0, 1)
  ]
  np.testing.assert_allclose(
      fam["photometric"][CONF]["mean"], np.mean(expect), rtol=1e-9
  )
  single = summary["comparisons by corruption"]["vs shuffled S"]
  assert set(single) == {"contrast", "brightness"}

  by_severity = rows[LS]["accuracy by severity"]
  assert by_severity["0"] == rows[LS]["clean accuracy, corrupted images"]
  assert set(by_severity) == {"0", "2"}
  for figure in ("summary_digits_tiny.png", "severity_digits_tiny.png"):
    with open(tmp_path / figure, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  times = sweep.wall_times(config, str(tmp_path))["digits_tiny"]
  assert times["base"]["runs"] == 2 and times["model B"]["runs"] == 6
  walls = [
      json.loads(p.read_text())["seconds"]
      for p in (tmp_path / "digits_tiny").glob("seed*/*/wall_time.json")
  ]
  assert times["base"]["seconds"] + times["model B"][
      "seconds"
  ] == pytest.approx(sum(walls))
  markdown = (tmp_path / "summary.md").read_text()
  assert "| digits_tiny | 2 |" in markdown
  assert f"| {LS} | 2 | 0.2000 |" in markdown and "pixelate" in markdown
  assert "vs shuffled S" in markdown


def test_a_run_another_worker_holds_is_left_to_it(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  config = tiny_sweep()
  config.seeds = (0,)
  held = str(tmp_path / "digits_tiny" / "seed0" / LS)
  lock = sweep_runs.claim(str(tmp_path), held)  # as another worker would
  assert lock is not None and sweep_runs.claim(str(tmp_path), held) is None
  sweep.run_all(config, str(tmp_path), poll_seconds=0.1)
  assert (tmp_path / "digits_tiny" / "seed0" / CONF / "results.json").exists()
  assert not os.path.exists(os.path.join(held, "results.json"))
  lock.close()  # the holder died: the kernel drops its flock
  sweep.run_all(config, str(tmp_path), poll_seconds=0.1)
  assert os.path.exists(os.path.join(held, "results.json"))


def _sweep_env():
  return dict(
      os.environ,
      XLA_FLAGS="",
      PYTHONPATH=os.pathsep.join(
          p for p in (ROOT, os.environ.get("PYTHONPATH")) if p
      ),
  )


def _sweep_cli(root, *flags):
  """`python -m simsoft.sweep` on the tiny sweep with seed 0 only."""
  return subprocess.run(
      [
          sys.executable,
          "-m",
          "simsoft.sweep",
          "--config",
          "tests/helpers/tiny_sweep.py",
          "--config.seeds=(0,)",
          "--root",
          str(root),
          *flags,
      ],
      cwd=ROOT,
      env=_sweep_env(),
      capture_output=True,
      text=True,
      timeout=900,
  )


def _tiny_sweep_seed0():
  config = tiny_sweep()
  config.seeds = (0,)
  return config


@pytest.fixture(scope="module")
def two_worker_pool(tmp_path_factory):
  """(root, completed process) of the seed-0 tiny sweep run by two local workers;
  shared by the tests of the pool and of submitit (which compares against it).
  """
  root = tmp_path_factory.mktemp("pool")
  return root, _sweep_cli(root, "--workers", "2")


def test_two_workers_share_the_runs(two_worker_pool):
  root, out = two_worker_pool
  assert out.returncode == 0, out.stdout + out.stderr
  config = _tiny_sweep_seed0()
  planned = sweep.plan(config, str(root))
  for workdir, run_config in planned:
    assert sweep_runs.finished(workdir, run_config.phases), workdir
  logs = [(root / f"worker{i}.log").read_text() for i in (0, 1)]
  started = [log.count("=== sweep run") for log in logs]
  assert sum(started) == len(planned) == 4 and min(started) > 0, started
  assert f"| {LS} | 1 |" in out.stdout


@pytest.mark.parametrize(
    "flags, needle",
    [
        (
            ["--config.experiments.digits_mlp.optimizer.lr=0.1"],
            "did you mean --config.experiments.digits_mlp.optimizer.learning_rate?",
        ),
        (["--config.seedz=(1,)"], "did you mean --config.seeds?"),
        (["--root="], "--root is required"),
    ],
)
def test_bad_flags_are_one_line(tmp_path, flags, needle):
  args = ["--config=configs/sweep.py:digits", f"--root={tmp_path}", *flags]
  if "--root=" in flags:
    args = [a for a in args if not a.startswith("--root")]
  out = subprocess.run(
      [sys.executable, "-m", "simsoft.sweep", *args, "--summary_only"],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=120,
  )
  lines = [line for line in out.stderr.splitlines() if line.strip()]
  assert out.returncode == 2 and len(lines) == 1, out.stderr
  assert lines[0].startswith("simsoft: error: ") and needle in lines[0], lines


def test_unknown_experiment_group_is_one_line():
  out = subprocess.run(
      [
          sys.executable,
          "-m",
          "simsoft.sweep",
          "--config=configs/sweep.py:digitz",
          "--root=/tmp/unused",
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
  assert "unknown experiment group 'digitz'" in out.stderr


def _same(a, b, where):
  """Equal structure and strings; numbers equal to rtol 1e-5."""
  if isinstance(a, dict):
    assert isinstance(b, dict) and a.keys() == b.keys(), where
    for k in a:
      _same(a[k], b[k], f"{where}.{k}")
  elif isinstance(a, list):
    assert isinstance(b, list) and len(a) == len(b), where
    for i, (x, y) in enumerate(zip(a, b)):
      _same(x, y, f"{where}[{i}]")
  elif (
      isinstance(a, (int, float)) and not isinstance(a, bool) and a is not None
  ):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=where)
  else:
    assert a == b, where


def test_a_sweep_through_submitit_local_matches_the_local_pool(
    tmp_path, two_worker_pool
):
  """--executor=submitit_local: one job per run, the same run directories,
  results and summary as local workers (one seed, to keep it short)."""
  pytest.importorskip("submitit")
  pool, pool_out = two_worker_pool
  assert pool_out.returncode == 0, pool_out.stderr[-3000:]
  jobs = tmp_path / "jobs"
  out = _sweep_cli(jobs, "--executor=submitit_local", "--workers=2")
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert len(list((jobs / ".submitit").glob("*_log.out"))) == 4  # a job per run
  config = _tiny_sweep_seed0()
  for workdir, run_config in sweep.plan(config, str(pool)):
    if run_config.phases == ("estimate",):
      continue
    rel = os.path.relpath(workdir, pool)
    a = json.loads((pool / rel / "results.json").read_text())["models"]
    b = json.loads((jobs / rel / "results.json").read_text())["models"]
    _same(a, b, rel)  # equal up to float32 noise between processes
  summary = lambda root: json.loads((root / "summary.json").read_text())
  _same(summary(pool), summary(jobs), "summary.json")
  # Resume: a second pass submits nothing.
  config_jobs = _tiny_sweep_seed0()

  class NoJobs:

    def submit(self, *args):
      raise AssertionError(f"resubmitted {args[1]}")

  assert sweep.run_with_executor(config_jobs, str(jobs), NoJobs()) == 0


def test_each_run_gets_its_directorys_seed(tmp_path):
  """plan(): every run (base and model B) carries the seed its directory names,
  and uses the base of the same seed."""
  config = tiny_sweep()
  config.seeds = (0, 1, 7)
  planned = sweep.plan(config, str(tmp_path))
  assert len(planned) == 3 * (1 + 3)
  seen = set()
  for workdir, run_config in planned:
    rel = os.path.relpath(workdir, tmp_path).split(os.sep)
    assert rel[0] == "digits_tiny" and rel[1].startswith("seed")
    seed = int(rel[1][len("seed") :])
    assert run_config.seed == seed, workdir
    if rel[2] != "base":
      assert run_config.estimate.model_from == str(
          tmp_path / "digits_tiny" / f"seed{seed}" / "base"
      )
    seen.add(seed)
  assert seen == {0, 1, 7}


def _fake_results(a, b):
  """A results.json with clean and mean corrupted accuracy for models A and B."""

  def model(acc):
    return {
        "clean": {"accuracy": acc},
        "summary": {"mean_corrupted_accuracy": acc - 0.1},
    }

  return {
      "models": {"A": model(a), "B": model(b)},
      "target": {"mean_off_target_mass": 0.2},
  }


def test_summary_pairs_settings_by_seed_when_a_run_is_missing(tmp_path):
  """Seeds 0, 1, 2 with the confusion run of seed 1 missing: its differences pair
  seed 0 with seed 0 and seed 2 with seed 2 (not by position)."""
  config = tiny_sweep()
  config.seeds = (0, 1, 2)
  a = {0: 0.50, 1: 0.60, 2: 0.75}
  b = {
      LS: {0: 0.52, 1: 0.66, 2: 0.74},
      CONF: {0: 0.55, 2: 0.71},  # seed 1 missing
      SHUF: {0: 0.51, 1: 0.64, 2: 0.79},
  }
  for setting, by_seed in b.items():
    for seed, acc in by_seed.items():
      run = tmp_path / "digits_tiny" / f"seed{seed}" / setting
      run.mkdir(parents=True)
      (run / "results.json").write_text(json.dumps(_fake_results(a[seed], acc)))
  summary = sweep.summarize(config, str(tmp_path))["digits_tiny"]
  rows = summary["rows"]
  assert rows[CONF]["seeds"] == 2 and rows[LS]["seeds"] == 3
  assert rows[CONF]["per seed"]["clean accuracy"] == {"0": 0.55, "2": 0.71}
  np.testing.assert_allclose(rows[CONF]["clean accuracy"][0], 0.63)
  comparisons = summary["comparisons"]
  for comparison, baseline in (
      ("vs cross-entropy", a),
      ("vs label smoothing, same mass", b[LS]),
      ("vs shuffled S", b[SHUF]),
  ):
    for metric, shift in (
        ("clean accuracy", 0.0),
        ("mean corrupted accuracy", 0.1),
    ):
      got = comparisons[comparison][metric][CONF]["deltas"]
      assert set(got) == {"0", "2"}, comparison
      for s in (0, 2):
        assert got[str(s)] == pytest.approx(
            (b[CONF][s] - shift) - (baseline[s] - shift)
        ), (comparison, metric, s)
  # Complete settings still pair all three seeds.
  ls = comparisons["vs cross-entropy"]["clean accuracy"][LS]["deltas"]
  assert ls == pytest.approx({str(s): b[LS][s] - a[s] for s in (0, 1, 2)})


def test_a_sweep_through_tpu_pods_matches_the_local_pool(
    tmp_path, two_worker_pool, monkeypatch, capsys, request
):
  """--executor=tpu_pod: each run is `tpu_pod.sh up` against the stub gcloud,
  whose worker checks that it was handed the pool's config of that run and
  replays the pool's finished run (tests/helpers/fake_pod_simsoft.py; no
  training). The base and label smoothing of seed 0 (the stub plays one slice
  at a time, so one after the other): a failed run is reported and the next
  pass runs only it; the records copied back hold the pool's results and
  summary rows."""
  from simsoft import pod_sweep
  from tests.test_launch import Pod

  pool, pool_out = two_worker_pool
  assert pool_out.returncode == 0, pool_out.stderr[-3000:]
  pod = Pod(tmp_path, python="fake_pod_simsoft.sh")
  request.addfinalizer(pod.stop_jobs)
  env = pod.env | {
      "ACCELERATOR_TYPE": "v4-8",  # one worker
      "FAKE_REAL_PYTHON": sys.executable,
      "PYTHON": sys.executable,
      "PYTHONPATH": ROOT,
      "XLA_FLAGS": "",  # as the pool's processes
      "FAKE_FAIL_RUN": LS,
      "FAKE_REPLAY_ROOT": str(pool),
  }
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  config = _tiny_sweep_seed0()
  config.sources, config.shuffled = (), False
  root = tmp_path / "pods"
  executor = pod_sweep.PodExecutor(str(root), slots=2)
  assert sweep.run_with_executor(config, str(root), executor, 2, 0.2) == 1
  err = capsys.readouterr().err
  assert (
      f"run {root}/digits_tiny/seed0/{LS} failed (job pods/digits_tiny/seed0/{LS})"
      in err
  )
  assert "tpu_pod.sh up exited 1" in err, err
  base = root / "digits_tiny" / "seed0" / "base"
  assert (base / "estimate" / "done.json").exists()
  assert json.loads((base / "pod.json").read_text())["workdir"] == (
      "gs://bucket/simsoft/pods/digits_tiny/seed0/base"
  )
  starts = lambda: [
      c for c in pod.calls() if "tpu_worker.sh start" in " ".join(c)
  ]
  assert len(starts()) == 2
  monkeypatch.delenv("FAKE_FAIL_RUN")
  assert sweep.run_with_executor(config, str(root), executor, 2, 0.2) == 0
  assert len(starts()) == 3 and f"seed0/{LS} " in " ".join(starts()[-1])
  # The copied config.json are the plan's as run on the pod (base in the bucket).
  sweep.check_root(config, str(root))
  saved = json.loads(
      (root / "digits_tiny/seed0" / LS / "config.json").read_text()
  )
  assert saved["estimate"]["model_from"] == (
      "gs://bucket/simsoft/pods/digits_tiny/seed0/base"
  )
  a = json.loads((pool / "digits_tiny/seed0" / LS / "results.json").read_text())
  b = json.loads((root / "digits_tiny/seed0" / LS / "results.json").read_text())
  _same(a["models"], b["models"], LS)
  sweep.summarize(config, str(root))
  rows = lambda d: json.loads((d / "summary.json").read_text())["digits_tiny"][
      "rows"
  ]
  assert list(rows(root)) == ["cross-entropy (A)", LS]
  for label, row in rows(root).items():
    _same(rows(pool)[label], row, label)
  # Each up deleted the slice it created.
  assert json.loads((pod.state / "state.json").read_text())["qrs"] == {}
  # --summary_only elsewhere: the runs finished in the bucket are copied first.
  other = tmp_path / "elsewhere" / "pods"
  runs = sweep.plan(config, str(other))
  assert pod_sweep.PodExecutor(str(other), 1).fetch_all(runs) == 2
  sweep.check_root(config, str(other), summary_only=True)
  sweep.summarize(config, str(other))
  _same(rows(root), rows(other), "summary elsewhere")


def test_tpu_pod_settings_are_checked_before_anything_is_written(tmp_path):
  from simsoft import errors, pod_sweep

  env = {
      "TPU_NAME": "s",
      "ZONE": "z",
      "ACCELERATOR_TYPE": "v4-8",
      "BUCKET": "gs://b",
  }
  assert pod_sweep.settings({}, env)["BUCKET"] == "gs://b"
  for params, environ, needle in [
      ({}, {**env, "ZONE": ""}, "set ZONE"),
      ({}, {**env, "BUCKET": "/tmp/b"}, "BUCKET='/tmp/b' must be a gs:// URL"),
      ({"slices": 2}, env, "--executor_params=slices: not a parameter"),
  ]:
    with pytest.raises(errors.ConfigError, match=re.escape(needle)):
      pod_sweep.settings(params, environ)
  assert list(tmp_path.iterdir()) == []
  # A base in the bucket; a local file a field names, as tpu_pod.sh stages it.
  config = _tiny_sweep_seed0()
  root = str(tmp_path / "sw")
  workdir, run = sweep.plan(config, root)[1]
  assert pod_sweep.run_name(workdir, root) == f"sw/digits_tiny/seed0/{LS}"
  run.hierarchy_path = "/somewhere/tree.json"
  remote = pod_sweep.remote_root(root, "gs://b")
  assert remote == "gs://b/simsoft/sw"
  assert pod_sweep.pod_fields(run, root, remote, "gs://b") == {
      "dataset.data_dir": "gs://b/tensorflow_datasets",
      "estimate.model_from": "gs://b/simsoft/sw/digits_tiny/seed0/base",
      "hierarchy_path": "inputs/hierarchy_path/tree.json",
  }
