"""Shared fixtures. Native-kernel tests skip only where no C++ compiler exists; where one exists,
a failed build fails them."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path

import pytest
import torch

from scenegrad.cuda import build

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def native():
    """The built native extension (builds it on first use)."""
    if build.find_compiler() is None:
        pytest.skip("no C++ compiler on this machine: native kernels cannot be built")
    module = build.native()
    assert module is not None, f"native build failed: {build.state().error}"
    return module


def fake_module(monkeypatch: pytest.MonkeyPatch, name: str) -> types.ModuleType:
    """An empty module importable (and found by importlib.util.find_spec) as ``name`` for the test:
    an adapter's checks before it calls the library then run where the library is absent."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def requires_cuda(test):
    """Skips ``test`` without a CUDA device and marks it ``cuda`` (``benchmarks/gpu_check.sh`` runs
    ``pytest -m cuda``)."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


@pytest.fixture(scope="module")
def one_thread():
    """One torch (and OpenMP) thread for the module: loops of many small ops run steadily with one,
    while two OpenMP threads that wait on each other made them 10-50x slower on a loaded 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SPOT = SHARED_DATA / "meshes" / "spot" / "spot.obj"


def load_spot():
    """The Spot mesh from ``../shared/data`` (skips the calling test where it is absent)."""
    if not SPOT.is_file():
        pytest.skip(f"{SPOT} not found (../shared/data is absent)")
    from scenegrad.datasets.meshes import load_mesh

    return load_mesh(SPOT)
