"""Issue 24: the losses keep their promises, and every check runs before the first step.

Cheap by design: functions are called directly; an entry point runs as a
subprocess only where the real process (stderr, exit code) is what is tested.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simsoft import losses
from simsoft.similarity import hierarchy

# ----------------------------------------------------------------------------
# The losses API.
# ----------------------------------------------------------------------------

S = np.eye(3, dtype=np.float32) + 0.5
LOGITS = jnp.zeros((2, 3))
LOGITS3 = jnp.zeros((3, 3))
LEAVES = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
K = np.ones((3, 4), np.float32)

EVERY_LOSS = {
    "cross_entropy": lambda y: losses.similarity_cross_entropy(LOGITS3, y, S),
    "log_loss": lambda y: losses.similarity_log_loss(LOGITS3, y, S),
    "weighted": lambda y: losses.weighted_cross_entropy(LOGITS3, y, S),
    "hierarchical": lambda y: losses.hierarchical_cross_entropy(
        LOGITS3, y, LEAVES, K
    ),
    "targets": lambda y: losses.similarity_targets(y, S),
}


@pytest.mark.parametrize("fn", sorted(EVERY_LOSS))
def test_every_loss_gives_nan_for_a_label_out_of_range_under_jit(fn):
  out = np.asarray(jax.jit(EVERY_LOSS[fn])(jnp.array([1, 3, -1])))
  assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1:])), out


AMOUNT_FNS = {
    "cross_entropy": lambda k, v: losses.similarity_cross_entropy(
        LOGITS, jnp.array([0, 1]), S, **{k: v}
    ),
    "log_loss": lambda k, v: losses.similarity_log_loss(
        LOGITS, jnp.array([0, 1]), S, normalize=k == "mass", **{k: v}
    ),
    "targets": lambda k, v: losses.similarity_targets(
        jnp.array([0, 1]), S, **{k: v}
    ),
    "matrix": lambda k, v: losses.similarity_target_matrix(S, **{k: v}),
}


@pytest.mark.parametrize("fn", sorted(AMOUNT_FNS))
@pytest.mark.parametrize("name", ["mass", "alpha"])
def test_a_traced_amount_outside_0_1_gives_nan(fn, name):
  f = jax.jit(lambda v: AMOUNT_FNS[fn](name, v))
  for value in (2.0, -1.0, float("nan")):
    assert np.all(np.isnan(np.asarray(f(value)))), (value, f(value))
  assert np.all(np.isfinite(np.asarray(f(0.25))))


@pytest.mark.parametrize(
    "value", [True, np.bool_(False), jnp.array(True), "0.5", b"1", [0.5]]
)
@pytest.mark.parametrize("name", ["alpha", "mass"])
def test_bools_and_strings_are_refused_by_name(name, value):
  with pytest.raises(TypeError, match=f"`{name}` must be a real number"):
    losses.similarity_cross_entropy(
        LOGITS, jnp.array([0, 1]), S, **{name: value}
    )


BAD_S = {
    "negative": (
        S - np.eye(3, dtype=np.float32) * 2,
        "negative entry at row 0",
    ),
    "zero row": (
        S * np.array([[1], [0], [1]], np.float32),
        "row 1 is all zeros",
    ),
    "nan": (
        np.where(np.eye(3) > 0, np.nan, S).astype(np.float32),
        "non-finite",
    ),
}


@pytest.mark.parametrize("defect", sorted(BAD_S))
@pytest.mark.parametrize("fn", ["cross_entropy", "log_loss", "sparse_log_loss"])
def test_a_concrete_bad_similarity_is_refused(fn, defect):
  from simsoft.similarity import sparse  # pylint: disable=g-import-not-at-top

  bad, message = BAD_S[defect]
  sim = (
      sparse.SparseSimilarity(
          np.tile(np.arange(3, dtype=np.int32), (3, 1)), bad
      )
      if fn.startswith("sparse")
      else bad
  )
  loss = (
      losses.similarity_cross_entropy
      if fn == "cross_entropy"
      else losses.similarity_log_loss
  )
  with pytest.raises(ValueError, match=f"`similarity` .*{message}"):
    loss(LOGITS, jnp.array([0, 1]), sim)


def test_weighted_cross_entropy_takes_zero_rows_but_not_negative_weights():
  zero_row = S * np.array([[1], [0], [1]], np.float32)
  out = losses.weighted_cross_entropy(LOGITS, jnp.array([0, 1]), zero_row)
  assert float(out[1]) == 0.0  # a zero row: loss 0 (OLS's first epoch)
  with pytest.raises(ValueError, match="negative entry"):
    losses.weighted_cross_entropy(LOGITS, jnp.array([0, 1]), -zero_row)


def _hierarchy_file(tmp_path, text):
  path = tmp_path / "tree.json"
  path.write_text(text)
  return path


def test_a_json_hierarchy_with_a_node_under_two_parents_is_refused(tmp_path):
  path = _hierarchy_file(
      tmp_path,
      '{"classes": ["a", "b"], "parents": {"a": "x", "b": "x", "a": "y"}}',
  )
  with pytest.raises(ValueError, match="node 'a' has two parents: 'x' and 'y'"):
    hierarchy.read_hierarchy(path)


@pytest.mark.parametrize("classes", ['"ab"', '{"a": 0}', "[[1]]"])
def test_a_json_hierarchy_classes_must_be_a_list_of_names(tmp_path, classes):
  path = _hierarchy_file(
      tmp_path, f'{{"classes": {classes}, "parents": {{"a": "x", "b": "x"}}}}'
  )
  with pytest.raises(ValueError, match="'classes' must be a list"):
    hierarchy.read_hierarchy(path)
  ok = _hierarchy_file(
      tmp_path,
      json.dumps({"classes": ["a", "b"], "parents": {"a": "x", "b": "x"}}),
  )
  assert hierarchy.read_hierarchy(ok).names == ("x", "a", "b")


# ----------------------------------------------------------------------------
# Checks before the first step: nothing written, one line, exit 2.
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
  d = tmp_path_factory.mktemp("bad_files")
  emb = np.random.default_rng(0).normal(size=(10, 4))
  emb[3] = 0
  np.save(d / "embedding_zero_row.npy", emb)
  parents = ", ".join(f'"{i}": "{"ab"[i // 5]}"' for i in range(10))
  (d / "two_parents.json").write_text(f'{{"parents": {{{parents}, "0": "b"}}}}')
  return d


EARLY = {
    "ordinal ratio": (
        ["--config.similarity.source=ordinal"],
        "--config.similarity.ordinal.ratio=1.5",
        "config.similarity.ordinal: option `ratio`",
    ),
    "ordinal ratio nan": (
        ["--config.similarity.source=ordinal"],
        "--config.similarity.ordinal.ratio=nan",
        "option `ratio` must be a finite number",
    ),
    "embedding lower_bound 1": (
        ["--config.similarity.source=embedding"],
        "--config.similarity.embedding.lower_bound=1.0",
        "option `lower_bound` must be < 1",
    ),
    "embedding lower_bound < 0": (
        ["--config.similarity.source=embedding"],
        "--config.similarity.embedding.lower_bound=-0.5",
        "option `lower_bound` must be a finite number >= 0.0",
    ),
    "hierarchy beta < 0": (
        ["--config.similarity.source=hierarchy"],
        "--config.similarity.hierarchy.beta=-1.0",
        "config.similarity.hierarchy: option `beta`",
    ),
    "embedding zero row": (
        ["--config.similarity.source=embedding"],
        "",
        "class 3 has a zero embedding",
    ),
    "hierarchy two parents": (
        ["--config.similarity.source=hierarchy"],
        "",
        "node '0' has two parents: 'a' and 'b'",
    ),
    "eval_batch_size": (
        [],
        "--config.eval_batch_size=6",
        "config.eval_batch_size=6 is not a multiple of the 4 devices",
    ),
    "seed 2**64": (
        [],
        f"--config.seed={2**64}",
        f"config.seed={2**64} must be an integer in [0, 2**32 - 1",
    ),
    "split_seed -1": (
        [],
        "--config.dataset.split_seed=-1",
        "config.dataset.split_seed=-1 must be an integer in [0",
    ),
}


@pytest.mark.parametrize("case", sorted(EARLY))
def test_checks_run_before_anything_is_written(
    case, bad_files, tmp_path, capsys
):
  """Each of these used to cost model A's training (or the workdir's records)
  before a traceback; now they fail before the workdir exists."""
  from tests.test_bad_inputs import argv, refused  # pylint: disable=g-import-not-at-top

  flags, bad, needle = EARLY[case]
  source = flags[0].rsplit("=", 1)[-1] if flags else ""
  files = {
      "embedding": f"--config.similarity.path={bad_files}/embedding_zero_row.npy",
      "hierarchy": f"--config.hierarchy_path={bad_files}/two_parents.json",
  }
  extra = flags + ([files[source]] if source in files else []) + [bad]
  workdir = str(tmp_path / "run")
  refused(
      capsys, argv(workdir, *[e for e in extra if e]), workdir, needle, code=2
  )


# ----------------------------------------------------------------------------
# sweep, compare, report and collapse held to main's standard.
# ----------------------------------------------------------------------------


def _tool(capfd, module, *args, cwd=None):
  """(exit code, the one error line or None, stdout) of `python -m module args`."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  from tests.helpers.tiny import ROOT  # pylint: disable=g-import-not-at-top

  out = subprocess.run(
      [sys.executable, "-m", module, *map(str, args)],
      cwd=cwd or ROOT,
      capture_output=True,
      text=True,
      timeout=120,
      env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"},
  )
  err = [line for line in out.stderr.splitlines() if line.strip()]
  assert "Traceback" not in out.stderr, out.stderr
  line = err[-1] if err and err[-1].startswith("simsoft: error: ") else None
  return out.returncode, line, out.stdout


