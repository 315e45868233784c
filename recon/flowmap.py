"""FlowMap-style camera poses, a shared focal length and dense depth from a video, by gradient descent.

Given an ordered sequence of frames, :func:`fit` recovers every frame's world-to-camera pose, one focal
length shared by all frames (principal point at the image centre) and a dense depth map per frame, by
minimising the robust (Huber) difference between observed optical flow and the flow *induced* by the
depths, the focal length and the poses. As in FlowMap (Smith et al. 2024), in the main phase the only free
parameters are the depths and the focal length: the poses are solved in closed form from them, by a
weighted Procrustes fit (:func:`procrustes`, SVD) between the unprojected points of consecutive frames
matched by flow, composed along the sequence, so the gradient of the flow loss reaches the depths and the
focal length *through* the pose solve. No network, no pretrained weights:

- correspondences: OpenCV DIS flow between frames ``i -> i + s`` for ``s`` in ``config.skips``, with
  forward-backward and texture masks (:mod:`scenegrad.recon.flow`);
- depth: per frame, a multi-resolution field of log-depth (a coarse grid plus finer residual grids,
  sampled bilinearly and summed), positive by construction, with an edge-aware smoothness prior;
  initialised flat (all depths 1);
- focal length: for the first ``focal_search_steps`` steps, one depth field per candidate focal length
  (``focal_candidates`` fields of view in ``fov_range``) is fitted, all at once; a softmin over the
  candidates' losses then gives the focal length (and the best candidate's depth goes on), which is
  refined from there as a free parameter (FlowMap weighs the candidates with a softmin over one shared
  depth; that picked focal lengths off by 50-70 % on the orbit test here, one field per candidate 17 %);
- poses: Procrustes poses for ``steps`` steps (focal search included), then ``refine_steps`` steps with the
  poses as free parameters started from the Procrustes solution (a dense bundle adjustment over the
  flow pairs): the Procrustes poses alone carry the depth maps' errors (the refinement lowers the flow
  loss about 3x on the synthetic tests);
- long videos: overlapping windows of ``window`` frames, fitted one after the other and chained by a
  Sim(3) (rotation and translation from a shared frame's pose, scale from its depths);
- then (``track_refine``) a bundle adjustment of all poses and the focal length on KLT point tracks
  through the whole video, started from the fitted depths (:mod:`scenegrad.recon.track_refine`);
- finally (``match_refine``) one on SIFT features matched as COLMAP's sequential matching pairs frames
  (the next 10 frames and those ``2^k`` ahead), triangulated from the cameras, with observations
  re-admitted over a few rounds as the cameras improve: frame-to-frame tracks drift, these close loops
  (redkitchen: ATE 0.084 -> 0.048 m, COLMAP 0.047 m).

Conventions: :mod:`scenegrad.render.cameras` (OpenCV, world-to-camera, pixel centres at ``+0.5``). The
world frame is the first frame's camera; the scale is arbitrary (depths start at 1).

Device (``config.device``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``): the gradient descent (depth fields, focal
search, Procrustes, losses) runs there. DIS flow is computed on the CPU by OpenCV and moved once per window;
the correspondence samples are drawn from a seeded CPU generator and moved, so a seed draws the same samples
on every device. The windows' results come back to the CPU, where the KLT tracks and the bundle adjustment
of the final refinement run; the result is on the CPU.

>>> from scenegrad.datasets.generate import synthetic_scene
>>> scene = synthetic_scene("room", path="walk", count=6, size=(64, 48))
>>> frames = [f.image() for f in scene.frames]
>>> result = fit(frames, FlowMapConfig.fast(steps=20, refine_steps=10, focal_search_steps=10, progress=False))
>>> len(result.cameras), tuple(result.depths.shape)
(6, (6, 48, 64))
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from scenegrad.datasets.scene import Frame, Points, Scene
from scenegrad.recon.flow import FlowPairs, compute_flow_pairs
from scenegrad.recon.threads import cores
from scenegrad.recon.track_refine import (
    MATCHES_PER_FRAME,
    TrackRefinement,
    klt_tracks,
    median_per_frame,
    refine_with_matches,
    refine_with_tracks,
    sift_tracks,
)
from scenegrad.render.cameras import Cameras

__all__ = ["FlowMapConfig", "FlowMapResult", "DepthField", "procrustes", "fit", "save", "to_scene",
           "prepare_frames"]


@dataclass
class FlowMapConfig:
    """Settings of :func:`fit`.

    max_side: working resolution (long side, pixels); frames are area-downscaled to it.
    skips: flow pairs ``(i, i + s)``; ``1`` must be among them (poses come from consecutive frames).
    steps: Adam steps per window with poses solved by Procrustes from the depths (FlowMap's phase);
    refine_steps: then steps with the poses as free parameters (initialised from the Procrustes solution,
        optimised jointly with depth and focal length, learning rates decaying 10x): a dense bundle adjustment.
        With the track and match adjustments after it, the fit is their start, and more steps buy nothing
        there (redkitchen, 100 frames: default preset 600 + 300 steps 62 s, 300 + 150 37 s, 160 + 80 27 s,
        120 + 60 22.5 s; fast preset 200 + 150 24 s, 120 + 60 20 s; ATE 0.047-0.048 m and a median depth
        error of 18-21 % after a per-frame scale for each). The presets differ in the depth's resolution.
    lr: learning rate of the coarsest depth level, times ``level_lr_decay`` per finer level (Adam moves every
        parameter at about the same rate: fine levels must move slower); focal_lr: of the log focal length;
        pose_lr: of the free poses.
    samples: flow correspondences sampled per pair and step (proportionally to their weight).
    grid: long side of each depth level's grid, coarse to fine.
    smoothness: weight of the edge-aware smoothness of the finer levels.
    huber_px: Huber threshold in working pixels; outlier_px: during the refinement, correspondences off by more
        than this (working pixels) are left out.
    fb_threshold, texture_threshold: flow masks (:func:`scenegrad.recon.flow.compute_flow_pairs`).
    flow_side: long side at which flow is computed (then area-downscaled to the working resolution: more
        precise than flow at the working resolution); never above the input's.
    focal_search_steps: steps (part of ``steps``) fitting one depth field per candidate focal length:
        ``focal_candidates`` fields of view in ``fov_range`` (degrees, across the long side);
        focal_temperature: temperature of the softmin over their losses (relative to the best);
        search_frames: the search uses the first frames of the first window only; search_levels: and the
        coarsest depth levels only (a depth too free to bend fits the flow at wrong focal lengths too);
        search_samples:
        correspondences per pair and step in the search (None: ``samples``).
    focal: a known focal length in input pixels (skips the search and keeps it fixed); None: estimate.
    window, overlap: frames per window and frames shared by consecutive windows (long videos). A video of up
        to ``window`` frames is fitted in one window, whose steps cost more (more pairs) but are fewer than
        several windows' (redkitchen, 100 frames, in one window rather than three of 40: fast preset 42 s
        against 50 s in all, ATE 0.048 m for three seeds either way; default preset 101-108 s against 146 s,
        0.048 m; windows of 30, 40, 54, 60 and 70 frames also end at 0.048 m).
    min_flow_px: the median flow (working pixels) over the longest skip below which the camera is
        considered static and :func:`fit` raises.
    track_refine: finish with a bundle adjustment of the poses and the focal length on KLT point tracks
        at the input resolution (:mod:`scenegrad.recon.track_refine`); track_points: live tracks at most.
    match_refine: then adjust once more on SIFT features matched between each frame and the next
        ``match_window`` frames and the frames ``2^k`` ahead (``match_features`` SIFT features per frame at
        most, at the input resolution; COLMAP's sequential matching; tracks that
        tie distant frames and close loops), the points triangulated from the cameras
        (:func:`scenegrad.recon.track_refine.refine_with_matches`; needs ``track_refine``). Where a median
        frame has fewer than :data:`MATCHES_PER_FRAME` matched observations, or the matches' adjustment
        declines, the KLT tracks' adjustment is the result (run in full).
    camera_model: ``"SIMPLE_PINHOLE"`` (one focal length) or ``"SIMPLE_RADIAL"`` (and one radial
        distortion coefficient ``k1``, refined in the matches' adjustment: the cameras come back as
        ``"opencv"`` with ``dist = (k1, 0, 0, 0, 0)``; COLMAP's default model). The depth maps stay the
        fit's pinhole ones: :func:`dense_points` unprojects them without ``k1``.
    fit_threads: torch threads of the gradient descent (the caller's setting comes back after it; None: the
        caller's). Its steps are many small tensor operations, which one thread runs about as fast as two
        (a 40-frame window of redkitchen: 10.9 s against 9.7 s), and the other cores take the OpenCV jobs
        beside it; the bundle adjustments after it run with the caller's threads (10 iterations at 91.6k
        observations: 2.2-2.8 s on one thread, 1.3 s on two).
    seed: the correspondence sampling; progress: a tqdm bar over steps.
    device: where the gradient descent runs (``cpu``, ``cuda`` or ``cuda:N``; see the module docstring).
    """

    name: str = "default"
    max_side: int = 192
    skips: tuple[int, ...] = (1, 2, 4)
    steps: int = 120
    refine_steps: int = 60
    lr: float = 0.01
    focal_lr: float = 0.01
    pose_lr: float = 0.003
    level_lr_decay: float = 0.3
    samples: int = 1024
    grid: tuple[int, ...] = (6, 12, 24, 48)
    smoothness: float = 0.02
    huber_px: float = 1.0
    outlier_px: float = 3.0
    fb_threshold: float = 1.0
    texture_threshold: float = 2e-5
    flow_side: int = 384
    focal_search_steps: int = 80
    focal_candidates: int = 9
    fov_range: tuple[float, float] = (30.0, 110.0)
    focal_temperature: float = 0.05
    search_frames: int = 20
    search_levels: int = 2
    search_samples: int | None = 256
    focal: float | None = None
    window: int = 100
    overlap: int = 8
    min_flow_px: float = 0.3
    track_refine: bool = True
    track_points: int = 4000
    match_refine: bool = True
    match_window: int = 10
    match_features: int = 2048
    camera_model: str = "SIMPLE_PINHOLE"
    fit_threads: int | None = 1
    seed: int = 0
    progress: bool = True
    device: str = "cpu"

    @staticmethod
    def default(**kw) -> FlowMapConfig:
        return FlowMapConfig(**kw)

    @staticmethod
    def fast(**kw) -> FlowMapConfig:
        """Fewer steps and samples at a lower resolution (tests, previews)."""
        base = dict(name="fast", max_side=128, steps=120, refine_steps=60, samples=512, grid=(6, 12, 24),
                    focal_search_steps=80, search_samples=None)
        base.update(kw)
        return FlowMapConfig(**base)


@dataclass
class FlowMapResult:
    """What :func:`fit` recovers.

    cameras: ``N`` pinhole cameras at the input resolution (OpenCV world-to-camera, shared focal length,
        principal point at the image centre); world = the first frame's camera, arbitrary scale.
    depths: ``[N, H, W]`` float32 camera-``z`` depth at the input resolution, in the cameras' scale.
    loss: the training loss per step (all windows, in order).
    focal_history: the focal length (input pixels) per step (NaN during the focal search).
    seconds: wall time of the fit (flow included); stages: wall seconds per stage, one after the other
        (``"fit"``: flow and gradient descent, ``"waiting for tracks and matches"``, ``"track adjustment"``,
        ``"match adjustment"``); background: seconds of the jobs run on other threads beside them (``"flow"``
        of the windows after the first, ``"klt tracks"``, ``"sift matches"``);
    windows: the ``(start, stop)`` frame ranges fitted.
    refinement: what the bundle adjustment on KLT point tracks did (None when it was off).
    matching: what the last bundle adjustment, on SIFT matches, did (None when it was off or there were
        too few matches to try).
    """

    cameras: Cameras
    depths: Tensor
    loss: list[float] = field(default_factory=list)
    focal_history: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    background: dict[str, float] = field(default_factory=dict)
    windows: list[tuple[int, int]] = field(default_factory=list)
    refinement: TrackRefinement | None = None
    matching: TrackRefinement | None = None


# ----------------------------------------------------------------------------------------------
# Input
# ----------------------------------------------------------------------------------------------


def prepare_frames(frames, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``frames`` (a sequence of ``[H, W, 3]`` float in ``[0, 1]`` or uint8, numpy or torch, or an
    ``[N, H, W, 3]`` array) and return ``(full [N, H, W, 3], small [N, h, w, 3])`` float32 numpy, ``small``
    area-downscaled to long side ``max_side`` (never upscaled).

    Raises ``ValueError`` for fewer than 3 frames, frames of different sizes or channel counts, and
    non-finite values."""
    arrays = []
    for k, f in enumerate(frames):
        a = f.detach().cpu().numpy() if isinstance(f, Tensor) else np.asarray(f)
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise ValueError(f"frame {k}: expected an [H, W, 3] image, got shape {list(a.shape)}")
        a = a[..., :3]
        a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
        if not np.isfinite(a).all():
            raise ValueError(f"frame {k} has NaN or infinite values")
        if arrays and a.shape != arrays[0].shape:
            raise ValueError(f"frames must all have the same size: frame 0 is {arrays[0].shape[1]}x"
                             f"{arrays[0].shape[0]}, frame {k} is {a.shape[1]}x{a.shape[0]}")
        arrays.append(a)
    if len(arrays) < 3:
        raise ValueError(f"fit needs at least 3 frames, got {len(arrays)}")
    full = np.stack(arrays)
    return full, _resize(full, max_side)


def _resize(frames: np.ndarray, max_side: int) -> np.ndarray:
    """``[N, H, W, 3]`` frames area-downscaled to long side ``max_side`` (never upscaled)."""
    import cv2

    H, W = frames.shape[1:3]
    s = min(1.0, max_side / max(H, W))
    h, w = max(8, round(H * s)), max(8, round(W * s))
    if (h, w) == (H, W):
        return frames
    return np.ascontiguousarray(np.stack([cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA) for a in frames]))


