"""A sweep config of two seeds x (CE, label smoothing, confusion, its shuffled control) on digits."""

import ml_collections


def get_config(arg=None):
  del arg
  c = ml_collections.ConfigDict()
  c.experiments = "digits_tiny"
  c.specs = ml_collections.ConfigDict(
      {"digits_tiny": "configs/default.py:epochs=1"}
  )
  c.seeds = "0,1"
  c.masses = "0.2"
  c.sources = "confusion"
  c.log_sum_sources = ""
  c.shuffled = True
  c.alpha = 0.4
  c.alpha_settings = ""
  c.overrides = (
      "evaluate.evaluators=clean,corruptions;evaluate.corruptions=contrast,pixelate;"
      "evaluate.severities=2;model.kwargs.hidden=(32,)"
  )
  return c
