"""First-use build of scenegrad's native kernels.

All C++ sources under ``cuda/`` (and, where torch has CUDA and a toolkit is installed, the
``.cu`` sources too) are compiled into one extension with torch's ``cpp_extension``. The result
is cached in ``$SCENEGRAD_CACHE_DIR`` (default ``$XDG_CACHE_HOME/scenegrad`` or
``~/.cache/scenegrad``) under a name that contains a hash of every source file, the compiler
flags, and the torch and Python versions: editing a source gives a new hash and so a rebuild;
an unchanged tree loads the cached library directly, without invoking the compiler.

Nothing here runs at import time. :func:`native` is called by the dispatchers the first time a
kernel is needed. When no compiler is found, or the build fails, it warns once and returns
``None``; the dispatchers then use the pure-PyTorch reference implementations.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

SOURCE_DIR = Path(__file__).resolve().parent
_EXTENSION_PREFIX = "scenegrad_native"


@dataclass
class BuildState:
    """What the build found out; reported by ``scenegrad info``."""

    attempted: bool = False
    module: ModuleType | None = None
    with_cuda: bool = False
    openmp: bool = False
    library: Path | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


_state = BuildState()
_lock = threading.Lock()


def cache_dir() -> Path:
    """Folder that holds compiled extensions (``$SCENEGRAD_CACHE_DIR`` overrides)."""
    if os.environ.get("SCENEGRAD_CACHE_DIR"):
        return Path(os.environ["SCENEGRAD_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scenegrad"


def cpu_sources() -> list[Path]:
    return sorted(SOURCE_DIR.rglob("*.cpp"))


def cuda_sources() -> list[Path]:
    return sorted(SOURCE_DIR.rglob("*.cu"))


def clashing_object_names() -> list[str]:
    """Sources whose object files would collide: torch's ninja build names each object after the
    source's file name alone (``a/x.cpp`` and ``b/x.cpp`` both give ``x.o``; ``x.cu`` gives
    ``x.cuda.o``), so every ``.cpp`` stem and every ``.cu`` stem must be unique across folders."""
    clashes = []
    for sources in (cpu_sources(), cuda_sources()):
        seen: dict[str, Path] = {}
        for path in sources:
            if path.stem in seen:
                clashes.append(f"{seen[path.stem].relative_to(SOURCE_DIR)} and {path.relative_to(SOURCE_DIR)}")
            seen.setdefault(path.stem, path)
    return clashes


def headers() -> list[Path]:
    return sorted([*SOURCE_DIR.rglob("*.h"), *SOURCE_DIR.rglob("*.cuh")])


def find_compiler() -> str | None:
    """The C++ compiler torch's cpp_extension would use, if it exists on PATH."""
    cxx = os.environ.get("CXX", "c++")
    return shutil.which(cxx) or (shutil.which("g++") if "CXX" not in os.environ else None)


def cuda_toolkit() -> str | None:
    """CUDA_HOME when torch was built with CUDA and a toolkit (nvcc) is present, else None."""
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        return None
    if torch.version.cuda is None or not torch.cuda.is_available():
        return None
    home = cpp_extension.CUDA_HOME
    if home is None or not (Path(home) / "bin" / "nvcc").exists():
        return None
    return str(home)


_openmp_cache: list[str] | None = None


