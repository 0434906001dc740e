"""The README's promises: its snippet runs and its Quick start commands are the real ones."""

import re

from tests.helpers.tiny import ROOT


def _readme() -> str:
  with open(f"{ROOT}/README.md") as f:
    return f.read()


def test_losses_snippet_runs_without_tensorflow():
  code = re.search(r"```python\n(.*?)```", _readme(), re.S).group(1)
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)
  soft, simloss = namespace["loss"](
      namespace["logits"], namespace["labels"], namespace["S"]
  )
  assert float(soft) > 0 and float(simloss) > 0


def test_quick_start_commands():
  text = _readme()
  quick = text[text.index("## Quick start") : text.index("## Using the losses")]
  commands = [
      line.strip() for line in quick.splitlines() if line.startswith("    ")
  ]
  assert commands == [
      "bash launch/setup.sh && .venv/bin/python -m simsoft.main --config configs/default.py --workdir /tmp/simsoft/default",
      "bash launch/setup.sh && .venv/bin/python -m pytest -q -n 2 --dist loadfile tests",
  ]
  with open(f"{ROOT}/.ci/run") as f:
    assert commands[1] in f.read()  # CI runs exactly the README's test command


def test_installed_use_and_launcher_subcommands_are_documented():
  text = _readme()
  assert (
      "pip install '/path/to/simsoft[all]'" in text
      and "simsoft --config configs/default.py" in text
  )
  with open(f"{ROOT}/launch/tpu_pod.sh") as f:
    script = f.read()
  documented = re.findall(r"bash launch/tpu_pod\.sh (\w+)", text)
  assert set(documented) == {
      "up",
      "create",
      "setup",
      "prepare",
      "start",
      "wait",
      "logs",
      "status",
      "stop",
      "delete",
  }
  cases = script[script.rindex('case "$command" in') :]
  for name in documented:
    assert re.search(
        rf"\b{name}\b", cases
    ), f"README documents tpu_pod.sh {name}; the script lacks it"
