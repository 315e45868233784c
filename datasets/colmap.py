"""COLMAP sparse models (``sparse/0/``): a lossless reader / writer, and conversion to :class:`Scene`.

Two layers:

- **The raw model**, :class:`ColmapModel` (``cameras``, ``images``, ``points3D`` as dicts keyed by id,
  in file order), read and written exactly: :func:`read_model` / :func:`write_model` handle the text
  (``.txt``) and binary (``.bin``) formats and every COLMAP camera model (:data:`CAMERA_MODELS`,
  ids 0-17 as in COLMAP 4 / pycolmap 4.2). A binary model written as text and back is
  byte-identical, and so is text written by :func:`write_model` through binary and back: floats
  are written in text with Python's shortest round-trip ``repr`` and parse back bit-exact. The
  binary files are byte-identical to the ones COLMAP (pycolmap 4.2) writes for the same model. Text
  image names may contain spaces (the name is the rest of the line), which COLMAP's reader does not
  accept: use the binary format for such names.
- **The typed scene**: :func:`load_colmap` returns a :class:`~scenegrad.datasets.scene.Scene`
  (frames sorted by image name, cameras, points) and :func:`save_colmap` writes one.

File layout (little-endian binary; the text files hold the same records, one per line):

- ``cameras``: ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]``. Binary: ``uint64`` count, then per
  camera ``uint32 id, int32 model_id, uint64 width, uint64 height, float64 params[n(model)]``.
- ``images``: ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` (world-to-camera, OpenCV axes, the
  pose scenegrad uses), then a line of ``X Y POINT3D_ID`` triples (``-1`` = no 3D point). Binary:
  ``uint64`` count, then per image ``uint32 id, float64 q[4], float64 t[3], uint32 camera_id``, the
  name NUL-terminated, ``uint64`` K, ``K x (float64 x, float64 y, int64 point3D_id)``.
- ``points3D``: ``POINT3D_ID X Y Z R G B ERROR TRACK[]`` with the track as ``(IMAGE_ID,
  POINT2D_IDX)`` pairs. Binary: ``uint64`` count, then per point ``uint64 id, float64 xyz[3],
  uint8 rgb[3], float64 error, uint64 L, L x (uint32 image_id, uint32 point2D_idx)``.

COLMAP 3.12+ also writes ``rigs`` and ``frames`` files (multi-camera rigs). Reading ignores them:
``images`` still holds every registered image's camera-from-world pose, which is all scenegrad
needs. :func:`write_model` does not write them; COLMAP and pycolmap then build one trivial rig per
camera and one frame per image. Because a COLMAP 4 reader would prefer stale ``rigs`` / ``frames``
files over the new ``images`` poses, :func:`write_model` removes those files of the same format from
the output folder, with a warning.

Pixel coordinates (``xys``, ``cx``, ``cy``) use COLMAP's convention, which is scenegrad's (centre of
the top-left pixel at ``(0.5, 0.5)``): no shift is applied anywhere.

>>> import tempfile
>>> cam = ColmapCamera(1, "SIMPLE_RADIAL", 640, 480, np.array([500.0, 320.0, 240.0, 0.01]))
>>> img = ColmapImage(1, np.array([1.0, 0.0, 0.0, 0.0]), np.array([0.0, 0.0, 2.0]), 1, "a.jpg",
...                   xys=np.array([[320.5, 240.5]]), point3d_ids=np.array([7]))
>>> pt = ColmapPoint3D(7, np.zeros(3), np.array([255, 0, 0], np.uint8), 0.5, np.array([1]), np.array([0]))
>>> model = ColmapModel({1: cam}, {1: img}, {7: pt})
>>> with tempfile.TemporaryDirectory() as d:
...     write_model(model, d, format="txt")
...     read_model(d) == model
True
"""

from __future__ import annotations

import array
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scenegrad.datasets.scene import Frame, Points, Scene
from scenegrad.render.conventions import (
    cameras_from_colmap,
    cameras_to_colmap,
    intrinsics_from_colmap,
    intrinsics_to_colmap,
)

__all__ = [
    "CAMERA_MODELS",
    "ColmapCamera",
    "ColmapImage",
    "ColmapPoint3D",
    "ColmapModel",
    "read_model",
    "write_model",
    "load_colmap",
    "save_colmap",
]

