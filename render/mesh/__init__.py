"""Differentiable triangle-mesh rendering primitives (nvdiffrast-style, on every machine).

- :func:`rasterize`: clip-space triangles to per-pixel barycentrics, depth and triangle ids.
- :func:`interpolate`: vertex attributes to pixels (and their screen-space derivatives).
- :func:`texture`: texture lookups (bilinear, trilinear mipmaps, wrap/clamp/zero, cube maps).
- :func:`antialias`: analytic silhouette antialiasing, the source of gradients at visibility edges.

Composed on top, in plain torch: the :class:`Mesh` type and :func:`render_mesh` (cameras, shading,
lights, environment map, compositing).

Each primitive has a native C++/CUDA implementation and a pure-PyTorch twin in
:mod:`scenegrad.render._reference`; ``backend=`` picks one (:mod:`scenegrad.render.backend`).
"""

from scenegrad.render.mesh.antialias import antialias, antialias_topology
from scenegrad.render.mesh.interpolate import Interpolated, interpolate
from scenegrad.render.mesh.mesh import Material, Mesh
from scenegrad.render.mesh.rasterize import Rasterized, rasterize
from scenegrad.render.mesh.render import Lights, MeshRender, render_mesh
from scenegrad.render.mesh.texture import mip_pyramid, texture

__all__ = [
    "Interpolated",
    "Lights",
    "Material",
    "Mesh",
    "MeshRender",
    "Rasterized",
    "antialias",
    "antialias_topology",
    "interpolate",
    "mip_pyramid",
    "rasterize",
    "render_mesh",
    "texture",
]
