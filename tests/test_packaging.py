"""The installed package, as a new user gets it: a wheel in a fresh venv, run from another directory.

The venv reuses the test environment's dependencies through a .pth file (no
downloads); the wheel is installed with --no-deps, and the checkout is not on
sys.path, so what runs is the installed copy.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from tests.helpers.tiny import ROOT

_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "docs",
    "benchmarks",
    "tests",
)


def _env():
  env = {
      k: v
      for k, v in os.environ.items()
      if k not in ("PYTHONPATH", "PYTHONHOME")
  }
  env["JAX_PLATFORMS"] = "cpu"
  return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """(venv python, wheel path): the wheel built from a copy of the checkout, installed."""
  tmp = tmp_path_factory.mktemp("wheel")
  source = tmp / "source"
  shutil.copytree(ROOT, source, ignore=_IGNORE)
  build = [
      sys.executable,
      "-m",
      "pip",
      "wheel",
      "-q",
      "--no-deps",
      "-w",
      str(tmp / "dist"),
      str(source),
  ]
  if subprocess.run(build + ["--no-build-isolation"], env=_env()).returncode:
    subprocess.run(
        build, check=True, env=_env()
    )  # fetches setuptools into an isolated build env
  (wheel,) = (tmp / "dist").glob("simsoft-*.whl")
  venv = tmp / "venv"
  subprocess.run(
      [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True
  )
  python = str(venv / "bin" / "python")
  purelib = subprocess.run(
      [
          python,
          "-c",
          "import sysconfig; print(sysconfig.get_paths()['purelib'])",
      ],
      check=True,
      capture_output=True,
      text=True,
  ).stdout.strip()
  deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
  with open(os.path.join(purelib, "test_deps.pth"), "w") as f:
    f.write("\n".join(sorted(deps)) + "\n")
  subprocess.run(
      [
          python,
          "-m",
          "pip",
          "install",
          "-q",
          "--no-deps",
          "--no-index",
          str(wheel),
      ],
      check=True,
      env=_env(),
      cwd=tmp,
  )
  return python, str(wheel), tmp


def test_wheel_ships_configs_their_data_license_and_types(installed):
  _, wheel, _ = installed
  names = zipfile.ZipFile(wheel).namelist()
  for name in (
      "simsoft/configs/default.py",
      "simsoft/configs/sweep.py",
      "simsoft/configs/peers/mbm.py",
      "simsoft/configs/peers/digits_hierarchy.json",
      "simsoft/configs/peers/fashion_mnist_hierarchy.json",
      "simsoft/configs/positive_control/cifar10_dog_to_cat.json",
      "simsoft/staging.py",
      "simsoft/py.typed",
  ):
    assert name in names, name
  # Every data file beside the configs in the checkout is in the wheel.
  for folder, _, files in os.walk(os.path.join(ROOT, "configs")):
    for f in files:
      if f.endswith((".json", ".npy", ".csv")):
        rel = os.path.relpath(os.path.join(folder, f), ROOT)
        assert "simsoft/" + rel in names, rel
  # The launchers run from a checkout (README): not shipped.
  assert not any(n.startswith("simsoft/launch/") for n in names)
  assert any(
      n.endswith(".dist-info/LICENSE") or "licenses/LICENSE" in n for n in names
  )
  metadata = (
      zipfile.ZipFile(wheel)
      .read(next(n for n in names if n.endswith(".dist-info/METADATA")))
      .decode()
  )
  for line in (
      "License-Expression: Apache-2.0",  # SPDX (PEP 639)
      "Provides-Extra: all",
      "Provides-Extra: slurm",
      "Author: The simsoft authors",
  ):
    assert line in metadata, line
  assert "Classifier: License ::" not in metadata  # deprecated by PEP 639


# Each packaged config with the arguments that change which files it names.
_CONFIG_CHECK = """
import importlib.util, os, sys
from simsoft import config_files, staging
configs = config_files.configs_dir()
spec = importlib.util.spec_from_file_location("s", os.path.join(configs, "sweep.py"))
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
extra = {
    "peers/mbm.py": ["dataset=digits", "dataset=fashion_mnist"],
    "sweep.py": ["all", *module.EXPERIMENTS],
}
checked = 0
for folder, _, files in os.walk(configs):
  for f in sorted(files):
    if not f.endswith(".py") or f == "__init__.py":
      continue
    rel = os.path.relpath(os.path.join(folder, f), configs)
    for arg in [None, *extra.get(rel, [])]:
      config = config_files.load_config(rel, arg)
      for field, path in staging.named_files(config):
        assert os.path.isfile(path), (rel, arg, field, path)
        assert path.startswith(sys.prefix), (rel, arg, field, path)
        checked += 1
      print("ok", rel, arg)
