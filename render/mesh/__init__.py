"""Differentiable triangle-mesh rendering primitives (nvdiffrast-style, on every machine).

- :func:`rasterize`: clip-space triangles to per-pixel barycentrics, depth and triangle ids.
- :func:`interpolate`: vertex attributes to pixels (and their screen-space derivatives).

Each primitive has a native C++/CUDA implementation and a pure-PyTorch twin in
:mod:`scenegrad.render._reference`; ``backend=`` picks one (:mod:`scenegrad.render.backend`).
"""

from scenegrad.render.mesh.interpolate import Interpolated, interpolate
from scenegrad.render.mesh.rasterize import Rasterized, rasterize

__all__ = ["Interpolated", "Rasterized", "interpolate", "rasterize"]
