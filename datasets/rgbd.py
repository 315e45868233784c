"""RGB-D sequences with known poses: 7-Scenes, TUM RGB-D, and plain pose lists (slambook-style).

Every loader returns a :class:`~scenegrad.datasets.scene.Scene` in scenegrad's conventions
(:mod:`scenegrad.render.cameras`): OpenCV world-to-camera cameras, depth along camera +Z in metres
(``Frame.depth()``, ``0`` = invalid), intrinsics in pixels with pixel centres at ``i + 0.5``.

**Pose files** store camera-to-world transforms (OpenCV axes: +X right, +Y down, +Z forward), as
4x4 matrices (7-Scenes) or as ``tx ty tz qx qy qz qw`` lines (TUM, slambook; the quaternion is
``(x, y, z, w)`` there, while scenegrad's own quaternions are ``(w, x, y, z)``): see
:func:`read_pose_file`. Rotations more than :data:`ROTATION_TOLERANCE` from orthonormal raise
``ValueError`` naming the file and line; smaller deviations (7-Scenes matrices are off by up to
``4e-4``) are projected onto the nearest rotation. Quaternions are normalised (with a warning when
their norm is off by more than ``1e-3``).

**Intrinsics** come as :class:`RGBDIntrinsics` (python floats, the image size, optional OpenCV
distortion). Calibrations of these datasets were made with OpenCV / ROS, whose pixel centres are
at integers: :meth:`RGBDIntrinsics.from_opencv` adds ``0.5`` to ``cx, cy`` and is used for every
value read from a dataset file or table here (:data:`TUM_INTRINSICS`, 7-Scenes, slambook).

**7-Scenes caveat.** Colour and depth are *not* registered to each other; the intrinsics
(``camera-intrinsics.txt``, 585 / 320 / 240) are the *depth* camera's and the poses are the depth
camera's poses. :func:`load_7scenes` therefore returns the depth camera's cameras: ``Frame.depth()``
agrees with them to a few millimetres, ``Frame.image()`` (the colour image) only approximately.

>>> import torch
>>> intr = RGBDIntrinsics.from_opencv(525.0, 525.0, 319.5, 239.5, 640, 480)
>>> intr.cx, intr.cy
(320.0, 240.0)
>>> cams = intr.cameras(torch.eye(4, dtype=torch.float64)[None])
>>> len(cams), cams.model
(1, 'pinhole')
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scenegrad.datasets.scene import Frame, Scene, read_image
from scenegrad.render.cameras import Cameras, pixel_centers, project, unproject
from scenegrad.render.rotations import matrix_to_quat, quat_to_matrix

__all__ = [
    "ROTATION_TOLERANCE",
    "RGBDIntrinsics",
    "SEVEN_SCENES_INTRINSICS",
    "SLAMBOOK_INTRINSICS",
    "TUM_INTRINSICS",
    "PoseList",
    "read_pose_file",
    "write_pose_file",
    "read_pose_matrix",
    "associate",
    "load_7scenes",
    "load_tum",
    "load_pose_list",
    "warp_depth",
]

#: Largest ``max |R^T R - I|`` accepted for a rotation read from a file (then re-orthonormalised).
ROTATION_TOLERANCE = 1e-2
_QUAT_NORM_WARN = 1e-3


# ----------------------------------------------------------------------------------------------
# Intrinsics
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RGBDIntrinsics:
    """One fixed sensor: intrinsics in scenegrad's pixel convention (centres at ``i + 0.5``), image size.

    Fields:
        fx, fy, cx, cy: pixels.
        width, height: the image size in pixels.
        dist: OpenCV ``k1 k2 p1 p2 k3`` (``"opencv"`` model) or ``None`` (pinhole).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    dist: tuple[float, ...] | None = None

    @classmethod
    def from_opencv(
        cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int,
        dist: Sequence[float] | None = None,
    ) -> RGBDIntrinsics:
        """From an OpenCV / ROS calibration, whose pixel centres are at integers: ``cx, cy`` gain ``0.5``."""
        d = None if dist is None or not any(dist) else tuple(float(k) for k in dist)
        return cls(float(fx), float(fy), float(cx) + 0.5, float(cy) + 0.5, int(width), int(height), d)

    @classmethod
    def from_K_file(cls, path: str | Path, width: int, height: int) -> RGBDIntrinsics:
        """A 3x3 ``K`` text file (7-Scenes' ``camera-intrinsics.txt``), OpenCV pixel convention."""
        K = _read_matrix(Path(path), 3)
        if K[0, 1] != 0 or K[1, 0] != 0 or K[2, 0] != 0 or K[2, 1] != 0 or K[2, 2] != 1:
            raise ValueError(f"{path}: K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {K.tolist()}")
        return cls.from_opencv(K[0, 0], K[1, 1], K[0, 2], K[1, 2], width, height)

    def with_size(self, width: int, height: int) -> RGBDIntrinsics:
        """The same intrinsics for images of another size (scaled, as :func:`~scenegrad.render.cameras.resize`)."""
        sx, sy = width / self.width, height / self.height
        return RGBDIntrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height, self.dist)

    def cameras(self, camtoworlds: Tensor) -> Cameras:
        """Cameras for OpenCV-axes camera-to-world poses ``camtoworlds [N, 4, 4]`` (their dtype)."""
        K = torch.tensor([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]],
                         dtype=camtoworlds.dtype, device=camtoworlds.device)
        if self.dist is None:
            return Cameras.from_camtoworlds(camtoworlds, K, self.width, self.height)
        dist = torch.tensor(self.dist, dtype=camtoworlds.dtype, device=camtoworlds.device)
        return Cameras.from_camtoworlds(camtoworlds, K, self.width, self.height, model="opencv", dist=dist)


