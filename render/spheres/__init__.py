"""Pulsar-style sphere rendering: differentiable rendering of scenes made of spheres.

- :func:`render_spheres` (``render/spheres/render.py``): every pixel blends the spheres its ray
  hits with weights that depend softly on the intersection depth (sharpness ``gamma``) and on the
  ray's distance to the centre; returns a :class:`SphereRender` (features, alpha, depth and the
  ids of the strongest contributors), from perspective or orthographic cameras (``projection=``).
- :func:`points_to_spheres` and :func:`fit_spheres` (``render/spheres/fit.py``): sphere scenes from
  point clouds, and fitted to posed images (Adam, with splitting and pruning); :func:`render_cloud`
  renders a fitted cloud (optionally supersampled).

Backends (:mod:`scenegrad.render.backend`, area ``"spheres"``): a pure-PyTorch reference
(``render/_reference/spheres.py``), a native C++ CPU kernel and a CUDA kernel (``cuda/spheres/``,
the per-pixel math shared in ``spheres.h``); ``backend="pytorch3d"`` renders with PyTorch3D's Pulsar
where it is installed (``render/spheres/pulsar_adapter.py``).
"""

from .fit import (
    SphereCloud,
    SphereFit,
    fit_spheres,
    points_to_spheres,
    psnr,
    render_cloud,
    sphere_contributions,
)
from .render import BG_EPS, MAX_FEATURES, TOLERANCE, SphereRender, render_spheres

__all__ = [
    "render_spheres",
    "SphereRender",
    "BG_EPS",
    "TOLERANCE",
    "MAX_FEATURES",
    "SphereCloud",
    "SphereFit",
    "points_to_spheres",
    "fit_spheres",
    "sphere_contributions",
    "render_cloud",
    "psnr",
]