# ----------------------------------------------------------------------------------------------
# Depth field
# ----------------------------------------------------------------------------------------------


def _level_sizes(width: int, height: int, grid: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(h, w)`` of each level: long side ``g``, aspect ratio kept, at least 2."""
    long = max(width, height)
    return [(max(2, round(g * height / long)), max(2, round(g * width / long))) for g in grid]


class DepthField(torch.nn.Module):
    """Per-frame log-depth as a sum of bilinear grids, coarse to fine: ``depth = exp(sum_l L_l(u, v))``.

    Args:
        count: frames; width, height: the image size the pixel coordinates refer to; grid: long side of each
            level's grid; device: where the grids live (default: the CPU).

    :meth:`sample` is differentiable with respect to the grids and the query positions.
    """

    def __init__(self, count: int, width: int, height: int, grid: tuple[int, ...],
                 device: torch.device | str | None = None):
        super().__init__()
        self.width, self.height = width, height
        self.levels = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.zeros(count, 1, h, w, device=device))
             for h, w in _level_sizes(width, height, grid)])

    def sample(self, frames: Tensor, uv: Tensor) -> Tensor:
        """Depth of ``frames [M]`` at pixel positions ``uv [M, P, 2]`` (``(u, v)``, pixels) -> ``[M, P]``."""
        grid = torch.stack([2 * uv[..., 0] / self.width - 1, 2 * uv[..., 1] / self.height - 1], -1)[:, None]
        log = 0
        for level in self.levels:
            log = log + F.grid_sample(level[frames], grid, mode="bilinear", padding_mode="border",
                                      align_corners=False)[:, 0, 0]
        return torch.exp(log)

    def maps(self, width: int, height: int) -> Tensor:
        """``[N, height, width]`` depth maps at pixel centres of an image of that size (same field of view),
        on the grids' device."""
        device = self.levels[0].device
        u = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) * self.width / width
        v = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) * self.height / height
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        uv = torch.stack([uu, vv], -1).reshape(1, -1, 2)
        n = self.levels[0].shape[0]
        out = [self.sample(torch.tensor([i], device=device), uv).reshape(height, width) for i in range(n)]
        return torch.stack(out)

    def smoothness(self, edges: list[Tensor]) -> Tensor:
        """Edge-aware smoothness of the finer levels: mean squared finite differences weighted by
        ``edges[l]`` (``[N, 1, h, w]`` in ``[0, 1]``, 1 = smooth image), finer levels weighted more."""
        total = 0
        for k, (level, e) in enumerate(zip(self.levels, edges, strict=True)):
            if k == 0:
                continue
            dx = (level[..., :, 1:] - level[..., :, :-1]) ** 2 * e[..., :, 1:]
            dy = (level[..., 1:, :] - level[..., :-1, :]) ** 2 * e[..., 1:, :]
            total = total + (2**k) * (dx.mean() + dy.mean()) + 0.1 * (level**2).mean()
        return total