#: 7-Scenes' published depth-camera intrinsics (also in each sequence's ``camera-intrinsics.txt``).
SEVEN_SCENES_INTRINSICS = RGBDIntrinsics.from_opencv(585.0, 585.0, 320.0, 240.0, 640, 480)

#: slambook2 ``ch5/rgbd`` (from the book's ``joinMap.cpp``; not in the data files).
SLAMBOOK_INTRINSICS = RGBDIntrinsics.from_opencv(518.0, 519.0, 325.5, 253.5, 640, 480)

#: TUM RGB-D colour-camera calibrations (the depth images are registered to the colour camera).
#: ``"fr1"``, ``"fr2"``: with OpenCV distortion ``k1 k2 p1 p2 k3`` (the images are not undistorted);
#: ``"fr3"``: undistorted; ``"default"``: the ROS default TUM uses where no calibration applies.
TUM_INTRINSICS: dict[str, RGBDIntrinsics] = {
    "fr1": RGBDIntrinsics.from_opencv(517.3, 516.5, 318.6, 255.3, 640, 480,
                                      (0.2624, -0.9531, -0.0054, 0.0026, 1.1633)),
    "fr2": RGBDIntrinsics.from_opencv(520.9, 521.0, 325.1, 249.7, 640, 480,
                                      (0.2312, -0.7849, -0.0033, -0.0001, 0.9172)),
    "fr3": RGBDIntrinsics.from_opencv(535.4, 539.2, 320.1, 247.6, 640, 480),
    "default": RGBDIntrinsics.from_opencv(525.0, 525.0, 319.5, 239.5, 640, 480),
}


def _resolve_intrinsics(intrinsics: RGBDIntrinsics | str, table: dict[str, RGBDIntrinsics]) -> RGBDIntrinsics:
    if isinstance(intrinsics, RGBDIntrinsics):
        return intrinsics
    if isinstance(intrinsics, str) and intrinsics in table:
        return table[intrinsics]
    raise ValueError(f"intrinsics must be an RGBDIntrinsics or one of {sorted(table)}, got {intrinsics!r}")


# ----------------------------------------------------------------------------------------------
# Pose files
# ----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class PoseList:
    """Poses read from a file: ``camtoworlds [N, 4, 4]`` float64 (OpenCV axes), ``stamps [N]`` float64
    (the leading timestamp / index column, or ``None`` when the file has none), ``lines [N]`` the
    1-based line numbers they came from."""

    camtoworlds: Tensor
    stamps: Tensor | None
    lines: list[int]

    def __len__(self) -> int:
        return self.camtoworlds.shape[0]