def test_sweep_refuses_workers_below_one(tmp_path, capfd):
  from tests.helpers.tiny import ROOT  # pylint: disable=g-import-not-at-top

  config = f"--config={ROOT}/tests/helpers/tiny_sweep.py"
  rc, line, _ = _tool(
      capfd, "simsoft.sweep", config, f"--root={tmp_path}/r", "--workers=0"
  )
  assert rc == 2 and "--workers=0 must be >= 1" in line, line
  assert not (tmp_path / "r").exists()


def test_sweep_refuses_an_empty_root_and_runs_of_another_config(tmp_path):
  from simsoft import errors, sweep  # pylint: disable=g-import-not-at-top
  from tests.helpers import tiny_sweep  # pylint: disable=g-import-not-at-top

  config = tiny_sweep.get_config()
  with pytest.raises(errors.ConfigError, match="--root is empty"):
    sweep.check_root(config, "")
  (tmp_path / "file").write_text("x")
  with pytest.raises(errors.OSFailure, match="exists and is not a directory"):
    sweep.check_root(config, str(tmp_path / "file"))
  with pytest.raises(errors.OSFailure, match="a regular file, not a directory"):
    sweep.check_root(config, str(tmp_path / "file" / "root"))
  (tmp_path / "file").unlink()
  with pytest.raises(errors.MissingInputError, match="holds no finished run"):
    sweep.check_root(config, str(tmp_path), summary_only=True)
  other = tiny_sweep.get_config()
  other.experiments.digits_tiny.optimizer.learning_rate = 0.5
  for workdir, run_config in sweep.plan(other, str(tmp_path))[:2]:
    __import__("os").makedirs(workdir)
    with open(f"{workdir}/config.json", "w") as f:
      f.write(run_config.to_json())
  with pytest.raises(errors.WorkdirError) as e:
    sweep.check_root(config, str(tmp_path), summary_only=True)
  message = str(e.value)
  assert "holds 2 run(s) of another sweep config" in message, message
  assert "digits_tiny/seed0/base (optimizer.learning_rate (saved 0.5" in message
  sweep.check_root(other, str(tmp_path))  # its own config: no refusal


