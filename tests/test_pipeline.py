"""End-to-end tests of the estimate -> retrain -> evaluate pipeline on the real digits data."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from simsoft import checkpoint as ckpt
from simsoft import config as config_lib
from simsoft import errors
from simsoft import train
from tests.helpers.logs import captured_log
from tests.helpers.tiny import ROOT, final_params, load_config, tiny_config


def small_config(arg="epochs=2"):
  return tiny_config(arg, batch_size=64)


def _metrics(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  return {k: results["models"][k]["clean"] for k in ("A", "B")}


def test_pipeline_end_to_end(tmp_path, capsys):
  c = small_config("epochs=2,similarity=centroid,form=log_sum")
  c.evaluate.evaluators.corruptions = config_lib.corruptions_evaluator(
      corruptions=("gaussian_noise", "contrast"), severities=(1, 5)
  )
  train.train_and_evaluate(c, str(tmp_path))
  out = capsys.readouterr().out
  assert "A: cross-entropy" in out and "mean corrupted accuracy" in out
  assert "accuracy under corruption" in out and "\ncontrast " in out
  s = np.load(tmp_path / "estimate" / "similarity.npy")
  assert s.shape == (10, 10) and np.all(s >= 0)
  np.testing.assert_allclose(s.sum(1), 1.0, rtol=1e-5)
  results = json.loads((tmp_path / "results.json").read_text())
  for key in ("A", "B"):
    model = results["models"][key]
    assert 0.5 < model["clean"]["accuracy"] <= 1.0
    assert set(model["corruptions"]) == {"gaussian_noise", "contrast"}
    assert set(model["corruptions"]["contrast"]) == {"1", "5"}
  assert (
      json.loads((tmp_path / "config.json").read_text())["similarity"]["source"]
      == "centroid"
  )

  # A restart skips the finished phases and reproduces the evaluation.
  with captured_log() as messages:
    train.train_and_evaluate(c, str(tmp_path))
  assert any("already finished" in m for m in messages)
  assert (
      json.loads((tmp_path / "results.json").read_text())["models"]["B"][
          "clean"
      ]
      == results["models"]["B"]["clean"]
  )

  # Another run's config in the same workdir is refused, naming the fields.
  other = small_config("epochs=2,similarity=centroid,form=log_sum,seed=3")
  other.evaluate.evaluators = c.evaluate.evaluators.to_dict()
  with pytest.raises(
      ValueError,
      match=r"another run's config.*differing fields: seed \(saved 0, now 3\)",
  ):
    train.train_and_evaluate(other, str(tmp_path))


@pytest.mark.parametrize("source", ["online", "weights"])
def test_sources_without_estimation_pass(tmp_path, source):
  c = small_config(f"epochs=2,similarity={source}")
  train.train_and_evaluate(c, str(tmp_path))
  assert _metrics(str(tmp_path))["B"]["accuracy"] > 0.5
  if source == "online":
    s = np.load(tmp_path / "retrain" / "online_similarity.npy")
    np.testing.assert_allclose(s.sum(1), 1.0, rtol=1e-5)
    assert not np.allclose(
        s, np.asarray(s[0, 0]) * np.eye(10)
    )  # updated from predictions


def test_retrain_reuses_another_workdirs_similarity(tmp_path):
  first = small_config("epochs=1,phases=estimate")
  train.train_and_evaluate(first, str(tmp_path / "a"))
  second = small_config("epochs=1,phases=retrain")
  second.similarity.from_workdir = str(tmp_path / "a")
  train.train_and_evaluate(second, str(tmp_path / "b"))
  assert (tmp_path / "b" / "retrain" / "done.json").exists()
  assert not (tmp_path / "b" / "estimate").exists()


def test_four_devices_match_one_device(tmp_path):
  assert jax.device_count() == 4
  one = final_params(tiny_config(), str(tmp_path / "one"), jax.devices()[:1])
  four = final_params(tiny_config(), str(tmp_path / "four"), jax.devices())
  assert one.keys() == four.keys() and one
  for name in one:
    np.testing.assert_allclose(
        one[name], four[name], rtol=1e-4, atol=1e-5, err_msg=name
    )


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  c = small_config("epochs=3,lr=1e12,phases=estimate")
  c.optimizer.warmup_epochs = 0.0
  c.checkpoint.every_steps = 1
  c.log_every_steps = 100
  with pytest.raises(
      errors.NonFiniteLossError,
      match=r"phase 'estimate'.*step \d+.*last good checkpoint, step \d+ in .*, is intact",
  ):
    train.train_and_evaluate(c, str(tmp_path))
  manager = ckpt.make_manager(
      str(tmp_path / "estimate" / "checkpoints"), every_steps=1, keep=2
  )
  latest = manager.latest_step()
  assert latest is not None
  restored = manager.restore(latest)
  leaves = jax.tree.leaves(restored)
  assert leaves and all(np.all(np.isfinite(np.asarray(x))) for x in leaves)


def test_bad_inputs_fail_before_training(tmp_path):
  c = small_config()
  c.phases = ("estimate", "train")
  with pytest.raises(
      ValueError,
      match=r"unknown phase 'train'.*\['estimate', 'retrain', 'evaluate'\]",
  ):
    train.train_and_evaluate(c, str(tmp_path / "1"))
  for field, value, message in [
      ("model.name", "resnet7", "unknown model 'resnet7'"),
      ("similarity.source", "psychic", "unknown similarity source 'psychic'"),
      ("loss.form", "hinge", "unknown loss form 'hinge'"),
      ("dataset.name", "imagenet9", "unknown dataset 'imagenet9'"),
      (
          "evaluate.evaluators",
          {"clean": {"type": "clean"}, "vibes": {"type": "vibes"}},
          "unknown evaluator type 'vibes'",
      ),
  ]:
    c = small_config()
    config_lib.set_fields(c, {field: value})
    workdir = tmp_path / field / str(len(str(value)))
    with pytest.raises(ValueError, match=message):
      train.train_and_evaluate(c, str(workdir))
    assert not (workdir / "estimate").exists()

  wrong = tmp_path / "s.npy"
  np.save(wrong, np.eye(7, dtype=np.float32))
  c = small_config("similarity=file")
  c.similarity.path = str(wrong)
  with pytest.raises(ValueError, match=r"s\.npy.*7.*10"):
    train.train_and_evaluate(c, str(tmp_path / "file"))
  assert not (tmp_path / "file" / "estimate").exists()

  c = small_config("phases=retrain")
  c.similarity.from_workdir = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="nowhere"):
    train.train_and_evaluate(c, str(tmp_path / "from"))


def _main(workdir, arg):
  cmd = [
      sys.executable,
      "-m",
      "simsoft.main",
      f"--config={ROOT}/configs/default.py:{arg}",
      f"--workdir={workdir}",
      "--config.evaluate.evaluators={'clean': {'type': 'clean'}}",
      "--config.checkpoint.every_steps=5",
      "--config.model.mlp.hidden=(64,)",
  ]
  return subprocess.Popen(
      cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )


def _kill_when(proc, condition, timeout=240):
  start = time.time()
  while not condition():
    assert proc.poll() is None, (
        "the run ended before it could be killed:\n" + proc.stdout.read()
    )
    assert time.time() - start < timeout
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()


def test_sigkill_and_resume_matches_uninterrupted_run(tmp_path):
  arg = "epochs=3,similarity=online"  # online: S and its epoch statistics live in the state
  reference = _main(tmp_path / "ref", arg)
  assert reference.wait() == 0, reference.stdout.read()

  workdir = tmp_path / "killed"
  estimate_ckpts = workdir / "estimate" / "checkpoints"
  retrain_ckpts = workdir / "retrain" / "checkpoints"
  has_step = lambda d, n: d.exists() and any(
      p.name.isdigit() and int(p.name) >= n for p in d.iterdir()
  )
  # Kill 1: in the estimate phase, mid-epoch, after a few checkpoints.
  _kill_when(_main(workdir, arg), lambda: has_step(estimate_ckpts, 25))
  # Kill 2: in the retrain phase, as soon as it has written anything.
  _kill_when(_main(workdir, arg), lambda: has_step(retrain_ckpts, 1))
  assert not (workdir / "retrain" / "done.json").exists()
  final = _main(workdir, arg)
  output = final.communicate()[0]
  assert final.returncode == 0, output
  assert "resumed" in output or "already finished" in output
  ref, got = _metrics(str(tmp_path / "ref")), _metrics(str(workdir))
  for key in ("A", "B"):
    for metric in ("accuracy", "nll", "ece"):
      assert got[key][metric] == pytest.approx(
          ref[key][metric], rel=1e-6, abs=1e-7
      ), (key, metric)


def test_host_and_device_input_paths_train_the_same_model(tmp_path):
  params = {}
  for name, pipeline, per_dispatch, unroll in [
      ("host", "host", 1, False),
      ("device", "device", 1, False),
      ("scan", "device", 4, False),
      ("unrolled", "device", 3, True),
  ]:
    c = tiny_config()
    c.input.pipeline, c.input.steps_per_dispatch, c.input.scan_unroll = (
        pipeline,
        per_dispatch,
        unroll,
    )
    c.log_every_steps = (
        7  # chunks must also stop at log and checkpoint boundaries
    )
    params[name] = final_params(c, str(tmp_path / name))
  for other in ("device", "scan", "unrolled"):
    for key in params["host"]:
      np.testing.assert_allclose(
          params[other][key],
          params["host"][key],
          rtol=1e-5,
          atol=1e-6,
          err_msg=f"{other}: {key}",
      )


def test_unknown_input_pipeline(tmp_path):
  c = tiny_config()
  c.input.pipeline = "tape"
  with pytest.raises(
      ValueError,
      match=r"unknown input pipeline 'tape'.*\['auto', 'host', 'device'\]",
  ):
    train.train_and_evaluate(c, str(tmp_path))


def test_cifar10_pipeline_with_cifar10_c_under_mock_data(tmp_path):
  import tensorflow_datasets as tfds

  c = load_config("runlocal,epochs=1,model=lenet", name="cifar10")
  c.dataset.validation_fraction = 0.25
  c.batch_size, c.eval_batch_size = 32, 64
  c.evaluate.evaluators = {
      "clean": {"type": "clean"},
      "cifar10_c": config_lib.cifar10_c_evaluator(
          corruptions=("fog", "gaussian_noise"), severities=(1, 5)
      ),
  }
  with tfds.testing.mock_data(num_examples=96):
    train.train_and_evaluate(c, str(tmp_path))
  results = json.loads((tmp_path / "results.json").read_text())
  for key in ("A", "B"):
    cells = results["models"][key]["extra_sets"]
    assert set(cells) == {"fog", "gaussian_noise"} and set(cells["fog"]) == {
        "1",
        "5",
    }
    assert cells["fog"]["1"]["count"] == 96
  assert "mean_corrupted_accuracy" in results["models"]["B"]["extra_summary"]
  assert "Pre-corrupted test sets" in (tmp_path / "report.md").read_text()


def test_estimate_reuses_another_workdirs_model_a(tmp_path):
  base = tiny_config("epochs=1,phases=estimate")
  train.train_and_evaluate(base, str(tmp_path / "base"))
  variant = tiny_config("epochs=1,similarity=softmax")
  variant.estimate.model_from = str(tmp_path / "base")
  train.train_and_evaluate(variant, str(tmp_path / "variant"))
  assert not (
      tmp_path / "variant" / "estimate" / "checkpoints"
  ).exists()  # A was not retrained
  assert (tmp_path / "variant" / "estimate" / "similarity.npy").exists()
  results = json.loads((tmp_path / "variant" / "results.json").read_text())
  assert results["models"]["A"]["clean"]["accuracy"] > 0.5
  assert (tmp_path / "base" / "evaluate_A.json").exists()

  # A second run on the same A reads A's test results instead of re-evaluating A;
  # they equal the ones measured, and a changed evaluation config measures again.
  (tmp_path / "base" / "evaluate_A.json").write_text(
      json.dumps(
          {
              "evaluated_under": json.loads(
                  (tmp_path / "base" / "evaluate_A.json").read_text()
              )["evaluated_under"],
              "results": dict(results["models"]["A"], marker="cached"),
          }
      )
  )
  second = tiny_config("epochs=1,similarity=confusion")
  second.estimate.model_from = str(tmp_path / "base")
  train.train_and_evaluate(second, str(tmp_path / "second"))
  second_a = json.loads((tmp_path / "second" / "results.json").read_text())[
      "models"
  ]["A"]
  assert second_a.pop("marker") == "cached"
  assert second_a == results["models"]["A"]
  third = tiny_config("epochs=1,similarity=confusion")
  third.estimate.model_from = str(tmp_path / "base")
  third.evaluate.evaluators.corruptions = config_lib.corruptions_evaluator(
      corruptions=("contrast",), severities=(1,), examples=50
  )
  train.train_and_evaluate(third, str(tmp_path / "third"))
  third_a = json.loads((tmp_path / "third" / "results.json").read_text())[
      "models"
  ]["A"]
  assert "marker" not in third_a
  assert third_a["clean"] == results["models"]["A"]["clean"]

  other_seed = tiny_config("epochs=1,similarity=softmax,seed=5")
  other_seed.estimate.model_from = str(tmp_path / "base")
  with pytest.raises(
      ValueError, match=r"trained model A with another config.*seed"
  ):
    train.train_and_evaluate(other_seed, str(tmp_path / "other"))


def test_batchnorm_model_trains_and_evaluates(tmp_path):
  # resnet20 carries BatchNorm statistics through the jitted step (nnx.State outside the model).
  c = load_config("epochs=1,model=resnet20,phases=estimate")
  c.batch_size = 32
  c.evaluate.evaluators = {"clean": {"type": "clean"}}
  params = final_params(c, str(tmp_path))
  assert params and all(np.all(np.isfinite(v)) for v in params.values())
