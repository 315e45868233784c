"""scenegrad: differentiable rendering and 3D reconstruction.

Subpackages (imported lazily, so ``import scenegrad`` is cheap and never compiles anything):

- ``scenegrad.render``: differentiable renderers and cameras.
- ``scenegrad.recon``: reconstruction pipelines built from those renderers.
- ``scenegrad.datasets``: readers and writers of scenes, cameras, images and meshes.
- ``scenegrad.apps``: the ``scenegrad`` command line and the demo app.
- ``scenegrad.cuda``: the C++/CUDA kernel sources and the first-use build.

Conventions (cameras, pixels, quaternions, image layout) are stated once, in
:mod:`scenegrad.render.cameras`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["apps", "cuda", "datasets", "recon", "render", "__version__"]


def __getattr__(name: str):
    if name in __all__ and name != "__version__":
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'scenegrad' has no attribute {name!r}")