#: COLMAP camera models: name -> (model id, parameter names), as in COLMAP's ``sensor/models.h``.
CAMERA_MODELS: dict[str, tuple[int, tuple[str, ...]]] = {
    "SIMPLE_PINHOLE": (0, ("f", "cx", "cy")),
    "PINHOLE": (1, ("fx", "fy", "cx", "cy")),
    "SIMPLE_RADIAL": (2, ("f", "cx", "cy", "k")),
    "RADIAL": (3, ("f", "cx", "cy", "k1", "k2")),
    "OPENCV": (4, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2")),
    "OPENCV_FISHEYE": (5, ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4")),
    "FULL_OPENCV": (6, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6")),
    "FOV": (7, ("fx", "fy", "cx", "cy", "omega")),
    "SIMPLE_RADIAL_FISHEYE": (8, ("f", "cx", "cy", "k")),
    "RADIAL_FISHEYE": (9, ("f", "cx", "cy", "k1", "k2")),
    "THIN_PRISM_FISHEYE": (10, ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3", "k4", "sx1", "sy1")),
    "RAD_TAN_THIN_PRISM_FISHEYE": (
        11, ("fx", "fy", "cx", "cy", "k0", "k1", "k2", "k3", "k4", "k5", "p0", "p1", "s0", "s1", "s2", "s3"),
    ),
    "SIMPLE_DIVISION": (12, ("f", "cx", "cy", "k")),
    "DIVISION": (13, ("fx", "fy", "cx", "cy", "k")),
    "SIMPLE_FISHEYE": (14, ("f", "cx", "cy")),
    "FISHEYE": (15, ("fx", "fy", "cx", "cy")),
    "EUCM": (16, ("fx", "fy", "cx", "cy", "alpha", "beta")),
    "EQUIRECTANGULAR": (17, ("w", "h")),
}
_MODEL_BY_ID = {mid: name for name, (mid, _) in CAMERA_MODELS.items()}
_UNDISTORT_HINT = ("undistort the images first with `colmap image_undistorter` (it writes a PINHOLE model), "
                   "or use read_model() for the raw parameters")

_POINT2D_DTYPE = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])
_TRACK_DTYPE = np.dtype([("image_id", "<u4"), ("idx", "<u4")])
_CAMERA_HEAD = struct.Struct("<IiQQ")  # camera_t is uint32, the model id an int
_IMAGE_HEAD = struct.Struct("<I7dI")
_POINT_RECORD = np.dtype([("id", "<u8"), ("xyz", "<f8", (3,)), ("rgb", "u1", (3,)), ("error", "<f8"), ("n", "<u8")])
_COUNT = struct.Struct("<Q")


# ----------------------------------------------------------------------------------------------
# The raw model
# ----------------------------------------------------------------------------------------------


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-exact array equality (dtype, shape and bytes; NaN equals itself)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@dataclass(eq=False)
class ColmapCamera:
    """One ``cameras`` record. ``params``: float64 ``[n]`` in COLMAP's order (:data:`CAMERA_MODELS`)."""

    id: int
    model: str
    width: int
    height: int
    params: np.ndarray

    def __post_init__(self) -> None:
        self.params = np.ascontiguousarray(self.params, dtype=np.float64).reshape(-1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ColmapCamera):
            return NotImplemented
        return ((self.id, self.model, self.width, self.height) == (other.id, other.model, other.width, other.height)
                and _same(self.params, other.params))


@dataclass(eq=False)
class ColmapImage:
    """One ``images`` record: a registered image and its 2D points.

    Fields:
        qvec: float64 ``[4]`` world-to-camera rotation ``(qw, qx, qy, qz)`` (as stored, not normalised).
        tvec: float64 ``[3]`` world-to-camera translation: ``x_cam = R(qvec) @ x_world + tvec``.
        camera_id: the ``cameras`` record it was taken with. name: file name relative to the image folder.
        xys: float64 ``[K, 2]`` 2D points in pixels (COLMAP's = scenegrad's convention).
        point3d_ids: int64 ``[K]`` the 3D point each 2D point observes, ``-1`` for none.
    """

    id: int
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point3d_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        self.qvec = np.ascontiguousarray(self.qvec, dtype=np.float64).reshape(4)
        self.tvec = np.ascontiguousarray(self.tvec, dtype=np.float64).reshape(3)
        self.xys = np.ascontiguousarray(self.xys, dtype=np.float64).reshape(-1, 2)
        self.point3d_ids = np.ascontiguousarray(self.point3d_ids, dtype=np.int64).reshape(-1)
        if len(self.xys) != len(self.point3d_ids):
            raise ValueError(f"image {self.id} ({self.name!r}): {len(self.xys)} xys but "
                             f"{len(self.point3d_ids)} point3d_ids")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ColmapImage):
            return NotImplemented
        return ((self.id, self.camera_id, self.name) == (other.id, other.camera_id, other.name)
                and all(_same(getattr(self, k), getattr(other, k)) for k in ("qvec", "tvec", "xys", "point3d_ids")))


@dataclass(eq=False)
class ColmapPoint3D:
    """One ``points3D`` record: ``xyz`` float64 ``[3]``, ``rgb`` uint8 ``[3]``, ``error`` (mean
    reprojection error in pixels; ``-1`` = unknown) and its track: int64 ``image_ids [L]`` and
    ``point2d_idxs [L]`` (index into that image's ``xys``)."""

    id: int
    xyz: np.ndarray
    rgb: np.ndarray
    error: float
    image_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    point2d_idxs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        self.xyz = np.ascontiguousarray(self.xyz, dtype=np.float64).reshape(3)
        self.rgb = np.ascontiguousarray(self.rgb, dtype=np.uint8).reshape(3)
        self.error = float(self.error)
        self.image_ids = np.ascontiguousarray(self.image_ids, dtype=np.int64).reshape(-1)
        self.point2d_idxs = np.ascontiguousarray(self.point2d_idxs, dtype=np.int64).reshape(-1)
        if len(self.image_ids) != len(self.point2d_idxs):
            raise ValueError(f"point {self.id}: track has {len(self.image_ids)} image ids but "
                             f"{len(self.point2d_idxs)} point2D indices")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ColmapPoint3D):
            return NotImplemented
        return (self.id == other.id and _same(np.float64(self.error), np.float64(other.error))
                and all(_same(getattr(self, k), getattr(other, k))
                        for k in ("xyz", "rgb", "image_ids", "point2d_idxs")))


@dataclass(eq=False)
class ColmapModel:
    """A sparse model: ``cameras``, ``images`` and ``points3d``, dicts from id to record in file order.

    ``==`` compares every record bit-exactly (dict order is not compared).
    """

    cameras: dict[int, ColmapCamera] = field(default_factory=dict)
    images: dict[int, ColmapImage] = field(default_factory=dict)
    points3d: dict[int, ColmapPoint3D] = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ColmapModel):
            return NotImplemented
        return self.cameras == other.cameras and self.images == other.images and self.points3d == other.points3d


def _num_params(model: str, where: str) -> int:
    if model not in CAMERA_MODELS:
        raise ValueError(f"{where}: unknown camera model {model!r}; known: {', '.join(CAMERA_MODELS)}")
    return len(CAMERA_MODELS[model][1])


# ----------------------------------------------------------------------------------------------
# Text format
# ----------------------------------------------------------------------------------------------


def _data_lines(path: Path):
    """``(line number, stripped line)`` of every non-empty, non-comment line."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if line and not line.startswith("#"):
                yield number, line


def _parse_int(token: str, what: str, where: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise ValueError(f"{where}: {what} must be an integer, got {token!r}") from None


def _parse_floats(tokens: list[str], what: str, where: str) -> np.ndarray:
    try:
        return np.array(tokens, dtype=np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise ValueError(f"{where}: {what} must be numbers, got {bad!r}") from None


def _is_float(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def _parse_point3d_ids(tokens: list[str], where: str) -> np.ndarray:
    """int64 point3D ids; ``-1`` and COLMAP's invalid id ``2**64 - 1`` both mean "none" (-> ``-1``)."""
    try:
        return np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        values = [_parse_int(t, "POINT3D_ID", where) for t in tokens]
        big = next((v for v in values if not -1 <= v < 2**63 and v != 2**64 - 1), None)
        if big is not None:
            raise ValueError(f"{where}: POINT3D_ID {big} is out of range") from None
        return np.array([-1 if v == 2**64 - 1 else v for v in values], dtype=np.int64)