def _edge_weights(images: Tensor, sizes: list[tuple[int, int]]) -> list[Tensor]:
    """``exp(-10 |grad I|)`` of the grey images ``[N, H, W, 3]`` area-resized to each ``(h, w)``."""
    gray = images.mean(-1, keepdim=True).permute(0, 3, 1, 2)
    out = []
    for h, w in sizes:
        g = F.interpolate(gray, size=(h, w), mode="area")
        gx = F.pad((g[..., :, 1:] - g[..., :, :-1]).abs(), (1, 0, 0, 0))
        gy = F.pad((g[..., 1:, :] - g[..., :-1, :]).abs(), (0, 0, 1, 0))
        out.append(torch.exp(-10 * (gx + gy)))
    return out


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------


def procrustes(src: Tensor, dst: Tensor, weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Weighted rigid fit ``dst ~= R src + t`` (Kabsch/Umeyama without scale), batched, differentiable.

    Args:
        src, dst: ``[..., P, 3]`` corresponding points; weight: ``[..., P]`` non-negative (None: all 1).

    Returns:
        ``(R [..., 3, 3], t [..., 3])`` with ``det R = +1``. Gradients flow to ``src``, ``dst`` and
        ``weight`` through ``torch.linalg.svd`` (undefined when singular values coincide, e.g. for
        degenerate point sets).

    >>> src = torch.randn(50, 3, dtype=torch.float64)
    >>> R0 = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    >>> R0 = R0 * torch.det(R0)
    >>> R, t = procrustes(src, src @ R0.T + 1.0)
    >>> torch.allclose(R, R0), torch.allclose(t, torch.ones(3, dtype=torch.float64))
    (True, True)
    """
    if weight is None:
        weight = torch.ones(src.shape[:-1], dtype=src.dtype, device=src.device)
    w = weight / weight.sum(-1, keepdim=True).clamp_min(1e-12)
    mu_s = (w[..., None] * src).sum(-2)
    mu_d = (w[..., None] * dst).sum(-2)
    a, b = src - mu_s[..., None, :], dst - mu_d[..., None, :]
    cov = (w[..., None] * b).transpose(-1, -2) @ a  # [..., 3, 3] = sum w b a^T
    U, _, Vh = torch.linalg.svd(cov)
    d = torch.sign(torch.det(U @ Vh)).detach()
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = U @ D @ Vh
    t = mu_d - (R @ mu_s[..., None])[..., 0]
    return R, t


def _unproject(uv: Tensor, depth: Tensor, focal: Tensor, cx: float, cy: float) -> Tensor:
    """Camera points ``[..., P, 3]`` of pixels ``uv [..., P, 2]`` at ``depth [..., P]``; ``focal`` broadcasts
    against ``depth`` (e.g. ``[C, 1, 1]``)."""
    x = (uv[..., 0] - cx) / focal * depth
    y = (uv[..., 1] - cy) / focal * depth
    return torch.stack([x, y, depth.expand_as(x)], -1)


XYZ = tuple[Tensor, Tensor, Tensor]  # camera points as their x, y, z components, each [..., P]


def _unproject_xyz(uv: Tensor, depth: Tensor, focal: Tensor, cx: float, cy: float) -> XYZ:
    """:func:`_unproject` as components ``(x, y, z)`` of the broadcast shape of ``depth`` and ``focal``."""
    x = (uv[..., 0] - cx) / focal * depth
    y = (uv[..., 1] - cy) / focal * depth
    return x, y, depth.expand_as(x)


def _compose(R_rel: Tensor, t_rel: Tensor) -> tuple[Tensor, Tensor]:
    """World-to-camera ``(R [..., N, 3, 3], t [..., N, 3])`` from relative poses ``camera i -> i + 1``
    (``[..., N - 1, ...]``), with frame 0 the world.

    An inclusive scan (Hillis-Steele) of ``[I, T_0, ..., T_{N-2}]`` under composition: ``ceil(log2 N)`` batched
    products instead of ``N - 1`` chained ones, whose backward through one ``select`` per frame costs ``O(N^2)``."""
    eye = torch.eye(3, dtype=R_rel.dtype, device=R_rel.device).expand(*R_rel.shape[:-3], 1, 3, 3)
    R = torch.cat([eye, R_rel], -3)
    t = torch.cat([torch.zeros_like(t_rel[..., :1, :]), t_rel], -2)
    d = 1
    while d < R.shape[-3]:  # element k becomes T_k after T_{k-d}'s composition (covering k-2d+1 .. k)
        Ra, ta = R[..., d:, :, :], t[..., d:, :]
        Rb, tb = R[..., :-d, :, :], t[..., :-d, :]
        R = torch.cat([R[..., :d, :, :], Ra @ Rb], -3)
        t = torch.cat([t[..., :d, :], (Ra @ tb[..., None])[..., 0] + ta], -2)
        d *= 2
    return R, t


# ----------------------------------------------------------------------------------------------
# Fitting one window
# ----------------------------------------------------------------------------------------------


@dataclass
class _Window:
    R: Tensor  # [n, 3, 3] world-to-camera, world = the window's first camera
    t: Tensor  # [n, 3]
    focal: float  # working pixels
    field: DepthField
    loss: list[float]
    focal_history: list[float]


@dataclass
class _SamplingTable:
    """What :func:`_sample_pairs` draws from: each pair's drawable pixels (those with a positive flow weight,
    all of them for a pair without any), pair after pair, on the flows' device: ``uv [T, 2]`` pixel centres,
    ``flow [T, 2]`` and ``weight [T]`` (zeroed at 0.05 and below), float32; ``start [P]`` and ``count [P]``
    (int64, CPU): each pair's first entry and its number of entries. A draw is one uniform index per sample:
    ``torch.multinomial`` over the weights walks all ``H * W`` of every pair on every call (a third of
    FlowMap's time at 192 px). Each (x, y) pair is read as one 8-byte element: a lookup of rows of a
    ``[T, 5]`` table, or of pixel indices and then of their flow and weight in ``[P, H * W]`` tables, is
    slower."""

    uv: Tensor
    flow: Tensor
    weight: Tensor
    start: Tensor
    count: Tensor

    def subset(self, keep: Tensor) -> _SamplingTable:
        """The table of the pairs ``keep`` (``[P]`` bool, CPU) only."""
        return _SamplingTable(self.uv, self.flow, self.weight, self.start[keep], self.count[keep])


def _sampling_table(flows: FlowPairs, device: torch.device | str = "cpu") -> _SamplingTable:
    """The :class:`_SamplingTable` of ``flows`` (built on the CPU, moved to ``device``)."""
    P, H, W = flows.weight.shape
    weight = flows.weight.cpu().reshape(P, -1)
    positive = weight > 0
    order = torch.argsort((~positive).to(torch.uint8), dim=1, stable=True)  # positive pixels first, in order
    count = positive.sum(1)
    count = torch.where(count > 0, count, H * W)
    # each pair's first count pixels, pair after pair
    pixel = order[torch.arange(H * W, device="cpu")[None] < count[:, None]]
    flat = torch.arange(P, device="cpu").repeat_interleave(count) * (H * W) + pixel
    row = pixel // W
    uv = torch.stack([(pixel - row * W).float() + 0.5, row.float() + 0.5], 1)
    w = weight.reshape(-1)[flat]
    flow = flows.flow.cpu().reshape(-1, 2)[flat]
    return _SamplingTable(uv.to(device), flow.to(device), torch.where(w > 0.05, w, 0.0).to(device),
                          torch.cumsum(count, 0) - count, count)


def _flows_on(flows: FlowPairs, device: torch.device) -> FlowPairs:
    return FlowPairs(flows.pairs.to(device), flows.flow.to(device), flows.weight.to(device))


def _sample_pairs(flows: FlowPairs, samples: int, g: torch.Generator,
                  table: _SamplingTable | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(uv_i, uv_j, w)`` for every pair: ``[P, S, 2]`` pixel positions in frames ``i`` and ``j`` and
    ``[P, S]`` weights. Pixels are drawn uniformly among those with a positive flow weight and keep that
    weight (zeroed at 0.05 and below): an unbiased estimate of the weighted loss over all of them. Where
    flow is computed above the working resolution (``FlowMapConfig.flow_side``, the default) the weights
    are 0 or about 1 (:func:`scenegrad.recon.flow.compute_flow_pairs`), and this is the draw in proportion
    to the weight. The draw runs on the CPU with the CPU generator ``g`` from ``table``
    (:func:`_sampling_table`, computed here when None); the table is then read on its device."""
    table = _sampling_table(flows, flows.flow.device) if table is None else table
    Pn, count = len(table.count), table.count[:, None]
    pick = (torch.rand(Pn, samples, generator=g, device="cpu") * count).long().clamp_max_(count - 1)
    index = (pick + table.start[:, None]).view(-1).to(table.uv.device)

    def pairs_of(x: Tensor) -> Tensor:  # [T, 2] float32 read as [T] 8-byte elements
        return x.view(torch.float64)[:, 0].index_select(0, index).view(torch.float32).view(Pn, samples, 2)

    uv_i = pairs_of(table.uv)
    return uv_i, uv_i + pairs_of(table.flow), table.weight.index_select(0, index).view(Pn, samples)


def _points(field: DepthField, flows: FlowPairs, uv_i: Tensor, uv_j: Tensor, focal: Tensor) -> tuple[XYZ, XYZ]:
    """Camera points (components ``[C, P, S]``, :func:`_unproject_xyz`) of the sampled pixels in frame ``i`` and
    of their matches in frame ``j`` (each at its own frame's depth), for focal lengths ``focal [C]``."""
    cx, cy = field.width / 2, field.height / 2
    d_i = field.sample(flows.pairs[:, 0], uv_i)  # [P, S]
    d_j = field.sample(flows.pairs[:, 1], uv_j)
    f = focal[:, None, None]
    return _unproject_xyz(uv_i, d_i, f, cx, cy), _unproject_xyz(uv_j, d_j, f, cx, cy)


def _procrustes_poses(X_i: XYZ, X_j: XYZ, w: Tensor, consecutive: Tensor) -> tuple[Tensor, Tensor]:
    """World-to-camera poses ``(R [C, n, 3, 3], t [C, n, 3])`` composed from the Procrustes fits of the
    consecutive pairs (``consecutive``: their indices, ordered by frame)."""
    c = consecutive
    src = torch.stack([x[:, c] for x in X_i], -1)
    dst = torch.stack([x[:, c] for x in X_j], -1)
    R_rel, t_rel = procrustes(src, dst, w[c].expand(src.shape[0], -1, -1))
    return _compose(R_rel, t_rel)


def _huber(r: Tensor, delta: float) -> Tensor:
    """Elementwise Huber loss of residuals ``r`` (``F.huber_loss`` against 0)."""
    a = r.abs()
    return torch.where(a < delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _reprojection(X_i: XYZ, uv_j: Tensor, w: Tensor, R: Tensor, t: Tensor, flows: FlowPairs, focal: Tensor,
                  cx: float, cy: float, huber: float, truncate: float | None = None) -> Tensor:
    """Per-candidate loss ``[C]``: weighted Huber distance between the points ``X_i`` moved into frame ``j``
    by the poses ``(R [C, n, 3, 3], t [C, n, 3])`` and projected, and their observed matches ``uv_j``;
    correspondences off by more than ``truncate`` pixels are left out (outliers).

    Computed on the coordinates one by one (``[C, P, S]`` each): a batched ``[S, 3] @ [3, 3]`` product, the
    stacks, selects and sums over a last dimension of 2 or 3 are each several times slower on the CPU."""
    i, j = flows.pairs[:, 0], flows.pairs[:, 1]
    R_ij = R[:, j] @ R[:, i].transpose(-1, -2)  # [C, P, 3, 3]
    t_ij = t[:, j] - (R_ij @ t[:, i][..., None])[..., 0]
    M = R_ij[..., None]  # [C, P, 3, 3, 1]: entries broadcast over the samples
    x, y, z = X_i
    Xc, Yc, Zc = (M[:, :, r, 0] * x + M[:, :, r, 1] * y + M[:, :, r, 2] * z + t_ij[:, :, r, None] for r in range(3))
    inv_z = 1 / Zc.clamp_min(1e-3)
    f = focal[:, None, None]
    ru = f * Xc * inv_z + (cx - uv_j[..., 0])
    rv = f * Yc * inv_z + (cy - uv_j[..., 1])
    per = _huber(ru, huber) + _huber(rv, huber)  # [C, P, S]
    behind = F.relu(1e-2 - Zc) * 100
    if truncate is not None:
        w = w * ((ru.detach() ** 2 + rv.detach() ** 2) < truncate**2)
    return ((per + behind) * w).sum((-1, -2)) / w.sum().clamp_min(1)


def _search_focal(images: Tensor, flows: FlowPairs, table: _SamplingTable, config: FlowMapConfig,
                  consecutive: Tensor, edges: list[Tensor], depth_scale: float, g: torch.Generator,
                  steps: int, bar) -> tuple[float, DepthField, list]:
    """Fit one depth field per candidate focal length (fields of view ``config.fov_range``), all at once, for
    ``steps`` Procrustes steps on the first ``config.search_frames`` frames; then a softmin over the
    candidates' smoothed losses (temperature ``focal_temperature``, relative to the best) gives the focal
    length (a weighted geometric mean) and the best candidate's depth starts the main fit.
    Returns ``(focal, field, loss history)``. ``flows`` are on the device, ``table`` their sampling table."""
    n, h, w = images.shape[:3]
    device = images.device
    C = config.focal_candidates
    long = max(w, h)
    fovs = torch.linspace(*[math.radians(x) for x in config.fov_range], C, device=device)
    candidates = 0.5 * long / torch.tan(fovs / 2)
    grid = config.grid[:config.search_levels]
    field_ = DepthField(C * n, w, h, grid, device)
    with torch.no_grad():
        field_.levels[0].fill_(math.log(depth_scale))
    edges_c = [e.repeat(C, 1, 1, 1) for e in edges[:len(grid)]]
    lrs = [config.lr * config.level_lr_decay**k for k in range(len(field_.levels))]
    opt = torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in zip(field_.levels, lrs, strict=True)])
    m = min(n, config.search_frames)
    if m < n:  # the first m frames only
        keep = flows.pairs[:, 1] < m
        flows = FlowPairs(flows.pairs[keep], flows.flow[keep], flows.weight[keep])
        table = table.subset(keep.cpu())
        consecutive = torch.nonzero(flows.pairs[:, 1] - flows.pairs[:, 0] == 1)[:, 0]
        consecutive = consecutive[torch.argsort(flows.pairs[consecutive, 0])]
    offsets = (torch.arange(C, device=device) * n)[:, None]
    pairs_c = (flows.pairs[None] + offsets[..., None]).reshape(-1, 2)  # [C * P, 2]
    samples = config.search_samples or config.samples
    smoothed, history = None, []
    for step in range(steps):
        uv_i, uv_j, wt = _sample_pairs(flows, samples, g, table)
        P, S = uv_i.shape[:2]
        d_i = field_.sample(pairs_c[:, 0], uv_i.repeat(C, 1, 1)).reshape(C, P, S)
        d_j = field_.sample(pairs_c[:, 1], uv_j.repeat(C, 1, 1)).reshape(C, P, S)
        f = candidates[:, None, None]
        X_i = _unproject_xyz(uv_i, d_i, f, w / 2, h / 2)
        X_j = _unproject_xyz(uv_j, d_j, f, w / 2, h / 2)
        R, t = _procrustes_poses(X_i, X_j, wt, consecutive)
        loss_c = _reprojection(X_i, uv_j, wt, R, t, flows, candidates, w / 2, h / 2, config.huber_px)
        total = loss_c.sum() + C * config.smoothness * field_.smoothness(edges_c)
        opt.zero_grad(set_to_none=True)
        total.backward()
        for p in field_.levels:
            p.grad.nan_to_num_(0.0, 0.0, 0.0)
        opt.step()
        lc = loss_c.detach()
        smoothed = lc if smoothed is None else 0.8 * smoothed + 0.2 * lc
        history.append(lc.min())  # read after the loop: no device sync per step
        if bar is not None:
            bar.update(1)
            if step % 10 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{float(history[-1]):.3f}", focal="search")
    history = torch.stack(history).tolist() if history else []
    rel = smoothed / smoothed.min().clamp_min(1e-12) - 1
    weights = torch.softmax(-rel / config.focal_temperature, 0)
    focal = float(torch.exp((weights * candidates.log()).sum()))
    best = int(smoothed.argmin())
    out = DepthField(n, w, h, config.grid, device)
    with torch.no_grad():
        for dst, src in zip(out.levels, field_.levels, strict=False):
            dst.copy_(src[best * n:(best + 1) * n])
        if m < n:  # the frames left out of the search start flat, at the searched frames' depth
            out.levels[0][m:] = out.levels[0][:m].mean()
            for level in out.levels[1:]:
                level[m:] = 0
    return focal, out, history