def _checked_rotation(R: np.ndarray, where: str) -> np.ndarray:
    """``R`` projected on the nearest rotation; ``ValueError`` naming ``where`` if it is not close to one."""
    if not np.isfinite(R).all():
        raise ValueError(f"{where}: rotation has non-finite entries")
    err = float(np.abs(R.T @ R - np.eye(3)).max())
    if err > ROTATION_TOLERANCE or np.linalg.det(R) <= 0:
        raise ValueError(f"{where}: not a rotation matrix (max |R^T R - I| = {err:.3g}, det = "
                         f"{np.linalg.det(R):.3g}); is this a camera-to-world pose?")
    u, _, vt = np.linalg.svd(R)
    return u @ vt


def _quat_rotation(q_wxyz: np.ndarray, where: str) -> np.ndarray:
    norm = float(np.linalg.norm(q_wxyz))
    if not math.isfinite(norm) or norm < 1e-6:
        raise ValueError(f"{where}: quaternion {q_wxyz.tolist()} has no direction (norm {norm:.3g})")
    if abs(norm - 1.0) > _QUAT_NORM_WARN:
        warnings.warn(f"{where}: quaternion norm {norm:.6f} is not 1 (normalised); wrong column order?",
                      stacklevel=4)
    return quat_to_matrix(torch.from_numpy(q_wxyz / norm)).numpy()


def _numbers(line: str, where: str) -> list[float]:
    try:
        return [float(v) for v in line.replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"{where}: expected numbers, got {line.strip()!r}") from None


def read_pose_file(path: str | Path, order: str = "xyzw") -> PoseList:
    """Read ``[stamp] tx ty tz q q q q`` lines (camera-to-world, TUM / slambook style).

    Args:
        path: a text file; blank lines and lines starting with ``#`` are skipped; values are separated
            by spaces (or commas). Each line has 7 numbers, or 8 with a leading timestamp or index.
        order: the quaternion order in the file: ``"xyzw"`` (TUM, slambook, Eigen's coeffs) or ``"wxyz"``.

    Returns:
        :class:`PoseList` with ``camtoworlds [N, 4, 4]`` float64: translation = camera centre, rotation =
        camera-to-world (OpenCV camera axes).

    Raises:
        FileNotFoundError: no such file. ValueError: a malformed line or a zero quaternion (naming the
        file and line number), or an empty file.
    """
    if order not in ("xyzw", "wxyz"):
        raise ValueError(f"order must be 'xyzw' or 'wxyz', got {order!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pose file")
    mats, stamps, lines, ncols = [], [], [], None
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{lineno}"
        v = _numbers(line, where)
        if len(v) not in (7, 8):
            raise ValueError(f"{where}: expected 7 numbers 'tx ty tz q q q q' (or 8, with a leading timestamp), "
                             f"got {len(v)}: {line.strip()!r}")
        if ncols is not None and len(v) != ncols:
            raise ValueError(f"{where}: {len(v)} numbers where earlier lines have {ncols}")
        ncols = len(v)
        if not all(math.isfinite(x) for x in v):
            raise ValueError(f"{where}: non-finite value in {line.strip()!r}")
        if len(v) == 8:
            stamps.append(v[0])
        t, q = np.array(v[-7:-4]), np.array(v[-4:])
        q_wxyz = np.concatenate([q[3:], q[:3]]) if order == "xyzw" else q
        T = np.eye(4)
        T[:3, :3] = _quat_rotation(q_wxyz, where)
        T[:3, 3] = t
        mats.append(T)
        lines.append(lineno)
    if not mats:
        raise ValueError(f"{path}: no poses (only blank or comment lines)")
    return PoseList(torch.from_numpy(np.stack(mats)), torch.tensor(stamps, dtype=torch.float64) if stamps else None,
                    lines)


def write_pose_file(
    path: str | Path, camtoworlds: Tensor, stamps: Tensor | Sequence[float] | None = None, order: str = "xyzw"
) -> None:
    """Write ``camtoworlds [N, 4, 4]`` as ``[stamp] tx ty tz q q q q`` lines (inverse of :func:`read_pose_file`)."""
    if order not in ("xyzw", "wxyz"):
        raise ValueError(f"order must be 'xyzw' or 'wxyz', got {order!r}")
    T = torch.as_tensor(camtoworlds).detach().double().cpu()
    if T.dim() != 3 or tuple(T.shape[1:]) != (4, 4):
        raise ValueError(f"camtoworlds must be [N, 4, 4], got {list(T.shape)}")
    if stamps is not None and len(stamps) != T.shape[0]:
        raise ValueError(f"{len(stamps)} stamps for {T.shape[0]} poses")
    q = matrix_to_quat(T[:, :3, :3])  # w x y z
    if order == "xyzw":
        q = torch.cat([q[:, 1:], q[:, :1]], dim=-1)
    rows = []
    for i in range(T.shape[0]):
        values = [*T[i, :3, 3].tolist(), *q[i].tolist()]
        head = f"{float(stamps[i]):.6f} " if stamps is not None else ""
        rows.append(head + " ".join(f"{x:.17g}" for x in values))
    Path(path).write_text("\n".join(rows) + "\n")