def _read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    cameras: dict[int, ColmapCamera] = {}
    for number, line in _data_lines(path):
        where = f"{path}:{number}"
        tokens = line.split()
        if len(tokens) < 4:
            raise ValueError(f"{where}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]', got {line!r}")
        cid = _parse_int(tokens[0], "CAMERA_ID", where)
        model = tokens[1]
        n = _num_params(model, where)
        if len(tokens) - 4 != n:
            raise ValueError(f"{where}: camera model {model} takes {n} parameters "
                             f"({' '.join(CAMERA_MODELS[model][1])}), got {len(tokens) - 4}")
        width, height = _parse_int(tokens[2], "WIDTH", where), _parse_int(tokens[3], "HEIGHT", where)
        if cid in cameras:
            raise ValueError(f"{where}: camera id {cid} appears twice")
        cameras[cid] = ColmapCamera(cid, model, width, height, _parse_floats(tokens[4:], "PARAMS", where))
    return cameras


def _read_images_text(path: Path, camera_ids: set[int], cameras_file: Path) -> dict[int, ColmapImage]:
    images: dict[int, ColmapImage] = {}
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        lines = f.read().split("\n")  # universal newlines: only "\n" is left (names may hold other separators)
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{i}"
        tokens = line.split(maxsplit=9)
        if len(tokens) < 10:
            raise ValueError(f"{where}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME', got {line!r}")
        image_id = _parse_int(tokens[0], "IMAGE_ID", where)
        pose = _parse_floats(tokens[1:8], "QW QX QY QZ TX TY TZ", where)
        camera_id = _parse_int(tokens[8], "CAMERA_ID", where)
        if camera_id not in camera_ids:
            raise ValueError(f"{where}: image {image_id} refers to camera id {camera_id}, "
                             f"which is not in {cameras_file}")
        if image_id in images:
            raise ValueError(f"{where}: image id {image_id} appears twice")
        # The POINTS2D line follows immediately (it may be empty), as COLMAP writes it.
        points = lines[i].split() if i < len(lines) else []
        i += 1
        where2 = f"{path}:{i}"
        if len(points) % 3:
            raise ValueError(f"{where2}: POINTS2D of image {image_id} must be (X, Y, POINT3D_ID) triples, "
                             f"got {len(points)} values")
        xs = _parse_floats(points[0::3], "X", where2)
        ys = _parse_floats(points[1::3], "Y", where2)
        ids = _parse_point3d_ids(points[2::3], where2)
        images[image_id] = ColmapImage(image_id, pose[:4], pose[4:], camera_id, tokens[9],
                                       np.stack([xs, ys], axis=-1), ids)
    return images


def _read_points_text(path: Path, image_ids: set[int], images_file: Path) -> dict[int, ColmapPoint3D]:
    ids: list[int] = []
    xyz: list[float] = []
    rgb: list[int] = []
    errors: list[float] = []
    lengths: list[int] = []
    numbers: list[int] = []
    track = array.array("q")  # flat (image_id, point2d_idx) pairs of every point
    seen: set[int] = set()
    for number, line in _data_lines(path):
        tokens = line.split()
        try:
            if len(tokens) < 8 or len(tokens) % 2:
                raise ValueError
            pid, color = int(tokens[0]), [int(t) for t in tokens[4:7]]
            position, error = [float(t) for t in tokens[1:4]], float(tokens[7])
            track.extend(map(int, tokens[8:]))
            if not all(0 <= c <= 255 for c in color) or pid in seen:
                raise ValueError
        except (ValueError, OverflowError):
            _point_line_error(tokens, f"{path}:{number}", seen)
            raise  # unreachable: the line's error is raised above
        seen.add(pid)
        ids.append(pid)
        xyz += position
        rgb += color
        errors.append(error)
        lengths.append(len(tokens) // 2 - 4)
        numbers.append(number)
    flat = np.frombuffer(track, np.int64) if len(track) else np.zeros(0, np.int64)
    bad = _first_unknown(lengths, flat[0::2], image_ids)
    if bad is not None:
        raise ValueError(f"{path}:{numbers[bad[0]]}: point {ids[bad[0]]}: track refers to image id {bad[1]}, "
                         f"which is not in {images_file}")
    return _points(ids, np.array(xyz, np.float64).reshape(-1, 3), np.array(rgb, np.uint8).reshape(-1, 3), errors,
                   lengths, flat[0::2].copy(), flat[1::2].copy(), str(path))


def _point_line_error(tokens: list[str], where: str, seen: set[int]) -> None:
    """Raise the ``ValueError`` that says what is wrong with a ``points3D.txt`` line."""
    if len(tokens) < 8 or len(tokens) % 2:
        raise ValueError(f"{where}: expected 'POINT3D_ID X Y Z R G B ERROR' and (IMAGE_ID, POINT2D_IDX) pairs, "
                         f"got {len(tokens)} values")
    pid = _parse_int(tokens[0], "POINT3D_ID", where)
    _parse_floats(tokens[1:4], "X Y Z", where)
    color = [_parse_int(t, "R G B", where) for t in tokens[4:7]]
    if not all(0 <= c <= 255 for c in color):
        raise ValueError(f"{where}: R G B must be in 0..255, got {color}")
    _parse_floats(tokens[7:8], "ERROR", where)
    if pid in seen:
        raise ValueError(f"{where}: point id {pid} appears twice")
    raise ValueError(f"{where}: TRACK must be integer (IMAGE_ID, POINT2D_IDX) pairs")


def _fmt(values) -> str:
    """Floats with the shortest repr that parses back bit-exact."""
    return " ".join(map(repr, np.asarray(values, dtype=np.float64).tolist()))


def _write_cameras_text(cameras: dict[int, ColmapCamera], path: Path) -> None:
    lines = ["# Camera list with one line of data per camera:",
             "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
             f"# Number of cameras: {len(cameras)}"]
    for c in cameras.values():
        lines.append(f"{c.id} {c.model} {c.width} {c.height} {_fmt(c.params)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")


def _write_images_text(images: dict[int, ColmapImage], path: Path) -> None:
    observed = sum(int((im.point3d_ids != -1).sum()) for im in images.values())
    mean = observed / len(images) if images else 0.0
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
             "#   POINTS2D[] as (X, Y, POINT3D_ID)",
             f"# Number of images: {len(images)}, mean observations per image: {mean!r}"]
    for im in images.values():
        if im.name != im.name.strip() or "\n" in im.name or not im.name:
            raise ValueError(f"image {im.id}: name {im.name!r} cannot be written to text (empty, a newline, "
                             "or leading/trailing spaces); use format='bin'")
        lines.append(f"{im.id} {_fmt(im.qvec)} {_fmt(im.tvec)} {im.camera_id} {im.name}")
        tokens: list[str] = [""] * (3 * len(im.xys))
        tokens[0::3] = map(repr, im.xys[:, 0].tolist())
        tokens[1::3] = map(repr, im.xys[:, 1].tolist())
        tokens[2::3] = map(str, im.point3d_ids.tolist())
        lines.append(" ".join(tokens))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")


