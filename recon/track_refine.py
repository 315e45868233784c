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

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from scenegrad.recon.threads import cores, thread_map
from scenegrad.render.cameras import Cameras

__all__ = ["Tracks", "klt_tracks", "sift_tracks", "triangulate_tracks", "refine_with_tracks", "refine_with_matches",
           "repair_pose_breaks", "TrackRefinement"]


@dataclass
class Tracks:
    """``O`` observations of ``count`` tracks: ``frame [O]`` and ``track [O]`` int64, ``uv [O, 2]``
    float64 pixels (scenegrad convention), sorted by track then frame."""

    frame: Tensor
    track: Tensor
    uv: Tensor
    count: int


def klt_tracks(frames: np.ndarray, max_points: int = 4000, quality: float = 1e-4, min_distance: int = 3,
               fb_px: float = 0.5, redetect_every: int = 3, min_length: int = 3, window: int = 21,
               levels: int = 3) -> Tracks:
    """Follow corners through ``frames [N, H, W, 3]`` (uint8, or float in ``[0, 1]``) in order.

    Corners (Shi-Tomasi, ``quality`` relative to the strongest, ``min_distance`` pixels apart) are
    detected in the first frame and every ``redetect_every`` frames away from live tracks, up to
    ``max_points`` live; each is followed frame to frame by pyramidal Lucas-Kanade and dropped when
    tracking it back misses its start by more than ``fb_px`` pixels or it leaves the image. Tracks
    shorter than ``min_length`` frames are left out. ``window``: the tracker's window (pixels, square);
    ``levels``: its pyramid levels above the image.
    """
    import cv2

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N, H, W, 3], got {list(frames.shape)}")
    if frames.dtype != np.uint8:
        frames = (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)
    greys = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    H, W = greys[0].shape
    lk = dict(winSize=(window, window), maxLevel=levels,
              criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
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


def sift_tracks(frames: np.ndarray, window: int = 10, quadratic: bool = True, max_features: int = 4096,
                contrast_threshold: float = 0.02, min_inliers: int = 15, workers: int = 1) -> Tracks:
    """Tracks of SIFT features matched between frames of a video (``frames [N, H, W, 3]``, uint8 or float
    in ``[0, 1]``), as COLMAP's sequential matching makes them.

    Every frame is matched with the next ``window`` frames and, with ``quadratic``, with the frames
    ``2^k`` ahead (:func:`scenegrad.recon.sfm.sequential_pairs`); the matches are verified by a fundamental
    matrix (:func:`scenegrad.recon.sfm.match_pairs`) and joined into tracks (connected components, a track
    with two keypoints in one frame losing its observations there). Unlike :func:`klt_tracks`, which follow
    a corner from frame to frame, these tie frames that are far apart in the video when they see the same
    place again: the loop of a camera walking around a room, or the two sides of a frame where frame-to-frame
    tracking broke. ``contrast_threshold`` is OpenCV's (0.02 finds about as many features as COLMAP's
    default). ``workers``: threads extracting and matching (the result is the same)."""
    from scenegrad.recon.sfm import _tracks, extract_features, match_pairs, sequential_pairs

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N, H, W, 3], got {list(frames.shape)}")
    feats = thread_map(lambda frame: extract_features(frame, max_features, contrast_threshold), frames, workers,
                       "sift")
    matches = match_pairs(feats, sequential_pairs(len(frames), window, quadratic), min_inliers=min_inliers,
                          workers=workers)
    track, image, kp = _tracks([len(f.xy) for f in feats], matches)
    if len(track) == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return Tracks(empty, empty, torch.zeros(0, 2, dtype=torch.float64), 0)
    offset = np.concatenate([[0], np.cumsum([len(f.xy) for f in feats])])
    uv = np.concatenate([f.xy for f in feats])[offset[image] + kp]
    order = np.lexsort((image, track))  # by track, then frame
    return Tracks(torch.from_numpy(image[order]), torch.from_numpy(track[order]), torch.from_numpy(uv[order]),
                  int(track.max()) + 1)