def _read_matrix(path: Path, size: int) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        v = _numbers(line, f"{path}:{lineno}")
        if len(v) != size:
            raise ValueError(f"{path}:{lineno}: expected {size} numbers per row, got {len(v)}")
        rows.append(v)
    if len(rows) != size:
        raise ValueError(f"{path}: expected a {size}x{size} matrix, got {len(rows)} rows")
    M = np.array(rows)
    if not np.isfinite(M).all():
        raise ValueError(f"{path}: non-finite values")
    return M


def read_pose_matrix(path: str | Path) -> Tensor:
    """A 4x4 camera-to-world matrix file (7-Scenes ``frame-XXXXXX.pose.txt``) -> ``[4, 4]`` float64.

    The rotation is checked (``ValueError`` naming the file when not one, see :data:`ROTATION_TOLERANCE`)
    and re-orthonormalised; the last row must be ``0 0 0 1``.
    """
    path = Path(path)
    T = _read_matrix(path, 4)
    if not np.allclose(T[3], [0, 0, 0, 1]):
        raise ValueError(f"{path}: last row of a pose must be '0 0 0 1', got {T[3].tolist()}")
    T[:3, :3] = _checked_rotation(T[:3, :3], str(path))
    return torch.from_numpy(T)


# ----------------------------------------------------------------------------------------------
# Depth reading
# ----------------------------------------------------------------------------------------------


def _read_raw_depth(path: Path, invalid: tuple[int, ...] = ()) -> np.ndarray:
    """Raw stored depth values as float32 with the sentinel ``invalid`` values set to 0."""
    d = np.asarray(read_image(path))
    if d.ndim == 3:
        d = d[..., 0]
    out = d.astype(np.float32)
    for value in invalid:
        out[d == value] = 0.0
    return out


def _depth_frame_fields(path: Path, scale: float, invalid: tuple[int, ...]) -> dict:
    return {"depth_path": path, "depth_scale": scale,
            "depth_fn": functools.partial(_read_raw_depth, path, invalid) if invalid else None}


def _image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header (EXIF orientation applied)."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _natural_key(p: Path) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]


# ----------------------------------------------------------------------------------------------
# 7-Scenes
# ----------------------------------------------------------------------------------------------


_SEVEN_RE = re.compile(r"^frame-(\d+)\.pose\.txt$")


