"""Which implementation of a primitive runs: the one dispatch rule of scenegrad.

Every primitive has three implementations with one signature: a pure-PyTorch reference
(``scenegrad.render._reference``), a native C++ CPU kernel and a CUDA kernel (both in the
extension built by :mod:`scenegrad.cuda.build`). Some areas also have adapters to external
libraries (``"nvdiffrast"``, ``"gsplat"``, ...) where those are installed.

``backend=`` on a public function, else the environment variable ``SCENEGRAD_BACKEND``, else
``"auto"``, decides:

- ``"auto"``: the native kernel for the tensors' device when it is available (built, and with
  CUDA for CUDA tensors), otherwise the reference (the build warns once why).
- ``"native"``: the native kernel, or a ``RuntimeError`` that says why it is unavailable.
- ``"reference"``: the pure-PyTorch implementation.
- an adapter name listed for the area in :data:`AREAS`.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from types import ModuleType

import torch

from scenegrad.cuda import build

ENV_VAR = "SCENEGRAD_BACKEND"
BACKENDS = ("auto", "native", "reference")

#: Areas with a dispatch point, and the external adapters each one knows (module names).
AREAS: dict[str, tuple[str, ...]] = {
    "mesh": ("nvdiffrast",),  # rasterize, interpolate, texture, antialias (CUDA only)
    "gaussians": ("gsplat",),  # rasterize_gaussians only
    "iso": (),
    "spheres": ("pytorch3d",),  # PyTorch3D's Pulsar, render_spheres only
    "ba": (),  # the bundle adjustment's Schur complement (scenegrad.recon.ba)
}

_warned_cuda = False


def requested(backend: str | None) -> str:
    """The backend asked for: the argument, else ``$SCENEGRAD_BACKEND``, else ``"auto"``."""
    value = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    return value.strip().lower()


def validate(area: str, backend: str | None) -> str:
    """The backend asked for (see :func:`requested`), checked against ``area``'s choices: raises
    ``ValueError`` naming the choices for an unknown name."""
    choice = requested(backend)
    adapters = AREAS.get(area, ())
    if choice not in BACKENDS and choice not in adapters:
        raise ValueError(
            f"unknown backend {choice!r} for {area}; choose one of {', '.join(BACKENDS + adapters)}"
            + (f" (from ${ENV_VAR})" if backend is None else "")
        )
    return choice


def resolve(area: str, backend: str | None, device: torch.device) -> str:
    """Name of the implementation to run for ``area`` on ``device``.

    Returns ``"native"``, ``"reference"`` or an adapter name. Raises ``ValueError`` for an unknown
    name and ``RuntimeError`` when an explicitly requested implementation is unavailable.
    """
    global _warned_cuda
    choice = validate(area, backend)
    adapters = AREAS.get(area, ())
    if choice == "reference":
        return "reference"
    if choice in adapters:
        if importlib.util.find_spec(choice) is None:
            raise RuntimeError(f"backend {choice!r} requested for {area}, but {choice} is not installed")
        return choice
    module = build.native()
    reason = None
    if module is None:
        reason = f"the native kernels are unavailable ({build.state().error})"
    elif device.type == "cuda" and not module.with_cuda():
        reason = "the native kernels were built without CUDA (torch without CUDA, or no nvcc at build time)"
    elif device.type not in ("cpu", "cuda"):
        reason = f"no native kernels for device type {device.type!r}"
    if reason is None:
        return "native"
    if choice == "native":
        raise RuntimeError(f"backend 'native' requested for {area} on {device}, but {reason}")
    if device.type == "cuda" and module is not None and not _warned_cuda:
        _warned_cuda = True
        warnings.warn(f"scenegrad: {reason}; CUDA tensors use the reference kernels", RuntimeWarning, stacklevel=3)
    return "reference"


def native_module() -> ModuleType:
    """The built extension (call after :func:`resolve` returned ``"native"``)."""
    module = build.native()
    if module is None:  # pragma: no cover - resolve() guards this
        raise RuntimeError(f"native kernels unavailable: {build.state().error}")
    return module


def would_use(area: str, device: str = "cpu") -> str:
    """What ``"auto"`` (or ``$SCENEGRAD_BACKEND``) would pick, without building anything."""
    choice = requested(None)
    if choice == "reference" or choice in AREAS.get(area, ()):
        return choice
    if build.find_compiler() is None:
        return "reference (no C++ compiler)"
    if device == "cuda" and build.cuda_toolkit() is None:
        return "reference (no CUDA toolkit for the native build)"
    return "native"


_ZEROS: dict[tuple, torch.Tensor] = {}


def zeros_for_kernel(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Zeros of ``shape`` with ``like``'s dtype and device, for a native kernel to read (never to
    write), kept for the next call. Autograd Functions with several outputs use it, with
    ``set_materialize_grads(False)``, for the gradient of an output the loss leaves out, instead of
    autograd's fresh zero fill on every backward.
    """
    key = (tuple(shape), like.dtype, like.device)
    zeros = _ZEROS.get(key)
    if zeros is None:
        if len(_ZEROS) >= 8:
            _ZEROS.clear()
        zeros = _ZEROS[key] = torch.zeros(key[0], dtype=like.dtype, device=like.device)
    return zeros