def _results(d, payload):
  d.mkdir(parents=True, exist_ok=True)
  (d / "results.json").write_bytes(payload)
  return d


@pytest.mark.parametrize(
    "payload,needle",
    [
        (bytes(range(256)) * 4, "results.json is damaged: not valid JSON"),
        (b'{"models": {"A": 3}}', "model 'A' has no 'clean' metrics"),
        (b'{"models": {"A": {"clean": {"accuracy": "x"}}}}', "results.json"),
        (b"[1, 2]", "expected a JSON object"),
    ],
)
def test_compare_names_the_damaged_file(tmp_path, capsys, payload, needle):
  from simsoft import compare  # pylint: disable=g-import-not-at-top

  run = _results(tmp_path / "run", payload)
  rc = compare.main([str(run), "--out", str(tmp_path / "out")])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and err.startswith("simsoft: error: ") and "\n" not in err, err
  assert str(run) in err and needle in err, err
  assert not (tmp_path / "out").exists()


def test_compare_refuses_an_out_that_is_a_file(tmp_path, capsys):
  from simsoft import compare  # pylint: disable=g-import-not-at-top

  suite = {"clean": {"accuracy": 0.9, "nll": 0.3, "ece": 0.05}, "summary": {}}
  run = _results(
      tmp_path / "run", json.dumps({"models": {"A": suite}}).encode()
  )
  (tmp_path / "out").write_text("mine")
  rc = compare.main([str(run), "--out", str(tmp_path / "out")])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and "--out" in err and "is not a directory" in err, err
  assert (tmp_path / "out").read_text() == "mine"