def _write_points_text(points: dict[int, ColmapPoint3D], path: Path) -> None:
    total = sum(len(p.image_ids) for p in points.values())
    mean = total / len(points) if points else 0.0
    lines = ["# 3D point list with one line of data per point:",
             "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
             f"# Number of points: {len(points)}, mean track length: {mean!r}"]
    for p in points.values():
        r, g, b = p.rgb.tolist()
        track: list[str] = [""] * (2 * len(p.image_ids))
        track[0::2] = map(str, p.image_ids.tolist())
        track[1::2] = map(str, p.point2d_idxs.tolist())
        lines.append(" ".join([f"{p.id} {_fmt(p.xyz)} {r} {g} {b} {float(p.error)!r}", *track]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")


# ----------------------------------------------------------------------------------------------
# Binary format
# ----------------------------------------------------------------------------------------------


class _Reader:
    """Little-endian records from a whole file in memory; errors name the file and byte offset."""

    def __init__(self, path: Path) -> None:
        self.path, self.data, self.pos = path, path.read_bytes(), 0

    def need(self, n: int, what: str) -> None:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.path}: truncated file: {what} needs {n} bytes at byte {self.pos}, "
                             f"only {len(self.data) - self.pos} left")

    def unpack(self, st: struct.Struct, what: str) -> tuple:
        self.need(st.size, what)
        out = st.unpack_from(self.data, self.pos)
        self.pos += st.size
        return out

    def array(self, dtype: np.dtype, count: int, what: str) -> np.ndarray:
        self.need(dtype.itemsize * count, what)
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += dtype.itemsize * count
        return out

    def string(self, what: str) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise ValueError(f"{self.path}: truncated file: {what} has no terminating NUL after byte {self.pos}")
        out = self.data[self.pos:end].decode("utf-8", errors="surrogateescape")
        self.pos = end + 1
        return out

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ValueError(f"{self.path}: {len(self.data) - self.pos} unexpected bytes after the last record "
                             f"(at byte {self.pos})")


def _read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    r = _Reader(path)
    (count,) = r.unpack(_COUNT, "the camera count")
    cameras: dict[int, ColmapCamera] = {}
    for k in range(count):
        what = f"camera {k + 1} of {count}"
        cid, model_id, width, height = r.unpack(_CAMERA_HEAD, what)
        if model_id not in _MODEL_BY_ID:
            raise ValueError(f"{path}: {what} (id {cid}) has unknown camera model id {model_id} at byte "
                             f"{r.pos - _CAMERA_HEAD.size}; known ids: 0-{max(_MODEL_BY_ID)}")
        model = _MODEL_BY_ID[model_id]
        params = r.array(np.dtype("<f8"), len(CAMERA_MODELS[model][1]), what).astype(np.float64)
        if cid in cameras:
            raise ValueError(f"{path}: camera id {cid} appears twice")
        cameras[cid] = ColmapCamera(cid, model, width, height, params)
    r.done()
    return cameras


def _read_images_binary(path: Path, camera_ids: set[int], cameras_file: Path) -> dict[int, ColmapImage]:
    r = _Reader(path)
    (count,) = r.unpack(_COUNT, "the image count")
    images: dict[int, ColmapImage] = {}
    for k in range(count):
        what = f"image {k + 1} of {count}"
        image_id, *pose, camera_id = r.unpack(_IMAGE_HEAD, what)
        name = r.string(what)
        (n,) = r.unpack(_COUNT, f"{what} ({name!r}): its 2D point count")
        pts = r.array(_POINT2D_DTYPE, n, f"{what} ({name!r}): its {n} 2D points")
        if camera_id not in camera_ids:
            raise ValueError(f"{path}: image {image_id} ({name!r}) refers to camera id {camera_id}, "
                             f"which is not in {cameras_file}")
        if image_id in images:
            raise ValueError(f"{path}: image id {image_id} appears twice")
        xys = np.stack([pts["x"], pts["y"]], axis=-1)
        images[image_id] = ColmapImage(image_id, np.array(pose[:4]), np.array(pose[4:]), camera_id, name,
                                       xys, pts["id"].astype(np.int64))
    r.done()
    return images


