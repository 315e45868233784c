"""Documentation that runs: the ``>>>`` examples of the public modules and the README quick start."""

from __future__ import annotations

import doctest
import importlib
import re

import pytest

from .conftest import REPO

MODULES = [
    "scenegrad.render.cameras",
    "scenegrad.render.rotations",
    "scenegrad.render.conventions",
    "scenegrad.render.mesh.rasterize",
    "scenegrad.render.mesh.interpolate",
    "scenegrad.render.mesh.antialias",
    "scenegrad.render.mesh.texture",
    "scenegrad.render.mesh.mesh",
    "scenegrad.render.mesh.render",
    "scenegrad.datasets.meshes",
]


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