def _clean_suite():
  """A clean-only evaluation suite of a random linear model (4 classes)."""
  from simsoft import evaluators  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  x, y = rng.random((16, 8, 8, 1)).astype(np.float32), np.arange(16) % 4
  w = jnp.asarray(rng.normal(size=(64, 4)).astype(np.float32))
  suite = evaluators.run_suite(
      jax.jit(lambda im: im.reshape(im.shape[0], -1) @ w),
      x,
      y,
      suite=(),
      severities=(),
      key=jax.random.key(0),
      batch_size=8,
      num_classes=4,
  )
  return json.loads(json.dumps(suite))


def test_report_is_an_entry_point(tmp_path, capfd):
  suite = _clean_suite()
  run = _results(
      tmp_path / "run",
      json.dumps({"models": {"A": suite, "B": suite}}).encode(),
  )
  rc, line, out = _tool(capfd, "simsoft.report", run)
  assert rc == 0 and line is None, out
  report = (run / "report.md").read_text()
  assert f"{100 * suite['clean']['accuracy']:.2f}" in report, report[:2000]
  bad = _results(tmp_path / "bad", b"\x00\xff garbage")
  rc, line, _ = _tool(capfd, "simsoft.report", bad)
  assert rc == 2 and str(bad / "results.json") in line, line
  rc, line, _ = _tool(capfd, "simsoft.report", tmp_path / "nowhere")
  assert rc == 2 and "does not exist" in line, line


def test_collapse_refuses_a_missing_root_and_garbage_runs(tmp_path):
  from simsoft import collapse, errors  # pylint: disable=g-import-not-at-top

  with pytest.raises(errors.MissingInputError, match="does not exist"):
    collapse.finished_runs(str(tmp_path / "nowhere"))
  with pytest.raises(errors.MissingInputError, match="holds no finished run"):
    collapse.finished_runs(str(tmp_path))
  run = _results(tmp_path / "e" / "seed0" / "log_sum", b"{}")
  (run / "config.json").write_bytes(b"\x89PNG garbage")
  assert collapse.finished_runs(str(tmp_path)) == [str(run)]
  with pytest.raises(errors.DamagedFileError, match="config.json"):
    collapse.diagnose(str(run))


