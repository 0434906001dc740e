r"""Class hierarchies: files, LCA distances, Making Better Mistakes' soft labels and HXE arrays.

Bertinetto et al., "Making Better Mistakes" (CVPR 2020; fiveai/making-better-mistakes)
train with a class hierarchy in two ways, both here (numpy only, built once):

* soft labels (``better_mistakes/model/labels.py``, ``make_all_soft_labels``):
  :math:`t_y = \mathrm{softmax}(-\beta\, d(y, \cdot) / \max d)` with :math:`d` the
  height of the lowest common ancestor (the peer's "ilsvrc" distance);
  :func:`mbm_soft_labels`.
* hierarchical cross-entropy, HXE (``better_mistakes/model/losses.py``,
  ``HierarchicalLLLoss``, weights from ``trees.get_exponential_weighting``):
  :func:`hxe_arrays` gives the constant arrays that
  :func:`simsoft.losses.hierarchical_cross_entropy` takes.

File formats (:func:`read_hierarchy`), the class of label ``i`` being the leaf
named ``classes[i]`` (JSON) or ``"i"`` (CSV, or JSON without ``classes``):

* ``.json``: ``{"classes": ["cat", "dog", ...], "parents": {"cat": "pet", "dog":
  "pet", "pet": "animal", ...}}``, each node mapped to its parent;
* ``.csv``: one ``node,parent`` line per edge (a ``node,parent`` header line is
  skipped), leaves named by class index.

Nodes without a parent are the top level: one is the root, several get a
common implicit root. Every leaf must be a class and every class a leaf.
:func:`read_distances` also takes a plain [C, C] distance matrix (``.npy``,
numeric ``.csv``, ``.json`` nested list or ``{"distances": [[...]]}``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import csv
import dataclasses
import json
import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # numpy only at run time
  from jax.typing import ArrayLike

__all__ = [
    "Hierarchy",
    "from_parents",
    "read_hierarchy",
    "read_distances",
    "is_hierarchy_file",
    "mbm_soft_labels",
    "hxe_arrays",
]

IMPLICIT_ROOT = "<root>"


@dataclasses.dataclass(frozen=True)
class Hierarchy:
  """A rooted tree over the classes.

  Attributes:
    names: node names; node 0 is the root.
    parent: int [M], the parent of each node (-1 for the root).
    class_nodes: int [C], the leaf node of each class.
  """

  names: tuple[str, ...]
  parent: np.ndarray
  class_nodes: np.ndarray

  @property
  def num_classes(self) -> int:
    return len(self.class_nodes)

  def path(self, node: int) -> list[int]:
    """[node, its parent, ..., the root's child] (the root excluded)."""
    out = []
    while node > 0:
      out.append(node)
      node = int(self.parent[node])
    return out

  def depth(self) -> np.ndarray:
    """int [M]: edges from the root (root 0)."""
    return np.array([len(self.path(n)) for n in range(len(self.names))])

  def height(self) -> np.ndarray:
    """int [M]: the longest way down to a leaf (leaves 0)."""
    h = np.zeros(len(self.names), int)
    for leaf in self.class_nodes:
      for k, node in enumerate(self.path(int(leaf)) + [0]):
        h[node] = max(h[node], k)
    return h

  def lca_height(self) -> np.ndarray:
    r"""float [C, C]: :math:`d(i, j)` = height of the lowest common ancestor (0 on the diagonal).

    The peer's "ilsvrc" distance and its mistake severity; on a tree with every
    leaf at the same depth it is the number of edges from a leaf up to the LCA.
    """
    h = self.height()
    paths = [self.path(int(n)) + [0] for n in self.class_nodes]
    c = self.num_classes
    d = np.zeros((c, c))
    for i in range(c):
      above = set(paths[i])
      for j in range(c):
        d[i, j] = h[next(n for n in paths[j] if n in above)]
    return d


def _error(path, problem):
  return ValueError(f"hierarchy file {os.fspath(path)!r}: {problem}")


def from_parents(
    parents: Mapping[str, str],
    classes: Iterable[str],
    *,
    where: str = "hierarchy",
) -> Hierarchy:
  """Builds and checks the tree from {node: parent} and the class leaves in label order."""
  classes = [str(c) for c in classes]
  parents = {str(k): str(v) for k, v in parents.items()}
  missing = [c for c in classes if c not in parents]
  if missing:
    raise ValueError(
        f"{where}: classes {missing} are not in the hierarchy (no parent)."
    )
  nodes = set(parents) | set(parents.values()) | set(classes)
  tops = sorted(n for n in nodes if n not in parents)
  if not tops:
    raise ValueError(
        f"{where}: the parent links form a cycle (no node without a parent)."
    )
  root = tops[0] if len(tops) == 1 else IMPLICIT_ROOT
  if len(tops) > 1:
    parents.update({t: IMPLICIT_ROOT for t in tops})
  names = [root] + sorted(nodes - {root})
  index = {n: i for i, n in enumerate(names)}
  parent = np.full(len(names), -1)
  for child, par in parents.items():
    parent[index[child]] = index[par]
  for n in range(len(names)):  # every node reaches the root
    seen, node = set(), n
    while node > 0:
      if node in seen:
        raise ValueError(
            f"{where}: the parent links of {names[n]!r} form a cycle."
        )
      seen.add(node)
      node = int(parent[node])
  has_child = np.zeros(len(names), bool)
  has_child[parent[parent >= 0]] = True
  if len(set(classes)) != len(classes):
    raise ValueError(f"{where}: class names repeat: {classes}.")
  inner = [c for c in classes if has_child[index[c]]]
  if inner:
    raise ValueError(
        f"{where}: classes must be leaves, but {inner} have children."
    )
  extra = sorted(
      set(names[i] for i in np.flatnonzero(~has_child)) - set(classes)
  )
  if extra:
    raise ValueError(
        f"{where}: leaves {extra} are not classes (classes: {classes})."
    )
  return Hierarchy(tuple(names), parent, np.array([index[c] for c in classes]))


def is_hierarchy_file(path: str | os.PathLike[str]) -> bool:
  """True for parent links (JSON with 'parents', CSV with non-numeric cells), False for a matrix."""
  p = os.fspath(path)
  ext = os.path.splitext(p)[1].lower()
  if ext == ".json":
    with open(p, encoding="utf-8") as f:
      data = json.load(f)
    return isinstance(data, dict) and "parents" in data
  if ext == ".csv":
    try:
      np.loadtxt(p, delimiter=",", ndmin=2)
      return False
    except ValueError:
      return True
  return False


class _JsonObject(dict):
  """A JSON object that remembers its repeated keys: [(key, first, later)]."""

  repeated: list


def _pairs(pairs: list) -> _JsonObject:
  """json object hook: json.load keeps a repeated key's last value silently."""
  obj, obj.repeated = _JsonObject(), []
  for key, value in pairs:
    if key in obj and obj[key] != value:
      obj.repeated.append((key, obj[key], value))
    obj.setdefault(key, value)
  return obj


def read_hierarchy(
    path: str | os.PathLike[str], *, num_classes: int | None = None
) -> Hierarchy:
  """Reads a hierarchy file (module docstring); ValueError naming the file and the problem."""
  p = os.fspath(path)
  if not os.path.isfile(p):
    raise FileNotFoundError(f"hierarchy file {p!r} does not exist.")
  ext = os.path.splitext(p)[1].lower()
  if ext == ".json":
    with open(p, encoding="utf-8") as f:
      data = json.load(f, object_pairs_hook=_pairs)
    if not isinstance(data, dict) or not isinstance(data.get("parents"), dict):
      raise _error(
          p,
          "a JSON hierarchy is an object with a 'parents' mapping {node: parent}.",
      )
    parents = data["parents"]
    if parents.repeated:
      node, first, later = parents.repeated[0]
      raise _error(
          p, f"node {node!r} has two parents: {first!r} and {later!r}."
      )
    for node, par in parents.items():
      if not isinstance(par, (str, int)) or isinstance(par, bool):
        raise _error(
            p, f"the parent of {node!r} must be one node name, got {par!r}."
        )
    classes = data.get("classes")
    if classes is not None and not (
        isinstance(classes, list)
        and all(isinstance(c, (str, int)) for c in classes)
    ):
      raise _error(
          p, f"'classes' must be a list of class names, got {classes!r:.60}."
      )
  elif ext == ".csv":
    with open(p, encoding="utf-8", newline="") as f:
      rows = [
          [cell.strip() for cell in row]
          for row in csv.reader(f)
          if row and any(row)
      ]
    if rows and [c.lower() for c in rows[0]] == ["node", "parent"]:
      rows = rows[1:]
    bad = [r for r in rows if len(r) != 2 or not all(r)]
    if bad:
      raise _error(p, f"every line must be 'node,parent', got {bad[0]}.")
    parents = {}
    for node, par in rows:
      if parents.setdefault(node, par) != par:
        raise _error(
            p, f"node {node!r} has two parents: {parents[node]!r} and {par!r}."
        )
    classes = None
  else:
    raise _error(
        p,
        f"unsupported extension {ext!r}; a hierarchy is a .json or .csv file.",
    )
  if classes is None:
    if num_classes is None:
      raise _error(
          p,
          "without a 'classes' list, num_classes is needed (leaves '0'..'C-1').",
      )
    classes = [str(i) for i in range(num_classes)]
  if num_classes is not None and len(classes) != num_classes:
    raise _error(p, f"has {len(classes)} classes, the dataset {num_classes}.")
  return from_parents(parents, classes, where=f"hierarchy file {p!r}")


def _read_matrix(path) -> np.ndarray:
  p = os.fspath(path)
  ext = os.path.splitext(p)[1].lower()
  if ext == ".npy":
    return np.load(p, allow_pickle=False)
  if ext == ".csv":
    return np.loadtxt(p, delimiter=",", ndmin=2)
  if ext == ".json":
    with open(p, encoding="utf-8") as f:
      data = json.load(f)
    return np.asarray(
        data["distances"] if isinstance(data, dict) else data, np.float64
    )
  raise ValueError(
      f"distance file {p!r}: unsupported extension {ext!r}; use .npy, .csv or .json."
  )


def declared_classes(path: str | os.PathLike[str]) -> tuple[str, ...] | None:
  """The class names a JSON hierarchy file lists under "classes" (in label order), else None."""
  p = os.fspath(path)
  if not p.lower().endswith(".json") or not os.path.isfile(p):
    return None
  with open(p, encoding="utf-8") as f:
    data = json.load(f)
  classes = data.get("classes") if isinstance(data, dict) else None
  return tuple(str(c) for c in classes) if isinstance(classes, list) else None


def read_distances(
    path: str | os.PathLike[str], *, num_classes: int | None = None
) -> np.ndarray:
  """float [C, C] class distances: a hierarchy's LCA heights, or a distance matrix as given.

  A matrix must be square (C x C), finite and non-negative with some positive entry.
  """
  p = os.fspath(path)
  if not os.path.isfile(p):
    raise FileNotFoundError(f"distance file {p!r} does not exist.")
  if is_hierarchy_file(p):
    return read_hierarchy(p, num_classes=num_classes).lca_height()
  try:
    d = np.asarray(_read_matrix(p), np.float64)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(
        f"distance file {p!r}: cannot be read as a matrix: {e}"
    ) from None
  c = num_classes or (d.shape[0] if d.ndim == 2 else 0)
  if d.shape != (c, c):
    raise ValueError(
        f"distance file {p!r}: must be a [C, C] = [{c}, {c}] matrix, got {d.shape}."
    )
  if not np.all(np.isfinite(d)) or np.any(d < 0) or not np.any(d > 0):
    raise ValueError(
        f"distance file {p!r}: distances must be finite, >= 0, not all zero."
    )
  return d


def mbm_soft_labels(distances: ArrayLike, beta: float) -> np.ndarray:
  r"""MBM's soft labels, row ``y`` = :math:`\mathrm{softmax}_j(-\beta\, d_{yj} / \max d)`.

  The peer's ``make_all_soft_labels(distances, classes, hardness=beta)``
  normalizes ``exp(-beta D / max D)`` over axis 0 and reads column ``y``; its
  ``D[i, j] = d(classes[j], classes[i])``, so column ``y`` there is row ``y`` here.

  Args:
    distances: [C, C], finite, >= 0, some entry > 0.
    beta: the peer's ``--beta`` (larger: closer to one-hot), finite and >= 0.

  Returns:
    float64 [C, C], rows summing to one.
  """
  d = np.asarray(distances, np.float64)
  if not np.isfinite(beta) or beta < 0:
    raise ValueError(f"`beta` must be a finite number >= 0, got {beta!r}.")
  z = -beta * d / d.max()
  z = np.exp(z - z.max(axis=1, keepdims=True))
  return z / z.sum(axis=1, keepdims=True)


def hxe_arrays(
    hierarchy: Hierarchy, alpha: float, *, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
  r"""The constant arrays of :func:`simsoft.losses.hierarchical_cross_entropy`.

  HXE of class ``y`` with path :math:`y = n_0, n_1, \dots, n_{d-1}` up to (not
  including) the root, :math:`P(n) = \sum_{c \text{ under } n} p_c` and
  :math:`P(\text{root}) = 1`:

  .. math::
    \ell = \sum_{j=0}^{d-1} \lambda(n_j)\, \bigl(-\log P(n_j) + \log P(n_{j+1})\bigr)
         = \sum_n K_{yn} (-\log P(n)),\quad
    K_{y n_0} = \lambda(n_0),\ K_{y n_j} = \lambda(n_j) - \lambda(n_{j-1})

  with the peer's edge weights :math:`\lambda(n) = \exp(-\alpha\, \mathrm{depth}(n))`
  (``trees.get_exponential_weighting``: depth of the edge's lower node, root
  children 1), divided, with ``normalize`` (the peer's default, used by its
  ``start_training.py``), by :math:`\sum_{\text{all nodes } m} \exp(-\alpha\,
  \mathrm{depth}(m))`. ``alpha = 0`` without ``normalize`` is cross-entropy.

  Args:
    hierarchy: the tree.
    alpha: the peer's ``--alpha``, finite and >= 0.
    normalize: divide the weights by their sum over all nodes.

  Returns:
    (node_leaves float32 [N, C]: 1 where class c is under node n; path_weights
    float32 [C, N]: K), over the N non-root nodes.
  """
  if not np.isfinite(alpha) or alpha < 0:
    raise ValueError(f"`alpha` must be a finite number >= 0, got {alpha!r}.")
  m, c = len(hierarchy.names), hierarchy.num_classes
  lam = np.exp(-alpha * hierarchy.depth().astype(np.float64))
  if normalize:
    lam = lam / lam.sum()
  leaves = np.zeros((m, c))
  weights = np.zeros((c, m))
  for y, leaf in enumerate(hierarchy.class_nodes):
    path = hierarchy.path(int(leaf))
    leaves[path, y] = 1.0
    for j, node in enumerate(path):
      weights[y, node] = lam[node] - (lam[path[j - 1]] if j else 0.0)
  return leaves[1:].astype(np.float32), weights[:, 1:].astype(np.float32)