def _read_points_binary(path: Path, image_ids: set[int], images_file: Path) -> dict[int, ColmapPoint3D]:
    # One walk over the variable-length records to find them, then numpy over all of them at once.
    data = path.read_bytes()
    size, view, head_size = len(data), memoryview(data), _POINT_RECORD.itemsize
    if size < 8:
        raise ValueError(f"{path}: truncated file: the point count needs 8 bytes, only {size} present")
    (count,) = _COUNT.unpack_from(data, 0)
    pos, heads, tracks, lengths = 8, [], [], []
    length_at = _COUNT.unpack_from
    for k in range(count):
        if pos + head_size > size:
            raise ValueError(f"{path}: truncated file: point {k + 1} of {count} needs {head_size} bytes at byte "
                             f"{pos}, only {size - pos} left")
        (n,) = length_at(data, pos + head_size - 8)
        end = pos + head_size + _TRACK_DTYPE.itemsize * n
        if end > size:
            raise ValueError(f"{path}: truncated file: point {k + 1} of {count}: its track of {n} elements needs "
                             f"{end - pos - head_size} bytes at byte {pos + head_size}, only {size - pos - head_size} "
                             "left")
        heads.append(view[pos:pos + head_size])
        tracks.append(view[pos + head_size:end])
        lengths.append(n)
        pos = end
    if pos != size:
        raise ValueError(f"{path}: {size - pos} unexpected bytes after the last record (at byte {pos})")
    head = np.frombuffer(b"".join(heads), _POINT_RECORD)
    track = np.frombuffer(b"".join(tracks), _TRACK_DTYPE)
    ids = head["id"].tolist()
    track_images = track["image_id"].astype(np.int64)
    bad = _first_unknown(lengths, track_images, image_ids)
    if bad is not None:
        raise ValueError(f"{path}: point {ids[bad[0]]}: track refers to image id {bad[1]}, which is not in "
                         f"{images_file}")
    return _points(ids, np.array(head["xyz"]), np.array(head["rgb"]), head["error"].tolist(), lengths, track_images,
                   track["idx"].astype(np.int64), str(path))


def _first_unknown(lengths: list[int], track_images: np.ndarray, known: set[int]) -> tuple[int, int] | None:
    """``(point index, image id)`` of the first track element naming an image not in ``known``, or None."""
    ok = np.isin(track_images, np.fromiter(known, np.int64, len(known)))
    if ok.all():
        return None
    first = int(np.argmin(ok))
    return int(np.searchsorted(np.cumsum(lengths), first, side="right")), int(track_images[first])


def _points(ids: list[int], xyz: np.ndarray, rgb: np.ndarray, errors: list[float], lengths: list[int],
            track_images: np.ndarray, track_idxs: np.ndarray, where: str) -> dict[int, ColmapPoint3D]:
    """Point records from column arrays (already validated and typed: no per-point conversion)."""
    if len(set(ids)) != len(ids):
        seen: set[int] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise ValueError(f"{where}: point id {dup} appears twice")
    points: dict[int, ColmapPoint3D] = {}
    start = 0
    for k, pid in enumerate(ids):
        end = start + lengths[k]
        p = object.__new__(ColmapPoint3D)
        p.id, p.xyz, p.rgb, p.error = pid, xyz[k], rgb[k], errors[k]
        p.image_ids, p.point2d_idxs = track_images[start:end], track_idxs[start:end]
        points[pid] = p
        start = end
    return points


def _write_cameras_binary(cameras: dict[int, ColmapCamera], path: Path) -> None:
    chunks = [_COUNT.pack(len(cameras))]
    for c in cameras.values():
        chunks.append(_CAMERA_HEAD.pack(c.id, CAMERA_MODELS[c.model][0], c.width, c.height))
        chunks.append(c.params.astype("<f8").tobytes())
    path.write_bytes(b"".join(chunks))


def _write_images_binary(images: dict[int, ColmapImage], path: Path) -> None:
    chunks = [_COUNT.pack(len(images))]
    for im in images.values():
        name = im.name.encode("utf-8", errors="surrogateescape")
        if b"\0" in name:
            raise ValueError(f"image {im.id}: name {im.name!r} contains a NUL byte")
        pts = np.empty(len(im.xys), _POINT2D_DTYPE)
        pts["x"], pts["y"], pts["id"] = im.xys[:, 0], im.xys[:, 1], im.point3d_ids
        chunks += [_IMAGE_HEAD.pack(im.id, *im.qvec.tolist(), *im.tvec.tolist(), im.camera_id), name, b"\0",
                   _COUNT.pack(len(pts)), pts.tobytes()]
    path.write_bytes(b"".join(chunks))


def _write_points_binary(points: dict[int, ColmapPoint3D], path: Path) -> None:
    pts = list(points.values())
    lengths = [len(p.image_ids) for p in pts]
    head = np.zeros(len(pts), _POINT_RECORD)
    if pts:
        head["id"] = [p.id for p in pts]
        head["xyz"] = np.stack([p.xyz for p in pts])
        head["rgb"] = np.stack([p.rgb for p in pts])
        head["error"] = [p.error for p in pts]
        head["n"] = lengths
    track = np.empty(sum(lengths), _TRACK_DTYPE)
    if len(track):
        track["image_id"] = np.concatenate([p.image_ids for p in pts])
        track["idx"] = np.concatenate([p.point2d_idxs for p in pts])
    hb, tb = memoryview(head.tobytes()), memoryview(track.tobytes())
    hs, ts = _POINT_RECORD.itemsize, _TRACK_DTYPE.itemsize
    chunks, start = [_COUNT.pack(len(pts))], 0
    for k, n in enumerate(lengths):
        chunks += [hb[k * hs:(k + 1) * hs], tb[start * ts:(start + n) * ts]]
        start += n
    path.write_bytes(b"".join(chunks))


# ----------------------------------------------------------------------------------------------
# read_model / write_model
# ----------------------------------------------------------------------------------------------


def _detect_format(folder: Path) -> str:
    for fmt in ("bin", "txt"):  # binary first, as COLMAP does
        if (folder / f"cameras.{fmt}").is_file() and (folder / f"images.{fmt}").is_file():
            return fmt
    hint = ""
    for sub in ("sparse/0", "sparse", "0"):
        if (folder / sub / "cameras.bin").is_file() or (folder / sub / "cameras.txt").is_file():
            hint = f" (there is a model in {folder / sub})"
            break
    missing = [n for n in ("cameras.bin", "images.bin", "cameras.txt", "images.txt") if not (folder / n).is_file()]
    raise FileNotFoundError(f"{folder}: not a COLMAP sparse model folder: missing {', '.join(missing)}{hint}")


