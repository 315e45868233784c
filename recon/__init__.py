"""Reconstruction pipelines built only from :mod:`scenegrad.render` primitives.

``flowmap`` (poses, focal length and dense depth from video, with ``flow`` for its correspondences and
``evaluate`` for pose metrics) is a first working version. Planned modules: ``sfm`` and ``ba``
(structure from motion with a differentiable bundle-adjustment layer), ``splat`` (Gaussian
training), ``mesh`` (TSDF fusion and iso-surface extraction), ``nerf`` and ``inverse``.
"""