def triangulate_tracks(cameras: Cameras, tracks: Tracks, use: Tensor | None = None) -> Tensor:
    """``[count, 3]`` world point of every track from its observations (``use [O]`` bool: only those) in
    ``cameras`` (pinhole or OpenCV-distorted, float64 inside), by the multi-view DLT: the least
    eigenvector of the sum over observations of ``r r^T`` for the two rows ``r = x P_3 - P_1``,
    ``y P_3 - P_2`` of each (normalised, undistorted ``x, y``; ``P = [R | t]``). NaN for tracks with fewer
    than two observations used or with a point at infinity."""
    from scenegrad.render.cameras import undistort_points

    cams = cameras.to(dtype=torch.float64)
    frame, track = tracks.frame, tracks.track
    if use is not None:
        frame, track, uv = frame[use], track[use], tracks.uv[use]
    else:
        uv = tracks.uv
    n = undistort_points(cams[frame], uv.double()[:, None], normalized=True)[:, 0]
    P = torch.cat([cams.R, cams.t[:, :, None]], 2)[frame]  # [O, 3, 4]
    rows = torch.stack([n[:, :1] * P[:, 2] - P[:, 0], n[:, 1:] * P[:, 2] - P[:, 1]], 1)  # [O, 2, 4]
    A = torch.zeros(tracks.count, 16, dtype=torch.float64).index_add_(
        0, track, (rows.transpose(1, 2) @ rows).reshape(-1, 16)).view(-1, 4, 4)
    count = torch.bincount(track, minlength=tracks.count)
    A[count < 2] = torch.eye(4, dtype=torch.float64)
    X = torch.linalg.eigh(A)[1][:, :, 0]
    points = X[:, :3] / X[:, 3:]
    bad = (count < 2) | (X[:, 3].abs() < 1e-12 * X[:, :3].norm(dim=1)) | ~torch.isfinite(points).all(1)
    return torch.where(bad[:, None], torch.full_like(points, math.nan), points)


@dataclass
class TrackRefinement:
    """What :func:`refine_with_tracks` did: tracks and observations used (in the last adjustment: after
    the outlier filter, if it ran), reprojection RMSE (pixels) before and after, the depth scale
    applied, whether the refined cameras were kept, the consecutive pairs ``(i, i + 1)`` whose relative
    pose :func:`repair_pose_breaks` replaced (by ``i``), the mean reprojection error after (pixels;
    the figure COLMAP reports as its mean reprojection error), and the adjustment rounds run
    (:func:`refine_with_matches`)."""

    tracks: int
    observations: int
    rmse_initial: float
    rmse_final: float
    depth_scale: float
    accepted: bool
    reason: str
    repaired: tuple[int, ...] = ()
    mean_error_final: float = float("nan")
    rounds: int = 0