def load_7scenes(seq_dir: str | Path, intrinsics: RGBDIntrinsics | None = None) -> Scene:
    """A 7-Scenes sequence folder (``seq-XX`` of the original, or tsdf-fusion's ``data``).

    Layout: ``frame-XXXXXX.color.png|jpg``, ``frame-XXXXXX.depth.png`` (uint16 millimetres, 0 and 65535
    invalid), ``frame-XXXXXX.pose.txt`` (4x4 camera-to-world, metres). Every frame with a pose file
    is loaded and needs its colour and depth image.

    Args:
        seq_dir: the folder.
        intrinsics: default: ``camera-intrinsics.txt`` in the folder (a 3x3 ``K``) when present, else
            :data:`SEVEN_SCENES_INTRINSICS` (fx = fy = 585, cx = 320, cy = 240, OpenCV pixel convention).

    Returns:
        A :class:`Scene` whose cameras are the **depth** camera's (colour and depth are not registered
        in 7-Scenes). Frame names are ``frame-XXXXXX``; ``metadata["frame_index"]`` the file number;
        no timestamps (the files have none). ``scene.metadata["camera"] == "depth"``.

    Raises:
        FileNotFoundError: no folder or no pose files. ValueError: a frame without colour or depth
        image, a bad pose file (named).
    """
    root = Path(seq_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such 7-Scenes folder")
    indexed = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _SEVEN_RE.match(p.name)))
    if not indexed:
        colours = sorted(root.glob("frame-*.color.*"))
        hint = f" ({len(colours)} colour images without poses)" if colours else ""
        raise FileNotFoundError(f"{root}: no frame-XXXXXX.pose.txt files{hint}")
    frames, poses = [], []
    for index, pose_path in indexed:
        stem = pose_path.name[: -len(".pose.txt")]
        colour = next((root / f"{stem}.color.{ext}" for ext in ("png", "jpg", "jpeg")
                       if (root / f"{stem}.color.{ext}").is_file()), None)
        depth = root / f"{stem}.depth.png"
        if colour is None:
            raise ValueError(f"{root}: frame {stem} has a pose but no {stem}.color.png / .jpg")
        if not depth.is_file():
            raise ValueError(f"{root}: frame {stem} has a pose but no {depth.name}")
        poses.append(read_pose_matrix(pose_path))
        frames.append(Frame(name=stem, image_path=colour, **_depth_frame_fields(depth, 1e-3, (65535,)),
                            metadata={"frame_index": index, "pose_path": pose_path}))
    if intrinsics is None:
        w, h = _image_size(frames[0].depth_path)
        k_file = root / "camera-intrinsics.txt"
        intrinsics = RGBDIntrinsics.from_K_file(k_file, w, h) if k_file.is_file() else \
            SEVEN_SCENES_INTRINSICS.with_size(w, h)
    cams = intrinsics.cameras(torch.stack(poses))
    return Scene(frames, cams, root=root, metadata={"format": "7scenes", "camera": "depth"})


# ----------------------------------------------------------------------------------------------
# TUM RGB-D
# ----------------------------------------------------------------------------------------------