def _fit_window(images: Tensor, flows: FlowPairs, config: FlowMapConfig, focal_init: float | None,
                fixed_focal: bool, depth_scale: float, bar) -> _Window:
    """Fit depth fields, focal length and poses on one window of ``images [n, h, w, 3]`` (working resolution)
    with its ``flows`` (:func:`_window_flows`, on the CPU): ``config.steps`` steps with Procrustes poses, then
    ``config.refine_steps`` with free poses. Runs on ``images``' device (the flows are moved once); the result
    stays there."""
    from scenegrad.render.rotations import so3_exp

    n, h, w = images.shape[:3]
    device = images.device
    table = _sampling_table(flows, device)  # what the draws read
    flows = _flows_on(flows, device)
    keep = flows.pairs[:, 1] - flows.pairs[:, 0]
    consecutive = torch.nonzero(keep == 1)[:, 0]
    consecutive = consecutive[torch.argsort(flows.pairs[consecutive, 0])]
    field_ = DepthField(n, w, h, config.grid, device)
    with torch.no_grad():
        field_.levels[0].fill_(math.log(depth_scale))
    edges = _edge_weights(images, [tuple(p.shape[-2:]) for p in field_.levels])
    cx, cy = w / 2, h / 2
    long = max(w, h)
    g = torch.Generator(device="cpu").manual_seed(config.seed)
    losses, focals = [], []
    start = 0
    search_steps = min(config.focal_search_steps, config.steps)
    if focal_init is None and not fixed_focal and search_steps > 0:
        focal_init, field_, losses = _search_focal(images, flows, table, config, consecutive, edges, depth_scale, g,
                                                   search_steps, bar)
        focals = [math.nan] * len(losses)
        start = search_steps
    log_focal = torch.nn.Parameter(
        torch.tensor(math.log(focal_init if focal_init is not None else 0.7 * long), device=device))
    focal_lr = 0.0 if fixed_focal else config.focal_lr
    level_lrs = [config.lr * config.level_lr_decay**k for k in range(len(field_.levels))]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(field_.levels, level_lrs, strict=True)]
    opt = torch.optim.Adam(groups + [{"params": [log_focal], "lr": focal_lr}])
    rot = torch.nn.Parameter(torch.zeros(n, 3, device=device))
    trans = torch.nn.Parameter(torch.zeros(n, 3, device=device))
    step_losses, step_focals = [], []  # device scalars, read after the loop: no sync per step
    R0 = t0 = None
    total_steps = config.steps + config.refine_steps
    for step in range(start, total_steps):
        if step == config.steps:  # free poses from here, initialised with the Procrustes solution
            with torch.no_grad():
                uv_i, uv_j, wt = _sample_pairs(flows, max(4 * config.samples, 4096), g, table)
                X_i, X_j = _points(field_, flows, uv_i, uv_j, log_focal.exp()[None])
                R0, t0 = (x[0] for x in _procrustes_poses(X_i, X_j, wt, consecutive))
            opt = torch.optim.Adam(groups + [{"params": [log_focal], "lr": focal_lr},
                                             {"params": [rot, trans], "lr": config.pose_lr}])
        decay = 0.1 ** max(0.0, (step - config.steps) / max(config.refine_steps, 1)) if step >= config.steps else 1.0
        bases = level_lrs + [focal_lr, config.pose_lr]  # no pose group before the refinement
        for group, base in zip(opt.param_groups, bases, strict=False):
            group["lr"] = base * decay
        uv_i, uv_j, wt = _sample_pairs(flows, config.samples, g, table)
        focal = log_focal.exp()[None]
        X_i, X_j = _points(field_, flows, uv_i, uv_j, focal)
        if R0 is None:
            R, t = _procrustes_poses(X_i, X_j, wt, consecutive)
        else:
            R = (so3_exp(rot) @ R0)[None]
            t = (t0 + trans)[None]
        loss_c = _reprojection(X_i, uv_j, wt, R, t, flows, focal, cx, cy, config.huber_px,
                               None if R0 is None else config.outlier_px)
        loss = loss_c[0]
        estimate = log_focal.detach().exp()
        total = loss + config.smoothness * field_.smoothness(edges)
        opt.zero_grad(set_to_none=True)
        total.backward()
        if R0 is not None:
            rot.grad[0] = 0
            trans.grad[0] = 0
        for group in opt.param_groups:  # the SVD's gradient is unbounded at repeated singular values
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.nan_to_num_(0.0, 0.0, 0.0)
        opt.step()
        step_losses.append(loss.detach())
        step_focals.append(estimate)
        if bar is not None:
            bar.update(1)
            if step % 10 == 0 or step == total_steps - 1:
                bar.set_postfix(loss=f"{float(step_losses[-1]):.3f}", focal=f"{float(estimate):.1f}")
    if step_losses:
        losses += torch.stack(step_losses).tolist()
        focals += torch.stack(step_focals).tolist()
    with torch.no_grad():
        if R0 is None:  # no refinement: final poses from many correspondences
            uv_i, uv_j, wt = _sample_pairs(flows, max(4 * config.samples, 4096), g, table)
            X_i, X_j = _points(field_, flows, uv_i, uv_j, log_focal.exp()[None])
            R, t = (x[0] for x in _procrustes_poses(X_i, X_j, wt, consecutive))
        else:
            R, t = so3_exp(rot) @ R0, t0 + trans
    return _Window(R.detach(), t.detach(), float(log_focal.detach().exp()), field_, losses, focals)