def _pair_tracks(tracks: Tracks, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``[M, 2]`` in frames ``i`` and ``i + 1`` of the tracks seen in both."""
    a = tracks.frame == i
    b = tracks.frame == i + 1
    ta, tb = tracks.track[a], tracks.track[b]
    common, ia, ib = np.intersect1d(ta.numpy(), tb.numpy(), assume_unique=True, return_indices=True)
    return tracks.uv[a][ia].numpy(), tracks.uv[b][ib].numpy()


def _sampson_inliers(E: np.ndarray, x1: np.ndarray, x2: np.ndarray, K: np.ndarray, threshold_px: float) -> int:
    """Correspondences (pixels) within ``threshold_px`` (Sampson distance) of the epipolar geometry of
    the essential matrix ``E`` (``x2^T E x1 = 0`` in normalised coordinates)."""
    Ki = np.linalg.inv(K)
    F = Ki.T @ E @ Ki
    h1 = np.concatenate([x1, np.ones((len(x1), 1))], 1)
    h2 = np.concatenate([x2, np.ones((len(x2), 1))], 1)
    Fx1, Ftx2 = h1 @ F.T, h2 @ F
    num = np.einsum("ij,ij->i", h2, Fx1) ** 2
    den = Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        d2 = np.where(den > 0, num / den, np.inf)
    return int((d2 < threshold_px**2).sum())


def _nearest_rotations(R: np.ndarray) -> np.ndarray:
    """The rotations nearest to ``R [..., 3, 3]`` (SVD projection onto SO(3))."""
    U, _, Vt = np.linalg.svd(R)
    U[..., :, 2] *= np.sign(np.linalg.det(U @ Vt))[..., None]
    return U @ Vt


def repair_pose_breaks(cameras: Cameras, tracks: Tracks, *, min_tracks: int = 30, max_deg: float = 3.0,
                       threshold_px: float = 1.5, min_gain: float = 1.5,
                       max_turn_deg: float = 45.0) -> tuple[Cameras, tuple[int, ...]]:
    """Replace the relative pose of consecutive frames where two-view geometry clearly contradicts it.

    For every pair ``(i, i + 1)`` with at least ``min_tracks`` shared tracks, an essential matrix is fitted
    to them (OpenCV's USAC MAGSAC, the cameras' intrinsics of frame ``i``). Where its rotation differs from
    the current relative rotation by more than ``max_deg`` degrees and it explains at least ``min_gain``
    times as many tracks (Sampson distance under ``threshold_px``) as the current relative pose does, the
    pair is a break (dense flow can fail on one pair, for example under motion blur, and a closed-form
    pose solve then turns the camera by tens of degrees): frame ``i + 1`` gets the essential matrix's
    rotation and translation direction, the translation's length the median of the neighbouring pairs',
    and every later frame keeps its pose relative to frame ``i + 1``. An essential matrix whose rotation
    turns by more than ``max_turn_deg`` is not used: between consecutive frames of a video that is the
    twisted-pair solution of a near-degenerate fit (small baseline, focal length still off), not the
    motion (redkitchen, FlowMap's fast preset: one pair re-posed by 170 degrees, ATE 0.53 m).

    Returns the cameras (float64) and the repaired pairs' ``i``.
    """
    import cv2

    from scenegrad.recon.evaluate import rotation_angles

    eye = torch.eye(3, dtype=torch.float64)
    cams = cameras.to(dtype=torch.float64)
    # Exact rotations first: re-posing composes R_j R_(i+1)^T R_new for every later frame j, and each
    # repair would double a float32 start's departure from orthonormality (19 repairs: 5e-6 -> 10).
    R, t = _nearest_rotations(cams.R.numpy()), cams.t.clone().numpy()
    N = len(cams)
    steps = np.linalg.norm(np.stack([t[i + 1] - (R[i + 1] @ R[i].T) @ t[i] for i in range(N - 1)]), axis=1) \
        if N > 1 else np.zeros(0)

    def two_view(i: int):
        """The pair ``(i, i + 1)``'s tracks, intrinsics and essential-matrix pose, or None where it has too
        few tracks, the fit fails or turns by more than ``max_turn_deg``."""
        x1, x2 = _pair_tracks(tracks, i)
        if len(x1) < min_tracks:
            return None
        K = np.array([[float(cams.fx[i]), 0.0, float(cams.cx[i])], [0.0, float(cams.fy[i]), float(cams.cy[i])],
                      [0.0, 0.0, 1.0]])
        try:
            E, mask = cv2.findEssentialMat(x1, x2, K, cv2.USAC_MAGSAC, 0.999, threshold_px)
        except cv2.error:
            return None
        if E is None or E.shape != (3, 3) or mask is None:
            return None
        _, R_e, t_e, _ = cv2.recoverPose(E, x1, x2, K, mask=mask.copy())
        # the twisted pair of a near-degenerate E, not a video's motion
        if float(rotation_angles(torch.from_numpy(R_e), eye)) > max_turn_deg:
            return None
        return x1, x2, K, E, R_e, t_e

    # the pairs' fits do not depend on each other (a repair keeps the later pairs' relative poses): on threads
    # (OpenCV releases the GIL), in order
    fits = thread_map(two_view, range(N - 1), cores(4), "repair")
    repaired: list[int] = []
    for i, fit in enumerate(fits):
        if fit is None:
            continue
        x1, x2, K, E, R_e, t_e = fit
        R_rel = R[i + 1] @ R[i].T
        t_rel = t[i + 1] - R_rel @ t[i]
        if float(rotation_angles(torch.from_numpy(R_e), torch.from_numpy(R_rel))) <= max_deg:
            continue
        tx = np.array([[0, -t_rel[2], t_rel[1]], [t_rel[2], 0, -t_rel[0]], [-t_rel[1], t_rel[0], 0]])
        current = _sampson_inliers(tx @ R_rel, x1, x2, K, threshold_px) if np.linalg.norm(t_rel) > 1e-12 else 0
        fitted = _sampson_inliers(E, x1, x2, K, threshold_px)
        if fitted < min_gain * max(current, 1) or fitted < min_tracks:
            continue
        others = np.concatenate([steps[max(0, i - 3):i], steps[i + 1:i + 4]])
        length = float(np.median(others)) if len(others) else float(np.linalg.norm(t_rel))
        R_new = R_e @ R[i]
        t_new = R_e @ t[i] + length * t_e[:, 0] / max(np.linalg.norm(t_e), 1e-12)
        # later frames keep their pose relative to frame i + 1: T_j' = T_j T_{i+1}^-1 T_{i+1}'
        for j in range(i + 2, N):
            R_j1 = R[j] @ R[i + 1].T
            t_j1 = t[j] - R_j1 @ t[i + 1]
            R[j], t[j] = R_j1 @ R_new, R_j1 @ t_new + t_j1
        R[i + 1], t[i + 1] = R_new, t_new
        repaired.append(i)
    if not repaired:
        return cams, ()
    return dataclasses.replace(cams, R=torch.from_numpy(R), t=torch.from_numpy(t)), tuple(repaired)


def refine_with_tracks(cameras: Cameras, depths: Tensor, tracks: Tracks, *, loss_scale_px: float = 1.0,
                       max_iterations: int = 100, min_tracks: int = 50, repair: bool = True,
                       check_iterations: int = 30, max_rounds: int = 3,
                       max_error_px: float | None = 3.0,
                       refine_intrinsics: tuple[str, ...] = ("focal",)) -> tuple[Cameras, Tensor, TrackRefinement]:
    """Bundle-adjust ``cameras`` (``N`` pinhole cameras sharing one focal length) on ``tracks``,
    starting each track's point from ``depths [N, H, W]`` (camera ``z``) at its first observation.

    Returns the refined cameras (same dtype), the depths rescaled to the refined cameras' scale
    (the median ratio of the refined points' depths to FlowMap's at the first observations), and a
    :class:`TrackRefinement`. The input is returned unchanged (``accepted=False``) when there are
    fewer than ``min_tracks`` tracks or the adjustment does not lower the reprojection error.

    With ``repair``, the adjusted cameras are checked for pairs of frames whose relative pose the
    tracks' two-view geometry clearly contradicts (:func:`repair_pose_breaks`); those are re-posed and
    the adjustment runs once more from there: a bundle adjustment alone does not turn a camera back
    by tens of degrees. (The check runs after a first adjustment because FlowMap's own focal length
    can be far off, and two-view geometry with a wrong focal length disagrees with every pair.) That
    first adjustment stops after ``check_iterations``: run to convergence it spreads a broken pair's
    error over the neighbouring cameras, where the check no longer sees it (redkitchen, three FlowMap
    starts: ATE 0.10 m from each with 30 iterations, 0.33-0.34 m from two of them with 100). Without
    breaks it then runs on to ``max_iterations`` in all. After a repair the check runs again, after
    another ``check_iterations`` (up to ``max_rounds`` checks; the last repair is adjusted for
    ``max_iterations``): each adjustment brings the focal length closer, and with it the two-view
    geometry of pairs the first check could not judge (redkitchen from FlowMap's fast preset, focal
    length 65 % off: ATE 0.27 m with one check, 0.097 m with a second).

    With ``max_error_px``, observations whose reprojection error after all that exceeds it (KLT
    tracks that slid off their corner, occlusions) are dropped, with tracks left with fewer than two
    observations, and the adjustment runs once more from the refined cameras and points (as COLMAP
    filters observations above 4 px). The Huber loss bounds their pull but not their bias: on
    redkitchen they took the RMSE to 1.83 px against a mean error of 0.78 px; without them the mean
    error is 0.58 px and the ATE 0.084 m instead of 0.097 m.
    """
    from scenegrad.recon.ba import BAOptions, Observations, bundle_adjust, reprojection_residuals

    N, H, W = depths.shape
    if tracks.count < min_tracks:
        return cameras, depths, TrackRefinement(tracks.count, len(tracks.frame), float("nan"), float("nan"), 1.0,
                                                False, f"{tracks.count} tracks (< {min_tracks})")
    first = torch.ones(len(tracks.track), dtype=torch.bool)
    first[1:] = tracks.track[1:] != tracks.track[:-1]
    i0, uv0 = tracks.frame[first], tracks.uv[first]
    col = (uv0[:, 0] - 0.5).round().long().clamp(0, W - 1)
    row = (uv0[:, 1] - 0.5).round().long().clamp(0, H - 1)
    z_first = depths.double()[i0, row, col]
    observations = Observations(tracks.frame, tracks.track, tracks.uv)
    # ftol 1e-6 (Ceres' default): the adjustment's own 1e-10 serves its implicit gradients, which this
    # refinement does not take; on redkitchen it stops 37 iterations sooner at the same ATE (0.097 m)
    options = BAOptions(loss="huber", loss_scale=loss_scale_px, max_iterations=max_iterations, ftol=1e-6)

    def solve(cams: Cameras, points: Tensor, obs: Observations, iterations: int):
        """The adjustment every stage runs: poses, points and the one shared focal length."""
        return bundle_adjust(cams, points, obs, refine_intrinsics=refine_intrinsics,
                             intrinsic_groups=torch.zeros(N, dtype=torch.long),
                             options=dataclasses.replace(options, max_iterations=iterations))

    def adjust(cams: Cameras, z0: Tensor, iterations: int, start: Tensor | None = None):
        """Bundle adjustment from ``cams`` with each track's point at ``start`` or, where that is None or
        NaN, at depth ``z0`` along its first ray; the result and the scale of the refined points' depths
        relative to ``z0`` (None: rejected)."""
        xc = torch.stack([(uv0[:, 0] - cams.cx[i0]) / cams.fx[i0] * z0,
                          (uv0[:, 1] - cams.cy[i0]) / cams.fy[i0] * z0, z0], -1)
        points = torch.einsum("nji,nj->ni", cams.R[i0], xc - cams.t[i0])  # R^T (x - t)
        if start is not None:
            points = torch.where(torch.isfinite(start).all(1, keepdim=True), start, points)
        result = solve(cams, points, observations, iterations)
        if not result.rmse_final < result.rmse_initial or not torch.isfinite(result.points).all():
            return result, None
        z1 = (torch.einsum("nij,nj->ni", result.cameras.R[i0], result.points) + result.cameras.t[i0])[:, 2]
        ok = (z0 > 0) & (z1 > 0)
        return result, float((z1[ok] / z0[ok]).median()) if ok.any() else 1.0

    n_check = min(check_iterations, max_iterations) if repair else max_iterations
    result, scale = adjust(cameras.to(dtype=torch.float64), z_first, n_check)
    info = TrackRefinement(tracks.count, len(tracks.frame), result.rmse_initial, result.rmse_final, 1.0, False,
                           result.reason)
    if scale is None:
        return cameras, depths, info
    refined, latest, used = result.cameras, result, n_check
    for round_ in range(max_rounds if repair else 0):
        fixed, repaired = repair_pose_breaks(refined, tracks)
        if repaired:  # re-posed: adjust from there (briefly, to check again, but in the last round), the
            # points from the depths again (triangulated in the re-posed cameras, the tracks that slid off
            # their corners spoil them: redkitchen ATE 0.084 -> 0.10 m)
            info.repaired = tuple(sorted(set(info.repaired) | set(repaired)))
            final = round_ == max_rounds - 1
            begin, iterations, start = fixed, max_iterations if final else n_check, None
        elif not latest.converged and used < max_iterations:  # no break: finish the adjustment, from its points
            final, begin, iterations, start = True, refined, max_iterations - used, latest.points
        else:
            break
        again, scale2 = adjust(begin, z_first * scale, iterations, start)
        used = iterations
        if scale2 is not None:
            refined, scale, latest = again.cameras, scale * scale2, again
            info.rmse_final, info.reason = again.rmse_final, again.reason
        if final:
            break
    errors = reprojection_residuals(latest.cameras, latest.points, observations).norm(dim=1)
    if max_error_px is not None:
        keep = errors.isfinite() & (errors <= max_error_px)
        keep &= torch.bincount(tracks.track[keep], minlength=tracks.count)[tracks.track] >= 2
        ids, pt = torch.unique(tracks.track[keep], return_inverse=True)
        if len(ids) >= min_tracks and int(keep.sum()) < len(keep):
            inliers = Observations(tracks.frame[keep], pt, tracks.uv[keep])
            final = solve(latest.cameras, latest.points[ids], inliers, max_iterations)
            if torch.isfinite(final.points).all():
                refined, latest = final.cameras, final
                info.rmse_final, info.reason = final.rmse_final, final.reason
                info.tracks, info.observations = len(ids), len(pt)
                errors = reprojection_residuals(latest.cameras, latest.points, inliers).norm(dim=1)
    info.depth_scale, info.accepted = scale, True
    info.mean_error_final = float(errors[errors.isfinite()].mean())
    return refined.to(dtype=cameras.dtype), depths * scale, info


#: The least number of matched observations a median frame needs for :func:`refine_with_matches`.
MATCHES_PER_FRAME = 50


def median_per_frame(frame: Tensor, n_frames: int) -> float:
    """The median over ``n_frames`` frames of the number of observations (``frame [O]``, each one's frame)
    in a frame."""
    return float(torch.bincount(frame, minlength=n_frames).double().median()) if n_frames else 0.0


def _inliers(cams: Cameras, tracks: Tracks, max_error_px: float) -> tuple[Tensor, Tensor]:
    """Every track's point triangulated in ``cams`` and the observations within ``max_error_px`` of it
    (in front of the camera, of tracks keeping two such): a first triangulation from all observations,
    then one from those within the threshold of it (an outlier spoils a DLT point for every observation)."""
    from scenegrad.recon.ba import Observations, reprojection_residuals

    obs = Observations(tracks.frame, tracks.track, tracks.uv.double())

    def within(points: Tensor) -> Tensor:
        err = reprojection_residuals(cams, points.nan_to_num(), obs).norm(dim=1)  # NaN behind the camera
        keep = torch.isfinite(points).all(1)[tracks.track] & (err <= max_error_px)
        return keep & (torch.bincount(tracks.track[keep], minlength=tracks.count)[tracks.track] >= 2)

    points = triangulate_tracks(cams, tracks, within(triangulate_tracks(cams, tracks)))
    return points, within(points)


#: :func:`refine_with_matches` tightens its threshold once the adjustment at it converged and the observations
#: within it changed by at most this fraction of them since the round before, or after this many rounds at it.
LEVEL_CHANGE, LEVEL_ROUNDS = 0.01, 3


def refine_with_matches(cameras: Cameras, tracks: Tracks, *, refine_intrinsics: tuple[str, ...] = ("focal",),
                        rounds: int = 12, max_error_px: float = 4.0, initial_error_px: float = 32.0,
                        loss_scale_px: float = 0.2,
                        max_iterations: int = 10, min_tracks: int = 50,
                        min_per_frame: int = MATCHES_PER_FRAME) -> tuple[Cameras, TrackRefinement]:
    """Bundle-adjust ``cameras`` (``N`` cameras sharing one focal length, already close: after
    :func:`refine_with_tracks`) on feature ``tracks`` (:func:`sift_tracks`), triangulating the points
    from the cameras, as an incremental SfM's last global adjustments do.

    Each of up to ``rounds`` rounds triangulates every track in the current cameras
    (:func:`triangulate_tracks`), keeps the observations within a threshold of it and adjusts poses,
    points and the shared intrinsics on them (Huber loss, ``loss_scale_px``; at most ``max_iterations``
    each: the next round goes on from there). Later rounds re-admit observations that the previous
    cameras placed too far (a loop closing once the drift that hid it is adjusted away). Short rounds are
    what matters: on redkitchen (fast preset) 3 rounds of 30 iterations stopped at ATE 0.054 m from one
    start and 0.048 m from another, 8 rounds of 10 reach 0.048 m from both, in about the same time; each
    round's triangulation moves the points further than the adjustment's last iterations do.

    The threshold starts at ``initial_error_px`` and halves down to ``max_error_px`` (COLMAP's 4 px) once
    the adjustment at it has converged on the same observations, give or take :data:`LEVEL_CHANGE` of
    them (or after :data:`LEVEL_ROUNDS` rounds); at ``max_error_px`` the rounds stop once the adjustment
    converged and the observations no longer change.
    Starting wide is what pulls back a run of frames that the tracks' adjustment left turned by a few
    degrees against the rest: at 4 px the matches that would tie them to their neighbours are all
    dropped, and the adjustment settles with them turned (redkitchen, fast preset, a FlowMap start in two
    windows of 54 frames: ATE 0.156 m with 4 px from the first round, 0.048 m from 16 px; from a start
    turned by up to 14 degrees at frames 4-8 only 32 px brought it back; eight FlowMap starts, windows of
    30 to 100 frames and two seeds: 0.048 m from each with 32 px and 12 rounds).
    The rounds are accepted on the robust cost, not the RMSE: with wide thresholds the Huber loss lowers
    the first while the admitted outliers raise the second.
    The Huber loss's scale ``loss_scale_px`` is small: SIFT keypoints' errors have heavy tails, and
    residuals of a pixel or more weigh less (redkitchen, eight FlowMap starts: ATE 0.0479-0.0483 m and
    median relative rotation 0.393-0.396 degrees with 1 px, 0.0471-0.0473 m and 0.383-0.391 degrees with
    0.2 px; COLMAP's own over runs 0.0468-0.0473 m and 0.386-0.389 degrees).
    ``refine_intrinsics``: ``("focal",)`` (SIMPLE_PINHOLE) or ``("focal", "k1")`` (SIMPLE_RADIAL: the
    cameras become ``"opencv"`` with ``k1`` shared by all).

    Returns the cameras (input dtype) and a :class:`TrackRefinement` (``depth_scale``: how much the
    adjustment scaled the scene, the median ratio of the camera centres' distances to the first one's).
    The input comes back unchanged (``accepted=False``) with fewer than ``min_tracks`` tracks to adjust, with
    a median frame seeing fewer than ``min_per_frame`` of them (a few matches per frame constrain the
    focal length less than the tracks the cameras came from: on the rendered room's walk, 27 per frame
    took the focal length from 2.0 % to 3.8 % off; redkitchen has 270), or when the first adjustment does
    not lower the robust cost.
    """
    from scenegrad.recon.ba import BAOptions, Observations, bundle_adjust

    nan = float("nan")
    info = TrackRefinement(tracks.count, len(tracks.frame), nan, nan, 1.0, False, "no adjustment")
    distorted = any(k in refine_intrinsics for k in ("k1", "k2", "p1", "p2", "k3"))
    cams = cameras.to(dtype=torch.float64)
    if distorted and cams.model == "pinhole":
        cams = dataclasses.replace(cams, model="opencv", dist=None)  # zero distortion to start from
    options = BAOptions(loss="huber", loss_scale=loss_scale_px, max_iterations=max_iterations, ftol=1e-6)
    groups = torch.zeros(len(cams), dtype=torch.long)
    previous = None
    threshold, at_level, converged = max(initial_error_px, max_error_px), 0, False
    for _ in range(rounds):
        points, keep = _inliers(cams, tracks, threshold)
        # a threshold is done once its adjustment converged on the same observations as the round before
        # (or nearly: LEVEL_CHANGE), or after LEVEL_ROUNDS rounds: on to half of it
        while threshold > max_error_px and previous is not None and (at_level >= LEVEL_ROUNDS or (
                converged and int((keep != previous).sum()) <= LEVEL_CHANGE * len(keep))):
            threshold, at_level = max(max_error_px, threshold / 2), 0
            points, keep = _inliers(cams, tracks, threshold)
        if converged and threshold == max_error_px and previous is not None and torch.equal(keep, previous):
            break
        ids, pt = torch.unique(tracks.track[keep], return_inverse=True)
        if len(ids) < min_tracks:
            info.reason = f"{len(ids)} tracks within {threshold} px (< {min_tracks})"
            break
        per_frame = median_per_frame(tracks.frame[keep], len(cams))
        if not info.accepted and per_frame < min_per_frame:
            info.reason = f"{per_frame:.0f} observations in the median frame (< {min_per_frame})"
            break
        obs = Observations(tracks.frame[keep], pt, tracks.uv[keep].double())
        result = bundle_adjust(cams, points[ids], obs, refine_intrinsics=refine_intrinsics, intrinsic_groups=groups,
                               options=options)
        if not result.cost_final <= result.cost_initial or not torch.isfinite(result.points).all():
            info.reason = f"adjustment rejected ({result.reason})"
            break
        if not info.accepted:
            info.rmse_initial = result.rmse_initial
        cams, previous, converged, at_level = result.cameras, keep, result.converged, at_level + 1
        err = result.residuals.norm(dim=1)[result.weights > 0]
        info.tracks, info.observations, info.rmse_final, info.reason = len(ids), len(pt), result.rmse_final, \
            result.reason
        info.mean_error_final, info.accepted, info.rounds = float(err.mean()), True, info.rounds + 1
    if not info.accepted:
        return cameras, info

    def spread(c: Cameras) -> Tensor:
        centres = -(c.R.transpose(1, 2) @ c.t[:, :, None])[:, :, 0].double()
        return (centres[1:] - centres[0]).norm(dim=1)

    before, after = spread(cameras), spread(cams)
    ok = before > 1e-12 * before.max().clamp_min(1e-300)
    info.depth_scale = float((after[ok] / before[ok]).median()) if ok.any() else 1.0
    return cams.to(dtype=cameras.dtype), info
