"""Bad inputs end in one line, `simsoft: error: ...`, a non-zero exit, and an untouched workdir.

Most commands run in this process (simsoft.main.cli, fresh flags each time);
a subprocess is used only where the real process matters: the real stderr,
two concurrent runs on one workdir, Ctrl-C. Every refused command must leave
the workdir byte-identical (hashes before and after).
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simsoft import checkpoint as ckpt
from simsoft import compare, losses, main
from tests.helpers.tiny import ROOT

TINY = [
    f"--config={ROOT}/configs/default.py:epochs=1",
    "--config.model.mlp.hidden=(16,)",
    "--config.evaluate.evaluators={'clean': {'type': 'clean'}}",
    "--config.checkpoint.every_steps=5",
]


def argv(workdir, *extra, config=None):
  """The command line of a tiny run; `config` replaces the --config value's text after ':'.

  An `extra` flag replaces TINY's flag of the same field, or of a section
  holding it (TINY's evaluators lack the corruptions an extra flag may set;
  a tuple field's repeated flags would add up).
  """
  head = (
      TINY
      if config is None
      else [f"--config={ROOT}/configs/default.py:{config}"] + TINY[1:]
  )
  fields = [e.split("=", 1)[0] + "." for e in extra]
  head = [
      h
      for h in head
      if not (
          h.startswith("--config.")
          and any(f.startswith(h.split("=", 1)[0] + ".") for f in fields)
      )
  ]
  return ["simsoft.main", *head, f"--workdir={workdir}", *extra]


def snapshot(workdir) -> dict:
  """{relative path: sha256} of every file under workdir ({} if it does not exist)."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, workdir)] = hashlib.sha256(
            f.read()
        ).hexdigest()
  return out


# An absl INFO line (simsoft's progress): I<mmdd> <time> <thread> <file:line>] ...
_PROGRESS_LINE = re.compile(r"^I\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")


def one_error_line(err: str) -> str:
  """The one error line of stderr, besides progress lines logged before it."""
  lines = [
      line
      for line in err.splitlines()
      if line.strip() and not _PROGRESS_LINE.match(line)
  ]
  assert "Traceback" not in err, err
  assert len(lines) == 1 and lines[0].startswith("simsoft: error: "), err
  return lines[0]


