"""Package layout for setuptools; the metadata lives in pyproject.toml.

configs/ and launch/ stay at the top of the checkout, where users find them,
and ship inside the package as simsoft/configs and simsoft/launch: a mapping
here rather than a move, so `--config configs/default.py` and
`bash launch/gpu.sh` keep working in a checkout, and an installed copy finds
the same files (simsoft.config_files.configs_dir()).
"""

from setuptools import find_namespace_packages, find_packages, setup


def _shipped(directory: str, package: str) -> dict[str, str]:
  """{package[.sub]: directory[/sub]} for a directory and its subdirectories."""
  subs = find_namespace_packages(where=directory, exclude=["*__pycache__*"])
  return {
      package: directory,
      **{f"{package}.{s}": f"{directory}/{s.replace('.', '/')}" for s in subs},
  }


SHIPPED = {
    **_shipped("configs", "simsoft.configs"),
    **_shipped("launch", "simsoft.launch"),
}

setup(
    packages=find_packages(include=["simsoft", "simsoft.*"]) + sorted(SHIPPED),
    package_dir=SHIPPED,
    package_data={"simsoft": ["py.typed"], "simsoft.launch": ["*.sh"]},
)