print("files", checked)
"""


def test_every_packaged_config_loads_from_the_wheel_with_its_files(installed):
  python, _, tmp = installed
  elsewhere = tmp / "configs_elsewhere"
  elsewhere.mkdir(exist_ok=True)
  out = subprocess.run(
      [python, "-c", _CONFIG_CHECK],
      capture_output=True,
      text=True,
      cwd=elsewhere,
      env=_env(),
      timeout=600,
  )
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert "ok peers/mbm.py dataset=digits" in out.stdout
  assert "ok sweep.py all" in out.stdout
  assert int(out.stdout.split("files")[-1]) >= 3, out.stdout


def test_installed_cli_runs_the_default_config_from_another_directory(
    installed,
):
  python, _, tmp = installed
  elsewhere = tmp / "elsewhere"
  elsewhere.mkdir()
  where = subprocess.run(
      [
          python,
          "-c",
          "import simsoft, simsoft.config_files as c; "
          "print(simsoft.__file__); print(c.configs_dir())",
      ],
      check=True,
      capture_output=True,
      text=True,
      cwd=elsewhere,
      env=_env(),
  )
  module, configs = where.stdout.split()
  venv = os.path.dirname(os.path.dirname(python))
  assert module.startswith(venv) and configs.startswith(
      venv
  ), where.stdout  # not the checkout
  workdir = elsewhere / "run"
  out = subprocess.run(
      [
          os.path.join(venv, "bin", "simsoft"),
          "--config",
          "configs/default.py:epochs=1",
          f"--workdir={workdir}",
          "--config.evaluate.evaluators.corruptions.corruptions=contrast",
          "--config.evaluate.evaluators.corruptions.severities=2",
      ],
      capture_output=True,
      text=True,
      cwd=elsewhere,
      env=_env(),
      timeout=600,
  )
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert "[evaluate] report:" in out.stderr  # progress: absl logging
  assert (workdir / "results.json").exists() and (
      workdir / "report.md"
  ).exists()


def test_missing_optional_dependency_names_its_extra(installed):
  python, _, tmp = installed
  code = (
      "import sys; sys.modules['matplotlib'] = None; "
      "sys.argv = ['simsoft', '--config', 'configs/default.py', '--workdir', 'w']; "
      "from simsoft.main import console_main; console_main()"
  )
  out = subprocess.run(
      [python, "-c", code], capture_output=True, text=True, cwd=tmp, env=_env()
  )
  assert out.returncode != 0
  assert (
      "pip install 'simsoft[report]'" in out.stderr
      and "Traceback" not in out.stderr
  ), out.stderr


def test_config_paths_resolve_from_any_directory(tmp_path, monkeypatch):
  """--config and the configs a config loads (the sweep's experiments) find the
  shipped configs from elsewhere."""
  from simsoft import config_files

  monkeypatch.chdir(tmp_path)
  shipped = os.path.join(config_files.configs_dir(), "default.py")
  assert (
      config_files.resolve("configs/default.py:epochs=1")
      == shipped + ":epochs=1"
  )
  assert config_files.resolve("default.py") == shipped
  assert (
      config_files.resolve_argv(
          ["m", "--config", "configs/sweep.py:digits", "--config.seeds=0"]
      )[2]
      == os.path.join(config_files.configs_dir(), "sweep.py") + ":digits"
  )
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "exp.py").write_text(
      "from simsoft import config as c\ndef get_config(arg):\n  return c.apply_args(c.base_config(), arg)\n"
  )
  # Relative to the loading config's directory first, then the shipped configs.
  assert (
      config_files.load_config(
          "exp.py", "seed=3", relative_to=str(tmp_path / "mine")
      ).seed
      == 3
  )
  assert (
      config_files.load_config(
          "configs/default.py", "seed=4", relative_to=str(tmp_path / "mine")
      ).seed
      == 4
  )
  with pytest.raises(FileNotFoundError, match="nope.py"):
    config_files.load_config("nope.py", relative_to=str(tmp_path))
