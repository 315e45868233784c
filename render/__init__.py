"""Differentiable renderers and the camera model.

- :mod:`scenegrad.render.cameras`: the ``Cameras`` type and scenegrad's conventions (read first).
- :mod:`scenegrad.render.rotations`: quaternions (w, x, y, z), axis-angle, 6D, SE(3)/Sim(3).
- :mod:`scenegrad.render.conventions`: converters to and from OpenGL/nerfstudio, PyTorch3D,
  nvdiffrast clip space and COLMAP.
- :mod:`scenegrad.render.mesh`: rasterize (and, to come, interpolate, texture, antialias).
- :mod:`scenegrad.render.backend`: how each primitive picks its native or reference implementation.
"""
