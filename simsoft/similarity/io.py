"""Reading user matrices, and saving S with its metadata (Orbax and plain files).

* :func:`read_similarity_file`: a user-given matrix from ``.npy`` (read with
  ``allow_pickle=False``), ``.csv`` (comma-separated numbers) or ``.json`` (a
  nested list, or ``{"similarity": [[...]], "class_names": [...]}``),
  validated; or a top-k sparse S from ``.npz`` (arrays ``indices`` and
  ``values``, [C, k], :mod:`simsoft.similarity.sparse`); every failure is a
  ValueError (FileNotFoundError when missing) that names the file and the
  problem.
* :class:`SimilarityRecord`: S plus metadata (source, dataset, class_names,
  num_samples, model_step, options); :func:`to_pytree` / :func:`from_pytree`
  give the ``{"similarity": array, "metadata": dict}`` form that Orbax writes
  (the array with ``StandardSave``, the JSON-able metadata with ``JsonSave``).
* :func:`save_record` / :func:`load_record`: a standalone Orbax checkpoint;
  :func:`orbax_save_args` / :func:`orbax_restore_args` / :func:`from_restored`
  put the same two items into a caller's own ``ocp.args.Composite``.
* :func:`export_plain`: ``similarity.npy`` and ``similarity.json`` (matrix and
  metadata) for a person to open; the JSON file is readable by the ``file``
  source. A sparse S goes to ``similarity.npz`` (readable by the ``file``
  source) and ``similarity.json`` (metadata only).

A record's S is a dense float32 [C, C] array or a
:class:`~simsoft.similarity.sparse.SparseSimilarity` (Orbax item
``{"similarity": {"indices": [C, k], "values": [C, k]}}``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import json
import numbers
import os
from typing import Any

from jax.typing import ArrayLike
import numpy as np

from simsoft.paths import resolve

from simsoft.losses import validate_similarity
from simsoft.similarity import sparse as sparse_lib

__all__ = [
    "SimilarityRecord",
    "make_record",
    "to_pytree",
    "from_pytree",
    "save_record",
    "load_record",
    "orbax_save_args",
    "orbax_restore_args",
    "from_restored",
    "export_plain",
    "read_similarity_file",
]

FILE_EXTENSIONS = (".npy", ".csv", ".json", ".npz")
METADATA_KEYS = (
    "source",
    "dataset",
    "class_names",
    "num_samples",
    "model_step",
    "options",
)
ARRAY_ITEM = "similarity"
METADATA_ITEM = "similarity_metadata"


# ---------------------------------------------------------------- user files


def _file_error(path: str, problem: str) -> ValueError:
  return ValueError(f"similarity file {path!r}: {problem}")


def _json_matrix(path: str, data: Any) -> tuple[Any, list[str] | None]:
  class_names = None
  if isinstance(data, Mapping):
    if "similarity" not in data:
      raise _file_error(
          path, f"JSON object has no 'similarity' key (keys: {sorted(data)})."
      )
    class_names = data.get("class_names")
    if class_names is not None and (
        not isinstance(class_names, list)
        or not all(isinstance(n, str) for n in class_names)
    ):
      raise _file_error(path, "'class_names' must be a list of strings.")
    data = data["similarity"]
  if not isinstance(data, list) or not all(
      isinstance(row, list) for row in data
  ):
    raise _file_error(
        path, "the matrix must be a list of rows (lists of numbers)."
    )
  for r, row in enumerate(data):
    for c, v in enumerate(row):
      if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise _file_error(
            path, f"entry at row {r}, column {c} is not a number: {v!r}."
        )
  if len({len(row) for row in data}) > 1:
    raise _file_error(path, "rows have different lengths.")
  return data, class_names


def read_similarity_file(
    path: str | os.PathLike[str], *, num_classes: int | None = None
) -> tuple[np.ndarray, list[str] | None]:
  """Reads and validates a user-given similarity matrix; never unpickles.

  Args:
    path: a ``.npy``, ``.csv`` or ``.json`` file.
    num_classes: the dataset's C; the matrix must be C x C.

  Returns:
    (float32 [C, C] matrix, class names from a JSON object or None).

  Raises:
    FileNotFoundError: no such file.
    ValueError: naming the file and the problem (extension, unreadable or
      pickled content, shape, non-finite, negative, all-zero row,
      class_names length).
  """
  p = os.fspath(path)
  ext = os.path.splitext(p)[1].lower()
  if ext not in FILE_EXTENSIONS:
    raise _file_error(
        p, f"unsupported extension {ext!r}; use one of {list(FILE_EXTENSIONS)}."
    )
  if not os.path.isfile(p):
    raise FileNotFoundError(f"similarity file {p!r} does not exist.")
  class_names = None
  if ext == ".npz":
    return _read_sparse_file(p, num_classes), None
  try:
    if ext == ".npy":
      data = np.load(p, allow_pickle=False)
      if not isinstance(data, np.ndarray):
        raise _file_error(p, "is not a single .npy array.")
    elif ext == ".csv":
      data = np.loadtxt(p, delimiter=",", ndmin=2, dtype=np.float64)
    else:
      with open(p, encoding="utf-8") as f:
        data, class_names = _json_matrix(p, json.load(f))
  except ValueError as e:
    if str(e).startswith("similarity file"):
      raise
    problem = str(e)
    if "pickle" in problem.lower() or "object arrays" in problem.lower():
      problem = f"holds pickled/object data, which is refused (allow_pickle=False): {problem}"
    raise _file_error(
        p, f"cannot be read as a numeric {ext} matrix: {problem}"
    ) from e
  except OSError as e:
    raise _file_error(p, f"cannot be read: {e}") from e
  try:
    matrix = validate_similarity(np.asarray(data), num_classes)
  except (ValueError, TypeError) as e:
    raise _file_error(p, str(e)) from e
  if class_names is not None and len(class_names) != matrix.shape[0]:
    raise _file_error(
        p,
        f"has {len(class_names)} class_names for a {matrix.shape[0]} x {matrix.shape[0]} matrix.",
    )
  return matrix, class_names


def _read_sparse_file(
    path: str, num_classes: int | None
) -> sparse_lib.SparseSimilarity:
  """A top-k sparse S from an ``.npz`` file with arrays ``indices`` and ``values``."""
  try:
    with np.load(path, allow_pickle=False) as data:
      missing = sorted({"indices", "values"} - set(data.files))
      if missing:
        raise _file_error(
            path,
            f"a sparse .npz needs arrays 'indices' and 'values' ([C, k]); "
            f"missing {missing} (has {sorted(data.files)}).",
        )
      sparse = sparse_lib.SparseSimilarity(
          indices=np.asarray(data["indices"]), values=np.asarray(data["values"])
      )
  except ValueError as e:
    if str(e).startswith("similarity file"):
      raise
    raise _file_error(path, f"cannot be read as a sparse .npz: {e}") from e
  except OSError as e:
    raise _file_error(path, f"cannot be read: {e}") from e
  try:
    return sparse_lib.validate_sparse(sparse, num_classes)
  except (ValueError, TypeError) as e:
    raise _file_error(path, str(e)) from e


# ---------------------------------------------------------------- records


def _jsonable(value: Any, where: str) -> Any:
  if value is None or isinstance(value, (bool, str)):
    return value
  if isinstance(value, (np.bool_,)):
    return bool(value)
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, numbers.Real):
    return float(value)
  if isinstance(value, Mapping):
    return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
  if isinstance(value, np.ndarray) and value.ndim <= 1:
    return _jsonable(value.tolist(), where)
  raise TypeError(
      f"metadata {where} is not JSON-serializable: {type(value).__name__}."
  )


@dataclasses.dataclass(frozen=True)
class SimilarityRecord:
  """S and where it came from.

  Attributes:
    similarity: np.ndarray float32 [C, C], or a SparseSimilarity (numpy
      int32 / float32 [C, k]).
    metadata: JSON-able dict with keys source (str), dataset (str),
      class_names (list[str] | None), num_samples (int), model_step
      (int | None), options (dict), plus any extra keys the caller adds.
  """

  similarity: np.ndarray | sparse_lib.SparseSimilarity
  metadata: dict[str, Any]

  @property
  def num_classes(self) -> int:
    return self.similarity.shape[0]

  @property
  def sparse(self) -> bool:
    return sparse_lib.is_sparse(self.similarity)


def make_record(
    similarity: ArrayLike,
    *,
    source: str,
    dataset: str = "",
    class_names: Sequence[str] | None = None,
    num_samples: int = 0,
    model_step: int | None = None,
    options: Mapping[str, Any] | None = None,
    **extra: Any,
) -> SimilarityRecord:
  """Validates `similarity` ([C, C] or sparse) and the metadata; returns a record."""
  if sparse_lib.is_sparse(similarity):
    matrix = sparse_lib.validate_sparse(similarity)
  else:
    matrix = validate_similarity(similarity)
  if class_names is not None:
    class_names = [str(n) for n in class_names]
    if len(class_names) != matrix.shape[0]:
      raise ValueError(
          f"`class_names` has {len(class_names)} names for C = {matrix.shape[0]}."
      )
  if hasattr(options, "to_dict"):
    options = options.to_dict()
  metadata = {
      "source": str(source),
      "dataset": str(dataset),
      "class_names": class_names,
      "num_samples": int(num_samples),
      "model_step": None if model_step is None else int(model_step),
      "options": dict(options or {}),
      **extra,
  }
  return SimilarityRecord(matrix, _jsonable(metadata, "metadata"))


def _similarity_tree(similarity) -> Any:
  if sparse_lib.is_sparse(similarity):
    return {
        "indices": np.asarray(similarity.indices, np.int32),
        "values": np.asarray(similarity.values, np.float32),
    }
  return np.asarray(similarity, np.float32)


def _from_similarity_tree(tree: Any):
  if isinstance(tree, Mapping):
    if set(tree) != {"indices", "values"}:
      raise ValueError(
          f"a sparse similarity needs 'indices' and 'values', got {sorted(tree)}."
      )
    return sparse_lib.SparseSimilarity(
        indices=np.asarray(tree["indices"]), values=np.asarray(tree["values"])
    )
  return np.asarray(tree)


def to_pytree(record: SimilarityRecord) -> dict[str, Any]:
  """``{"similarity": float32 [C, C] or {"indices", "values"}, "metadata": dict}``."""
  return {
      "similarity": _similarity_tree(record.similarity),
      "metadata": dict(record.metadata),
  }


def from_pytree(tree: Mapping[str, Any]) -> SimilarityRecord:
  """Inverse of :func:`to_pytree`; validates the matrix and the metadata keys."""
  if "similarity" not in tree or "metadata" not in tree:
    raise ValueError(
        f"a record tree needs keys 'similarity' and 'metadata', got {sorted(tree)}."
    )
  metadata = dict(tree["metadata"])
  missing = [k for k in METADATA_KEYS if k not in metadata]
  if missing:
    raise ValueError(f"record metadata lacks {missing}.")
  return make_record(_from_similarity_tree(tree["similarity"]), **metadata)


def orbax_save_args(record: SimilarityRecord) -> dict[str, Any]:
  """Items for a caller's ``ocp.args.Composite(**state_items, **orbax_save_args(r))``."""
  import orbax.checkpoint as ocp

  tree = to_pytree(record)
  return {
      ARRAY_ITEM: ocp.args.StandardSave({"similarity": tree["similarity"]}),
      METADATA_ITEM: ocp.args.JsonSave(tree["metadata"]),
  }