def openmp_flags() -> list[str]:
    """Compiler flags that enable OpenMP, or [] where the compiler lacks it (e.g. Apple clang)."""
    global _openmp_cache
    if _openmp_cache is not None:
        return _openmp_cache
    cxx = find_compiler()
    candidates = [["-fopenmp"]]
    if platform.system() == "Darwin":
        candidates = [["-Xpreprocessor", "-fopenmp", "-lomp"], ["-fopenmp"]]
    _openmp_cache = []
    if cxx is None:
        return _openmp_cache
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.cpp"
        src.write_text("#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        for flags in candidates:
            result = subprocess.run(
                [cxx, str(src), "-o", str(Path(tmp) / "probe"), *flags],
                capture_output=True,
                check=False,
            )
            if result.returncode == 0:
                _openmp_cache = flags
                break
    return _openmp_cache


def _cflags(openmp: list[str]) -> list[str]:
    # The kernels are C++20 (std::popcount, std::endian, ...). torch puts its own -std before these flags
    # (C++17 before torch 2.13, C++20 since) and the last one wins. -fno-math-errno -fno-trapping-math:
    # loops with sqrt, comparisons and selects can become SIMD code (nothing reads errno or traps
    # floating-point exceptions).
    flags = ["-std=c++20", "-O3", "-fno-math-errno", "-fno-trapping-math"]
    if openmp:
        flags += [f for f in openmp if f != "-lomp"]
        flags.append("-DSCENEGRAD_OPENMP")
    return flags


def _ldflags(openmp: list[str]) -> list[str]:
    if not openmp:
        return []
    return ["-lomp"] if "-lomp" in openmp else ["-fopenmp"]


def _cuda_cflags() -> list[str]:
    # With a -std of ours, torch adds none to nvcc's flags (it would add C++17 before torch 2.13).
    return ["-std=c++20", "-O3", "-lineinfo"]


def build_key(with_cuda: bool, openmp: list[str]) -> str:
    """Hash of every kernel source, the flags, and the torch/Python versions."""
    import torch

    digest = hashlib.sha256()
    files = cpu_sources() + headers() + (cuda_sources() if with_cuda else [])
    for path in files:
        digest.update(str(path.relative_to(SOURCE_DIR)).encode())
        digest.update(path.read_bytes())
    meta = [
        torch.__version__,
        sys.version.split()[0],
        platform.machine(),
        str(with_cuda),
        " ".join(_cflags(openmp)),
        " ".join(_ldflags(openmp)),
        " ".join(_cuda_cflags()) if with_cuda else "",
        os.environ.get("TORCH_CUDA_ARCH_LIST", "") if with_cuda else "",
    ]
    digest.update("\n".join(meta).encode())
    return digest.hexdigest()[:16]


def _load_library(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compile(with_cuda: bool, openmp: list[str], verbose: bool) -> tuple[ModuleType, Path]:
    import torch  # noqa: F401  (the extension links against it)
    from torch.utils import cpp_extension

    key = build_key(with_cuda, openmp)
    name = f"{_EXTENSION_PREFIX}_{'cuda' if with_cuda else 'cpu'}_{key}"
    build_dir = cache_dir() / "build" / name
    library = build_dir / f"{name}{_so_suffix()}"
    if library.exists():
        return _load_library(name, library), library

    build_dir.mkdir(parents=True, exist_ok=True)
    what = "CPU and CUDA" if with_cuda else "CPU"
    print(f"scenegrad: compiling native {what} kernels once (cached in {build_dir}) ...", file=sys.stderr)
    sources = [str(p) for p in cpu_sources()]
    if with_cuda:
        sources += [str(p) for p in cuda_sources()]
    defines = ["-DSCENEGRAD_WITH_CUDA"] if with_cuda else []
    module = cpp_extension.load(
        name=name,
        sources=sources,
        extra_cflags=_cflags(openmp) + defines,
        extra_cuda_cflags=_cuda_cflags() + defines,
        extra_ldflags=_ldflags(openmp),
        extra_include_paths=[str(SOURCE_DIR)],
        build_directory=str(build_dir),
        with_cuda=with_cuda,
        verbose=verbose,
    )
    return module, library


def _so_suffix() -> str:
    import importlib.machinery

    return ".so" if sys.platform != "win32" else importlib.machinery.EXTENSION_SUFFIXES[-1]


def _warn(message: str) -> None:
    _state.warnings.append(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def native(verbose: bool = False) -> ModuleType | None:
    """The compiled extension, building it on first call; ``None`` where it cannot be had.

    Thread-safe; the outcome (module or failure) is remembered for the life of the process,
    so the fallback warning is printed once.
    """
    if _state.attempted:
        return _state.module
    with _lock:
        if _state.attempted:
            return _state.module
        _state.attempted = True
        if find_compiler() is None:
            _state.error = "no C++ compiler found (set CXX or install g++/clang)"
            _warn(
                f"scenegrad: {_state.error}; using the pure-PyTorch reference kernels, which are "
                "much slower. Install a compiler to get the native kernels."
            )
            return None
        openmp = openmp_flags()
        _state.openmp = bool(openmp)
        if not openmp:
            _state.warnings.append("compiler has no OpenMP: native CPU kernels run single-threaded")
        with_cuda = cuda_toolkit() is not None
        try:
            _state.module, _state.library = _compile(with_cuda, openmp, verbose)
            _state.with_cuda = with_cuda
        except Exception as error:  # compiler errors surface as RuntimeError / CalledProcessError
            if with_cuda:
                _warn(f"scenegrad: CUDA kernel build failed ({_short(error)}); building CPU kernels only")
                try:
                    _state.module, _state.library = _compile(False, openmp, verbose)
                    return _state.module
                except Exception as cpu_error:
                    error = cpu_error
            _state.error = _short(error)
            _warn(
                f"scenegrad: native kernel build failed ({_state.error}); using the pure-PyTorch "
                f"reference kernels. Rebuild with verbose output: python -c "
                f"'import scenegrad.cuda.build as b; b.native(verbose=True)'"
            )
    return _state.module


def state() -> BuildState:
    """What the build found out so far (does not trigger a build)."""
    return _state


def cached_library() -> Path | None:
    """Path of an already-built CPU/CUDA library for the current sources, without building."""
    if find_compiler() is None:
        return None
    try:
        openmp = openmp_flags()
        with_cuda = cuda_toolkit() is not None
        key = build_key(with_cuda, openmp)
    except ImportError:
        return None
    name = f"{_EXTENSION_PREFIX}_{'cuda' if with_cuda else 'cpu'}_{key}"
    library = cache_dir() / "build" / name / f"{name}{_so_suffix()}"
    return library if library.exists() else None


def _short(error: BaseException) -> str:
    """The first compiler error line of a failed build (else its last line)."""
    text = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    errors = [line for line in text if "error" in line.lower() and "ninja" not in line.lower()]
    line = errors[0] if errors else (text[-1] if text else type(error).__name__)
    return line[:300]


def _reset_for_tests() -> None:
    """Forget the outcome of the last build attempt (tests use this to force a rebuild)."""
    global _state, _openmp_cache
    _state = BuildState()
    _openmp_cache = None