# ----------------------------------------------------------------------------------------------
# The whole sequence
# ----------------------------------------------------------------------------------------------


def _window_flows(flow_frames: np.ndarray, config: FlowMapConfig, size: tuple[int, int],
                  workers: int = 1) -> FlowPairs:
    """A window's flow pairs (:func:`scenegrad.recon.flow.compute_flow_pairs` on its ``flow_frames``,
    resized to the working ``size = (w, h)``, on ``workers`` threads)."""
    return compute_flow_pairs(flow_frames, config.skips, config.fb_threshold, config.texture_threshold, size=size,
                              workers=workers)


@contextmanager
def _torch_threads(n: int | None):
    """torch's intra-op threads set to ``n`` (None: unchanged) inside the block, restored after it."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _opencv_threads(n: int):
    """Set OpenCV's worker threads to ``n`` (a process-wide setting); returns the function that restores the
    previous setting."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    return lambda: cv2.setNumThreads(before)


def _lower_priority() -> None:
    """Lower the calling thread's scheduling priority (nice + 10, Linux only: elsewhere the setting is the
    whole process's); what cannot be changed is left as it is."""
    if not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + 10))
    except (AttributeError, OSError):
        pass


def _timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), seconds)``: a background job's result and how long it ran."""
    start = time.perf_counter()
    return fn(*args, **kwargs), time.perf_counter() - start