def refused(capsys, args, workdir, *needles, code=None):
  """Runs main.cli(args); checks the exit code, one error line naming `needles`, no change."""
  existed, before = os.path.exists(workdir), snapshot(workdir)
  capsys.readouterr()
  rc = main.cli(args)
  line = one_error_line(capsys.readouterr().err)
  assert rc != 0 and (code is None or rc == code), (rc, line)
  for needle in needles:
    assert needle in line, (needle, line)
  assert (
      os.path.exists(workdir) == existed and snapshot(workdir) == before
  ), line
  return line


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished tiny run (checkpoints every 5 steps: 15 and 17 kept per phase)."""
  workdir = str(tmp_path_factory.mktemp("finished") / "run")
  assert main.cli(argv(workdir)) == 0
  return workdir


def copy_of(src, tmp_path, name="copy", drop=()):
  dst = str(tmp_path / name)
  shutil.copytree(src, dst)
  for rel in drop:
    path = os.path.join(dst, rel)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
  return dst


def half_finished(finished, tmp_path):
  """The finished run as it was after its estimate phase."""
  return copy_of(
      finished,
      tmp_path,
      "half",
      drop=(
          "retrain",
          "results.json",
          "report.md",
          "similarity.png",
          "reliability.png",
      ),
  )


# ----------------------------------------------------------------------------
# Fresh workdir: every value's range, checked before anything is written.
# ----------------------------------------------------------------------------

FRESH = [
    # (extra flags, text after the colon or None, what the line must name, exit code)
    ([], "epochs=1,alpha=1.5", "loss.alpha=1.5", 2),
    ([], "epochs=1,alpha=-0.5", "loss.alpha=-0.5", 2),
    ([], "epochs=1,alpha=nan", "loss.alpha=nan", 2),
    ([], "epochs=1,mass=1.5", "loss.mass=1.5", 2),
    ([], "epochs=0", "estimate.epochs=0", 2),
    ([], "epochs=-1", "estimate.epochs=-1", 2),
    ([], "epochs=1,lr=0", "learning_rate=0", 2),
    ([], "epochs=1,lr=-0.1", "learning_rate=-0.1", 2),
    (["--config.optimizer.learning_rate=inf"], None, "learning_rate=inf", 2),
    ([], "epochs=1,batch_size=100000", "training split", 2),
    ([], "epochs=1,batch_size=30", "multiple of the 4 devices", 2),
    ([], "epochs=1,batch_size=0", "batch_size=0", 2),
    (["--config.phases="], None, "config.phases=('',) is empty", 2),
    (
        ["--config.phases=retrain,evaluate"],
        None,
        "unknown phase 'retrain,evaluate'",
        2,
    ),
    ([], "epochs=1,phases=estimate,train", "unknown phase 'train'", 2),
    ([], "epochs=1,phases=estimate,estimate", "repeats a phase", 2),
    (
        ["--config.evaluate.evaluators.corruptions.severities=0,6"],
        None,
        "config.evaluate.evaluators.corruptions.severities=(0, 6) holds 0",
        2,
    ),
    (
        ["--config.evaluate.evaluators.corruptions.severities=()"],
        None,
        "severities=() is empty",
        2,
    ),
    (
        ["--config.evaluate.evaluators={'clean': {}, 'v': {'type': 'vibes'}}"],
        None,
        "unknown evaluator type 'vibes'",
        2,
    ),
    (
        ["--config.evaluate.evaluators={'corruptions': {}}"],
        None,
        "must include 'clean'",
        2,
    ),
    (
        ["--config.evaluate.evaluators.corruptions.corruptions=snowstorm"],
        None,
        "unknown corruption 'snowstorm'",
        2,
    ),
    (
        [
            "--config.evaluate.evaluators={'clean': {}, 'cifar10_c': "
            "{'corruptions': ('fogg',)}}"
        ],
        None,
        "CIFAR-10-C corruption 'fogg'",
        2,
    ),
    (
        ["--config.evaluate.evaluators.corruptions.examples=-1"],
        None,
        "config.evaluate.evaluators.corruptions.examples=-1",
        2,
    ),
    (
        ["--config.evaluate.severities=1,3,5"],
        None,
        "did you mean --config.evaluate.evaluators.corruptions.severities?",
        2,
    ),
    (["--config.model.name=resnet7"], None, "unknown model 'resnet7'", 2),
    ([], "epochs=1,dataset=imagenet9", "unknown dataset 'imagenet9'", 2),
    (
        [],
        "epochs=1,similarity=psychic",
        "unknown similarity source 'psychic'",
        2,
    ),
    ([], "epochs=1,form=hinge", "unknown loss form 'hinge'", 2),
    (["--config.loss.amount=lots"], None, "unknown loss amount 'lots'", 2),
    ([], "epochs=1,dtype=float16", "unknown dtype 'float16'", 2),
    (["--config.optimizer.name=adam"], None, "unknown optimizer 'adam'", 2),
    (
        ["--config.optimizer.schedule=linear"],
        None,
        "unknown schedule 'linear'",
        2,
    ),
    (["--config.optimizer.momentum=1.5"], None, "optimizer.momentum=1.5", 2),
    (["--config.optimizer.weight_decay=-1"], None, "weight_decay=-1", 2),
    (["--config.optimizer.grad_clip_norm=-1"], None, "grad_clip_norm=-1", 2),
    (
        ["--config.input.pipeline=tape"],
        None,
        "unknown input pipeline 'tape'",
        2,
    ),
    (["--config.input.steps_per_dispatch=0"], None, "steps_per_dispatch=0", 2),
    (
        ["--config.checkpoint.every_steps=0"],
        None,
        "checkpoint.every_steps=0",
        2,
    ),
    (["--config.checkpoint.keep=0"], None, "checkpoint.keep=0", 2),
    (["--config.log_every_steps=0"], None, "log_every_steps=0", 2),
    (["--config.eval_batch_size=0"], None, "eval_batch_size=0", 2),
    ([], "epochs=1,seed=-1", "seed=-1", 2),
    (
        ["--config.dataset.validation_fraction=1.0"],
        None,
        "validation_fraction=1.0",
        2,
    ),
    (["--config.dataset.train_examples=-5"], None, "train_examples=-5", 2),
    (
        ["--config.similarity.options.identity_mix=2.0"],
        None,
        "identity_mix=2.0",
        2,
    ),
    (
        ["--config.similarity.options.temperature=-1.0"],
        None,
        "temperature=-1.0",
        2,
    ),
    (
        ["--config.similarity.options.diagonal=maybe"],
        None,
        "unknown diagonal option 'maybe'",
        2,
    ),
    (
        ["--config.similarity.options.top_k=11"],
        None,
        "top_k=11 exceeds the 10 classes",
        2,
    ),
    (
        ["--config.similarity.confusion.smoothing=-1.0"],
        None,
        "confusion.smoothing=-1.0",
        2,
    ),
    (
        ["--config.similarity.online.initial_smoothing=1.5"],
        None,
        "initial_smoothing=1.5",
        2,
    ),
    ([], "epochs=1,similarity=file", "similarity.path='' is empty", 2),
    (
        ["--config.similarity.path=/nonexistent/s.npy"],
        None,
        "/nonexistent/s.npy",
        2,
    ),
    (
        ["--config.similarity.from_workdir=/nonexistent/run"],
        None,
        "from_workdir='/nonexistent/run'",
        2,
    ),
    (
        ["--config.estimate.model_from=/nonexistent/run"],
        None,
        "model_from='/nonexistent/run'",
        2,
    ),
    (
        ["--config.evaluate.reference_similarity_path=/nonexistent/r.npy"],
        None,
        "/nonexistent/r.npy",
        2,
    ),
    (
        ["--config.model.mlp.hidden=(0,)"],
        None,
        "config.model.mlp={'hidden': (0,)} do not fit model 'mlp'",
        2,
    ),
    (
        ["--config.model.kwargs.hidden=(8,)"],
        None,
        "did you mean --config.model.mlp.hidden?",
        2,
    ),
    (
        [],
        "epochs=1,phases=retrain,evaluate",
        "evaluate needs the finished 'estimate' phase",
        2,
    ),
    ([], "epochs=1,phases=retrain", "run the 'estimate' phase first", 2),
    (
        [],
        "epochs=1,phases=evaluate",
        "evaluate needs the finished 'estimate' phase",
        2,
    ),
    (
        ["--config.model.wrn.widht=3"],
        None,
        "no field 'model.wrn.widht'; did you mean --config.model.wrn.width?",
        2,
    ),
    # Command line and config loading.
    ([], "epochs=1,alfa=0.3", "unknown config argument 'alfa'", 2),
    (
        [],
        "epochs=1,loss.alpha=0.3",
        "use --config.loss.alpha=0.3",
        2,
    ),
    ([], "epochs=x", "config.estimate.epochs='x' is not an integer", 2),
    (
        ["--config.optimizer.lr=3"],
        None,
        "did you mean --config.optimizer.learning_rate?",
        2,
    ),
    (
        ["--config.optimiser.momentum=0.8"],
        None,
        "did you mean --config.optimizer.momentum?",
        2,
    ),
    (["--config.batch_size=abc"], None, "--config.batch_size=abc", 2),
    (["--workdri=x"], None, "unknown flag --workdri", 2),
    (["stray"], None, "unexpected arguments ['stray']", 2),
]


@pytest.mark.parametrize(
    "extra,config,needle,code",
    FRESH,
    ids=[f"{i}-{n[:30]}" for i, (_, _, n, _) in enumerate(FRESH)],
)
def test_fresh_workdir_refusals(capsys, tmp_path, extra, config, needle, code):
  workdir = str(tmp_path / "run")
  refused(
      capsys, argv(workdir, *extra, config=config), workdir, needle, code=code
  )


def test_file_source_with_a_wrong_shape(capsys, tmp_path):
  path = tmp_path / "s.npy"
  np.save(path, np.eye(7, dtype=np.float32))
  workdir = str(tmp_path / "run")
  refused(
      capsys,
      argv(
          workdir,
          f"--config.similarity.path={path}",
          config="epochs=1,similarity=file",
      ),
      workdir,
      "config.similarity.path",
      "s.npy",
      code=2,
  )


def test_config_loading_refusals(capsys, tmp_path):
  workdir = str(tmp_path / "run")
  broken = tmp_path / "broken.py"
  broken.write_text("def get_config(:\n")
  raises = tmp_path / "raises.py"
  raises.write_text("def get_config(arg=None):\n  return undefined_name\n")
  for args, needle in [
      (
          ["x", "--config=configs/nope.py", f"--workdir={workdir}"],
          "cannot load the config file",
      ),
      (["x", f"--config={broken}", f"--workdir={workdir}"], "broken.py"),
      (["x", f"--config={raises}", f"--workdir={workdir}"], "NameError"),
      (["x", f"--config={ROOT}/configs/default.py"], "--workdir is required"),
      (["x", f"--workdir={workdir}"], "--config is required"),
  ]:
    refused(capsys, args, workdir, needle, code=2)
  not_a_dir = tmp_path / "file"
  not_a_dir.write_text("x")
  refused(
      capsys,
      argv(str(not_a_dir)),
      str(tmp_path),
      "is a file, not a directory",
      code=2,
  )


def test_nan_loss_names_the_cause_and_the_checkpoint(capsys, tmp_path):
  workdir = str(tmp_path / "run")
  rc = main.cli(
      argv(
          workdir,
          "--config.optimizer.warmup_epochs=0.0",
          config="epochs=1,lr=1e12,phases=estimate",
      )
  )
  line = one_error_line(capsys.readouterr().err)
  assert rc == 5
  assert (
      "training loss of model A (cross-entropy) became NaN or inf at step"
      in line
  )
  assert "learning_rate=1000000000000.0 is very large" in line
  assert (
      "no checkpoint was saved before it" in line
      or "last good checkpoint, step" in line
  )
  assert not os.path.exists(os.path.join(workdir, ".lock"))  # released


# ----------------------------------------------------------------------------
# Half-finished and finished workdirs: provenance, damaged files, the lock.
# ----------------------------------------------------------------------------


def test_half_finished_workdir_refusals(capsys, tmp_path, finished):
  half = half_finished(finished, tmp_path)
  refused(
      capsys,
      argv(half, config="epochs=1,seed=1"),
      half,
      "another run's config",
      "seed",
      code=2,
  )
  os.remove(os.path.join(half, "config.json"))
  refused(
      capsys,
      argv(half, config="epochs=1,seed=1"),
      half,
      "estimate/done.json",
      "seed (saved 0, now 1)",
  )
  refused(
      capsys,
      argv(half, config="epochs=1,similarity=softmax"),
      half,
      "similarity.source",
  )
  refused(
      capsys,
      argv(half, config="epochs=2"),
      half,
      "estimate.epochs (saved 1, now 2)",
  )
  with open(os.path.join(half, "estimate", "done.json"), "w") as f:
    f.write("{not json")
  refused(capsys, argv(half), half, "estimate/done.json is damaged", code=4)
  with open(os.path.join(half, "config.json"), "wb") as f:
    f.write(os.urandom(64))
  refused(capsys, argv(half), half, "config.json is damaged", code=4)


def test_finished_workdir_refusals(capsys, tmp_path, finished):
  run = copy_of(finished, tmp_path, "run", drop=("config.json",))
  # The mislabelling: no config.json, another alpha -> refused, nothing rewritten.
  refused(
      capsys,
      argv(run, config="epochs=1,alpha=0.3"),
      run,
      "retrain/done.json",
      "loss.alpha (saved 0.5, now 0.3)",
      code=2,
  )
  refused(
      capsys,
      argv(run, config="epochs=1,mass=0.2"),
      run,
      "loss.amount",
      "loss.mass",
  )
  refused(
      capsys,
      argv(run, "--config.evaluate.evaluators.corruptions.severities=1"),
      run,
      "results.json",
      "evaluate.evaluators.corruptions",
  )
  refused(
      capsys,
      argv(run, "--config.optimizer.momentum=0.8"),
      run,
      "optimizer.momentum",
  )
  with open(os.path.join(run, "retrain", "provenance.json"), "w") as f:
    f.write("[1, 2]")
  refused(capsys, argv(run), run, "retrain/provenance.json is damaged", code=4)


def test_damaged_checkpoints(capsys, tmp_path, finished):
  # Every kept checkpoint of a phase damaged: one line naming phase, step and path.
  # (Each copy asks for its evaluation again, which restores the models.)
  run = copy_of(finished, tmp_path, "all_damaged")
  os.remove(os.path.join(run, "evaluate", "done.json"))
  for step in ("15", "17"):
    for root, _, files in os.walk(
        os.path.join(run, "retrain", "checkpoints", step)
    ):
      for name in files:
        with open(os.path.join(root, name), "wb") as f:
          f.write(os.urandom(40))
  line = refused(
      capsys,
      argv(run),
      run,
      "phase 'retrain': checkpoint step 17",
      "retrain/checkpoints/17",
      "the older ones (15) are damaged too",
      code=4,
  )
  assert "Delete" in line

  # Only the latest damaged: fall back to step 15 with a warning, redo 2 steps, same results.
  run = copy_of(finished, tmp_path, "latest_damaged")
  os.remove(os.path.join(run, "evaluate", "done.json"))
  for root, _, files in os.walk(
      os.path.join(run, "retrain", "checkpoints", "17")
  ):
    for name in files:
      with open(os.path.join(root, name), "r+b") as f:
        f.truncate(10)
  capsys.readouterr()
  assert main.cli(argv(run)) == 0
  err = capsys.readouterr().err
  assert (
      "simsoft: warning: phase 'retrain': checkpoint step 17" in err
      and "step 15" in err
  )
  assert "Traceback" not in err
  assert os.path.isdir(
      os.path.join(run, "retrain", "damaged_checkpoints", "17")
  )
  got = json.load(open(os.path.join(run, "results.json")))["models"]["B"][
      "clean"
  ]
  want = json.load(open(os.path.join(finished, "results.json")))["models"]["B"][
      "clean"
  ]
  assert got["accuracy"] == want["accuracy"]
  assert got["nll"] == pytest.approx(want["nll"], rel=1e-5)


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(
    capsys, tmp_path, finished
):
  run = copy_of(finished, tmp_path, "locked")
  holder = ckpt.WorkdirLock(
      run
  ).acquire()  # another open file: conflicts like another process
  try:
    line = refused(
        capsys,
        argv(run),
        run,
        f"is in use by pid {os.getpid()} on host",
        code=3,
    )
    assert ".lock" in line
  finally:
    holder.release()
  assert not os.path.exists(os.path.join(run, ".lock"))
  with open(os.path.join(run, ".lock"), "w") as f:  # left by a killed run
    json.dump({"host": "h", "pid": 999999, "since": "then"}, f)
  capsys.readouterr()
  assert main.cli(argv(run, "--config.phases=evaluate")) == 0
  err = capsys.readouterr().err
  assert "simsoft: warning: took over the lock of pid 999999 on host h" in err
  assert not os.path.exists(os.path.join(run, ".lock"))


# ----------------------------------------------------------------------------
# Real processes: the real stderr, two runs on one workdir, Ctrl-C.
# ----------------------------------------------------------------------------


def _popen(workdir, *extra, config=None):
  return subprocess.Popen(
      [sys.executable, "-m", *argv(workdir, *extra, config=config)],
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )


def test_real_process_stderr_is_one_line(tmp_path):
  """Nothing else on the real stderr (no TF start-up lines), before and after loading data."""
  for config, needle in [
      ("epochs=1,batch_size=100000", "training split")
  ]:  # after TF loaded
    workdir = tmp_path / config
    proc = _popen(workdir, config=config)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and needle in one_error_line(err)
    assert not workdir.exists()


def test_two_runs_on_one_workdir(tmp_path):
  workdir = tmp_path / "shared"
  procs = [_popen(workdir, config="epochs=1,phases=estimate") for _ in range(2)]
  outs = [p.communicate(timeout=240) for p in procs]
  codes = sorted(p.returncode for p in procs)
  assert codes == [0, 3], outs
  loser = outs[[p.returncode for p in procs].index(3)][1]
  assert f"workdir {workdir} is in use by pid" in one_error_line(loser)
  assert (workdir / "estimate" / "done.json").exists() and not (
      workdir / ".lock"
  ).exists()


def test_ctrl_c_says_where_it_stopped(tmp_path):
  workdir = tmp_path / "run"
  proc = _popen(workdir, config="epochs=3")
  start = time.time()
  while not (workdir / "estimate" / "checkpoints" / "10").exists():
    assert proc.poll() is None and time.time() - start < 120
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  line = one_error_line(err)
  assert proc.returncode == 130
  assert "interrupted (Ctrl-C) in phase 'estimate' at step" in line
  assert "run the same command to resume" in line
  assert not (workdir / ".lock").exists()


# ----------------------------------------------------------------------------
# The losses API: eager checks of concrete arguments, NaN for a bad label under jit.
# ----------------------------------------------------------------------------

S = jnp.eye(3) + 0.5
LOGITS = jnp.zeros((2, 3))
LOSS_FNS = {
    "cross_entropy": lambda y, **kw: losses.similarity_cross_entropy(
        LOGITS, y, S, **kw
    ),
    "log_loss": lambda y, **kw: losses.similarity_log_loss(LOGITS, y, S),
    "targets": lambda y, **kw: losses.similarity_targets(y, S, **kw),
}


@pytest.mark.parametrize("fn", sorted(LOSS_FNS))
@pytest.mark.parametrize("label", [3, -1])
def test_losses_refuse_concrete_labels_out_of_range(fn, label):
  with pytest.raises(
      ValueError,
      match=rf"`labels` must be class indices in \[0, 3\), got {label}",
  ):
    LOSS_FNS[fn](jnp.array([0, label]), alpha=0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": 1.5},
        {"alpha": float("nan")},
        {"alpha": -0.1},
        {"mass": 2.0},
        {"mass": float("inf")},
    ],
)
def test_losses_refuse_amounts_out_of_range(kwargs):
  name = next(iter(kwargs))
  with pytest.raises(
      ValueError, match=rf"`{name}` must be a finite scalar in \[0, 1\]"
  ):
    losses.similarity_cross_entropy(LOGITS, jnp.array([0, 1]), S, **kwargs)


@pytest.mark.parametrize("fn", sorted(LOSS_FNS))
def test_losses_give_nan_for_a_bad_label_under_jit(fn):
  out = np.asarray(
      jax.jit(lambda y: LOSS_FNS[fn](y, alpha=0.5))(jnp.array([1, 3]))
  )
  assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1]))


def test_masked_bad_label_gets_zero_and_no_nan_gradient():
  y, where = jnp.array([1, -1]), jnp.array([True, False])
  loss = losses.similarity_cross_entropy(LOGITS, y, S, alpha=0.5, where=where)
  assert float(loss[1]) == 0.0
  grad = jax.jit(
      jax.grad(
          lambda x: losses.similarity_cross_entropy(
              x, y, S, alpha=0.5, where=where
          ).sum()
      )
  )(LOGITS)
  assert np.all(np.isfinite(np.asarray(grad)))


# ----------------------------------------------------------------------------
# simsoft.compare: no pooling across configs that differ in more than the seed.
# ----------------------------------------------------------------------------


def _fake_run(root, name, *, mass, seed, acc):
  d = root / name
  d.mkdir()
  suite = {"clean": {"accuracy": acc, "nll": 0.1, "ece": 0.1}, "summary": {}}
  config = {
      "dataset": {"name": "digits"},
      "model": {"name": "mlp"},
      "seed": seed,
      "similarity": {"source": "confusion"},
      "loss": {
          "form": "soft_target",
          "amount": "mass",
          "alpha": 0.5,
          "mass": mass,
      },
      "checkpoint": {"every_steps": seed + 1},
  }
  (d / "results.json").write_text(
      json.dumps({"config": config, "models": {"B": suite}})
  )
  return str(d)


def test_compare_groups_by_the_fields_that_differ(tmp_path, capsys):
  runs = [
      _fake_run(tmp_path, f"r{i}", mass=m, seed=s, acc=a)
      for i, (m, s, a) in enumerate(
          [(0.1, 0, 0.9), (0.1, 1, 0.8), (0.3, 0, 0.5)]
      )
  ]
  assert compare.main([*runs, "--out", str(tmp_path / "out")]) == 0
  out = capsys.readouterr().out
  assert (
      "runs differ in more than the seed: loss.mass" in out
  )  # not checkpoint.every_steps
  assert "| 0.1 | B | 2 (0,1) |" in out and "| 0.3 | B | 1 (0) |" in out
  assert (
      compare.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
      == 2
  )
  assert "results.json" in one_error_line(capsys.readouterr().err)


# ----------------------------------------------------------------------------
# The README's promises.
# ----------------------------------------------------------------------------


def test_readme_phases_after_the_colon_and_its_error_example(capsys, tmp_path):
  from simsoft import config as config_lib

  readme = open(os.path.join(ROOT, "README.md")).read()
  assert "`:phases=retrain,evaluate,seed=1`" in readme
  assert config_lib.parse_arg("phases=retrain,evaluate,seed=1") == {
      "phases": "retrain,evaluate",
      "seed": "1",
  }
  assert config_lib.parse_arg("evaluators=clean,corruptions") == {
      "evaluators": "clean"
  } | {
      "corruptions": "True"
  }  # a bare name continues list fields only
  example = next(
      line.strip()
      for line in readme.splitlines()
      if line.strip().startswith("simsoft: error: config.loss.alpha=1.5")
  )
  workdir = str(tmp_path / "run")
  assert (
      refused(capsys, argv(workdir, config="epochs=1,alpha=1.5"), workdir)
      == example
  )


def test_hierarchy_of_another_dataset_is_refused(capsys, tmp_path):
  # mbm.py picks the Fashion-MNIST tree; a flag switching the dataset to
  # digits would otherwise train against a tree over the wrong classes.
  workdir = str(tmp_path / "run")
  line = refused(
      capsys,
      [
          "simsoft",
          f"--config={ROOT}/configs/peers/mbm.py",
          "--config.dataset.name=digits",
          "--config.model.name=mlp",
          f"--workdir={workdir}",
      ],
      workdir,
      "config.hierarchy_path=",
      "fashion_mnist_hierarchy.json",
      "not those of dataset 'digits'",
  )
  assert "T-shirt/top" in line