def read_model(path: str | Path, format: str | None = None) -> ColmapModel:
    """Read a COLMAP sparse model folder (e.g. ``project/sparse/0``), losslessly.

    Args:
        path: the folder holding ``cameras``, ``images`` and ``points3D`` (``.bin`` or ``.txt``).
        format: ``"bin"``, ``"txt"``, or ``None`` to detect (binary wins when both exist, as in
            COLMAP). A missing ``points3D`` file reads as no points; ``rigs`` / ``frames`` files
            (COLMAP 3.12+) are ignored.

    Raises:
        FileNotFoundError: the folder or its ``cameras`` / ``images`` file is missing.
        ValueError: malformed content, naming the file and the line (text) or byte offset (binary):
            bad tokens, a parameter count that does not match the camera model, an unknown model, a
            truncated file, duplicate ids, an image referring to an unknown camera or a track to an
            unknown image.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such COLMAP model folder")
    if format is None:
        format = _detect_format(folder)
    if format not in ("bin", "txt"):
        raise ValueError(f"format must be 'bin', 'txt' or None, got {format!r}")
    files = {name: folder / f"{name}.{format}" for name in ("cameras", "images", "points3D")}
    for name in ("cameras", "images"):
        if not files[name].is_file():
            raise FileNotFoundError(f"{files[name]}: missing (a COLMAP model needs cameras, images and points3D)")
    text = format == "txt"
    cameras = (_read_cameras_text if text else _read_cameras_binary)(files["cameras"])
    images = (_read_images_text if text else _read_images_binary)(files["images"], set(cameras), files["cameras"])
    points: dict[int, ColmapPoint3D] = {}
    if files["points3D"].is_file():
        reader = _read_points_text if text else _read_points_binary
        points = reader(files["points3D"], set(images), files["images"])
    return ColmapModel(cameras, images, points)


def _check_model(model: ColmapModel) -> None:
    for record in (*model.cameras.values(), *model.images.values()):
        record.__post_init__()  # re-coerce fields assigned after construction (few records: cheap)
    for cid, c in model.cameras.items():
        n = _num_params(c.model, f"camera {cid}")
        if cid != c.id:
            raise ValueError(f"cameras[{cid}] has id {c.id}")
        if not 0 <= cid < 2**32:
            raise ValueError(f"camera id {cid} is not a uint32")
        if len(c.params) != n:
            raise ValueError(f"camera {cid}: model {c.model} takes {n} parameters, got {len(c.params)}")
        if not (0 <= c.width < 2**64 and 0 <= c.height < 2**64):
            raise ValueError(f"camera {cid}: width and height must be non-negative, got {c.width} x {c.height}")
    for iid, im in model.images.items():
        if iid != im.id:
            raise ValueError(f"images[{iid}] has id {im.id}")
        if not 0 <= iid < 2**32:
            raise ValueError(f"image id {iid} is not a uint32")
        if im.camera_id not in model.cameras:
            raise ValueError(f"image {iid} ({im.name!r}) refers to camera id {im.camera_id}, which is not in the model")
    points = list(model.points3d.values())
    for pid, p in model.points3d.items():
        if pid != p.id:
            raise ValueError(f"points3d[{pid}] has id {p.id}")
    if points:
        lengths = [len(p.image_ids) for p in points]
        track_images = np.concatenate([p.image_ids for p in points])
        bad = _first_unknown(lengths, track_images, set(model.images))
        if bad is not None:
            raise ValueError(f"point {points[bad[0]].id}: track refers to image id {bad[1]}, which is not in the model")
        idxs = np.concatenate([p.point2d_idxs for p in points])
        if len(idxs) and not (0 <= idxs.min() and idxs.max() < 2**32):
            raise ValueError("track point2D indices must be uint32")


def write_model(model: ColmapModel, path: str | Path, format: str = "bin") -> None:
    """Write ``cameras``, ``images`` and ``points3D`` (``.bin`` or ``.txt``) into the folder ``path``.

    Records are written in dict order. Text floats use the shortest round-trip repr (bit-exact).
    Stale ``rigs.<format>`` / ``frames.<format>`` files in the folder are removed with a warning
    (see the module docstring). Raises ``ValueError`` for an inconsistent model (unknown camera
    model, wrong parameter count, dangling camera / image references) before writing anything.
    """
    if format not in ("bin", "txt"):
        raise ValueError(f"format must be 'bin' or 'txt', got {format!r}")
    _check_model(model)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if format == "txt":
        _write_cameras_text(model.cameras, folder / "cameras.txt")
        _write_images_text(model.images, folder / "images.txt")
        _write_points_text(model.points3d, folder / "points3D.txt")
    else:
        _write_cameras_binary(model.cameras, folder / "cameras.bin")
        _write_images_binary(model.images, folder / "images.bin")
        _write_points_binary(model.points3d, folder / "points3D.bin")
    stale = [folder / f"{name}.{format}" for name in ("rigs", "frames") if (folder / f"{name}.{format}").is_file()]
    if stale:
        for f in stale:
            f.unlink()
        warnings.warn(f"{folder}: removed {', '.join(f.name for f in stale)} of a previous model: COLMAP 3.12+ "
                      "would read their rig / frame poses instead of the new image poses", stacklevel=2)


# ----------------------------------------------------------------------------------------------
# To and from the typed Scene
# ----------------------------------------------------------------------------------------------

_KIND = {
    "SIMPLE_PINHOLE": "pinhole", "PINHOLE": "pinhole",
    "SIMPLE_RADIAL": "opencv", "RADIAL": "opencv", "OPENCV": "opencv", "FULL_OPENCV": "opencv",
    "OPENCV_FISHEYE": "fisheye", "SIMPLE_RADIAL_FISHEYE": "fisheye", "RADIAL_FISHEYE": "fisheye",
    "SIMPLE_FISHEYE": "fisheye", "FISHEYE": "fisheye",
}


def _intrinsics(cam: ColmapCamera, source: Path, dtype: torch.dtype) -> tuple[str, list[float], list[float]]:
    """``(kind, [fx, fy, cx, cy], dist)`` of one COLMAP camera in scenegrad's models."""
    model, p = cam.model, cam.params
    unsupported = model not in _KIND or (model == "FULL_OPENCV" and bool((p[9:] != 0).any()))
    if unsupported:
        what = f"{model} with k4 k5 k6 = {p[9:].tolist()} (the rational model)" if model == "FULL_OPENCV" else model
        raise ValueError(f"{source}: camera {cam.id} uses the COLMAP camera model {what}, which scenegrad "
                         f"cannot represent (pinhole, opencv k1 k2 p1 p2 k3, fisheye k1..k4); {_UNDISTORT_HINT}")
    if model == "SIMPLE_FISHEYE":  # equidistant without distortion
        model, p = "OPENCV_FISHEYE", np.array([p[0], p[0], p[1], p[2], 0, 0, 0, 0])
    elif model == "FISHEYE":
        model, p = "OPENCV_FISHEYE", np.concatenate([p, np.zeros(4)])
    intr = intrinsics_from_colmap(model, torch.tensor(p, dtype=dtype))
    dist = [] if intr.dist is None else intr.dist[0].tolist()
    return intr.model, [intr.fx.item(), intr.fy.item(), intr.cx.item(), intr.cy.item()], dist