def _read_stamped_list(path: Path) -> tuple[np.ndarray, list[str]]:
    """``timestamp filename`` lines of TUM's ``rgb.txt`` / ``depth.txt``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a TUM RGB-D sequence has rgb.txt, depth.txt, "
                                "groundtruth.txt)")
    stamps, names = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        try:
            stamps.append(float(parts[0]))
        except ValueError:
            raise ValueError(f"{path}:{lineno}: expected 'timestamp filename', got {line.strip()!r}") from None
        if len(parts) != 2:
            raise ValueError(f"{path}:{lineno}: expected 'timestamp filename', got {line.strip()!r}")
        names.append(parts[1])
    return np.asarray(stamps, dtype=np.float64), names


def associate(a: np.ndarray, b: np.ndarray, max_difference: float = 0.02) -> list[tuple[int, int]]:
    """TUM ``associate.py``: pair timestamps ``a [N]`` with ``b [M]`` greedily by increasing difference,
    each used at most once, differences ``< max_difference`` seconds. Returns index pairs sorted by ``a``."""
    order = np.argsort(b)
    b_sorted = b[order]
    candidates = []
    for i, t in enumerate(a):
        lo = np.searchsorted(b_sorted, t - max_difference, side="left")
        hi = np.searchsorted(b_sorted, t + max_difference, side="right")
        for j in range(lo, hi):
            diff = abs(t - b_sorted[j])
            if diff < max_difference:
                candidates.append((diff, i, int(order[j])))
    candidates.sort()
    used_a, used_b, pairs = set(), set(), []
    for _, i, j in candidates:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def _nearest(a: np.ndarray, b: np.ndarray, max_difference: float) -> np.ndarray:
    """For each of ``a``, the index of the nearest ``b`` (sorted), or -1 when none is closer than ``max_difference``."""
    j = np.clip(np.searchsorted(b, a), 1, max(len(b) - 1, 1))
    left, right = b[j - 1], b[np.minimum(j, len(b) - 1)]
    pick = np.where(np.abs(a - left) <= np.abs(a - right), j - 1, np.minimum(j, len(b) - 1))
    return np.where(np.abs(a - b[pick]) < max_difference, pick, -1)


def load_tum(
    seq_dir: str | Path, intrinsics: RGBDIntrinsics | str = "fr1", max_difference: float = 0.02,
) -> Scene:
    """A TUM RGB-D sequence folder (``rgb.txt``, ``depth.txt``, ``groundtruth.txt``, ``rgb/``, ``depth/``).

    Colour and depth frames are associated like TUM's ``associate.py`` (greedy, unique, timestamp
    difference ``< max_difference`` s); each pair takes the ground-truth pose whose timestamp is
    nearest to the colour frame's, within ``max_difference``. Pairs without a pose are dropped
    (counted in ``scene.metadata["dropped"]``). Poses are ``tx ty tz qx qy qz qw`` camera-to-world
    of the colour camera; depth PNGs are uint16 / 5000 -> metres, registered to the colour camera.

    Args:
        seq_dir: the sequence folder.
        intrinsics: ``"fr1"``, ``"fr2"``, ``"fr3"``, ``"default"`` (see :data:`TUM_INTRINSICS`; fr1 / fr2
            carry OpenCV distortion, undistort with :mod:`scenegrad.datasets.undistort`) or an
            :class:`RGBDIntrinsics`.
        max_difference: association tolerance in seconds (TUM's default 0.02).

    Returns:
        A :class:`Scene`; frame names are the colour files (``rgb/1305031102.175304.png``),
        ``Frame.timestamp`` is seconds since the first loaded frame, ``metadata["timestamp"]`` the
        absolute TUM timestamp (Unix seconds).
    """
    root = Path(seq_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such TUM sequence folder")
    intr = _resolve_intrinsics(intrinsics, TUM_INTRINSICS)
    rgb_t, rgb_names = _read_stamped_list(root / "rgb.txt")
    depth_t, depth_names = _read_stamped_list(root / "depth.txt")
    gt = read_pose_file(root / "groundtruth.txt", order="xyzw")
    if gt.stamps is None:
        raise ValueError(f"{root / 'groundtruth.txt'}: lines need a leading timestamp "
                         "('timestamp tx ty tz qx qy qz qw')")
    gt_t = gt.stamps.numpy()
    gt_order = np.argsort(gt_t, kind="stable")
    pairs = associate(rgb_t, depth_t, max_difference)
    pose_idx = _nearest(rgb_t[[i for i, _ in pairs]], gt_t[gt_order], max_difference) if pairs else np.zeros(0, int)
    kept = [(i, j, int(gt_order[k])) for (i, j), k in zip(pairs, pose_idx, strict=True) if k >= 0]
    if not kept:
        raise ValueError(f"{root}: no colour frame has both a depth frame and a ground-truth pose within "
                         f"{max_difference} s ({len(rgb_t)} colour, {len(depth_t)} depth, {len(gt)} poses)")
    t0 = rgb_t[kept[0][0]]
    frames = []
    for i, j, _ in kept:
        image, depth = root / rgb_names[i], root / depth_names[j]
        for p in (image, depth):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: listed in {root.name}/rgb.txt or depth.txt but missing")
        frames.append(Frame(name=rgb_names[i], image_path=image, timestamp=float(rgb_t[i] - t0), depth_path=depth,
                            depth_scale=1.0 / 5000.0,
                            metadata={"timestamp": float(rgb_t[i]), "depth_timestamp": float(depth_t[j])}))
    cams = intr.cameras(gt.camtoworlds[[k for _, _, k in kept]])
    return Scene(frames, cams, root=root, metadata={"format": "tum", "camera": "rgb",
                                                    "dropped": len(rgb_t) - len(kept)})


# ----------------------------------------------------------------------------------------------
# Pose lists (slambook and similar)
# ----------------------------------------------------------------------------------------------


def load_pose_list(
    root: str | Path,
    intrinsics: RGBDIntrinsics,
    pose_file: str = "pose.txt",
    image_glob: str = "color/*.png",
    depth_glob: str | None = "depth/*.pgm",
    depth_scale: float = 1e-3,
    order: str = "xyzw",
) -> Scene:
    """A folder with one pose line per image: the ``k``-th pose belongs to the ``k``-th image in natural
    order (``2.png`` before ``10.png``), e.g. slambook2's ``ch5/rgbd``.

    Args:
        root: the folder.
        intrinsics: the sensor (e.g. :data:`SLAMBOOK_INTRINSICS`).
        pose_file: ``[stamp] tx ty tz q q q q`` camera-to-world lines (:func:`read_pose_file`).
        image_glob, depth_glob: colour and depth images, relative to ``root`` (``depth_glob=None``: no depth).
        depth_scale: stored depth value -> metres (slambook's 16-bit PGM: ``1/1000``).
        order: quaternion order in ``pose_file``.

    Returns:
        A :class:`Scene`; frame names are image paths relative to ``root``; ``Frame.timestamp`` is the
        pose file's leading stamp when it has one (relative to the first).

    Raises:
        FileNotFoundError: no pose file, no images. ValueError: image, depth and pose counts differ.
    """
    root = Path(root)
    poses = read_pose_file(root / pose_file, order)
    images = sorted(root.glob(image_glob), key=_natural_key)
    if not images:
        raise FileNotFoundError(f"{root}: no images match {image_glob!r}")
    depths = sorted(root.glob(depth_glob), key=_natural_key) if depth_glob is not None else None
    if len(images) != len(poses) or (depths is not None and len(depths) != len(images)):
        depth_part = f", {len(depths)} depth maps ({depth_glob!r})" if depths is not None else ""
        raise ValueError(f"{root}: {len(images)} images ({image_glob!r}){depth_part} but {len(poses)} poses "
                         f"in {pose_file}: counts must match")
    stamps = poses.stamps
    frames = []
    for k, image in enumerate(images):
        extra = {"depth_path": depths[k], "depth_scale": depth_scale} if depths is not None else {}
        ts = float(stamps[k] - stamps[0]) if stamps is not None else None
        frames.append(Frame(name=image.relative_to(root).as_posix(), image_path=image, timestamp=ts, **extra,
                            metadata={"pose_line": poses.lines[k]}))
    return Scene(frames, intrinsics.cameras(poses.camtoworlds), root=root, metadata={"format": "pose_list"})


# ----------------------------------------------------------------------------------------------
# Depth warping
# ----------------------------------------------------------------------------------------------


def warp_depth(depth: Tensor, cam_src: Cameras, cam_dst: Cameras) -> Tensor:
    """Forward-warp a depth map into another camera (a z-buffered splat to the nearest pixel).

    Every valid pixel centre ``(i + 0.5, j + 0.5)`` of ``depth`` is lifted with ``cam_src``
    (:func:`~scenegrad.render.cameras.unproject`), projected with ``cam_dst`` and written to the
    destination pixel containing it, keeping the nearest point.

    Args:
        depth: ``[H, W]`` depth along the source camera's +Z (``0`` = invalid), ``H, W`` = ``cam_src``'s size.
        cam_src, cam_dst: one camera each (any model), same dtype and device as each other.

    Returns:
        ``[H_dst, W_dst]`` depth along the destination camera's +Z, ``0`` where no point lands; in
        ``cam_dst``'s dtype. Not differentiable (an index scatter).
    """
    if len(cam_src) != 1 or len(cam_dst) != 1:
        raise ValueError(f"warp_depth takes one source and one destination camera, got {len(cam_src)}, {len(cam_dst)}")
    h, w = int(cam_src.height[0]), int(cam_src.width[0])
    if tuple(depth.shape) != (h, w):
        raise ValueError(f"depth must be [H, W] = [{h}, {w}] (the source camera's size), got {list(depth.shape)}")
    dtype, device = cam_src.dtype, cam_src.device
    d = depth.to(dtype=dtype, device=device).reshape(-1)
    valid = torch.isfinite(d) & (d > 0)
    uv = pixel_centers(w, h, dtype, device).reshape(-1, 2)[valid]
    with torch.no_grad():
        pts = unproject(cam_src, uv, d[valid])[0]
        uv_dst, z = project(cam_dst, pts.to(cam_dst.dtype))
    uv_dst, z = uv_dst[0], z[0]
    hd, wd = int(cam_dst.height[0]), int(cam_dst.width[0])
    ij = torch.floor(uv_dst)
    inside = (z > 0) & (ij[:, 0] >= 0) & (ij[:, 0] < wd) & (ij[:, 1] >= 0) & (ij[:, 1] < hd)
    ij, z = ij[inside].long(), z[inside]
    out = torch.full((hd * wd,), float("inf"), dtype=z.dtype, device=z.device)
    out.scatter_reduce_(0, ij[:, 1] * wd + ij[:, 0], z, reduce="amin")
    return torch.where(torch.isinf(out), torch.zeros_like(out), out).reshape(hd, wd)
