"""TensorBoard's HParams dashboard: a run's knobs next to its final metrics.

  write_session(os.path.join(workdir, 'evaluate'), config)

writes one event file in WORKDIR/evaluate holding the experiment summary
(which knobs and which metrics the dashboard shows) and the run's session
(its knobs' values). The metric values are the scalars that evaluate/A and
evaluate/B already hold (simsoft.progress.write_evaluation): metric group
'A' or 'B', tag 'eval/...'. So `tensorboard --logdir WORKDIR` shows one row
with A's and B's clean and corrupted accuracy, NLL and ECE next to the config,
and `--logdir SWEEP_ROOT` one row per run of the sweep (every run writes the
same experiment summary), to sort and filter settings by their results.

Needs the tensorboard package (extra 'report'); without it nothing is written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from absl import logging

# The config fields a setting differs by (the colon's knobs and what the
# sweeps vary); every run lists the same ones, so sessions line up.
KNOBS = (
    "dataset.name",
    "dataset.label_noise.rate",
    "model.name",
    "model.dtype",
    "similarity.source",
    "similarity.shuffle",
    "similarity.sparse_top_k",
    "loss.form",
    "loss.amount",
    "loss.alpha",
    "loss.mass",
    "loss.as_given",
    "optimizer.name",
    "optimizer.learning_rate",
    "optimizer.weight_decay",
    "batch_size",
    "estimate.epochs",
    "retrain.epochs",
    "seed",
)
# Scalars of evaluate/A and evaluate/B (simsoft.progress.evaluation_scalars).
METRIC_TAGS = (
    "eval/clean_accuracy",
    "eval/clean_nll",
    "eval/clean_ece",
    "eval/mean_corrupted_accuracy",
    "eval/mean_corrupted_nll",
    "eval/mean_corrupted_ece",
)
MODELS = ("A", "B")


def knobs(config: Any) -> dict[str, bool | int | float | str]:
  """{field: value} of KNOBS in `config` (a ConfigDict or its dict); tuples as text."""
  from simsoft.progress import flat_hparams  # pylint: disable=g-import-not-at-top

  flat = flat_hparams(config)
  return {k: flat[k] for k in KNOBS if k in flat}


def summaries(config: Any, *, start_time: float | None = None) -> list:
  """[experiment summary, session start, session end] as summary_pb2.Summary."""
  from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
  from tensorboard.plugins.hparams import summary_v2 as hp

  values = knobs(config)
  metrics = [
      hp.Metric(tag, group=model, display_name=f"{model} {tag[5:]}")
      for model in MODELS
      for tag in METRIC_TAGS
  ]
  now = time.time() if start_time is None else start_time
  experiment = hp.hparams_config_pb(
      hparams=[hp.HParam(k) for k in values],
      metrics=metrics,
      time_created_secs=now,
  )
  session = hp.hparams_pb(values, start_time_secs=now)
  end = plugin_data_pb2.HParamsPluginData(
      session_end_info=plugin_data_pb2.SessionEndInfo(
          status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time()
      )
  )
  end_summary = type(session)()
  end_summary.value.add(
      tag=metadata.SESSION_END_INFO_TAG,
      metadata=metadata.create_summary_metadata(end),
      tensor=metadata.NULL_TENSOR,
  )
  return [experiment, session, end_summary]


def write_session(logdir: str, config: Mapping | Any) -> None:
  """The experiment summary and this run's session, in one event file in `logdir`."""
  try:
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
  except ImportError as e:
    logging.warning("no HParams session (%s); install 'simsoft[report]'", e)
    return
  if "://" not in logdir:
    os.makedirs(logdir, exist_ok=True)
  writer = EventFileWriter(logdir)
  for summary in summaries(config):
    writer.add_event(
        event_pb2.Event(wall_time=time.time(), step=0, summary=summary)
    )
  writer.close()