def _windows(n: int, size: int, overlap: int) -> list[tuple[int, int]]:
    if n <= size:
        return [(0, n)]
    step = max(1, size - overlap)
    out, start = [], 0
    while True:
        stop = min(n, start + size)
        if stop - start < overlap + 3 and out:  # too short a tail: extend the previous window's range
            start = max(0, stop - size)
        out.append((start, stop))
        if stop == n:
            return out
        start += step


def _check_motion(images: np.ndarray, config: FlowMapConfig) -> None:
    """Raise when the camera does not move: median DIS flow between the first and the last frame of
    every sampled pair (the longest skip) below ``config.min_flow_px``."""
    from scenegrad.recon.flow import _gray8, dis_flow

    n = len(images)
    s = min(max(config.skips), n - 1)
    mags = []
    for i in range(0, n - s, max(1, (n - s) // 8)):
        fl = dis_flow(_gray8(images[i]), _gray8(images[i + s]))
        mags.append(float(np.median(np.linalg.norm(fl, axis=-1))))
    if max(mags) < config.min_flow_px:
        raise ValueError(f"the camera looks static: median optical flow over {s} frames is {max(mags):.3f} px "
                         f"(< {config.min_flow_px}); poses and depth need a moving camera (parallax)")


def fit(frames, config: FlowMapConfig | None = None) -> FlowMapResult:
    """Recover poses, a shared focal length and dense depth from an ordered sequence of frames.

    Args:
        frames: ``N >= 3`` images ``[H, W, 3]`` of one size (float in ``[0, 1]`` or uint8; numpy or torch),
            in time order, the camera moving between them.
        config: :class:`FlowMapConfig` (default: ``FlowMapConfig()``).

    Returns:
        :class:`FlowMapResult` at the input resolution (CPU, float32, whatever ``config.device`` was).
        Nothing is differentiable.

    Raises:
        ValueError: fewer than 3 frames, frames of different sizes, non-finite pixels, a static camera, a
            device that cannot run here (:func:`scenegrad.recon.device.resolve_device`).

    Notes:
        Long videos are fitted in windows of ``config.window`` frames; the focal length is searched in the
        first window only, later windows start from it (and refine it for their own poses), and the result
        keeps the first window's value. The gradient descent runs many small tensor operations, on
        ``config.fit_threads`` torch threads (one by default); meanwhile two more threads compute the next
        window's flow and the final refinement's KLT tracks and SIFT matches (OpenCV), and the bundle
        adjustments then run with the caller's torch threads.
        Measured accuracy (see ``tests/recon/test_flowmap.py`` and ``benchmarks/bench_poses.py``), with the
        final track refinement: on rendered synthetic videos a forward walk reaches ATE 0.9 % of the
        trajectory, 0.6 degrees and focal 2.0 % and a 60-degree orbit 0.2 %, 0.4 degrees and 0.6 % (without
        the refinement, after the longer fit of before: 1.1 %, 0.5 degrees, 3.2 % and 2.0 %, 3.6 degrees, 17 %);
        redkitchen (100 frames) ATE 0.047 m, level with COLMAP's, at 320 and at 640 pixels wide.
    """
    from tqdm.auto import tqdm

    from scenegrad.recon.device import resolve_device

    config = config or FlowMapConfig()
    device = resolve_device(config.device)
    if config.camera_model not in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL"):
        raise ValueError("config.camera_model must be 'SIMPLE_PINHOLE' or 'SIMPLE_RADIAL', "
                         f"got {config.camera_model!r}")
    if 1 not in config.skips:
        raise ValueError(f"config.skips must contain 1 (poses come from consecutive frames), got {config.skips}")
    start_time = time.perf_counter()
    full, small = prepare_frames(frames, config.max_side)
    N, H, W = full.shape[:3]
    h, w = small.shape[1:3]
    _check_motion(small, config)
    images = torch.from_numpy(small).to(device)
    flow_frames = _resize(full, config.flow_side) if config.flow_side > max(h, w) else small
    windows = _windows(N, config.window, config.overlap)
    fixed = config.focal is not None
    focal = None if config.focal is None else config.focal * w / W
    bar = tqdm(total=(config.steps + config.refine_steps) * len(windows), disable=not config.progress,
               desc="flowmap", leave=False)
    # OpenCV's work runs on more threads while the gradient descent (torch) runs: the next window's flow on
    # one; the KLT tracks and the SIFT matches of the final refinement, which need only the frames, on threads
    # of their own (the matches on one per core: what is left of them when the descent ends runs on every core;
    # apple video, 50 frames at 640 px: 17 s of waiting for the matches -> 8 s). The threads they start have
    # their priority. On a 2-core machine with one torch thread that hides most of it.
    # The first window's flow is computed here, on every core, as nothing can start before it.
    # The gradient descent is the critical path: the other threads run at a lower priority (they take the
    # cores' time it leaves) and OpenCV's own worker threads are off until the descent is over (a KLT call
    # spread over every core takes the descent's core too; redkitchen, fast preset: fit 41 -> 37 s).
    flow_pool = ThreadPoolExecutor(1, thread_name_prefix="flowmap-flow", initializer=_lower_priority)
    feature_pool = ThreadPoolExecutor(2, thread_name_prefix="flowmap-features", initializer=_lower_priority)
    restore_opencv = _opencv_threads(1)
    flow_jobs = [flow_pool.submit(_timed, _window_flows, flow_frames[a:b], config, (w, h)) for a, b in windows[1:2]]
    tracks_job = matches_job = None
    if config.track_refine:
        tracks_job = feature_pool.submit(_timed, klt_tracks, full, config.track_points)
        if config.match_refine:
            matches_job = feature_pool.submit(_timed, sift_tracks, full, config.match_window,
                                              max_features=config.match_features, workers=cores())
    background: dict[str, float] = {}
    # the windows' results are gathered (and chained) on the CPU
    R_all = torch.zeros(N, 3, 3, device="cpu")
    t_all = torch.zeros(N, 3, device="cpu")
    depth_all = torch.zeros(N, H, W, device="cpu")
    losses, focals = [], []
    try:
        prev: tuple[int, int] | None = None
        with _torch_threads(config.fit_threads):
            for wi, (a, b) in enumerate(windows):
                scale0 = 1.0
                if prev is not None:  # start the new window at the previous one's depth scale
                    scale0 = float(depth_all[a:prev[1]].median())
                if wi == 0:  # nothing runs before it: on as many threads as there are cores
                    flows = _window_flows(flow_frames[a:b], config, (w, h), workers=cores())
                else:
                    flows, seconds = flow_jobs[wi - 1].result()
                    background["flow"] = background.get("flow", 0.0) + seconds
                    flow_jobs[wi - 1] = None
                if wi + 2 < len(windows):  # one window ahead: the flow of a long video is not all held at once
                    c, d = windows[wi + 2]
                    flow_jobs.append(flow_pool.submit(_timed, _window_flows, flow_frames[c:d], config, (w, h)))
                win = _fit_window(images[a:b], flows, config, focal, fixed, scale0, bar)
                losses += win.loss
                focals += [f * W / w for f in win.focal_history]
                if focal is None:
                    focal = win.focal
                with torch.no_grad():
                    depths = win.field.maps(W, H).cpu()
                R, t = win.R.cpu(), win.t.cpu()
                if prev is not None:  # Sim(3) onto the previous windows: shared frame k
                    k = (a + prev[1]) // 2 - a if prev[1] > a else 0
                    ok = depth_all[a + k] > 0
                    s = float((depth_all[a + k][ok] / depths[k][ok]).median())
                    Rk, tk = R_all[a + k], t_all[a + k]
                    Rw = Rk.T @ R[k]  # window world -> global world rotation
                    tw = Rk.T @ (s * t[k] - tk)
                    new_R = R @ Rw.T
                    new_t = s * t - (new_R @ tw[:, None])[..., 0]
                    R, t, depths = new_R, new_t, depths * s
                    first = prev[1] - a  # keep the previous windows' overlap frames
                else:
                    first = 0
                R_all[a + first:b] = R[first:]
                t_all[a + first:b] = t[first:]
                depth_all[a + first:b] = depths[first:]
                prev = (a, b)
    except BaseException:
        for pool in (flow_pool, feature_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
        restore_opencv()  # the descent is over: what is left of the jobs has OpenCV's threads again
    flow_pool.shutdown()
    if not config.track_refine:
        feature_pool.shutdown()
    f_in = focal * W / w
    cams = Cameras(fx=f_in, fy=f_in, cx=W / 2, cy=H / 2, R=R_all, t=t_all, width=W, height=H)
    depth_all, refinement = depth_all.detach(), None
    matching, stages, clock = None, {"fit": time.perf_counter() - start_time}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        stages[name], clock = time.perf_counter() - clock, time.perf_counter()

    if config.track_refine:
        try:
            tracks, background["klt tracks"] = tracks_job.result()
            matches = None
            if config.match_refine:
                matches, background["sift matches"] = matches_job.result()
        finally:  # on an error in one job, the other's result is not waited for
            feature_pool.shutdown(wait=False, cancel_futures=True)
        if matches is not None and median_per_frame(matches.frame, N) < MATCHES_PER_FRAME:
            matches = None  # too few to adjust on: the tracks' adjustment is the result
        lap("waiting for tracks and matches")
        # When the matches' adjustment follows, the one on the KLT tracks only finds and repairs broken pairs:
        # its adjustments stop at 30 iterations (the matches' rounds converge from there: redkitchen, fast
        # preset, ATE 0.048 m either way, 35 s instead of 52 s), it checks for breaks once (the matches'
        # rounds, starting at a wide threshold, pull back what a second check would re-pose: eight FlowMap
        # starts of redkitchen, 0.048 m each either way, 4 s instead of 4-9 s) and it drops no observations
        # (the matches' adjustment filters its own; without it, those off by more than 3 px go before a last
        # adjustment).
        start = cams, depth_all
        short = matches is not None
        cams, depth_all, refinement = refine_with_tracks(*start, tracks, max_iterations=30 if short else 100,
                                                         max_error_px=None if short else 3.0,
                                                         max_rounds=1 if short else 3)
        lap("track adjustment")
        if short:
            intrinsics = ("focal", "k1") if config.camera_model == "SIMPLE_RADIAL" else ("focal",)
            adjusted, matching = refine_with_matches(cams, matches, refine_intrinsics=intrinsics,
                                                     min_per_frame=MATCHES_PER_FRAME)
            if matching.accepted:
                cams, depth_all = adjusted, depth_all * matching.depth_scale
            else:  # the tracks' adjustment in full after all
                cams, depth_all, refinement = refine_with_tracks(*start, tracks)
            lap("match adjustment")
    return FlowMapResult(cameras=cams, depths=depth_all, loss=losses, focal_history=focals,
                         seconds=time.perf_counter() - start_time, stages=stages, background=background,
                         windows=windows, refinement=refinement, matching=matching)


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------


def _images_array(images, n: int) -> np.ndarray:
    full, _ = prepare_frames(images, 10**9)
    if len(full) != n:
        raise ValueError(f"{len(full)} images for {n} cameras")
    return full


def dense_points(result: FlowMapResult, images, stride: int = 4) -> Points:
    """Coloured world points from every ``stride``-th pixel (rows and columns) of every depth map."""
    full = _images_array(images, len(result.cameras))
    cams = result.cameras
    N, H, W = result.depths.shape
    vs, us = torch.meshgrid(torch.arange(0, H, stride, device="cpu") + 0.5,
                            torch.arange(0, W, stride, device="cpu") + 0.5, indexing="ij")
    xyz, rgb = [], []
    for i in range(N):
        d = result.depths[i, ::stride, ::stride]
        X = _unproject(torch.stack([us, vs], -1), d, cams.fx[i], float(cams.cx[i]), float(cams.cy[i]))
        Xw = (X.reshape(-1, 3) - cams.t[i]) @ cams.R[i]  # R^T (x - t)
        xyz.append(Xw)
        rgb.append(torch.from_numpy(full[i, ::stride, ::stride].reshape(-1, 3)))
    return Points(xyz=torch.cat(xyz).double(), rgb=torch.cat(rgb).double())


def to_scene(result: FlowMapResult, images, names: list[str] | None = None, stride: int = 8) -> Scene:
    """A :class:`Scene` (in-memory frames, the recovered cameras, dense points every ``stride`` pixels) for
    :func:`scenegrad.recon.splat.train`."""
    full = _images_array(images, len(result.cameras))
    names = names or [f"frame_{i:06d}.png" for i in range(len(full))]
    frames = [Frame(name=names[i], image_fn=(lambda x=torch.from_numpy(full[i]): x),
                    depth_fn=(lambda d=result.depths[i]: d)) for i in range(len(full))]
    return Scene(frames=frames, cameras=result.cameras, points=dense_points(result, full, stride),
                 metadata={"source": "flowmap"})


def save(result: FlowMapResult, out_dir: str | Path, images, *, stride: int = 4) -> dict[str, Path]:
    """Write ``out_dir/sparse/0`` (COLMAP binary: cameras, images, the dense points), ``images/`` (PNG),
    ``points.ply`` (dense coloured points, every ``stride``-th pixel), ``depth/<name>.npy`` and
    ``depth/<name>.png`` (turbo colour map of inverse depth); returns the paths by kind."""
    import cv2

    from scenegrad.datasets.colmap import save_colmap
    from scenegrad.datasets.points import save_points

    out = Path(out_dir)
    full = _images_array(images, len(result.cameras))
    scene = to_scene(result, full, stride=stride)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "depth").mkdir(parents=True, exist_ok=True)
    (out / "sparse" / "0").mkdir(parents=True, exist_ok=True)
    inv = 1 / result.depths.clamp_min(1e-6)
    lo, hi = float(inv.quantile(0.02)), float(inv.quantile(0.98))
    for i, frame in enumerate(scene.frames):
        stem = Path(frame.name).stem
        cv2.imwrite(str(out / "images" / frame.name),
                    cv2.cvtColor((full[i] * 255 + 0.5).clip(0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
        np.save(out / "depth" / f"{stem}.npy", result.depths[i].numpy())
        x = ((inv[i] - lo) / max(hi - lo, 1e-12)).clamp(0, 1).numpy()
        cv2.imwrite(str(out / "depth" / f"{stem}.png"), cv2.applyColorMap((x * 255).astype(np.uint8),
                                                                           cv2.COLORMAP_TURBO))
    save_colmap(scene, out / "sparse" / "0")
    save_points(scene.points, out / "points.ply", overwrite=True)
    return {"colmap": out / "sparse" / "0", "images": out / "images", "depth": out / "depth",
            "points": out / "points.ply"}

