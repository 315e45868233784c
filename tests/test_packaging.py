"""The wheel: only the ``scenegrad`` package (no bare render/recon/datasets), kernel sources inside,
console script declared, and importable from an install that is not this checkout."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    wheels = list(out.glob("scenegrad-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"scenegrad", next(t for t in tops if t.endswith(".dist-info"))}, tops
    # Every package directory of the checkout (apart from tests and benchmarks) is in the wheel.
    for init in REPO.rglob("__init__.py"):
        rel = init.relative_to(REPO)
        if rel.parts[0] in ("tests", "benchmarks", ".venv", "build") or rel.parts[0].startswith("."):
            continue
        assert f"scenegrad/{rel.as_posix()}" in names, f"{rel} is missing from the wheel (pyproject packages)"
    # The kernel sources ship, so the first-use build works from an installed package.
    for source in (REPO / "cuda").rglob("*"):
        if source.suffix in (".h", ".cuh", ".cpp", ".cu"):
            rel = source.relative_to(REPO).as_posix()
            assert f"scenegrad/{rel}" in names, f"{rel} is missing from the wheel"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    parser = configparser.ConfigParser()
    parser.read_string(zipfile.ZipFile(wheel).read(entry_points).decode())
    assert parser["console_scripts"]["scenegrad"] == "scenegrad.apps.cli:main"


def test_installed_wheel_imports(wheel, tmp_path):
    target = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    code = """
import importlib.util, sys
import scenegrad, scenegrad.render, scenegrad.recon, scenegrad.datasets, scenegrad.apps, scenegrad.cuda
import scenegrad.render.mesh, scenegrad.apps.cli
from scenegrad.cuda import build
assert scenegrad.__file__.startswith(sys.argv[1]), scenegrad.__file__
assert (build.SOURCE_DIR / "mesh" / "rasterize.h").exists()
for bare in ("render", "recon", "cuda", "apps"):
    assert importlib.util.find_spec(bare) is None, f"a bare {bare!r} module is importable"
spec = importlib.util.find_spec("datasets")
assert spec is None or not str(spec.origin).startswith(sys.argv[1]), "the wheel shadows 'datasets'"
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run(
        [sys.executable, "-c", code, str(target)], capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
