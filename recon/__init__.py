"""Reconstruction pipelines built only from :mod:`scenegrad.render` primitives.

``flowmap`` (poses, focal length and dense depth from video, with ``flow`` for its correspondences and
``evaluate`` for pose metrics) is a first working version. ``ba`` is bundle adjustment (Levenberg-Marquardt
with robust losses and a Schur complement) usable alone and as a differentiable layer (implicit gradients);
``sfm`` is incremental structure from motion from unordered photos (SIFT, MAGSAC++ verification, PnP, ``ba``).
Also ``splat`` (Gaussian training) and ``mesh`` (TSDF fusion and iso-surface extraction); planned: ``nerf``
and ``inverse``.
"""
