"""``scenegrad info``: the facts a bug report needs (versions, compiler, native build, devices)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys

# Distribution names reported when installed; looked up in metadata, never imported.
_PACKAGES = (
    "torch",
    "numpy",
    "opencv-python-headless",
    "opencv-python",
    "open3d-cpu",
    "open3d",
    "imageio",
    "imageio-ffmpeg",
    "roma",
    "gsplat",
    "nvdiffrast",
    "pycolmap",
    "pytorch3d",
    "gradio",
)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unavailable ({error})"
    lines = [line for line in (out.stdout or out.stderr).splitlines() if line.strip()]
    if not lines:
        return "unknown"
    return lines[-1].strip() if "nvcc" in cmd[0] else lines[0].strip()


def collect(build_now: bool = False) -> dict[str, object]:
    """Everything ``scenegrad info`` prints, as a JSON-friendly dict. ``build_now`` builds the kernels."""
    import torch

    import scenegrad
    from scenegrad.cuda import build
    from scenegrad.render import backend

    facts: dict[str, object] = {
        "scenegrad": scenegrad.__version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpu cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "torch cuda": torch.version.cuda or "none (CPU build)",
    }
    facts["packages"] = {name: v for name in _PACKAGES if (v := _version(name)) is not None}

    cxx = build.find_compiler()
    facts["c++ compiler"] = f"{cxx}: {_first_line([cxx, '--version'])}" if cxx else "not found"
    facts["openmp"] = " ".join(build.openmp_flags()) or "not available (single-threaded kernels)"
    nvcc = shutil.which("nvcc")
    facts["nvcc"] = f"{nvcc}: {_first_line([nvcc, '--version'])}" if nvcc else "not found"
    facts["kernel cache"] = str(build.cache_dir())

    if build_now:
        module = build.native()
        state = build.state()
        facts["native build"] = (
            f"built: {state.library} (cuda={'yes' if state.with_cuda else 'no'}, "
            f"openmp threads={module.openmp_threads()})"
            if module is not None
            else f"failed: {state.error}"
        )
    else:
        cached = build.cached_library()
        facts["native build"] = (
            f"cached: {cached}" if cached else "not built yet (builds on first use; `scenegrad info --build`)"
        )

    if torch.cuda.is_available():
        facts["cuda devices"] = [
            f"{i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())
        ]
    else:
        facts["cuda devices"] = "none"
    facts["backend override"] = os.environ.get(backend.ENV_VAR, "unset")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    facts["backends"] = {
        f"{area} ({device})": backend.would_use(area, device) for area in backend.AREAS for device in devices
    }
    return facts


def format_text(facts: dict[str, object]) -> str:
    lines = []
    for key, value in facts.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines += [f"  {k}: {v}" for k, v in value.items()]
        elif isinstance(value, list):
            lines.append(f"{key}:")
            lines += [f"  {v}" for v in value]
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)
