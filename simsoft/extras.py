"""Optional dependencies and the extra that brings each: a missing one names its install command.

The core (losses, similarity, models, train step) needs jax, flax, optax and
orbax only. The command-line tool needs more, grouped in pyproject.toml's
extras: `data` (TensorFlow, TFDS, scikit-learn's digits, Pillow for image folders) and `report` (CLU and
TensorBoard event files, matplotlib figures, scipy statistics), `streaming`
(grain, array_record: dataset.reader='grain'); `all` is all three. `slurm` (submitit) hands a sweep's runs to a job
engine (simsoft.sweep --executor).
"""

from __future__ import annotations

# Top-level module name -> the extra of pyproject.toml that installs it.
EXTRA_OF = {
    "tensorflow": "data",
    "tensorflow_datasets": "data",
    "sklearn": "data",
    "PIL": "data",
    "clu": "report",
    "tensorboard": "report",
    "matplotlib": "report",
    "scipy": "report",
    "submitit": "slurm",
    "grain": "streaming",
    "array_record": "streaming",
}


def missing_dependency_message(error: ModuleNotFoundError) -> str | None:
  """What to install for a ModuleNotFoundError of an optional dependency, else None."""
  name = (error.name or "").split(".")[0]
  extra = EXTRA_OF.get(name)
  if extra is None:
    return None
  return (
      f"simsoft: this command needs the optional dependency {name!r} (extra "
      f"'{extra}'): pip install 'simsoft[{extra}]', or 'simsoft[all]' for everything"
  )