def orbax_restore_args() -> dict[str, Any]:
  """Restore items matching :func:`orbax_save_args`."""
  import orbax.checkpoint as ocp

  return {
      ARRAY_ITEM: ocp.args.StandardRestore(),
      METADATA_ITEM: ocp.args.JsonRestore(),
  }


def from_restored(restored: Mapping[str, Any]) -> SimilarityRecord:
  """Record from the result of restoring :func:`orbax_restore_args` items."""
  return from_pytree(
      {
          "similarity": restored[ARRAY_ITEM]["similarity"],
          "metadata": restored[METADATA_ITEM],
      }
  )


def save_record(
    directory: str | os.PathLike[str],
    record: SimilarityRecord,
    *,
    force: bool = False,
) -> str:
  """Writes `record` as an Orbax checkpoint at `directory`; returns its absolute path.

  Raises if `directory` exists, unless `force`. Call from every process.
  """
  import orbax.checkpoint as ocp

  path = resolve(directory)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(path, ocp.args.Composite(**orbax_save_args(record)), force=force)
  return os.fspath(path)


def load_record(directory: str | os.PathLike[str]) -> SimilarityRecord:
  """Reads a record written by :func:`save_record`."""
  import orbax.checkpoint as ocp

  path = resolve(directory)
  if not path.is_dir():
    raise FileNotFoundError(
        f"similarity checkpoint {os.fspath(path)!r} does not exist."
    )
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    restored = ckptr.restore(path, ocp.args.Composite(**orbax_restore_args()))
  return from_restored(restored)


