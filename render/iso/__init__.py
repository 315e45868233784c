"""Differentiable iso-surface extraction: marching cubes with gradients to the field.

- :func:`marching_cubes` (``render/iso/marching_cubes.py``): the mesh of a level set of a dense
  grid, vertices differentiable in the grid values.
- :func:`extract_surface` (``render/iso/mesh_sdf.py``): the same for fields given as functions
  (networks, analytic SDFs), sampled in a narrow band, with MeshSDF gradients to the field's
  parameters (:func:`attach_field_gradient`).
- :mod:`~scenegrad.render.iso.postprocess`: largest component, Taubin smoothing, quadric
  decimation (Open3D).
- :mod:`~scenegrad.render.iso.tables`: the case tables, derived from first principles.
"""

from .marching_cubes import IsoSurface, marching_cubes, marching_cubes_topology
from .mesh_sdf import Field, attach_field_gradient, extract_surface, sample_grid

__all__ = ["IsoSurface", "marching_cubes", "marching_cubes_topology", "Field", "attach_field_gradient",
           "extract_surface", "sample_grid"]
