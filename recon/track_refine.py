"""Point tracks and the final bundle adjustment of a FlowMap fit.

FlowMap's poses come from dense flow between nearby frames; small errors in them add up along the
sequence and the focal length is only as good as the flow loss constrains it. Long point tracks
tie distant frames together: :func:`klt_tracks` follows corners through the video with OpenCV's
pyramidal Lucas-Kanade tracker (a forward-backward check drops drifting points; new corners are
detected every few frames where the image has none), and :func:`refine_with_tracks` starts each
track's 3D point from the FlowMap depth at its first observation and runs scenegrad's bundle
adjustment (:func:`scenegrad.recon.ba.bundle_adjust`: Huber loss, poses, points and the shared focal
length free, first pose and scale fixed). On the synthetic tests this takes an orbit from 2 % ATE,
3.6 degrees and 17 % focal error to 0.3 %, 0.4 degrees and 1 %.

Pixel coordinates follow scenegrad's convention (:mod:`scenegrad.render.cameras`: pixel centres at
``+0.5``); OpenCV's tracker puts them at integers, and :func:`klt_tracks` converts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from scenegrad.render.cameras import Cameras

__all__ = ["Tracks", "klt_tracks", "refine_with_tracks", "TrackRefinement"]


@dataclass
class Tracks:
    """``O`` observations of ``count`` tracks: ``frame [O]`` and ``track [O]`` int64, ``uv [O, 2]``
    float64 pixels (scenegrad convention), sorted by track then frame."""

    frame: Tensor
    track: Tensor
    uv: Tensor
    count: int


def klt_tracks(frames: np.ndarray, max_points: int = 4000, quality: float = 1e-4, min_distance: int = 3,
               fb_px: float = 0.5, redetect_every: int = 3, min_length: int = 3) -> Tracks:
    """Follow corners through ``frames [N, H, W, 3]`` (uint8, or float in ``[0, 1]``) in order.

    Corners (Shi-Tomasi, ``quality`` relative to the strongest, ``min_distance`` pixels apart) are
    detected in the first frame and every ``redetect_every`` frames away from live tracks, up to
    ``max_points`` live; each is followed frame to frame by pyramidal Lucas-Kanade and dropped when
    tracking it back misses its start by more than ``fb_px`` pixels or it leaves the image. Tracks
    shorter than ``min_length`` frames are left out.
    """
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N, H, W, 3], got {list(frames.shape)}")
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)
    greys = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    H, W = greys[0].shape
    lk = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    obs_frame: list[int] = []
    obs_track: list[int] = []
    obs_uv: list[np.ndarray] = []
    live_ids = np.zeros(0, np.int64)
    live = np.zeros((0, 2), np.float32)
    next_id = 0
    for i, grey in enumerate(greys):
        if i > 0 and len(live):
            moved, ok1, _ = cv2.calcOpticalFlowPyrLK(greys[i - 1], grey, live, None, **lk)
            back, ok2, _ = cv2.calcOpticalFlowPyrLK(grey, greys[i - 1], moved, None, **lk)
            keep = (ok1[:, 0] == 1) & (ok2[:, 0] == 1) & (np.linalg.norm(back - live, axis=1) < fb_px)
            keep &= (moved[:, 0] >= 0) & (moved[:, 0] <= W - 1) & (moved[:, 1] >= 0) & (moved[:, 1] <= H - 1)
            live, live_ids = moved[keep], live_ids[keep]
            obs_frame += [i] * len(live)
            obs_track += live_ids.tolist()
            obs_uv.append(live.copy())
        if i % redetect_every == 0 and len(live) < max_points:
            mask = np.full((H, W), 255, np.uint8)
            for x, y in live:
                cv2.circle(mask, (int(round(x)), int(round(y))), min_distance + 1, 0, -1)
            new = cv2.goodFeaturesToTrack(grey, max_points - len(live), quality, min_distance, mask=mask)
            if new is not None:
                new = new[:, 0, :].astype(np.float32)
                ids = np.arange(next_id, next_id + len(new))
                next_id += len(new)
                live, live_ids = np.concatenate([live, new]), np.concatenate([live_ids, ids])
                obs_frame += [i] * len(new)
                obs_track += ids.tolist()
                obs_uv.append(new)
    frame = torch.tensor(obs_frame, dtype=torch.int64)
    track = torch.tensor(obs_track, dtype=torch.int64)
    uv = torch.from_numpy(np.concatenate(obs_uv) if obs_uv else np.zeros((0, 2), np.float32)).double() + 0.5
    length = torch.bincount(track, minlength=next_id)
    keep = length[track] >= min_length
    frame, track, uv = frame[keep], track[keep], uv[keep]
    ids, track = torch.unique(track, return_inverse=True)
    order = torch.argsort(track * (len(frames) + 1) + frame)
    return Tracks(frame[order], track[order], uv[order], len(ids))


@dataclass
class TrackRefinement:
    """What :func:`refine_with_tracks` did: tracks and observations used, reprojection RMSE (pixels)
    before and after, the depth scale applied, and whether the refined cameras were kept."""

    tracks: int
    observations: int
    rmse_initial: float
    rmse_final: float
    depth_scale: float
    accepted: bool
    reason: str


def refine_with_tracks(cameras: Cameras, depths: Tensor, tracks: Tracks, *, loss_scale_px: float = 1.0,
                       max_iterations: int = 100, min_tracks: int = 50) -> tuple[Cameras, Tensor, TrackRefinement]:
    """Bundle-adjust ``cameras`` (``N`` pinhole cameras sharing one focal length) on ``tracks``,
    starting each track's point from ``depths [N, H, W]`` (camera ``z``) at its first observation.

    Returns the refined cameras (same dtype), the depths rescaled to the refined cameras' scale
    (the median ratio of the refined points' depths to FlowMap's at the first observations), and a
    :class:`TrackRefinement`. The input is returned unchanged (``accepted=False``) when there are
    fewer than ``min_tracks`` tracks or the adjustment does not lower the reprojection error.
    """
    from scenegrad.recon.ba import BAOptions, Observations, bundle_adjust

    N, H, W = depths.shape
    if tracks.count < min_tracks:
        return cameras, depths, TrackRefinement(tracks.count, len(tracks.frame), float("nan"), float("nan"), 1.0,
                                                False, f"{tracks.count} tracks (< {min_tracks})")
    cams = cameras.to(dtype=torch.float64)
    first = torch.ones(len(tracks.track), dtype=torch.bool)
    first[1:] = tracks.track[1:] != tracks.track[:-1]
    i0, uv0 = tracks.frame[first], tracks.uv[first]
    col = (uv0[:, 0] - 0.5).round().long().clamp(0, W - 1)
    row = (uv0[:, 1] - 0.5).round().long().clamp(0, H - 1)
    z0 = depths.double()[i0, row, col]
    xc = torch.stack([(uv0[:, 0] - cams.cx[i0]) / cams.fx[i0] * z0, (uv0[:, 1] - cams.cy[i0]) / cams.fy[i0] * z0,
                      z0], -1)
    points = torch.einsum("nji,nj->ni", cams.R[i0], xc - cams.t[i0])  # R^T (x - t)
    result = bundle_adjust(cams, points, Observations(tracks.frame, tracks.track, tracks.uv),
                           refine_intrinsics=("focal",), intrinsic_groups=torch.zeros(N, dtype=torch.long),
                           options=BAOptions(loss="huber", loss_scale=loss_scale_px, max_iterations=max_iterations))
    info = TrackRefinement(tracks.count, len(tracks.frame), result.rmse_initial, result.rmse_final, 1.0, False,
                           result.reason)
    if not result.rmse_final < result.rmse_initial or not torch.isfinite(result.points).all():
        return cameras, depths, info
    refined = result.cameras
    z1 = (torch.einsum("nij,nj->ni", refined.R[i0], result.points) + refined.t[i0])[:, 2]
    ok = (z0 > 0) & (z1 > 0)
    scale = float((z1[ok] / z0[ok]).median()) if ok.any() else 1.0
    info.depth_scale, info.accepted = scale, True
    return refined.to(dtype=cameras.dtype), depths * scale, info
