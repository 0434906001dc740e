"""Every config file builds, its names resolve, and the command-line parsing is strict."""

import glob
import os

import pytest
from absl import flags
from ml_collections import config_flags

from simsoft import config as config_lib
from simsoft import data, evaluation, evaluators, models, similarity, validate
from simsoft.train_step import make_loss_fn
from tests.helpers.tiny import ROOT

SWEEP_FILE = os.path.join(ROOT, "configs", "sweep.py")
CONFIG_FILES = sorted(
    (
        set(glob.glob(os.path.join(ROOT, "configs", "*.py")))
        | set(glob.glob(os.path.join(ROOT, "configs", "peers", "*.py")))
    )
    - {SWEEP_FILE}
)


def _parse(argv):
  """Parses flags like main.py does, in a private FlagValues."""
  values = flags.FlagValues()
  argv = ["prog", *argv]
  config_flags.DEFINE_config_file(
      "config",
      None,
      "config",
      flag_values=values,
      lock_config=True,
      sys_argv=argv,
  )
  values(argv)
  return values.config


def test_all_families_present():
  names = {os.path.basename(f)[:-3] for f in CONFIG_FILES}
  assert {
      "default",
      "fashion_mnist",
      "mnist",
      "cifar10",
      "cifar100",
      "svhn",
  } <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
@pytest.mark.parametrize(
    "arg",
    ["", "runlocal", "model=resnet20,similarity=centroid,form=log_sum,seed=2"],
)
def test_config_builds_and_names_resolve(path, arg):
  c = _parse([f"--config={path}:{arg}" if arg else f"--config={path}"])
  assert c.dataset.name in data.DATASETS
  assert c.model.name in models.MODELS
  assert c.similarity.source in similarity.SOURCES
  make_loss_fn(c.loss.form, c.loss.alpha)
  evaluators.check_entries(evaluation.evaluator_entries(c))
  assert validate.check_phases(c) == ("estimate", "retrain", "evaluate")
  assert c.batch_size > 0 and c.estimate.epochs > 0 and c.retrain.epochs > 0
  module_doc = open(path).read()
  assert (
      "python -m simsoft.main --config configs/" in module_doc
  )  # the docstring shows how to run it
  if arg == "runlocal":
    assert c.estimate.epochs <= 2 and c.retrain.epochs <= 2
  if arg.startswith("model="):
    assert (c.model.name, c.similarity.source, c.loss.form, c.seed) == (
        "resnet20",
        "centroid",
        "log_sum",
        2,
    )


def test_overrides_are_typed_and_misspellings_fail():
  path = os.path.join(ROOT, "configs", "default.py")
  c = _parse(
      [
          f"--config={path}:lr=0.2,epochs=3,optimizer.momentum=0.8",
          "--config.loss.alpha=0.25",
          "--config.similarity.options.top_k=3",
      ]
  )
  assert (
      c.optimizer.learning_rate == 0.2
      and c.estimate.epochs == c.retrain.epochs == 3
  )
  assert (
      c.optimizer.momentum == 0.8
      and c.loss.alpha == 0.25
      and c.similarity.options.top_k == 3
  )
  with pytest.raises((flags.Error, AttributeError), match="learnign_rate"):
    _parse([f"--config={path}", "--config.optimizer.learnign_rate=0.1"])
  with pytest.raises(flags.Error, match="learnign_rate"):
    _parse([f"--config={path}:optimizer.learnign_rate=0.1"])
  with pytest.raises(flags.Error, match="unknown config argument 'modle'"):
    _parse([f"--config={path}:modle=lenet"])


def test_parse_arg():
  assert config_lib.parse_arg("a=1, b=x ,runlocal") == {
      "a": "1",
      "b": "x",
      "runlocal": "True",
  }
  assert config_lib.parse_arg("") == {}


@pytest.mark.parametrize("group", ["digits", "fashion_mnist", "all"])
def test_sweep_config_plans_resolvable_runs(group, monkeypatch):
  from simsoft import sweep

  monkeypatch.chdir(ROOT)
  config = _parse([f"--config={SWEEP_FILE}:{group}"])
  runs = sweep.plan(config, "/nonexistent/root")
  per_seed = 1 + len(sweep.variants(config))
  assert (
      len(runs)
      == len(config.experiments.split(","))
      * len(config.seeds.split(","))
      * per_seed
  )
  for workdir, c in runs:
    assert c.dataset.name in data.DATASETS and c.model.name in models.MODELS
    assert c.similarity.source in similarity.SOURCES
    make_loss_fn(c.loss.form, **config_lib.loss_amount(c))
    if c.loss.amount == "alpha" and not workdir.endswith("/base"):
      assert c.loss.alpha == config.alpha
    assert workdir.endswith("/base") == (c.phases == "estimate")