def _images_dir(sparse: Path, first_name: str | None) -> Path:
    """The image folder of a standard COLMAP project: ``<sparse>/../../images`` (``sparse/0``), else
    ``<sparse>/../images`` (``sparse``), else ``<sparse>/images``: the first holding the first image."""
    candidates = [sparse.parent.parent / "images", sparse.parent / "images", sparse / "images"]
    if first_name is not None:
        for c in candidates:
            if (c / first_name).is_file():
                return c
    for c in candidates:
        if c.is_dir():
            return c
    warnings.warn(f"{sparse}: no image folder found at {', '.join(map(str, candidates))}; frames point into "
                  f"{candidates[0]} (pass images_dir=)", stacklevel=3)
    return candidates[0]


def load_colmap(sparse_dir: str | Path, images_dir: str | Path | None = None,
                dtype: torch.dtype = torch.float64) -> Scene:
    """A COLMAP sparse model as a :class:`Scene`.

    Args:
        sparse_dir: the model folder (``project/sparse/0``), text or binary (:func:`read_model`).
        images_dir: the image folder; default ``<sparse_dir>/../../images`` as in a standard
            COLMAP project (falling back to ``<sparse_dir>/../images`` and ``<sparse_dir>/images``,
            whichever holds the first image).
        dtype: float dtype of the cameras and points (float64 keeps COLMAP's doubles exactly).

    Returns:
        A scene with one frame per registered image, sorted by image name (``Frame.name`` = the
        COLMAP name, ``image_path = images_dir / name``, ``metadata``: ``colmap_image_id``,
        ``colmap_camera_id``, and the 2D observations ``colmap_xys`` float64 ``[K, 2]`` /
        ``colmap_point3d_ids`` int64 ``[K]``, which :func:`save_colmap` writes back); cameras in one
        batch model: ``pinhole`` (SIMPLE_PINHOLE, PINHOLE), ``opencv`` (SIMPLE_RADIAL, RADIAL, OPENCV,
        FULL_OPENCV without its rational terms), ``fisheye`` (OPENCV_FISHEYE, SIMPLE_RADIAL_FISHEYE,
        RADIAL_FISHEYE, SIMPLE_FISHEYE, FISHEYE). Pinhole and opencv cameras mixed become opencv
        with zero distortion; fisheye cannot be mixed with the others. Points: ``xyz``, ``rgb`` in
        ``[0, 1]`` (``uint8 / 255``), ``error``, ``ids`` (point3D ids), in file order.

    Raises:
        ValueError: a camera model scenegrad cannot represent (FOV, THIN_PRISM_FISHEYE, FULL_OPENCV
            with k4..k6 != 0, ...) or a fisheye / non-fisheye mix, naming the file and model: undistort
            with ``colmap image_undistorter`` first. Also everything :func:`read_model` raises.
    """
    sparse = Path(sparse_dir)
    model = read_model(sparse)
    cameras_file = sparse / f"cameras.{_detect_format(sparse)}"
    images = sorted(model.images.values(), key=lambda im: im.name)
    used = {im.camera_id for im in images}
    intr = {cid: _intrinsics(model.cameras[cid], cameras_file, dtype) for cid in model.cameras if cid in used}
    kinds = {k for k, _, _ in intr.values()}
    if "fisheye" in kinds and len(kinds) > 1:
        mix = sorted({model.cameras[c].model for c in used})
        raise ValueError(f"{cameras_file}: cameras mix fisheye and non-fisheye models ({', '.join(mix)}); a "
                         f"scenegrad camera batch has one model. {_UNDISTORT_HINT}")
    kind = "opencv" if "opencv" in kinds else (kinds.pop() if kinds else "pinhole")
    ndist = {"pinhole": 0, "opencv": 5, "fisheye": 4}[kind]

    if images_dir is None:
        root = _images_dir(sparse, images[0].name if images else None)
    else:
        root = Path(images_dir)
    frames, qvecs, tvecs, rows, dists, sizes = [], [], [], [], [], []
    for im in images:
        _, fxyc, dist = intr[im.camera_id]
        cam = model.cameras[im.camera_id]
        frames.append(Frame(name=im.name, image_path=root / im.name, metadata={
            "colmap_image_id": im.id, "colmap_camera_id": im.camera_id,
            "colmap_xys": im.xys, "colmap_point3d_ids": im.point3d_ids,
        }))
        qvecs.append(im.qvec)
        tvecs.append(im.tvec)
        rows.append(fxyc)
        dists.append(dist + [0.0] * (ndist - len(dist)))
        sizes.append((cam.width, cam.height))
    cameras = None
    if images:
        k = torch.tensor(rows, dtype=dtype)
        wh = torch.tensor(sizes, dtype=torch.int64)
        cameras = cameras_from_colmap(
            torch.tensor(np.stack(qvecs), dtype=dtype), torch.tensor(np.stack(tvecs), dtype=dtype),
            k[:, 0], k[:, 1], k[:, 2], k[:, 3], wh[:, 0], wh[:, 1], kind,
            torch.tensor(dists, dtype=dtype) if ndist else None,
        )
    points = None
    if model.points3d:
        pts = list(model.points3d.values())
        points = Points(
            xyz=torch.tensor(np.stack([p.xyz for p in pts]), dtype=dtype),
            rgb=torch.tensor(np.stack([p.rgb for p in pts]), dtype=dtype) / 255.0,
            error=torch.tensor([p.error for p in pts], dtype=dtype),
            ids=torch.tensor([p.id for p in pts], dtype=torch.int64),
        )
    metadata: dict[str, Any] = {"format": "colmap", "sparse_dir": sparse, "images_dir": root}
    return Scene(frames=frames, cameras=cameras, points=points, root=sparse, metadata=metadata)


