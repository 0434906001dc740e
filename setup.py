"""Package layout for setuptools; the metadata lives in pyproject.toml.

configs/ stays at the top of the checkout, where users find it, and ships
inside the package as simsoft/configs, with every data file the configs name
(configs/peers/*.json, configs/positive_control/*.json, ...): a mapping here
rather than a move, so `--config configs/default.py` keeps working in a
checkout, and an installed copy finds the same files
(simsoft.config_files.configs_dir()).

launch/ is not shipped: the launchers (gpu.sh, tpu_pod.sh, tpu_worker.sh,
setup.sh) run from a checkout, where they find requirements.txt, the .venv
and the source to build the wheel from (README, "Launching on GPUs and TPU
pods").
"""

from setuptools import find_namespace_packages, find_packages, setup

# Data files a config may name (hierarchies, similarity matrices).
DATA = ["*.json", "*.npy", "*.csv", "*.txt"]


def _shipped(directory: str, package: str) -> dict[str, str]:
  """{package[.sub]: directory[/sub]} for a directory and its subdirectories."""
  subs = find_namespace_packages(where=directory, exclude=["*__pycache__*"])
  return {
      package: directory,
      **{f"{package}.{s}": f"{directory}/{s.replace('.', '/')}" for s in subs},
  }


SHIPPED = _shipped("configs", "simsoft.configs")

setup(
    packages=find_packages(include=["simsoft", "simsoft.*"]) + sorted(SHIPPED),
    package_dir=SHIPPED,
    package_data={"simsoft": ["py.typed"], **{p: DATA for p in SHIPPED}},
)
