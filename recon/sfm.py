"""Incremental structure from motion: cameras and sparse points from unordered photos.

Pipeline (every step with well-kept tools; the bundle adjustment is :mod:`scenegrad.recon.ba`):

1. **Features**: OpenCV SIFT, descriptors mapped to RootSIFT (L1-normalised, square-rooted), keypoints in
   scenegrad pixels (centre of the top-left pixel at ``(0.5, 0.5)``), duplicates at one location dropped.
2. **Matching**: mutual nearest neighbours with Lowe's ratio test, over all pairs (``"exhaustive"``) or
   pairs within ``window`` frames (``"sequential"``, for videos); similarities in row chunks (bfloat16
   candidates re-scored in float32 by default, ``match_dtype``).
3. **Verification**: a fundamental matrix by OpenCV's USAC MAGSAC++; pairs with fewer than ``min_inliers``
   inliers (15, COLMAP's) are dropped.
4. **Tracks**: connected components of the verified matches (a bulk union-find in numpy); a
   track holding two keypoints of one image is inconsistent: its observations in that image are dropped
   (or the whole track, ``inconsistent_tracks="drop"``).
5. **Initialisation**: the pair with the most inliers among those poorly explained by a homography
   (enough parallax), relative pose from the essential matrix (MAGSAC++) and ``recoverPose``.
6. **Registration**: the image seeing the most triangulated tracks, by PnP RANSAC (EPnP samples,
   Levenberg-Marquardt refinement on the inliers; ``min_pnp_inliers`` inliers making ``min_pnp_ratio`` of
   its matches, as COLMAP; an image that fails is retried once another one is registered). When no image
   sees enough points for PnP (a wide-baseline capture whose neighbouring views share few tracks with the
   model), the image with the most verified matches with one registered image joins through their
   relative pose (essential matrix; only an image whose camera a registered image already calibrates), the
   baseline's length fitted to the few points it sees (one unknown: ``min_relative_points`` agreeing
   points). Then triangulation of the tracks it completes
   (multi-view DLT, kept when the largest ray angle exceeds ``min_angle_deg``, the point is in front
   of its cameras and reprojects within ``max_error_px``; a track an outlier spoils is triangulated again
   from the observations that fit, and every untriangulated track is retried as images join), bundle
   adjustment (Cauchy loss) and removal of observations that end up beyond ``max_error_px`` (observations
   of registered images are re-judged each time: tracks continue into new images, rejected observations
   can return). The bundle adjustment is local (the new image and the ``local_ba_images - 1`` images
   sharing most points with it, intrinsics fixed) and global (every image, the camera model's intrinsics
   refined) whenever the model has grown by ``global_ba_ratio`` since the last global one, as COLMAP.

Camera models (``camera_model``, COLMAP's names; the principal point starts at the image centre and, but
for OPENCV, is refined in the final bundle adjustment when one camera is seen by six images or more and the
fit improves significantly, see ``refine_principal_point``): SIMPLE_PINHOLE (one focal length; scenegrad
``"pinhole"``), PINHOLE (``fx``, ``fy``), SIMPLE_RADIAL (default: focal, ``k1``; scenegrad ``"opencv"`` with
``dist = (k1, 0, 0, 0, 0)``), RADIAL (focal, ``k1``, ``k2``) and OPENCV (``fx``, ``fy``, ``k1``, ``k2``, ``p1``,
``p2``). The keypoints are undistorted with the full model for the geometric steps (essential matrices,
PnP, triangulation). The intrinsics are shared by all images (one camera, the default when every image has
the same size) or per image (photos from many cameras).

>>> import numpy as np
>>> SfMOptions().matching, SfMOptions(matching="sequential", window=5).window
('exhaustive', 5)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from scenegrad.datasets.scene import Frame, Points, Scene
from scenegrad.recon.ba import BAOptions, Observations, bundle_adjust
from scenegrad.recon.threads import thread_map
from scenegrad.render.cameras import Cameras, _distort_opencv, _undistort_opencv

__all__ = ["CAMERA_MODELS", "SfMOptions", "SfMResult", "Features", "extract_features", "match_features",
           "match_pairs", "sequential_pairs", "incremental_sfm"]

_PP_MIN_IMAGES = 6  # refine_principal_point="auto": images of the one camera needed to refine its principal point
_PP_MAX_SHIFT = 0.025  # ... and the largest shift from the image centre (fraction of the image size) it accepts

# COLMAP camera model -> the intrinsics :func:`scenegrad.recon.ba.bundle_adjust` refines
CAMERA_MODELS = {
    "SIMPLE_PINHOLE": ("focal",),
    "PINHOLE": ("focal_xy",),
    "SIMPLE_RADIAL": ("focal", "k1"),
    "RADIAL": ("focal", "k1", "k2"),
    "OPENCV": ("focal_xy", "k1", "k2", "p1", "p2"),
}


@dataclass
class SfMOptions:
    """Options of :func:`incremental_sfm`.

    max_features / contrast_threshold: SIFT descriptors per image and OpenCV's contrast threshold.
    ratio: Lowe's ratio test. matching / window: ``"exhaustive"``
    or ``"sequential"`` pairs (frames ``i < j <= i + window``). min_inliers: verified matches a pair
    needs. verify_px: epipolar RANSAC threshold (pixels). focal_prior: starting focal length in pixels
    (default ``1.2 * max(width, height)``). min_angle_deg / max_error_px: triangulation and filtering
    thresholds. min_pnp_inliers / pnp_error_px: inliers needed to register an image and their error (COLMAP's
    12 px: the new image's focal length and the model are still rough); min_pnp_ratio: the inliers' least share
    of the image's 2D-3D matches. min_relative_points: points an image must see (within ``pnp_error_px``) to
    join through its relative pose to a registered neighbour when PnP cannot register any image.
    local_ba_images / global_ba_ratio: images in the local bundle adjustment after each registration, and the
    growth of the model that triggers a global one (1.0: always global).
    match_dtype: ``"bfloat16"`` (candidate neighbours in bfloat16, re-scored in float32: about twice as
    fast on CPUs with AVX512-BF16 or AMX, slower on others) or ``"float32"``. ba_loss_scale: Cauchy scale (pixels).
    ba_ftol: relative cost decrease that ends the bundle adjustments while the model grows (the last one
    converges to ``1e-10``).
    camera_model: one of :data:`CAMERA_MODELS`: ``"SIMPLE_PINHOLE"`` (focal), ``"PINHOLE"`` (``fx``, ``fy``),
    ``"SIMPLE_RADIAL"`` (focal, ``k1``), ``"RADIAL"`` (focal, ``k1``, ``k2``) or ``"OPENCV"`` (``fx``, ``fy``,
    ``k1``, ``k2``, ``p1``, ``p2``): the intrinsics refined. refine_principal_point: ``True`` refines ``cx, cy``
    in every global bundle adjustment, ``False`` holds them at the image centre (COLMAP's default), ``"auto"``
    refines them in the final bundle adjustment when one camera is shared by at least 6 registered images
    and the model has no tangential distortion (OPENCV's ``p1, p2`` nearly mimic a principal point shift), and
    keeps the result only when it is significant: the cost falls by more than the Bayesian information
    criterion asks of two parameters (``2 dE / sigma^2 > 2 ln(2 O)`` for ``O`` observations, ``sigma^2`` the
    residual variance) and the point moves less than 2.5 % of the image size from the centre.
    refine_intrinsics: ``False`` keeps ``focal_prior`` (and no distortion): calibrated cameras.
    intrinsics: ``"shared"`` (one camera), ``"per_image"`` (photos from many cameras) or ``"auto"``
    (shared when every image has the same size). refine_from: registered images before intrinsics are refined.
    inconsistent_tracks: ``"prune"`` (drop a track's observations in images where it has two keypoints) or
    ``"drop"`` (drop the track).
    """

    max_features: int = 8192
    contrast_threshold: float = 0.04
    ratio: float = 0.8
    matching: str = "exhaustive"
    window: int = 10
    match_dtype: str = "bfloat16"
    min_inliers: int = 15
    verify_px: float = 1.5
    focal_prior: float | None = None
    min_angle_deg: float = 1.5
    max_error_px: float = 4.0
    min_pnp_inliers: int = 30
    min_pnp_ratio: float = 0.25
    min_relative_points: int = 5
    local_ba_images: int = 6
    global_ba_ratio: float = 1.1
    pnp_error_px: float = 12.0
    ba_loss_scale: float = 2.0
    ba_ftol: float = 1e-6
    camera_model: str = "SIMPLE_RADIAL"
    refine_principal_point: bool | str = "auto"
    refine_intrinsics: bool = True
    intrinsics: str = "auto"
    refine_from: int = 3
    inconsistent_tracks: str = "prune"


@dataclass
class Features:
    """Keypoint locations ``xy [K, 2]`` (float64, scenegrad pixels) and colours ``rgb [K, 3]`` (float32 in
    ``[0, 1]``) of one image, with RootSIFT descriptors ``desc [D, 128]`` (float32, unit L2 norm) and the
    location of each, ``loc [D]`` (SIFT gives a location one descriptor per dominant orientation)."""

    xy: np.ndarray
    desc: np.ndarray
    rgb: np.ndarray
    loc: np.ndarray


@dataclass
class SfMResult:
    """Output of :func:`incremental_sfm`.

    scene: the registered frames (input order), their cameras, the points (ids ``1..P``, colours,
    mean reprojection error) and per frame ``metadata["colmap_xys"] / ["colmap_point3d_ids"]`` (all
    keypoints and the point each observes, ``-1`` for none), ready for
    :func:`scenegrad.datasets.colmap.save_colmap`. registered: input indices of the scene's frames.
    observations: the 2D observations (``camera_idx`` indexes the scene's frames). seconds: time per stage.
    """

    scene: Scene
    registered: list[int]
    observations: Observations
    seconds: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Features and matching
# ----------------------------------------------------------------------------------------------


def _uint8(image: np.ndarray | Tensor) -> np.ndarray:
    a = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a[..., :3])


def extract_features(image: np.ndarray | Tensor, max_features: int = 4096, contrast_threshold: float = 0.04
                     ) -> Features:
    """SIFT keypoints with RootSIFT descriptors of an RGB image (``[H, W, 3]`` uint8, or float in ``[0, 1]``);
    ``max_features`` descriptors at most, ``contrast_threshold`` as OpenCV's (COLMAP's is about half)."""
    import cv2

    rgb = _uint8(image)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    kps, desc = cv2.SIFT_create(nfeatures=max_features, contrastThreshold=contrast_threshold).detectAndCompute(
        gray, None)
    if desc is None or not kps:
        return Features(np.zeros((0, 2)), np.zeros((0, 128), np.float32), np.zeros((0, 3), np.float32),
                        np.zeros(0, np.int64))
    xy = np.array([k.pt for k in kps], dtype=np.float64)
    # OpenCV repeats a keypoint for each dominant orientation: one location, several descriptors
    _, first, loc = np.unique(np.round(xy * 100).astype(np.int64), axis=0, return_index=True, return_inverse=True)
    xy = xy[first]
    desc = desc.astype(np.float32)
    desc = np.sqrt(desc / np.maximum(desc.sum(1, keepdims=True), 1e-12))  # RootSIFT
    ij = np.clip(np.round(xy).astype(np.int64), 0, [rgb.shape[1] - 1, rgb.shape[0] - 1])
    colours = rgb[ij[:, 1], ij[:, 0]].astype(np.float32) / 255
    return Features(xy + 0.5, desc, colours, loc.reshape(-1))


def match_features(a: Features, b: Features, ratio: float = 0.8, dtype: torch.dtype = torch.float32,
                   chunk: int = 2048) -> np.ndarray:
    """``[K, 2]`` location index pairs (into ``a.xy``, ``b.xy``) of descriptors that are mutual nearest
    neighbours passing the ratio test, one partner per location.

    The similarities are computed ``chunk`` rows at a time (row top-3 and running column maxima: no full
    ``[Da, Db]`` matrix). ``dtype=torch.bfloat16`` computes them in bfloat16 (about twice as fast on CPUs
    with AVX512-BF16 or AMX, much slower on CPUs without); the row candidates are then re-scored in float32,
    so the ratio test is exact and only the choice of the three candidates and the mutual check see the
    rounding. In float32 the product's similarities are used as they are."""
    if len(a.desc) < 2 or len(b.desc) < 2:
        return np.zeros((0, 2), np.int64)
    da, db = torch.from_numpy(a.desc), torch.from_numpy(b.desc)
    db_low = db.to(dtype)
    k = min(3 if dtype != torch.float32 else 2, len(db))
    cand, values = [], []
    col_best = torch.full((len(db),), -2.0, dtype=dtype)
    for s in range(0, len(da), chunk):
        sim = da[s:s + chunk].to(dtype) @ db_low.T
        top = sim.topk(k, dim=1)
        cand.append(top.indices)
        values.append(top.values)
        col_best = torch.maximum(col_best, sim.amax(0))
    cand, values = torch.cat(cand), torch.cat(values)
    mutual = values[:, 0] >= col_best[cand[:, 0]]  # the row's best is also its column's best
    if dtype == torch.float32:  # the similarities are exact already
        exact, best_first = values, True
    else:
        exact, order = torch.einsum("nd,nkd->nk", da, db[cand]).sort(dim=1, descending=True)
        cand = cand.gather(1, order)
        best_first = order[:, 0] == 0  # the mutual check was made on this partner
    dist = (2 - 2 * exact[:, :2]).clamp_min(0).sqrt()
    keep = (dist[:, 0] < ratio * dist[:, 1]) & mutual & best_first
    i = torch.nonzero(keep)[:, 0].numpy()
    la, lb = a.loc[i], b.loc[cand[:, 0].numpy()[i]]
    stride = int(lb.max()) + 1 if len(lb) else 1
    key = np.unique(la * stride + lb)  # location pairs, once each
    pairs = np.stack([key // stride, key % stride], 1)
    # one partner per location: drop locations matched to two different ones (through two orientations)
    ok = np.ones(len(pairs), bool)
    for col in (0, 1):
        _, inverse, counts = np.unique(pairs[:, col], return_inverse=True, return_counts=True)
        ok &= counts[inverse.reshape(-1)] == 1
    return pairs[ok]


def _verify(xa: np.ndarray, xb: np.ndarray, threshold: float) -> np.ndarray | None:
    """Inlier mask of a fundamental matrix fitted by MAGSAC++ (``None`` when it fails)."""
    import cv2

    if len(xa) < 8:
        return None
    try:  # OpenCV's USAC asserts instead of returning nothing when no model fits (degenerate pairs)
        F, mask = cv2.findFundamentalMat(xa, xb, cv2.USAC_MAGSAC, threshold, 0.9999, 10000)
    except cv2.error:
        return None
    if F is None or mask is None:
        return None
    return mask.ravel().astype(bool)


def _homography_inliers(xa: np.ndarray, xb: np.ndarray, threshold: float) -> int:
    import cv2

    try:
        H, mask = cv2.findHomography(xa, xb, cv2.USAC_MAGSAC, threshold)
    except cv2.error:  # no model (see _verify)
        return 0
    return 0 if mask is None else int(mask.sum())


# ----------------------------------------------------------------------------------------------
# Tracks
# ----------------------------------------------------------------------------------------------


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[n]`` component label (its smallest node) of every node of the graph with edges ``(a, b)``: union-find
    done in bulk, hooking each edge's larger root under the smaller one, then path halving to the roots."""
    label = np.arange(n)
    while True:
        la, lb = label[a], label[b]
        low = np.minimum(la, lb)
        new = label.copy()
        np.minimum.at(new, la, low)
        np.minimum.at(new, lb, low)
        while True:  # every node to its root
            up = new[new]
            if np.array_equal(up, new):
                break
            new = up
        if np.array_equal(new, label):
            return label
        label = new


def _tracks(sizes: list[int], matches: dict[tuple[int, int], np.ndarray], split: str = "prune"
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tracks from pairwise matches: ``(track, image, keypoint)`` of every observation, sorted by track.
    A track with two keypoints in one image is inconsistent: ``split="drop"`` drops it, ``"prune"`` drops
    its observations in those images only."""
    offset = np.concatenate([[0], np.cumsum(sizes)])
    rows = [offset[i] + m[:, 0] for (i, _), m in matches.items()]
    cols = [offset[j] + m[:, 1] for (_, j), m in matches.items()]
    n = int(offset[-1])
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    label = _components(n, np.concatenate(rows), np.concatenate(cols))
    count = np.bincount(label)
    node = np.nonzero(count[label] >= 2)[0]
    image = np.searchsorted(offset, node, side="right") - 1
    comp = label[node]
    # inconsistent: a component with two keypoints of one image. split="drop" drops the whole track,
    # "prune" only its observations in the images where it is ambiguous (keeping the track when two remain)
    key = comp.astype(np.int64) * len(sizes) + image
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    ambiguous = counts[inverse.reshape(-1)] > 1
    ok = ~np.isin(comp, np.unique(comp[ambiguous])) if split == "drop" else ~ambiguous
    node, image, comp = node[ok], image[ok], comp[ok]
    enough = np.bincount(comp, minlength=int(label.max()) + 1)[comp] >= 2
    node, image, comp = node[enough], image[enough], comp[enough]
    _, track = np.unique(comp, return_inverse=True)
    order = np.argsort(track, kind="stable")
    return track[order], image[order], (node - offset[image])[order]


# ----------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------


def _relative_pose(rec: _Recon, opt: SfMOptions, ia: int, xa: np.ndarray, ib: int, xb: np.ndarray):
    """Essential matrix (USAC MAGSAC, ``verify_px``) between pixels ``xa`` of image ``ia`` and ``xb`` of
    ``ib`` and its pose: ``(inliers, R, t [3, 1], mask)`` with ``x_b ~ R x_a + t``, or ``None`` when no
    model fits or it has fewer than ``min_inliers`` inliers."""
    import cv2

    na, nb = _normalised(rec, ia, xa), _normalised(rec, ib, xb)
    threshold = opt.verify_px / math.sqrt(math.sqrt(rec.f[ia] * rec.fy[ia] * rec.f[ib] * rec.fy[ib]))
    try:
        E, mask = cv2.findEssentialMat(na, nb, np.eye(3), cv2.USAC_MAGSAC, 0.9999, threshold)
    except cv2.error:  # no model (see _verify)
        return None
    if E is None or E.shape != (3, 3):
        return None
    pose = cv2.recoverPose(E, na, nb, np.eye(3), mask=mask)
    return pose if pose[0] >= opt.min_inliers else None


def _normalised(rec: _Recon, img: np.ndarray | int, xy: np.ndarray) -> np.ndarray:
    """Undistorted normalised coordinates of pixels ``xy [n, 2]`` in images ``img`` (an index or ``[n]``): the
    OpenCV model inverted by Newton's method (:mod:`scenegrad.render.cameras`)."""
    f = np.stack([rec.f[img], rec.fy[img]], -1)
    d = (xy - rec.c[img]) / f
    dist = rec.dist[img]
    if not dist.any():
        return d
    dist = torch.from_numpy(dist).expand(len(d), 5)
    with torch.no_grad():  # one point per row: [n, 1, 2]
        return _undistort_opencv(dist, torch.from_numpy(d)[:, None])[:, 0].numpy()


def _distort(dist: np.ndarray, n: np.ndarray) -> np.ndarray:
    """OpenCV distortion ``[n, 2]`` of normalised points ``n [n, 2]`` with coefficients ``dist [n, 5]``
    (``k1, k2, p1, p2, k3``; :mod:`scenegrad.render.cameras`)."""
    return _distort_opencv(torch.from_numpy(np.ascontiguousarray(dist)), torch.from_numpy(n)[:, None])[:, 0].numpy()


def _triangulate(P: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Multi-view DLT: world point from ``[V, 3, 4]`` poses and ``[V, 2]`` normalised observations."""
    A = np.concatenate([n[:, :1] * P[:, 2] - P[:, 0], n[:, 1:] * P[:, 2] - P[:, 1]])
    X = np.linalg.svd(A)[2][-1]
    return X[:3] / X[3] if abs(X[3]) > 1e-12 else np.full(3, np.nan)


@dataclass
class _Recon:
    """The growing reconstruction (numpy, float64)."""

    R: dict[int, np.ndarray]
    t: dict[int, np.ndarray]
    f: np.ndarray  # [I] focal length fx of every image (pixels)
    fy: np.ndarray  # [I]
    dist: np.ndarray  # [I, 5] OpenCV distortion (k1, k2, p1, p2, k3)
    c: np.ndarray  # [I, 2] principal points
    group: np.ndarray  # [I] intrinsics group (images of one camera share their intrinsics)
    X: np.ndarray  # [T, 3] per track (NaN: not triangulated)
    active: np.ndarray  # [O] observation used
    model: str = "opencv"  # scenegrad model of the cameras ("pinhole" for SIMPLE_PINHOLE and PINHOLE)


def _project(rec: _Recon, img: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    R = np.stack([rec.R[int(i)] for i in img])
    t = np.stack([rec.t[int(i)] for i in img])
    xc = np.einsum("nij,nj->ni", R, X) + t
    n = xc[:, :2] / xc[:, 2:]
    dist = rec.dist[img]
    d = _distort(dist, n) if dist.any() else n
    uv = np.stack([rec.f[img], rec.fy[img]], 1) * d + rec.c[img]
    return uv, xc[:, 2]


# ----------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------


def incremental_sfm(images: list[np.ndarray | Tensor] | Scene, names: list[str] | None = None,
                    options: SfMOptions | None = None) -> SfMResult:
    """Reconstruct cameras and points from ``images`` (RGB ``[H, W, 3]``; or a :class:`Scene`).

    Returns an :class:`SfMResult` with the largest reconstruction grown from the best initial pair
    (images that cannot be registered are left out of ``result.scene``). Raises ``ValueError`` with fewer
    than two images, images of different sizes, or when no pair can initialise a reconstruction.
    """

    opt = options or SfMOptions()
    if opt.camera_model not in CAMERA_MODELS:
        raise ValueError(f"camera_model must be one of {tuple(CAMERA_MODELS)}, got {opt.camera_model!r}")
    if opt.refine_principal_point not in (True, False, "auto"):
        raise ValueError(f"refine_principal_point must be True, False or 'auto', got {opt.refine_principal_point!r}")
    if opt.intrinsics not in ("shared", "per_image", "auto"):
        raise ValueError(f"intrinsics must be 'shared', 'per_image' or 'auto', got {opt.intrinsics!r}")
    if opt.matching not in ("exhaustive", "sequential"):
        raise ValueError(f"matching must be 'exhaustive' or 'sequential', got {opt.matching!r}")
    if opt.match_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"match_dtype must be 'float32' or 'bfloat16', got {opt.match_dtype!r}")
    frames_in = images.frames if isinstance(images, Scene) else None
    pixels = [_uint8(f.image()) for f in frames_in] if frames_in is not None else [_uint8(i) for i in images]
    if len(pixels) < 2:
        raise ValueError(f"structure from motion needs at least two images, got {len(pixels)}")
    sizes = np.array([p.shape[1::-1] for p in pixels], dtype=np.float64)  # (W, H)
    if opt.intrinsics == "shared" and (sizes != sizes[0]).any():
        raise ValueError("intrinsics='shared' needs images of one size; use 'per_image' or 'auto'")
    shared = opt.intrinsics == "shared" or (opt.intrinsics == "auto" and not (sizes != sizes[0]).any())
    names = names or ([f.name for f in frames_in] if frames_in is not None else
                      [f"image_{i:04d}" for i in range(len(pixels))])
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    feats = [extract_features(p, opt.max_features, opt.contrast_threshold) for p in pixels]
    seconds["features"] = time.perf_counter() - clock
    clock = time.perf_counter()
    matches = _match_pairs(feats, opt)
    seconds["matching"] = time.perf_counter() - clock
    clock = time.perf_counter()
    if not matches:
        raise ValueError("no image pair has enough verified matches to start a reconstruction")
    rec, track, obs_img, obs_kp, obs_xy = _map(feats, matches, sizes, shared, opt)
    seconds["mapping"] = time.perf_counter() - clock
    return _result(rec, feats, names, frames_in, pixels, track, obs_img, obs_kp, obs_xy, seconds)


def _map(feats: list[Features], matches: dict[tuple[int, int], np.ndarray], sizes: np.ndarray, shared: bool,
         opt: SfMOptions):
    """The incremental mapping from verified matches: ``(reconstruction, track, obs_img, obs_kp, obs_xy)``."""
    track, obs_img, obs_kp = _tracks([len(f.xy) for f in feats], matches, opt.inconsistent_tracks)
    obs_xy = np.concatenate([feats[i].xy[k][None] for i, k in zip(obs_img, obs_kp, strict=True)]) \
        if len(track) else np.zeros((0, 2))
    n_tracks = int(track.max()) + 1 if len(track) else 0

    n_img = len(feats)
    f0 = np.full(n_img, float(opt.focal_prior)) if opt.focal_prior else 1.2 * sizes.max(1)
    rec = _Recon({}, {}, f0, f0.copy(), np.zeros((n_img, 5)), sizes / 2,
                 np.zeros(n_img, np.int64) if shared else np.arange(n_img), np.full((n_tracks, 3), np.nan),
                 np.ones(len(track), bool), "pinhole" if opt.camera_model.endswith("PINHOLE") else "opencv")
    _initialise(rec, feats, matches, opt, track, obs_img, obs_kp, obs_xy)
    _triangulate_new(rec, track, obs_img, obs_xy, opt)
    _bundle(rec, track, obs_img, obs_xy, opt)

    failed: set[int] = set()
    last_global = len(rec.R)  # images registered at the last global bundle adjustment
    while True:
        has_point = ~np.isnan(rec.X[track, 0]) & rec.active
        counts = np.bincount(obs_img[has_point], minlength=n_img)
        candidates = [i for i in range(n_img)
                      if i not in rec.R and i not in failed and counts[i] >= opt.min_pnp_inliers]
        if candidates:
            best = max(candidates, key=lambda i: counts[i])
            sel = has_point & (obs_img == best)
            if not _register(rec, best, rec.X[track[sel]], obs_xy[sel], opt):
                failed.add(best)
                continue
        else:  # no image sees enough points for PnP: extend from a registered neighbour's relative pose
            best = next((j for j in _bridge_order(rec, matches, n_img)
                         if _register_relative(rec, j, feats, matches, has_point, track, obs_img, obs_xy, opt)), None)
            if best is None:
                break
        failed.clear()  # a new camera can make earlier failures registrable
        _triangulate_new(rec, track, obs_img, obs_xy, opt)
        if len(rec.R) >= opt.global_ba_ratio * last_global:
            _bundle(rec, track, obs_img, obs_xy, opt)
            last_global = len(rec.R)
        else:
            _bundle(rec, track, obs_img, obs_xy, opt, around=best)
    _triangulate_new(rec, track, obs_img, obs_xy, opt)
    _bundle(rec, track, obs_img, obs_xy, opt, final=True)
    return rec, track, obs_img, obs_kp, obs_xy


def sequential_pairs(n: int, window: int, quadratic: bool = False) -> list[tuple[int, int]]:
    """Image pairs ``(i, j)``, ``i < j < n``, of sequential matching: ``j <= i + window``, and with
    ``quadratic`` also ``j = i + 2^k`` for every ``k`` (COLMAP's quadratic overlap: far pairs that can
    close a loop or bridge a gap in a video, at ``log2 n`` more pairs per image).

    >>> sequential_pairs(5, 1, quadratic=True)
    [(0, 1), (0, 2), (0, 4), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4)]
    """
    far = [1 << k for k in range(max(n - 1, 1).bit_length())] if quadratic else []
    return sorted({(i, i + s) for i in range(n) for s in [*range(1, window + 1), *far] if i + s < n})


def match_pairs(feats: list[Features], pairs: list[tuple[int, int]], ratio: float = 0.8,
                dtype: torch.dtype = torch.float32, min_inliers: int = 15, verify_px: float = 1.5,
                workers: int = 1) -> dict[tuple[int, int], np.ndarray]:
    """Verified matches ``{(i, j): [K, 2] keypoint pairs}`` of the image ``pairs``: :func:`match_features`,
    then a fundamental matrix by MAGSAC++ (``verify_px``); pairs left with fewer than ``min_inliers``
    inliers are dropped. ``workers``: threads matching pairs (torch and OpenCV release the GIL); the result
    is the same."""

    def verified(ij: tuple[int, int]) -> np.ndarray | None:
        i, j = ij
        m = match_features(feats[i], feats[j], ratio, dtype)
        if len(m) < min_inliers:
            return None
        inl = _verify(feats[i].xy[m[:, 0]], feats[j].xy[m[:, 1]], verify_px)
        return m[inl] if inl is not None and inl.sum() >= min_inliers else None

    found = thread_map(verified, pairs, workers, "match-pairs")
    return {ij: m for ij, m in zip(pairs, found, strict=True) if m is not None}


def _match_pairs(feats: list[Features], opt: SfMOptions) -> dict[tuple[int, int], np.ndarray]:
    """Verified matches ``{(i, j): [K, 2] keypoint pairs}`` (``i < j``) of the pairs ``opt.matching`` selects."""
    n_img = len(feats)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[opt.match_dtype]
    pairs = sequential_pairs(n_img, opt.window) if opt.matching == "sequential" else \
        [(i, j) for i in range(n_img) for j in range(i + 1, n_img)]
    return match_pairs(feats, pairs, opt.ratio, dtype, opt.min_inliers, opt.verify_px)


def _register(rec: _Recon, image: int, X: np.ndarray, xy: np.ndarray, opt: SfMOptions) -> bool:
    """Pose of ``image`` from 2D-3D matches by PnP RANSAC (EPnP samples, LM refinement on the inliers).

    When no image of its camera is registered yet, its focal length is unknown: PnP runs for focal
    lengths from 0.5 to 4 times the prior (telephoto photos), the one with most inliers is kept and
    refined with the pose by a bundle adjustment of this camera alone (points fixed)."""
    import cv2

    known = any(rec.group[i] == rec.group[image] for i in rec.R)
    prior, aspect = rec.f[image], rec.fy[image] / rec.f[image]
    best = None
    for f in [prior] if known or not opt.refine_intrinsics else prior * np.array([1.0, 0.5, 0.7, 1.4, 2.0, 2.8, 4.0]):
        rec.f[image], rec.fy[image] = f, f * aspect
        n = _normalised(rec, image, xy)
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            X, n, np.eye(3), None, iterationsCount=2000, reprojectionError=opt.pnp_error_px / f,
            confidence=0.9999, flags=cv2.SOLVEPNP_EPNP)
        if ok and inliers is not None and (best is None or len(inliers) > len(best[3])):
            best = (f, rvec, tvec, inliers.ravel())
    if best is None or len(best[3]) < max(opt.min_pnp_inliers, opt.min_pnp_ratio * len(X)):
        rec.f[image], rec.fy[image] = prior, prior * aspect
        return False
    f, rvec, tvec, inl = best
    rec.f[image], rec.fy[image] = f, f * aspect
    n = _normalised(rec, image, xy[inl])
    rvec, tvec = cv2.solvePnPRefineLM(X[inl], n, np.eye(3), None, rvec, tvec)
    rec.R[image], rec.t[image] = cv2.Rodrigues(rvec)[0], tvec.ravel()
    if not known and opt.refine_intrinsics:
        cams = _cameras(rec, [image], 1, 1)
        obs = Observations(torch.zeros(len(inl), dtype=torch.long), torch.arange(len(inl)), torch.from_numpy(xy[inl]))
        res = bundle_adjust(cams, torch.from_numpy(X[inl]), obs, refine_intrinsics=("focal",),
                            fixed_points=torch.ones(len(inl), dtype=torch.bool),
                            options=BAOptions(loss="cauchy", loss_scale=opt.ba_loss_scale, max_iterations=20))
        rec.R[image], rec.t[image] = res.cameras.R[0].detach().numpy(), res.cameras.t[0].detach().numpy()
        rec.f[image], rec.fy[image] = float(res.cameras.fx[0]), float(res.cameras.fy[0])
    return True


def _bridge_order(rec: _Recon, matches: dict[tuple[int, int], np.ndarray], n_img: int) -> list[int]:
    """Unregistered images whose intrinsics are known (a registered image shares them), by their most verified
    matches with one registered image, most first."""
    known = {int(rec.group[i]) for i in rec.R}
    best = np.zeros(n_img, np.int64)
    for (i, j), m in matches.items():
        if (i in rec.R) != (j in rec.R):
            new = j if i in rec.R else i
            best[new] = max(best[new], len(m))
    order = [j for j in np.argsort(-best, kind="stable").tolist() if best[j] and int(rec.group[j]) in known]
    return order


def _register_relative(rec: _Recon, image: int, feats, matches, has_point, track, obs_img, obs_xy,
                       opt: SfMOptions) -> bool:
    """Pose of ``image`` from its relative pose to the registered image it shares most verified matches with
    (essential matrix, MAGSAC++, ``recoverPose``) and the scale of the baseline fitted to the few points it
    sees (one unknown: ``min_relative_points`` agreeing points suffice where PnP needs ``min_pnp_inliers``).

    This continues the reconstruction through a camera whose neighbours are not registered yet (their
    shared tracks have no point): it needs ``min_inliers`` essential-matrix inliers with that image, and at
    least ``min_relative_points`` points within ``pnp_error_px`` once scaled; the bundle adjustment that
    follows refines the pose."""

    partners = sorted(((len(m), i if j == image else j, m if i == image else m[:, ::-1])
                       for (i, j), m in matches.items() if image in (i, j) and (j if i == image else i) in rec.R),
                      key=lambda x: -x[0])
    sel = has_point & (obs_img == image)
    if sel.sum() < opt.min_relative_points:
        return False
    X = rec.X[track[sel]]
    n_obs = _normalised(rec, image, obs_xy[sel])
    for count, other, m in partners[:2]:
        if count < opt.min_inliers:
            break
        pose = _relative_pose(rec, opt, other, feats[other].xy[m[:, 1]], image, feats[image].xy[m[:, 0]])
        if pose is None:
            continue
        _, R_rel, t_rel, _ = pose
        # x_new = R_rel (R_o X + t_o) + s t_rel: each observation gives two equations linear in the scale s
        R = R_rel @ rec.R[other]
        a = (R_rel @ (rec.R[other] @ X.T + rec.t[other][:, None])).T
        b = t_rel.ravel()
        ca = a[:, :2] - n_obs * a[:, 2:]  # residual numerator at s = 0
        cb = b[:2][None] - n_obs * b[2]  # its derivative in s
        s_each = -(ca * cb).sum(1) / np.maximum((cb * cb).sum(1), 1e-18)
        best = (0, None)
        for s_try in s_each[s_each > 0]:
            xc = a + s_try * b
            uv = xc[:, :2] / np.where(np.abs(xc[:, 2:]) > 1e-12, xc[:, 2:], 1e-12)
            ok = (xc[:, 2] > 0) & (np.linalg.norm(uv - n_obs, axis=1) * rec.f[image] <= opt.pnp_error_px)
            if ok.sum() > best[0]:
                best = (int(ok.sum()), ok)
        if best[0] < opt.min_relative_points or best[0] < 0.5 * len(X):
            continue
        ok = best[1]
        s_fit = -(ca[ok] * cb[ok]).sum() / max((cb[ok] * cb[ok]).sum(), 1e-18)
        if s_fit <= 0:
            continue
        rec.R[image], rec.t[image] = R, R_rel @ rec.t[other] + s_fit * b
        return True
    return False


def _initialise(rec: _Recon, feats, matches, opt: SfMOptions, track, obs_img, obs_kp, obs_xy) -> None:

    scored = []
    for (i, j), m in matches.items():
        h = _homography_inliers(feats[i].xy[m[:, 0]], feats[j].xy[m[:, 1]], 4 * opt.verify_px)
        scored.append((len(m) * (1.0 if h < 0.8 * len(m) else 0.25), i, j))
    scored.sort(reverse=True)
    for _, i, j in scored:
        m = matches[(i, j)]
        pose = _relative_pose(rec, opt, i, feats[i].xy[m[:, 0]], j, feats[j].xy[m[:, 1]])
        if pose is None:
            continue
        count, R, t, mask = pose
        rec.R[i], rec.t[i] = np.eye(3), np.zeros(3)
        rec.R[j], rec.t[j] = R, t.ravel()
        before = (~np.isnan(rec.X[:, 0])).sum()
        _triangulate_new(rec, track, obs_img, obs_xy, opt)
        if (~np.isnan(rec.X[:, 0])).sum() - before >= opt.min_inliers:
            return
        rec.R.clear()
        rec.t.clear()
        rec.X[:] = np.nan
    raise ValueError("no image pair could initialise the reconstruction (too little parallax or matches)")


def _triangulate_new(rec: _Recon, track, obs_img, obs_xy, opt: SfMOptions) -> None:
    """Triangulate every track without a point that has two or more registered, active observations."""
    registered = np.isin(obs_img, list(rec.R)) & rec.active
    todo = np.isnan(rec.X[track, 0]) & registered
    counts = np.bincount(track[todo], minlength=len(rec.X))
    cand = np.nonzero(counts >= 2)[0]
    if not len(cand):
        return
    n_all = _normalised(rec, obs_img, obs_xy)
    starts = np.searchsorted(track, cand, side="left")
    stops = np.searchsorted(track, cand, side="right")
    cos_min = math.cos(math.radians(opt.min_angle_deg))
    for tr, s, e in zip(cand, starts, stops, strict=True):
        idx = np.arange(s, e)[registered[s:e]]
        imgs = obs_img[idx]
        P = np.stack([np.concatenate([rec.R[int(i)], rec.t[int(i)][:, None]], 1) for i in imgs])
        X = _triangulate(P, n_all[idx])
        if not np.isfinite(X).all():
            continue
        uv, z = _project(rec, imgs, np.broadcast_to(X, (len(idx), 3)))
        err = np.linalg.norm(uv - obs_xy[idx], axis=1)
        good = (z > 0) & (err <= opt.max_error_px)
        if 2 <= good.sum() < len(good):  # an outlier pulled the point: again from the observations that fit
            X = _triangulate(P[good], n_all[idx[good]])
            if not np.isfinite(X).all():
                continue
            uv, z = _project(rec, imgs, np.broadcast_to(X, (len(idx), 3)))
            good = (z > 0) & (np.linalg.norm(uv - obs_xy[idx], axis=1) <= opt.max_error_px)
        if good.sum() < 2:
            continue
        centres = np.stack([-rec.R[int(i)].T @ rec.t[int(i)] for i in imgs[good]])
        rays = X - centres
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        if (rays @ rays.T).min() > cos_min:
            continue
        rec.X[tr] = X


def _bundle(rec: _Recon, track, obs_img, obs_xy, opt: SfMOptions, around: int | None = None,
            final: bool = False) -> None:
    """Bundle adjustment, then the removal of observations beyond ``max_error_px`` (and of points left with
    fewer than two).

    Global (``around=None``): every registered image and triangulated track, intrinsics refined. Local
    (around image ``around``): that image and the ``local_ba_images - 1`` registered images sharing most points
    with it, with every point they see; the other images observing those points are held fixed, and so are
    the intrinsics (global when fewer than two images would be fixed). While the model grows, the solve stops
    at a relative cost decrease below ``ba_ftol``; the ``final`` one converges fully."""
    reg = sorted(rec.R)
    use = rec.active & ~np.isnan(rec.X[track, 0]) & np.isin(obs_img, reg)
    fixed = None
    if around is not None:
        mine = np.zeros(len(rec.X), bool)
        mine[track[use & (obs_img == around)]] = True
        shared = use & mine[track] & (obs_img != around)
        count = np.bincount(obs_img[shared], minlength=len(rec.f))
        local = {around, *[i for i in np.argsort(-count, kind="stable")[:opt.local_ba_images - 1].tolist()
                           if count[i] > 0]}
        seen = np.zeros(len(rec.X), bool)
        seen[track[use & np.isin(obs_img, list(local))]] = True
        local_use = use & seen[track]
        local_reg = sorted(set(obs_img[local_use].tolist()))
        if sum(i not in local for i in local_reg) >= 2:
            use, reg = local_use, local_reg
            fixed = torch.tensor([i not in local for i in reg])
    pos = {i: k for k, i in enumerate(reg)}
    tracks_used, point_idx = np.unique(track[use], return_inverse=True)
    if len(tracks_used) < 3:
        return
    cams = _cameras(rec, reg, 1, 1)
    obs = Observations(torch.tensor([pos[int(i)] for i in obs_img[use]]), torch.from_numpy(point_idx),
                       torch.from_numpy(obs_xy[use]))
    pp = opt.refine_principal_point
    auto = pp == "auto"
    if auto:  # one camera seen by enough images constrains its principal point: refined in the final solve
        # (not with tangential distortion, which a shift of the principal point nearly mimics: measured on
        # Herz-Jesu, OPENCV's principal point then drifts 10 px the wrong way)
        pp = (final and fixed is None and len(reg) >= _PP_MIN_IMAGES and len(set(rec.group[reg].tolist())) == 1
              and "p1" not in CAMERA_MODELS[opt.camera_model])
    refine = CAMERA_MODELS[opt.camera_model] + (("principal_point",) if pp else ())
    if len(reg) < opt.refine_from or not opt.refine_intrinsics or fixed is not None:
        refine = ()

    def solve(refine, cams, points):
        return bundle_adjust(cams, points, obs, refine_intrinsics=refine,
                             intrinsic_groups=torch.from_numpy(rec.group[reg]), fixed_cameras=fixed,
                             options=BAOptions(loss="cauchy", loss_scale=opt.ba_loss_scale, max_iterations=30,
                                               ftol=1e-10 if final else opt.ba_ftol))

    if auto and "principal_point" in refine:
        # model selection: the principal point is kept where it was unless refining it lowers the cost by more
        # than the Bayesian information criterion asks of two parameters, and moves it plausibly little
        res = solve(refine[:-1], cams, torch.from_numpy(rec.X[tracks_used]))
        cams = res.cameras
        freed = solve(refine, cams, res.points)  # from the optimum with the centre
        sigma2 = 2 * res.cost_final / (2 * len(obs.uv))  # residual variance per coordinate
        gain = 2 * (res.cost_final - freed.cost_final) / max(sigma2, 1e-300)
        moved = torch.stack([freed.cameras.cx - cams.cx, freed.cameras.cy - cams.cy], 1).abs()
        if gain > 2 * math.log(2 * len(obs.uv)) and not bool(
                (moved > _PP_MAX_SHIFT * 2 * torch.stack([cams.cx, cams.cy], 1)).any()):
            res = freed
        else:
            refine = refine[:-1]
    else:
        res = solve(refine, cams, torch.from_numpy(rec.X[tracks_used]))
    for k, i in enumerate(reg):
        rec.R[i], rec.t[i] = res.cameras.R[k].detach().numpy(), res.cameras.t[k].detach().numpy()
    if refine:
        out = res.cameras
        rec.f[reg], rec.fy[reg] = out.fx.detach().numpy(), out.fy.detach().numpy()
        rec.c[reg] = torch.stack([out.cx, out.cy], 1).detach().numpy()
        if out.dist is not None:
            rec.dist[reg] = out.dist.detach().numpy()
        if (rec.group == rec.group[0]).all():  # one camera: unregistered images share it too
            rec.f[:], rec.fy[:], rec.c[:], rec.dist[:] = rec.f[reg[0]], rec.fy[reg[0]], rec.c[reg[0]], rec.dist[reg[0]]
    reg = sorted(rec.R)
    rec.X[tracks_used] = res.points.detach().numpy()
    # every observation of a point in a registered image is (re)judged by its error: outliers drop out,
    # observations dropped under an earlier, worse geometry come back
    seen = ~np.isnan(rec.X[track, 0]) & np.isin(obs_img, reg)
    uv, z = _project(rec, obs_img[seen], rec.X[track[seen]])
    rec.active[seen] = (z > 0) & (np.linalg.norm(uv - obs_xy[seen], axis=1) <= opt.max_error_px)
    left = np.bincount(track[rec.active & seen], minlength=len(rec.X))
    rec.X[left < 2] = np.nan


def _cameras(rec: _Recon, reg: list[int], width, height) -> Cameras:
    """Cameras of the images ``reg`` (scenegrad ``"pinhole"`` or ``"opencv"``, ``rec.model``)."""
    f64 = torch.float64
    dist = torch.from_numpy(rec.dist[reg].copy()) if rec.model == "opencv" else None
    return Cameras(torch.from_numpy(rec.f[reg].copy()), torch.from_numpy(rec.fy[reg].copy()),
                   torch.from_numpy(rec.c[reg, 0].copy()), torch.from_numpy(rec.c[reg, 1].copy()),
                   torch.tensor(np.stack([rec.R[i] for i in reg]), dtype=f64),
                   torch.tensor(np.stack([rec.t[i] for i in reg]), dtype=f64), width, height, model=rec.model,
                   dist=dist)


def _result(rec: _Recon, feats, names, frames_in, pixels, track, obs_img, obs_kp, obs_xy, seconds) -> SfMResult:
    reg = sorted(rec.R)
    pos = {i: k for k, i in enumerate(reg)}
    use = rec.active & ~np.isnan(rec.X[track, 0]) & np.isin(obs_img, reg)
    tracks_used, point_idx = np.unique(track[use], return_inverse=True)
    sizes = np.array([pixels[i].shape[1::-1] for i in reg])
    cams = _cameras(rec, reg, torch.from_numpy(sizes[:, 0]), torch.from_numpy(sizes[:, 1]))
    X = rec.X[tracks_used]
    uv, _ = _project(rec, obs_img[use], X[point_idx])
    err = np.linalg.norm(uv - obs_xy[use], axis=1)
    mean_err = np.bincount(point_idx, err, len(X)) / np.maximum(np.bincount(point_idx, minlength=len(X)), 1)
    rgb = np.zeros((len(X), 3), np.float32)
    rgb[point_idx] = np.stack([feats[i].rgb[k] for i, k in zip(obs_img[use], obs_kp[use], strict=True)])
    frames = []
    for i in reg:
        ids = np.full(len(feats[i].xy), -1, np.int64)
        mine = obs_img[use] == i
        ids[obs_kp[use][mine]] = point_idx[mine] + 1
        meta = {"colmap_xys": feats[i].xy.copy(), "colmap_point3d_ids": ids}
        if frames_in is not None:
            old = frames_in[i]
            frames.append(Frame(name=old.name, image_path=old.image_path, image_fn=old.image_fn,
                                metadata={**old.metadata, **meta}))
        else:
            px = pixels[i]
            frames.append(Frame(name=names[i], image_fn=lambda px=px: px, metadata=meta))
    points = Points(torch.from_numpy(X), torch.from_numpy(rgb), torch.from_numpy(mean_err),
                    torch.arange(1, len(X) + 1))
    obs = Observations(torch.tensor([pos[int(i)] for i in obs_img[use]], dtype=torch.long),
                       torch.from_numpy(point_idx), torch.from_numpy(obs_xy[use]))
    return SfMResult(Scene(frames=frames, cameras=cams, points=points), reg, obs, seconds)
