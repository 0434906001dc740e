"""simsoft's import graph has no cycle (function-level and TYPE_CHECKING imports included)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "simsoft"


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
  """{module: the simsoft modules it imports anywhere in its source}."""
  modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
  graph = {}
  for name, path in modules.items():
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
          "simsoft"
      ):
        for alias in node.names:
          full = f"{node.module}.{alias.name}"
          targets.add(full if full in modules else node.module)
      elif isinstance(node, ast.Import):
        targets |= {a.name for a in node.names if a.name.startswith("simsoft")}
    # A package importing its own submodules is not a cycle.
    graph[name] = {
        t for t in targets if t in modules and not t.startswith(name + ".")
    }
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle as a list of modules, or None (depth-first search, three colours)."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt) :] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_find_cycle_by_hand():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [
      "a",
      "b",
      "c",
      "a",
  ]


def test_simsoft_has_no_import_cycle():
  graph = import_graph()
  assert "simsoft.train" in graph and "simsoft.run" in graph["simsoft.train"]
  assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_only_the_entry_points_import_train():
  # The phases, the loop and the evaluators never see the pipeline's entry.
  graph = import_graph()
  importers = {m for m, targets in graph.items() if "simsoft.train" in targets}
  assert importers == {"simsoft.main", "simsoft.sweep"}


def test_evaluators_never_see_a_run():
  graph = import_graph()
  for module in (
      "simsoft.evaluators",
      "simsoft.evaluation",
      "simsoft.robustness",
  ):
    assert not graph[module] & {"simsoft.run", "simsoft.loop", "simsoft.phases"}
