"""Every config file builds, its names resolve, and the command-line parsing is strict."""

import glob
import json
import os
import types

import ml_collections
import numpy as np
import pytest
from absl import flags
from flax import nnx
from ml_collections import config_flags

from simsoft import config as config_lib
from simsoft import config_files
from simsoft import (
    data,
    evaluation,
    evaluators,
    models,
    similarity,
    state,
    validate,
)
from simsoft import losses as losses_lib
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
  assert c.dataset.name in data.DATASETS or c.dataset.reader == "grain"
  assert c.model.name in models.MODELS
  assert c.similarity.source in similarity.SOURCES
  make_loss_fn(c.loss.form, c.loss.alpha)
  evaluators.check_entries(evaluation.evaluator_entries(c))
  validate.check_evaluate(c)
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
          f"--config={path}:lr=0.2,epochs=3",
          "--config.optimizer.momentum=0.8",
          "--config.loss.alpha=0.25",
          "--config.similarity.options.top_k=3",
          "--config.phases=('retrain', 'evaluate')",
          "--config.evaluate.evaluators.corruptions.severities=1,3",
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
  assert validate.check_phases(c) == ("retrain", "evaluate")
  assert c.evaluate.evaluators.corruptions.severities == (1, 3)
  with pytest.raises((flags.Error, AttributeError), match="learnign_rate"):
    _parse([f"--config={path}", "--config.optimizer.learnign_rate=0.1"])
  with pytest.raises(flags.Error, match="unknown config argument 'modle'"):
    _parse([f"--config={path}:modle=lenet"])


def test_the_colon_takes_only_knobs():
  path = os.path.join(ROOT, "configs", "default.py")
  with pytest.raises(flags.Error, match=r"use --config.optimizer.momentum=0.8"):
    _parse([f"--config={path}:lr=0.2,optimizer.momentum=0.8"])
  ols = os.path.join(ROOT, "configs", "peers", "ols.py")
  assert _parse([f"--config={ols}:variant=fine_grained,seed=2"]).seed == 2
  with pytest.raises(flags.Error, match=r"unknown variant 'coarse'"):
    _parse([f"--config={ols}:variant=coarse"])
  with pytest.raises(flags.Error, match=r"'variant'"):  # listed among the knobs
    _parse([f"--config={ols}:varient=cifar"])


@pytest.mark.parametrize("model", sorted(models.MODELS))
def test_model_kwargs_follow_the_model_however_it_is_chosen(model):
  path = os.path.join(ROOT, "configs", "default.py")
  for argv in (
      [f"--config={path}:model={model}"],
      [f"--config={path}", f"--config.model.name={model}"],
  ):
    c = _parse(argv)
    assert c.model.name == model
    assert state.model_kwargs(c.model) == models.default_kwargs(model)
    images = types.SimpleNamespace(num_classes=10, image_shape=(32, 32, 3))
    nnx.eval_shape(lambda: state.create_model(c.model, images, nnx.Rngs(0)))
  c = _parse([f"--config={path}", "--config.model.mlp.hidden=(128,)"])
  assert state.model_kwargs(c.model) == {"hidden": (128,)}


def test_set_fields_is_typed_and_names_the_field():
  c = config_lib.base_config()
  config_lib.set_fields(c, {"loss.alpha": 1, "phases": ["estimate"]})
  assert c.loss.alpha == 1.0 and isinstance(c.loss.alpha, float)
  assert c.phases == ("estimate",)
  with pytest.raises(ValueError, match=r"no field 'loss.alfa'"):
    config_lib.set_fields(c, {"loss.alfa": 0.1})
  with pytest.raises(ValueError, match=r"config.seed='1' is of type str"):
    config_lib.set_fields(c, {"seed": "1"})


def test_parse_arg():
  assert config_lib.parse_arg("a=1, b=x ,runlocal") == {
      "a": "1",
      "b": "x",
      "runlocal": "True",
  }
  assert config_lib.parse_arg("") == {}


@pytest.mark.parametrize(
    "group",
    [
        "digits",
        "fashion_mnist",
        "cifar10_jpeg",
        "cifar10_jpeg_gpu",
        "cifar10_jpeg_gpu_control",
        "all",
    ],
)
def test_sweep_config_plans_resolvable_runs(group, monkeypatch):
  from simsoft import sweep

  monkeypatch.chdir(ROOT)
  config = _parse([f"--config={SWEEP_FILE}:{group}"])
  runs = sweep.plan(config, "/nonexistent/root")
  per_seed = [1 + len(sweep.variants(config, e)) for e in config.experiments]
  assert len(runs) == len(config.seeds) * sum(per_seed)
  for workdir, c in runs:
    assert c.dataset.name in data.DATASETS and c.model.name in models.MODELS
    assert c.similarity.source in similarity.SOURCES
    make_loss_fn(c.loss.form, **config_lib.loss_amount(c))
    if c.loss.amount == "alpha" and not workdir.endswith("/base"):
      assert c.loss.alpha == config.alpha
    assert workdir.endswith("/base") == (c.phases == ("estimate",))
    validate.check_evaluate(c)
    assert c.evaluate.evaluators.corruptions.severities == (1, 3, 5)


