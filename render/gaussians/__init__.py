"""3D Gaussian splatting: project, rasterize and differentiate Gaussian scenes on CPU and CUDA.

Layers (one name per primitive at every layer):

- :func:`project_gaussians` (``render/gaussians/project.py``): EWA projection of 3D Gaussians to
  2D image-space means, conics, depths and radii;
- :func:`rasterize_to_pixels` (``render/gaussians/rasterize.py``): tile-binned, depth-sorted
  front-to-back alpha compositing of the projected Gaussians;
- :func:`rasterize_gaussians` (``render/gaussians/render.py``): the gsplat-style composition
  (spherical harmonics, render modes, backgrounds) returning a :class:`GaussianRender`.

Helpers: :mod:`~scenegrad.render.gaussians.sh` (spherical harmonics with 3DGS's constants). Files of
Gaussian scenes (3DGS PLY, ``.splat``) live in :mod:`scenegrad.datasets.splats`.

Backends (:mod:`scenegrad.render.backend`, area ``"gaussians"``): both primitives have a pure-PyTorch
reference (``render/_reference/gaussian_*.py``), a native C++ CPU kernel and a CUDA kernel
(``cuda/gaussians/``, the per-element math shared in ``project.h`` and ``rasterize.h``).
:func:`rasterize_gaussians` also takes ``backend="gsplat"`` where gsplat and a GPU are present
(:mod:`~scenegrad.render.gaussians.gsplat_adapter`).
"""

from .project import project_gaussians
from .rasterize import RasterizedPixels, rasterize_to_pixels
from .render import RASTERIZE_MODES, RENDER_MODES, GaussianRender, rasterize_gaussians
from .sh import num_sh_bases, rgb_to_sh, sh_to_rgb, spherical_harmonics

__all__ = [
    "project_gaussians",
    "rasterize_to_pixels",
    "RasterizedPixels",
    "rasterize_gaussians",
    "GaussianRender",
    "RENDER_MODES",
    "RASTERIZE_MODES",
    "spherical_harmonics",
    "num_sh_bases",
    "rgb_to_sh",
    "sh_to_rgb",
]