def export_plain(
    record: SimilarityRecord, directory: str | os.PathLike[str]
) -> tuple[str, str]:
  """Writes ``similarity.npy`` and ``similarity.json`` into `directory`.

  The JSON holds ``{"similarity": [[...]], "class_names": [...], "metadata":
  {...}}``, indented, so the ``file`` source can read it back.

  A sparse S is written as ``similarity.npz`` (``indices``, ``values``) and
  the JSON file holds the metadata, the class names and the ``.npz`` name.

  Returns:
    (npy or npz path, json path).
  """
  d = resolve(directory)
  d.mkdir(parents=True, exist_ok=True)
  json_path = d / "similarity.json"
  if record.sparse:
    npz_path = d / "similarity.npz"
    tree = _similarity_tree(record.similarity)
    with npz_path.open("wb") as f:
      np.savez(f, indices=tree["indices"], values=tree["values"])
    doc = {
        "sparse": {"file": npz_path.name, "k": int(tree["indices"].shape[1])},
        "class_names": record.metadata.get("class_names"),
        "metadata": record.metadata,
    }
    _write_json(json_path, doc)
    return os.fspath(npz_path), os.fspath(json_path)
  npy_path = d / "similarity.npy"
  matrix = np.asarray(record.similarity, np.float32)
  with npy_path.open("wb") as f:
    np.save(f, matrix, allow_pickle=False)
  doc = {
      "similarity": matrix.astype(np.float64).tolist(),
      "class_names": record.metadata.get("class_names"),
      "metadata": record.metadata,
  }
  _write_json(json_path, doc)
  return os.fspath(npy_path), os.fspath(json_path)


def _write_json(path, doc: dict) -> None:
  """`doc` as indented JSON with a final newline (the readable copy of S)."""
  with path.open("w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