def save_colmap(scene: Scene, out_dir: str | Path, format: str = "bin") -> ColmapModel:
    """Write a :class:`Scene` as a COLMAP sparse model (``cameras``, ``images``, ``points3D``) in ``out_dir``.

    Cameras: ``pinhole`` -> PINHOLE, ``opencv`` -> OPENCV (FULL_OPENCV when some ``k3 != 0``),
    ``fisheye`` -> OPENCV_FISHEYE; frames with identical intrinsics and size share one camera id
    (ids ``1, 2, ...`` in order of first use). Images: named ``Frame.name``, ids from
    ``metadata["colmap_image_id"]`` when every frame has a distinct one, else ``1..N``; 2D points
    from ``metadata["colmap_xys"] / ["colmap_point3d_ids"]`` when present (as :func:`load_colmap`
    stores them), with references to points not in ``scene.points`` set to ``-1``. Points: ids from
    ``Points.ids`` (else ``1..P``), colours ``round(255 rgb)`` (black when absent), error ``-1``
    when unknown; tracks are rebuilt from the images' 2D points.

    Returns the written :class:`ColmapModel`. Raises ``ValueError`` when the scene has no cameras.
    """
    if scene.cameras is None:
        raise ValueError("save_colmap needs a scene with cameras (scene.cameras is None)")
    cams = scene.cameras.to("cpu", torch.float64)
    model_name, params = intrinsics_to_colmap(cams)
    params = params.detach().numpy()
    qvec, tvec = (x.detach().numpy() for x in cameras_to_colmap(cams))
    widths, heights = cams.width.tolist(), cams.height.tolist()

    cameras: dict[int, ColmapCamera] = {}
    camera_of: dict[tuple, int] = {}
    frame_camera = []
    for i in range(len(scene.frames)):
        key = (widths[i], heights[i], params[i].tobytes())
        if key not in camera_of:
            cid = len(camera_of) + 1
            camera_of[key] = cid
            cameras[cid] = ColmapCamera(cid, model_name, widths[i], heights[i], params[i].copy())
        frame_camera.append(camera_of[key])

    given = [f.metadata.get("colmap_image_id") for f in scene.frames]
    ok = all(isinstance(g, (int, np.integer)) and 0 < g < 2**32 for g in given) and len(set(given)) == len(given)
    image_ids = [int(g) for g in given] if ok else list(range(1, len(scene.frames) + 1))

    pts = scene.points
    if pts is not None:
        point_ids = pts.ids.tolist() if pts.ids is not None else list(range(1, len(pts) + 1))
        if len(set(point_ids)) != len(point_ids) or (point_ids and min(point_ids) < 0):
            raise ValueError("scene.points.ids must be distinct non-negative integers")
    else:
        point_ids = []
    known = np.array(sorted(point_ids), dtype=np.int64)
    images: dict[int, ColmapImage] = {}
    for i, frame in enumerate(scene.frames):
        xys = frame.metadata.get("colmap_xys")
        ids = frame.metadata.get("colmap_point3d_ids")
        if xys is None or ids is None:
            xys, ids = np.zeros((0, 2)), np.zeros(0, np.int64)
        ids = np.asarray(ids, dtype=np.int64)
        ids = np.where(np.isin(ids, known), ids, -1)
        images[image_ids[i]] = ColmapImage(image_ids[i], qvec[i], tvec[i], frame_camera[i], frame.name, xys, ids)

    points3d: dict[int, ColmapPoint3D] = {}
    if pts is not None:
        # Tracks: invert the images' 2D -> 3D references.
        obs_img = np.concatenate([np.full(len(im.point3d_ids), im.id, np.int64) for im in images.values()] or
                                 [np.zeros(0, np.int64)])
        obs_idx = np.concatenate([np.arange(len(im.point3d_ids)) for im in images.values()] or
                                 [np.zeros(0, np.int64)])
        obs_pid = np.concatenate([im.point3d_ids for im in images.values()] or [np.zeros(0, np.int64)])
        valid = obs_pid != -1
        obs_img, obs_idx, obs_pid = obs_img[valid], obs_idx[valid], obs_pid[valid]
        order = np.lexsort((obs_idx, obs_img, obs_pid))
        obs_img, obs_idx, obs_pid = obs_img[order], obs_idx[order], obs_pid[order]
        xyz = pts.xyz.detach().cpu().double().numpy()
        rgb = (np.zeros((len(pts), 3), np.uint8) if pts.rgb is None else
               np.round(pts.rgb.detach().cpu().double().clamp(0, 1).numpy() * 255).astype(np.uint8))
        err = np.full(len(pts), -1.0) if pts.error is None else pts.error.detach().cpu().double().numpy()
        pid_arr = np.array(point_ids, dtype=np.int64)
        start = np.searchsorted(obs_pid, pid_arr, side="left")
        stop = np.searchsorted(obs_pid, pid_arr, side="right")
        for k, pid in enumerate(point_ids):
            s, e = start[k], stop[k]
            points3d[pid] = ColmapPoint3D(pid, xyz[k], rgb[k], float(err[k]), obs_img[s:e], obs_idx[s:e])
    model = ColmapModel(cameras, images, points3d)
    write_model(model, out_dir, format)
    return model
