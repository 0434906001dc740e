"""TensorBoard tells the story: read back the event files of one finished run.

One tiny digits run (all phases, one corruption, a 2-step profile) is read
back with TensorBoard's own event loader: window-mean train scalars, learning
rate, gradient norm, held-out metrics during training, the similarity image,
the HParams session, and models A's and B's test metrics; the progress lines show the compile time apart and the
evaluation's progress.
"""

import glob
import json
import os

import numpy as np
import pytest

from simsoft import config as config_lib
from simsoft import loop
from simsoft import progress as progress_lib
from simsoft import train
from simsoft import train_step as step_lib
from tests.helpers.logs import captured_log
from tests.helpers.tiny import tiny_config


def _events(logdir):
  """{tag: [(step, value)]} for scalars, {tag: [(step, plugin)]} for the rest, from logdir/events*."""
  from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
  from tensorboard.util import tensor_util

  out = {}
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    for event in EventFileLoader(path).Load():
      for value in event.summary.value:
        plugin = value.metadata.plugin_data.plugin_name
        if plugin == "scalars":
          item = float(tensor_util.make_ndarray(value.tensor))
        elif value.HasField("simple_value"):
          item = value.simple_value
        else:
          item = plugin
        out.setdefault(value.tag, []).append((event.step, item))
  return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  c = tiny_config("epochs=1")
  c.dataset.train_examples = 256  # 8 steps per phase
  c.evaluate.evaluators.corruptions = config_lib.corruptions_evaluator(
      corruptions=("contrast",), severities=(1,)
  )
  c.log_every_steps, c.checkpoint.every_steps = 4, 8
  c.train_eval.every_epochs = 0.5  # held-out metrics at steps 4 and 8
  c.profile.num_steps, c.profile.first_step = 2, 2
  workdir = str(tmp_path_factory.mktemp("tensorboard"))
  with captured_log() as messages:
    train.train_and_evaluate(c, workdir)
  return c, workdir, "\n".join(messages)


def test_train_scalars_hparams_and_similarity_image(finished_run):
  config, workdir, _ = finished_run
  for phase in ("estimate", "retrain"):
    events = _events(os.path.join(workdir, phase))
    for tag in (
        "train/loss",
        "train/accuracy",
        "train/grad_norm",
        "train/learning_rate",
    ):
      assert [s for s, _ in events[tag]] == [4, 8], (
          phase,
          tag,
      )  # one point per window
    assert "compile_seconds" in events and "steps_per_s" in events
    assert all(v > 0 for _, v in events["train/grad_norm"])
    schedule = step_lib.make_schedule(
        config.optimizer, steps_per_epoch=8, total_steps=8
    )
    for step, value in events["train/learning_rate"]:
      assert value == pytest.approx(float(schedule(step - 1)), rel=1e-6)
    records = progress_lib.read_metrics(os.path.join(workdir, phase))
    for tag in ("validation/accuracy", "validation/nll", "validation/ece"):
      assert [s for s, _ in events[tag]] == [4, 8], (phase, tag)
      logged = [(r["step"], r[tag]) for r in records if tag in r]
      assert [s for s, _ in logged] == [4, 8]
      assert [v for _, v in logged] == pytest.approx(
          [v for _, v in events[tag]]
      ), (phase, tag)
    assert [r["step"] for r in records if "train/loss" in r] == [4, 8]
  (image,) = _events(os.path.join(workdir, "estimate"))["similarity"]
  assert image == (8, "images")
  for logdir in ("estimate", "retrain", "evaluate", "evaluate/A", "evaluate/B"):
    files = glob.glob(os.path.join(workdir, logdir, "events.out.tfevents.*"))
    assert len(files) == 1, (logdir, files)  # one event file per run


def test_held_out_metrics_are_the_final_models_on_the_validation_split(
    finished_run,
):
  from simsoft import phases, sharding
  from simsoft.run import Run

  config, workdir, _ = finished_run
  run = Run(
      config=config,
      workdir=workdir,
      mesh=sharding.make_mesh(),
      dataset=train.load_dataset(config),
  )
  val = run.dataset.split("validation")
  for phase in ("estimate", "retrain"):
    graphdef, state = phases.restore_final(run, phase)
    predict = step_lib.make_predict_fn(
        graphdef, mean=run.dataset.mean, std=run.dataset.std
    )
    logits = np.asarray(
        predict(state["params"], state["model_state"], val.images), np.float64
    )
    z = logits - logits.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    (last,) = [
        r
        for r in progress_lib.read_metrics(os.path.join(workdir, phase))
        if r["step"] == 8 and "validation/accuracy" in r
    ]
    assert last["validation/accuracy"] == pytest.approx(
        np.mean(logits.argmax(-1) == val.labels)
    )
    assert last["validation/nll"] == pytest.approx(
        -np.mean(log_p[np.arange(len(val.labels)), val.labels]), rel=1e-4
    )