# ----------------------------------------------------------------------------
# OS errors: one line naming the path and the cause, exit 2.
# ----------------------------------------------------------------------------


def test_a_workdir_under_a_regular_file_is_refused(tmp_path, capsys):
  from tests.test_bad_inputs import argv, refused  # pylint: disable=g-import-not-at-top

  (tmp_path / "file").write_text("x")
  workdir = str(tmp_path / "file" / "run")
  refused(capsys, argv(workdir), workdir, "a regular file", code=2)
  assert (tmp_path / "file").read_text() == "x"


def test_a_read_only_workdir_is_one_line(tmp_path, capsys, monkeypatch):
  """Root passes every permission check, so the lock's open fails here as a
  read-only file system makes it fail."""
  import errno  # pylint: disable=g-import-not-at-top

  from simsoft import checkpoint as ckpt  # pylint: disable=g-import-not-at-top
  from tests.test_bad_inputs import argv, refused  # pylint: disable=g-import-not-at-top

  workdir = str(tmp_path / "run")

  def read_only(self):
    raise OSError(errno.EROFS, "Read-only file system", self.path)

  monkeypatch.setattr(ckpt.WorkdirLock, "acquire", read_only)
  line = refused(
      capsys, argv(workdir), workdir, "read-only file system", code=2
  )
  assert f"{workdir}/.lock" in line, line


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(
    tmp_path, capsys, monkeypatch
):
  import errno  # pylint: disable=g-import-not-at-top

  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  from simsoft import checkpoint as ckpt  # pylint: disable=g-import-not-at-top
  from simsoft import main  # pylint: disable=g-import-not-at-top
  from tests.test_bad_inputs import argv, one_error_line  # pylint: disable=g-import-not-at-top

  save = ocp.CheckpointManager.save

  def full_after_step_5(self, step, *args, **kwargs):
    if step > 5:  # Orbax wraps the OSError of its writer threads
      raise RuntimeError("save failed") from OSError(
          errno.ENOSPC, "No space left on device"
      )
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", full_after_step_5)
  workdir = tmp_path / "run"
  rc = main.cli(argv(str(workdir), config="epochs=1,phases=estimate"))
  line = one_error_line(capsys.readouterr().err)
  assert rc == 2, line
  for needle in (
      "saving checkpoint step 10",
      str(workdir / "estimate" / "checkpoints"),
      "no space left on the device",
      "the last saved checkpoint, step 5, is intact",
  ):
    assert needle in line, (needle, line)
  assert not (workdir / ".lock").exists()
  manager = ckpt.make_manager(
      str(workdir / "estimate" / "checkpoints"), every_steps=5, keep=2
  )
  assert manager.latest_step() == 5


def test_sweep_root_made_from_another_checkout_is_this_sweeps(tmp_path):
  """A run's config names a data file by another absolute path (the same
  sweep run from another checkout): the same bytes are the same input, other
  bytes another sweep."""
  from simsoft import errors, sweep  # pylint: disable=g-import-not-at-top
  from tests.helpers import tiny_sweep  # pylint: disable=g-import-not-at-top

  here, there, changed = (
      tmp_path / n for n in ("here.json", "there.json", "c")
  )
  here.write_text("[[1, 0], [0, 1]]")
  there.write_text("[[1, 0], [0, 1]]")
  changed.write_text("[[1, 1], [0, 1]]")

  def sweep_naming(path):
    config = tiny_sweep.get_config()
    config.seeds = (0,)
    config.experiments.digits_tiny.evaluate.reference_similarity_path = str(
        path
    )
    return config

  root = tmp_path / "root"
  workdir, run_config = sweep.plan(sweep_naming(there), str(root))[0]
  os.makedirs(workdir)
  with open(f"{workdir}/config.json", "w") as f:
    f.write(run_config.to_json())
  sweep.check_root(sweep_naming(here), str(root))
  with pytest.raises(errors.WorkdirError, match="reference_similarity_path"):
    sweep.check_root(sweep_naming(changed), str(root))