def test_cifar10_jpeg_gpu_groups(monkeypatch):
  """The device session's groups: resnet20 with the CIFAR recipe on all training
  images, mass 0.3; the positive control only in the second group."""
  from simsoft import sweep

  monkeypatch.chdir(ROOT)
  core = _parse([f"--config={SWEEP_FILE}:cifar10_jpeg_gpu"])
  both = _parse([f"--config={SWEEP_FILE}:cifar10_jpeg_gpu_control"])
  assert list(core.experiments) == ["c10jg_resnet20"]
  assert list(both.experiments) == ["c10jg_resnet20", "c10jg_resnet20_pairflip"]
  for c in (*core.experiments.values(), *both.experiments.values()):
    assert c.model.name == "resnet20" and c.dataset.name == "cifar10_jpeg"
    assert (c.optimizer.learning_rate, c.optimizer.warmup_epochs) == (0.1, 0.0)
    assert (
        c.dataset.train_examples == 0 and c.dataset.validation_fraction == 0.1
    )
    assert c.input.steps_per_dispatch == 20 and not c.input.scan_unroll
  assert (
      both.experiments.c10jg_resnet20_pairflip.dataset.label_noise.rate == 0.55
  )
  assert [s.name for s in sweep.variants(core, "c10jg_resnet20")] == [
      "label_smoothing-soft_target-m0.3",
      "confusion-soft_target-m0.3",
      "confusion-soft_target-m0.3-shuffled",
  ]
  assert [
      s.source for s in sweep.variants(both, "c10jg_resnet20_pairflip")
  ] == [
      "uniform",
      "file",
      "file",
  ]


def test_cifar10_jpeg_sweep_positive_control(monkeypatch):
  """The positive control: noisy cat labels, the file S whose dog row points to
  cat, its own grid (mass 0.3, the file source and its shuffled control)."""
  from simsoft import sweep

  monkeypatch.chdir(ROOT)
  config = _parse([f"--config={SWEEP_FILE}:cifar10_jpeg"])
  main, control = (
      config.experiments.c10j_lenet,
      config.experiments.c10j_lenet_pairflip,
  )
  assert main.dataset.label_noise.rate == 0.0
  assert control.dataset.label_noise.flips == ("cat->dog",)
  assert control.dataset.label_noise.rate == 0.55
  assert [s.name for s in sweep.variants(config, "c10j_lenet_pairflip")] == [
      "label_smoothing-soft_target-m0.3",
      "file-soft_target-m0.3",
      "file-soft_target-m0.3-shuffled",
  ]
  assert [s.name for s in sweep.variants(config, "c10j_lenet")] == [
      f"{name}-soft_target-m{m}{suffix}"
      for m in ("0.1", "0.3")
      for name, suffix in (
          ("label_smoothing", ""),
          ("confusion", ""),
          ("confusion", "-shuffled"),
      )
  ]
  s, names = similarity.read_similarity_file(
      control.similarity.path, num_classes=10
  )
  q = np.asarray(losses_lib.off_target_distribution(s))
  cat, dog = names.index("cat"), names.index("dog")
  assert q[dog, cat] == 1.0
  others = [i for i in range(10) if i != dog]
  np.testing.assert_allclose(q[others].sum(1), 1.0)
  np.testing.assert_allclose(q[others][q[others] > 0], 1 / 9, rtol=1e-6)


def test_a_workdir_of_the_cifar_sweep_commit_is_still_this_runs():
  """configs/default.py as written to config.json at e4c8a18 (the commit the
  CIFAR-10 sweep runs from) matches today's default config: a field added
  since reads as the value those runs ran with (checkpoint.ADDED_FIELDS), so
  their workdirs resume and their sweep root summarises; its provenance is
  unchanged too."""
  from simsoft import checkpoint as ckpt

  with open(
      os.path.join(ROOT, "tests", "data", "default_config_e4c8a18.json")
  ) as f:
    saved = json.load(f)
  config = config_files.load_config(os.path.join(ROOT, "configs", "default.py"))
  current = json.loads(config.to_json())
  assert ckpt.config_differences(saved, current) == []
  old = ml_collections.ConfigDict(saved)
  for phase in ("estimate", "retrain"):
    assert ckpt.provenance(old, phase)["hash"] == (
        ckpt.provenance(config, phase)["hash"]
    )
