"""Reconstruction pipelines built only from :mod:`scenegrad.render` primitives.

``flowmap`` (poses, focal length and dense depth from video, with ``flow`` for its correspondences and
``evaluate`` for pose metrics) is a first working version. ``ba`` is bundle adjustment (Levenberg-Marquardt
with robust losses and a Schur complement) usable alone and as a differentiable layer (implicit gradients).
Planned modules: ``sfm`` (structure from motion), ``splat`` (Gaussian
training), ``mesh`` (TSDF fusion and iso-surface extraction), ``nerf`` and ``inverse``.
"""
