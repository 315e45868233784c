"""3D Gaussian splatting: project, rasterize and differentiate Gaussian scenes on CPU and CUDA.

Layers (one name per primitive at every layer):

- :func:`project_gaussians` (``render/gaussians/project.py``): EWA projection of 3D Gaussians to
  2D image-space means, conics, depths and radii;
- :func:`rasterize_to_pixels` (``render/gaussians/rasterize.py``): tile-binned, depth-sorted
  front-to-back alpha compositing of the projected Gaussians;
- :func:`rasterize_gaussians` (``render/gaussians/render.py``): the gsplat-style composition
  (spherical harmonics, render modes, backgrounds) returning a :class:`GaussianRender`.
"""
