"""Documentation that runs: the ``>>>`` examples of the public modules and the README quick start."""

from __future__ import annotations

import doctest
import importlib
import re

import pytest

from .conftest import REPO


def _modules_with_examples() -> list[str]:
    """Every scenegrad module whose source holds a ``>>>`` example (so new modules are checked too)."""
    names = []
    for path in sorted(REPO.glob("*/**/*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[0] in ("tests", "benchmarks", ".venv", "build") or "_reference" in rel.parts:
            continue
        if ">>>" in path.read_text():
            names.append(".".join(("scenegrad", *rel.with_suffix("").parts)).removesuffix(".__init__"))
    return names


MODULES = _modules_with_examples()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has no >>> examples"
    assert result.failed == 0


def test_readme_quick_start_runs(capsys):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no Python quick start"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert "tensor" in capsys.readouterr().out