def test_hparams_session_puts_knobs_next_to_both_models_metrics(finished_run):
  from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
  from tensorboard.plugins.hparams import metadata

  config, workdir, _ = finished_run
  (path,) = glob.glob(os.path.join(workdir, "evaluate", "events.out.*"))
  content = {}
  for event in EventFileLoader(path).Load():
    for value in event.summary.value:
      content[value.tag] = value.metadata.plugin_data.content
  experiment = metadata.parse_experiment_plugin_data(
      content[metadata.EXPERIMENT_TAG]
  )
  metrics = {(m.name.group, m.name.tag) for m in experiment.metric_infos}
  assert ("B", "eval/mean_corrupted_accuracy") in metrics
  assert ("A", "eval/clean_ece") in metrics and len(metrics) == 12
  session = metadata.parse_session_start_info_plugin_data(
      content[metadata.SESSION_START_INFO_TAG]
  )
  assert {h.name for h in experiment.hparam_infos} == set(session.hparams)
  assert session.hparams["loss.alpha"].number_value == config.loss.alpha
  assert session.hparams["similarity.source"].string_value == "confusion"
  # Each metric group is a run that holds the metric's tag.
  for group in ("A", "B"):
    assert "eval/clean_nll" in _events(os.path.join(workdir, "evaluate", group))
  # No other run is a session (the training phases' dirs carry none).
  for phase in ("estimate", "retrain"):
    assert all(
        p != "hparams"
        for v in _events(os.path.join(workdir, phase)).values()
        for _, p in v
    )


def test_evaluation_metrics_of_both_models_are_scalars(finished_run):
  _, workdir, _ = finished_run
  results = json.load(open(os.path.join(workdir, "results.json")))
  for key in ("A", "B"):
    events = _events(os.path.join(workdir, "evaluate", key))
    suite = results["models"][key]
    expected = {
        "eval/clean_accuracy": suite["clean"]["accuracy"],
        "eval/clean_nll": suite["clean"]["nll"],
        "eval/clean_ece": suite["clean"]["ece"],
        "eval/mean_corrupted_accuracy": suite["summary"][
            "mean_corrupted_accuracy"
        ],
        "eval/corrupted_accuracy/contrast": suite["corruptions"]["contrast"][
            "1"
        ]["accuracy"],
    }
    for tag, value in expected.items():
      ((step, logged),) = events[tag]
      assert step == 8 and logged == pytest.approx(value, rel=1e-6), (key, tag)


def test_profile_trace_and_progress_lines(finished_run):
  _, workdir, out = finished_run
  assert glob.glob(
      os.path.join(
          workdir, "estimate", "plugins", "profile", "*", "*.xplane.pb"
      )
  )
  assert "[estimate] compiled; first step(s) ran in" in out
  assert "[retrain] step 8/8" in out and "ETA 0:00:00" in out
  assert (
      "[evaluate] model A: 1/2 clean" in out
      and "[evaluate] model B: 2/2 contrast s1" in out
  )


def test_window_means_weigh_every_step():
  window = [
      ({"loss": np.float32(1.0)}, 1),
      ({"loss": np.float32(4.0)}, 2),
  ]  # a 2-step chunk's mean
  assert loop._window_means(window) == {"loss": pytest.approx(3.0)}


def test_similarity_image_and_flat_hparams():
  image = progress_lib.similarity_image(np.eye(10))
  assert image.shape == (1, 320, 320, 3) and image.dtype == np.uint8
  assert (
      image[0, 0, 0] != image[0, 0, -1]
  ).any()  # diagonal and off-diagonal differ
  flat = progress_lib.flat_hparams(tiny_config())
  assert flat["model.name"] == "mlp" and flat["model.mlp.hidden"] == "(64,)"
