"""Shared fixtures. Native-kernel tests skip only where no C++ compiler exists; where one exists,
a failed build fails them."""

from __future__ import annotations

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


def cuda_devices() -> list[str]:
    return ["cuda"] if torch.cuda.is_available() else []


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
