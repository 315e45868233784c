"""Reconstruction pipelines built only from :mod:`scenegrad.render` primitives.

Planned modules: ``flowmap`` (poses, intrinsics and depth from video), ``sfm`` and ``ba``
(structure from motion with a differentiable bundle-adjustment layer), ``splat`` (Gaussian
training), ``mesh`` (TSDF fusion and iso-surface extraction), ``nerf`` and ``inverse``.
"""
