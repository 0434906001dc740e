"""benchmarks/c10j_gpu_plan.py: the probe logs it reads and the tier and epochs it picks.

benchmarks/c10j_gpu_session.sh runs it on the GPU machine between its
throughput probe and the sweep; here on made-up probe logs.
"""

import json
import os
import re

from benchmarks import c10j_gpu_plan as plan
from tests.helpers.tiny import ROOT

LOG = """probe start 23:59:50.000000000
I1206 23:59:59.000000 1 train.py:210] JAX process 1/1, devices 1 local / 1 in the mesh
I1207 00:00:30.500000 1 progress.py:223] [estimate] compiled; first step(s) ran in 25.0s (not counted in rates and ETA)
I1207 00:00:31.000000 1 progress.py:254] [estimate] step 40/351 (epoch 1/1) loss 2.1 | 9,000 img/s 70.3 steps/s ETA -
I1207 00:00:32.000000 1 progress.py:254] [estimate] step 80/351 (epoch 1/1) loss 2.0 | 5,000 img/s 39.1 steps/s ETA 0:00:07
I1207 00:00:33.000000 1 progress.py:254] [estimate] step 120/351 (epoch 1/1) loss 1.9 | 6,000 img/s 46.9 steps/s ETA 0:00:05
"""


def test_parse_probe_log_skips_the_first_reading_and_wraps_midnight():
  probe = plan.parse_probe_log(LOG)
  assert probe.rates == [9000.0, 5000.0, 6000.0]
  assert probe.rate == 5500.0
  assert probe.compile_s == 25.0
  assert abs(probe.startup_s - 40.5) < 1e-6
  empty = plan.parse_probe_log("probe start 10:00:00.0\nsimsoft: error: ...\n")
  assert empty.rate is None and empty.compile_s is None


def test_epochs_that_fit_is_the_most_that_fit():
  costs = plan.Costs(rate=5000, first_start_s=40, compile_s=30, eval_s=50)
  for seconds in (100, 300, 355, 1000):
    e = plan.epochs_that_fit(seconds, 20, 5, 8, 45000, costs)
    if e:
      assert plan.predicted_seconds(e, 20, 5, 8, 45000, costs) <= seconds
    assert plan.predicted_seconds(e + 1, 20, 5, 8, 45000, costs) > seconds
  assert plan.rounds(20, 5, 8) == (1, 2)
  assert plan.rounds(40, 10, 8) == (2, 3)
  assert plan.rounds(4, 1, 2) == (1, 2)


def _plan(tmp_path, rate, seconds, **flags):
  probes = tmp_path / "probes"
  probes.mkdir(exist_ok=True)
  for i in range(2):
    (probes / f"probe{i}.log").write_text(LOG.replace("6,000", f"{rate:,}"))
  argv = [
      f"--probe_dir={probes}",
      f"--seconds={seconds}",
      "--workers=8",
      f"--json={tmp_path / 'plan.json'}",
      f"--env={tmp_path / 'plan.env'}",
  ] + [f"--{k}={v}" for k, v in flags.items()]
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    assert plan.main(argv) == 0
  finally:
    os.chdir(cwd)
  env = dict(
      re.match(r"(\w+)=(.*)", line).groups()
      for line in (tmp_path / "plan.env").read_text().splitlines()
  )
  return json.loads((tmp_path / "plan.json").read_text()), env


def test_plan_adds_tiers_only_where_min_epochs_fit(tmp_path):
  slow, env = _plan(tmp_path, 1000, 355)
  assert slow["tier"] == "core" and slow["epochs"] >= 1 and slow["notes"]
  assert env["GROUP"] == "cifar10_jpeg_gpu" and env["MASSES"] == "''"
  assert env["EXPERIMENTS"] == "c10jg_resnet20"
  assert slow["tiers"]["core"]["runs"] == 20
  assert slow["tiers"]["control"]["runs"] == 40
  assert slow["tiers"]["control_m01"]["runs"] == 55
  fast, env = _plan(tmp_path, 1_000_000, 355)
  assert fast["tier"] == "control_m01" and fast["epochs"] == 40
  assert env["GROUP"] == "cifar10_jpeg_gpu_control"
  assert env["MASSES"] == "'(0.3, 0.1,)'"
  assert env["EXPERIMENTS"] == "'c10jg_resnet20 c10jg_resnet20_pairflip'"
  forced, env = _plan(tmp_path, 1000, 355, tier="core", epochs=1, seeds=1)
  assert (forced["tier"], forced["epochs"], env["EPOCHS"]) == ("core", 1, "1")
  assert forced["tiers"]["core"]["runs"] == 4
