"""The first-use native build: nothing at import, cache keyed by sources, graceful fallback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scenegrad.cuda import build
from scenegrad.render import backend

from ..conftest import REPO


def run_python(code: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full_env,
        cwd=cwd, timeout=600, check=False,
    )


def test_import_builds_nothing():
    result = run_python(
        """
        import sys
        import scenegrad, scenegrad.render.mesh, scenegrad.render.backend, scenegrad.apps.cli
        from scenegrad.cuda import build
        assert not build.state().attempted, "importing scenegrad started a build"
        assert "torch.utils.cpp_extension" not in sys.modules, "cpp_extension imported at import time"
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "compiling" not in result.stderr


def test_build_key_follows_sources(tmp_path, monkeypatch):
    copy = tmp_path / "cuda"
    shutil.copytree(build.SOURCE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    monkeypatch.setattr(build, "SOURCE_DIR", copy)
    flags = ["-fopenmp"]
    key = build.build_key(False, flags)
    assert key == build.build_key(False, flags), "key is not deterministic"
    header = copy / "mesh" / "rasterize.h"
    original = header.read_text()
    header.write_text(original + "\n// edited\n")
    assert build.build_key(False, flags) != key, "editing a header did not change the build key"
    header.write_text(original)
    assert build.build_key(False, flags) == key
    (copy / "mesh" / "extra.cpp").write_text("// a new source file\n")
    assert build.build_key(False, flags) != key, "adding a source did not change the build key"
    (copy / "mesh" / "extra.cpp").unlink()
    assert build.build_key(False, []) != key, "compiler flags are not part of the key"
    assert build.build_key(True, flags) != key, "the CUDA switch is not part of the key"


def test_cached_library_is_loaded_without_compiling(native):
    library = build.cached_library()
    assert library is not None and library.exists()
    assert library == build.state().library
    start = time.perf_counter()
    result = run_python(
        """
        import torch
        from scenegrad.render.mesh import rasterize
        pos = torch.tensor([[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
        rast, _ = rasterize(pos, torch.tensor([[0, 1, 2]]), (8, 8), backend="native")
        assert rast[..., 3].max() == 1
        """
    )
    assert result.returncode == 0, result.stderr
    assert "compiling" not in result.stderr, "a cached build was compiled again"
    assert time.perf_counter() - start < 60


def test_no_compiler_falls_back_with_one_warning(tmp_path):
    result = run_python(
        """
        import warnings, torch
        from scenegrad.render.mesh import rasterize
        pos = torch.tensor([[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
        tri = torch.tensor([[0, 1, 2]])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a, _ = rasterize(pos, tri, (8, 8))
            b, _ = rasterize(pos, tri, (8, 8))
        messages = [str(w.message) for w in caught if "scenegrad" in str(w.message)]
        assert len(messages) == 1, messages
        assert "compiler" in messages[0] and "reference" in messages[0], messages
        assert torch.equal(a, b) and a[..., 3].max() == 1
        try:
            rasterize(pos, tri, (8, 8), backend="native")
        except RuntimeError as error:
            assert "compiler" in str(error), error
        else:
            raise AssertionError("backend='native' without a compiler did not raise")
        print("ok")
        """,
        env={"CXX": str(tmp_path / "no-such-compiler"), "SCENEGRAD_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_failed_build_falls_back(tmp_path):
    broken = tmp_path / "broken-c++"
    broken.write_text("#!/bin/sh\necho 'broken compiler' >&2\nexit 1\n")
    broken.chmod(0o755)
    result = run_python(
        """
        import warnings, torch
        from scenegrad.render.mesh import rasterize
        pos = torch.tensor([[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rast, _ = rasterize(pos, torch.tensor([[0, 1, 2]]), (8, 8))
        messages = [str(w.message) for w in caught if "scenegrad" in str(w.message)]
        assert len(messages) == 1 and "build failed" in messages[0], messages
        assert rast[..., 3].max() == 1
        print("ok")
        """,
        env={"CXX": str(broken), "SCENEGRAD_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_environment_override(monkeypatch):
    import torch

    monkeypatch.setenv(backend.ENV_VAR, "reference")
    assert backend.resolve("mesh", None, torch.device("cpu")) == "reference"
    monkeypatch.setenv(backend.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match=backend.ENV_VAR):
        backend.resolve("mesh", None, torch.device("cpu"))
    # An explicit argument wins over the environment.
    assert backend.resolve("mesh", "reference", torch.device("cpu")) == "reference"


def test_openmp_probe_finds_gcc_openmp():
    if build.find_compiler() is None:
        pytest.skip("no C++ compiler")
    if sys.platform != "linux":
        pytest.skip("the OpenMP expectation is for Linux gcc/clang")
    assert "-fopenmp" in build.openmp_flags()


def test_native_threads(native):
    import torch

    assert native.with_cuda() == (build.cuda_toolkit() is not None)
    if build.state().openmp:
        # The kernels share torch's OpenMP runtime, so torch.set_num_threads governs them too.
        assert native.openmp_threads() == torch.get_num_threads()
    else:
        assert native.openmp_threads() == 1


def test_sources_compile_without_openmp(tmp_path):
    """The single-threaded path (macOS clang without OpenMP) must compile too."""
    cxx = build.find_compiler()
    if cxx is None:
        pytest.skip("no C++ compiler")
    import sysconfig

    from torch.utils import cpp_extension

    includes = [f"-I{p}" for p in cpp_extension.include_paths()] + [
        f"-I{sysconfig.get_paths()['include']}", f"-I{build.SOURCE_DIR}",
    ]

    def check(source: Path) -> str | None:
        result = subprocess.run(
            [cxx, "-std=c++20", "-fsyntax-only", "-DTORCH_EXTENSION_NAME=probe", *includes, str(source)],
            capture_output=True, text=True, timeout=600, check=False,
        )
        return None if result.returncode == 0 else f"{source.name} without OpenMP:\n{result.stderr[-3000:]}"

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(check, build.cpu_sources()) if f]
    assert not failures, "\n".join(failures)


def test_source_names_give_distinct_object_files():
    assert build.clashing_object_names() == [], "rename one of each pair: ninja names objects by file name alone"


def test_repo_layout():
    for name in ("render", "recon", "cuda", "datasets", "apps", "tests", "benchmarks"):
        assert (REPO / name).is_dir(), name
    for name in ("pyproject.toml", "README.md", "Makefile", ".ci/run"):
        assert (REPO / name).is_file(), name


def test_kernel_sources_stay_off_the_python_headers():
    """Only the bindings include the Python side of torch (torch/python.h, via common/dispatch.h);
    kernels and launchers include common/aten.h. torch/extension.h or torch/python.h in a kernel source
    triples its parse time (46 s against 7-15 s per source), in the first-use build and in nvcc."""
    heavy = ("<torch/extension.h>", "<torch/python.h>", "<torch/torch.h>", "<torch/all.h>")
    allowed = {build.SOURCE_DIR / "bindings.cpp", build.SOURCE_DIR / "common" / "dispatch.h"}
    offenders = [
        f"{path.relative_to(build.SOURCE_DIR)}: {line.strip()}"
        for pattern in ("*.h", "*.cpp", "*.cu")
        for path in sorted(build.SOURCE_DIR.rglob(pattern))
        if path not in allowed
        for line in path.read_text().splitlines()
        if line.startswith("#include") and any(h in line for h in heavy)
    ]
    assert not offenders, "\n".join(offenders)
