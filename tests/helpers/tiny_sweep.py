"""A sweep config of two seeds x (CE, label smoothing, confusion, its shuffled control) on digits."""

import os

import ml_collections

from simsoft import config_files

ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)


def get_config(arg=None):
  del arg
  tiny = config_files.load_config(
      "configs/default.py", "epochs=1", relative_to=ROOT
  )
  tiny.model.mlp.hidden = (32,)
  tiny.evaluate.evaluators.corruptions.corruptions = (
      "contrast",
      "brightness",
      "pixelate",
  )
  tiny.evaluate.evaluators.corruptions.severities = (2,)
  c = ml_collections.ConfigDict()
  c.experiments = ml_collections.ConfigDict({"digits_tiny": tiny})
  c.seeds = (0, 1)
  c.masses = (0.2,)
  c.sources = ("confusion",)
  c.log_sum_sources = ()
  c.shuffled = True
  c.alpha = 0.4
  c.alpha_settings = ()
  c.margins = ml_collections.ConfigDict({"clean_accuracy": 0.05})
  return c
