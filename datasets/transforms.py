"""``transforms.json`` (nerfstudio, instant-ngp, Blender NeRF-synthetic) to and from :class:`Scene`.

What is read (each intrinsic key may sit at the top level, shared, or in a frame, overriding it):

- **Poses**: ``frames[i].transform_matrix``, a 4x4 (or 3x4) camera-to-world matrix with OpenGL camera
  axes (+X right, +Y up, looking down -Z), converted to scenegrad's OpenCV world-to-camera with
  :func:`~scenegrad.render.conventions.cameras_from_opengl_c2w` (OpenCV c2w = OpenGL c2w with
  columns 1 and 2 negated). The world frame is kept as stored (nerfstudio's ``applied_transform``,
  the COLMAP-to-nerfstudio world change, goes to ``Scene.metadata`` untouched).
- **Intrinsics** in pixels: ``fl_x fl_y cx cy w h`` (``fl_y`` defaults to ``fl_x``, the principal
  point to the image centre). Without ``fl_x``, the field of view ``camera_angle_x`` (and
  ``camera_angle_y``) gives ``fl = 0.5 w / tan(0.5 angle)``; without ``w h``, the size is read from the
  first existing image (Blender NeRF-synthetic stores neither). The principal point uses
  scenegrad's pixel convention (COLMAP's, which these tools copy): no shift.
- **Lens**: ``camera_model`` ``PINHOLE`` / ``SIMPLE_PINHOLE`` (-> ``"pinhole"``), ``OPENCV`` (also
  ``SIMPLE_RADIAL``, ``RADIAL``; -> ``"opencv"`` with ``k1 k2 p1 p2 k3``), ``OPENCV_FISHEYE`` (->
  ``"fisheye"``, ``k1..k4``). Without ``camera_model`` (instant-ngp), ``is_fisheye`` selects fisheye,
  else any non-zero ``k1 k2 k3 p1 p2`` selects opencv, else pinhole. One model per camera batch:
  pinhole frames mixed with opencv frames become opencv with zero distortion.
- **Files**, relative to the json's folder: ``file_path`` with or without extension (Blender's
  ``./train/r_0`` means ``train/r_0.png``), ``depth_file_path`` (16-bit PNG in millimetres:
  ``Frame.depth_scale = 1/1000``, or ``depth_unit_scale_factor`` from the frame / top level),
  ``mask_path`` (non-zero = keep), top-level ``ply_file_path`` (seed points, read when present).

Frames whose image file does not exist are skipped with one warning (instant-ngp's fox lists 67
frames for 50 images).

>>> import json, tempfile
>>> from PIL import Image
>>> with tempfile.TemporaryDirectory() as d:
...     Image.new("RGB", (8, 6)).save(f"{d}/r_0.png")
...     frame = {"file_path": "./r_0", "transform_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]}
...     _ = Path(d, "transforms.json").write_text(json.dumps({"camera_angle_x": 1.0, "frames": [frame]}))
...     scene = load_transforms(d)
>>> scene.frames[0].name, scene.cameras.width.item(), (scene.cameras.centers[0] + 0.0).tolist()
('r_0.png', 8, [0.0, 0.0, 4.0])
>>> scene.cameras.R[0].diagonal().tolist()  # OpenCV axes: +Y down, +Z forward = world -Y, -Z
[1.0, -1.0, -1.0]
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scenegrad.datasets.points import load_points, save_points
from scenegrad.datasets.scene import Frame, Scene
from scenegrad.render.conventions import cameras_from_opengl_c2w, cameras_to_opengl_c2w

__all__ = ["load_transforms", "save_transforms", "IMAGE_EXTENSIONS"]

#: Extensions tried, in order, for a ``file_path`` given without one.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG", ".webp", ".tif", ".tiff", ".exr")
_MODELS = {
    "PINHOLE": "pinhole", "SIMPLE_PINHOLE": "pinhole",
    "OPENCV": "opencv", "SIMPLE_RADIAL": "opencv", "RADIAL": "opencv",
    "OPENCV_FISHEYE": "fisheye",
}
_FRAME_FILE_KEYS = ("file_path", "transform_matrix", "depth_file_path", "mask_path")
_INTRINSIC_KEYS = ("camera_model", "fl_x", "fl_y", "cx", "cy", "w", "h", "k1", "k2", "k3", "k4", "p1", "p2",
                   "camera_angle_x", "camera_angle_y", "is_fisheye", "depth_unit_scale_factor")
_DEPTH_SCALE = 1e-3  # 16-bit PNG depth in millimetres
_KEPT_TOP_LEVEL = ("applied_transform", "applied_scale", "aabb_scale", "scale", "offset")


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def _json_path(path_or_dir: str | Path, split: str | None) -> Path:
    path = Path(path_or_dir)
    if path.is_dir():
        name = "transforms.json" if split is None else f"transforms_{split}.json"
        candidate = path / name
        if not candidate.is_file():
            splits = sorted(p.name for p in path.glob("transforms_*.json"))
            hint = f" (there is {', '.join(splits)}: pass split=)" if splits and split is None else ""
            raise FileNotFoundError(f"{candidate}: no such file{hint}")
        return candidate
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such transforms.json file or folder")
    return path


def _resolve(folder: Path, file_path: str) -> Path:
    p = Path(file_path)
    return p if p.is_absolute() else folder / p


def _find_image(folder: Path, file_path: str) -> tuple[Path | None, str]:
    """The existing image file of ``file_path`` (trying :data:`IMAGE_EXTENSIONS` when it has none that
    exists) and the frame name: the path relative to the json folder, normalised, with the extension."""
    base = _resolve(folder, file_path)
    found = base if base.is_file() else None
    suffix = ""
    if found is None:
        for ext in IMAGE_EXTENSIONS:
            candidate = base.with_name(base.name + ext)
            if candidate.is_file():
                found, suffix = candidate, ext
                break
    name = posixpath.normpath(file_path.replace("\\", "/") + suffix)
    return found, name


def _image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image as :meth:`Frame.image` returns it (EXIF orientation applied)."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


class _Frame:
    """Intrinsics of one frame: the frame's keys over the top level's."""

    def __init__(self, top: dict[str, Any], frame: dict[str, Any], where: str) -> None:
        self.top, self.frame, self.where = top, frame, where

    def get(self, key: str, default: Any = None) -> Any:
        return self.frame.get(key, self.top.get(key, default))

    def number(self, key: str, default: float | None = None) -> float | None:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{self.where}: {key} must be a finite number, got {value!r}")
        return float(value)


def _lens(f: _Frame) -> tuple[str, list[float]]:
    """``(scenegrad model, dist)`` of one frame."""
    k = {key: f.number(key, 0.0) for key in ("k1", "k2", "k3", "k4", "p1", "p2")}
    name = f.get("camera_model")
    if name is None:
        if f.get("is_fisheye", False):
            name = "OPENCV_FISHEYE"
        elif any(k[key] != 0 for key in ("k1", "k2", "k3", "k4", "p1", "p2")):
            name = "OPENCV"
        else:
            name = "PINHOLE"
    if not isinstance(name, str) or name.upper() not in _MODELS:
        raise ValueError(f"{f.where}: camera_model {name!r} is not supported (supported: {', '.join(_MODELS)}); "
                         "undistort the images first")
    kind = _MODELS[name.upper()]
    if kind == "fisheye":
        return kind, [k["k1"], k["k2"], k["k3"], k["k4"]]
    if kind == "opencv":
        if k["k4"] != 0:
            raise ValueError(f"{f.where}: camera_model {name} with k4 = {k['k4']} (an r^8 radial term) cannot be "
                             "represented by scenegrad's opencv model (k1 k2 p1 p2 k3); undistort the images first")
        return kind, [k["k1"], k["k2"], k["p1"], k["p2"], k["k3"]]
    return kind, []


def _pose(frame: dict[str, Any], where: str) -> np.ndarray:
    try:
        m = np.array(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: transform_matrix must be a 4x4 (or 3x4) matrix of numbers") from None
    if m.shape not in ((4, 4), (3, 4)) or not np.isfinite(m).all():
        raise ValueError(f"{where}: transform_matrix must be a finite 4x4 (or 3x4) matrix, got shape {list(m.shape)}")
    return m[:3]


def load_transforms(path_or_dir: str | Path, split: str | None = None, dtype: torch.dtype = torch.float64) -> Scene:
    """A ``transforms.json`` scene (conventions: see the module docstring).

    Args:
        path_or_dir: the json file, or its folder (``transforms.json``, or ``transforms_<split>.json``).
        split: Blender NeRF-synthetic split (``"train"``, ``"val"``, ``"test"``) when a folder is given.
        dtype: float dtype of the cameras and points.

    Returns:
        A scene with the frames whose image exists, in file order: ``Frame.name`` is ``file_path``
        normalised, with the extension found; ``Frame.metadata`` holds the frame's other keys
        (``file_path`` as written, e.g. instant-ngp's ``sharpness``). ``Scene.metadata`` holds
        ``path``, ``format = "transforms"`` and the top-level ``applied_transform`` (``[3, 4]`` numpy),
        ``applied_scale``, ``aabb_scale``, ``scale``, ``offset``, ``ply_file_path`` where present.
        ``Scene.points`` comes from ``ply_file_path`` when that file exists.

    Raises:
        FileNotFoundError: no such file / folder.
        ValueError: invalid JSON, no frames, no existing image, a frame without ``file_path`` or a
            valid ``transform_matrix``, no focal length, an unsupported ``camera_model`` or a fisheye /
            non-fisheye mix, each naming the file (and the frame index).
    """
    path = _json_path(path_or_dir, split)
    folder = path.parent
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        raise ValueError(f"{path}: no frames (expected a top-level object with a non-empty 'frames' list)")

    found: list[tuple[int, dict[str, Any], Path, str]] = []
    missing: list[str] = []
    for i, frame in enumerate(data["frames"]):
        where = f"{path}: frames[{i}]"
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise ValueError(f"{where}: needs a 'file_path' string")
        if "transform_matrix" not in frame:
            raise ValueError(f"{where}: needs a 'transform_matrix'")
        image, name = _find_image(folder, frame["file_path"])
        if image is None:
            missing.append(frame["file_path"])
        else:
            found.append((i, frame, image, name))
    names = [name for _, _, _, name in found]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{path}: several frames use the same image: {', '.join(dup[:5])}")
    if not found:
        raise ValueError(f"{path}: none of the {len(data['frames'])} frames' images exist "
                         f"(first: {_resolve(folder, missing[0])})")
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        warnings.warn(f"{path}: {len(missing)} of {len(data['frames'])} frames have no image file and are "
                      f"skipped: {shown}", stacklevel=2)

    first_size: tuple[int, int] | None = None
    frames, poses, rows, kinds, dists = [], [], [], [], []
    for i, frame, image, name in found:
        where = f"{path}: frames[{i}]"
        f = _Frame(data, frame, where)
        w, h = f.number("w"), f.number("h")
        if w is None or h is None:
            if first_size is None:
                first_size = _image_size(found[0][2])
            w, h = w or float(first_size[0]), h or float(first_size[1])
        fx, fy = f.number("fl_x"), f.number("fl_y")
        if fx is None:
            angle = f.number("camera_angle_x")
            if angle is None:
                raise ValueError(f"{where}: no focal length (fl_x or camera_angle_x)")
            fx = 0.5 * w / math.tan(0.5 * angle)
        if fy is None:
            angle_y = f.number("camera_angle_y")
            fy = fx if angle_y is None or f.number("fl_x") is not None else 0.5 * h / math.tan(0.5 * angle_y)
        kind, dist = _lens(f)
        kinds.append(kind)
        dists.append(dist)
        rows.append([fx, fy, f.number("cx", w / 2), f.number("cy", h / 2), round(w), round(h)])
        poses.append(_pose(frame, where))
        depth = frame.get("depth_file_path")
        mask = frame.get("mask_path")
        meta = {k: v for k, v in frame.items() if k not in _FRAME_FILE_KEYS and k not in _INTRINSIC_KEYS}
        meta["file_path"] = frame["file_path"]
        frames.append(Frame(
            name=name, image_path=image,
            depth_path=_resolve(folder, depth) if isinstance(depth, str) else None,
            depth_scale=f.number("depth_unit_scale_factor", _DEPTH_SCALE),
            mask_path=_resolve(folder, mask) if isinstance(mask, str) else None,
            metadata=meta,
        ))

    kind_set = set(kinds)
    if "fisheye" in kind_set and len(kind_set) > 1:
        raise ValueError(f"{path}: frames mix fisheye and non-fisheye camera models; a scenegrad camera batch "
                         "has one model")
    kind = "opencv" if "opencv" in kind_set else kind_set.pop()
    dist = None
    if kind != "pinhole":
        dist = torch.tensor([d or [0.0] * 5 for d in dists], dtype=dtype)
    k = torch.tensor(rows, dtype=torch.float64)
    cameras = cameras_from_opengl_c2w(
        torch.tensor(np.stack(poses), dtype=dtype), k[:, 0].to(dtype), k[:, 1].to(dtype), k[:, 2].to(dtype),
        k[:, 3].to(dtype), k[:, 4].long(), k[:, 5].long(), kind, dist,
    )

    metadata: dict[str, Any] = {"format": "transforms", "path": path}
    for key in _KEPT_TOP_LEVEL:
        if key in data:
            metadata[key] = np.array(data[key], dtype=np.float64) if key == "applied_transform" else data[key]
    points = None
    if isinstance(data.get("ply_file_path"), str):
        ply = _resolve(folder, data["ply_file_path"])
        metadata["ply_file_path"] = ply
        if ply.is_file():
            points = load_points(ply, dtype)
        else:
            warnings.warn(f"{path}: ply_file_path {ply} does not exist; no points loaded", stacklevel=2)
    return Scene(frames=frames, cameras=cameras, points=points, root=folder, metadata=metadata)


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` in POSIX form (absolute when on another drive)."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), folder.resolve())).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


def _json_scalar(value: Any) -> bool:
    return isinstance(value, (str, bool, int, float)) and not (isinstance(value, float) and not math.isfinite(value))


def save_transforms(scene: Scene, out_dir_or_path: str | Path, image_dir: str | None = None,
                    overwrite: bool = False) -> Path:
    """Write a nerfstudio-style ``transforms.json`` that :func:`load_transforms` reads back to the same cameras.

    Args:
        scene: a scene with cameras.
        out_dir_or_path: a ``.json`` path, or a folder to write ``transforms.json`` into.
        image_dir: write ``file_path = "<image_dir>/<frame.name>"`` (a folder relative to the json;
            the images are not copied). Default: each frame's ``image_path`` relative to the json's
            folder.
        overwrite: replace an existing json (and ``sparse_pc.ply``) instead of raising.

    Writes ``camera_model`` (``PINHOLE``, ``OPENCV`` with ``k1 k2 k3 p1 p2``, ``OPENCV_FISHEYE`` with
    ``k1..k4``), the intrinsics ``w h fl_x fl_y cx cy`` at the top level when every frame shares them,
    else per frame, and per frame ``transform_matrix`` (OpenGL camera-to-world, float64 repr),
    ``depth_file_path`` (+ ``depth_unit_scale_factor`` when not ``1/1000``), ``mask_path`` and scalar
    JSON-able ``Frame.metadata``. Points go to ``sparse_pc.ply`` beside the json (``ply_file_path``);
    ``applied_transform`` and ``applied_scale`` from ``Scene.metadata`` are kept.

    Returns the json path. Raises ``FileExistsError`` naming an existing file (without ``overwrite``),
    ``ValueError`` for a scene without cameras, a frame without ``image_path`` (and no ``image_dir``)
    or with an inverted mask (nerfstudio masks keep non-zero pixels).
    """
    if scene.cameras is None:
        raise ValueError("save_transforms needs a scene with cameras (scene.cameras is None)")
    out = Path(out_dir_or_path)
    path = out if out.suffix.lower() == ".json" else out / "transforms.json"
    folder = path.parent
    ply = folder / "sparse_pc.ply"
    for target in [path] + ([ply] if scene.points is not None else []):
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target}: already exists (pass overwrite=True to replace it)")

    cams = scene.cameras.to("cpu", torch.float64)
    c2w = cameras_to_opengl_c2w(cams).detach().numpy()
    # The centre as R^-1 (-t), not R^T (-t): loading computes t = -R c, so this returns t exactly even
    # for rotations that are orthonormal only to a few digits (instant-ngp's fox: 1e-6).
    c2w[:, :3, 3] = -np.linalg.solve(cams.R.detach().numpy(), cams.t.detach().numpy()[..., None])[..., 0]
    model = {"pinhole": "PINHOLE", "opencv": "OPENCV", "fisheye": "OPENCV_FISHEYE"}[cams.model]
    intrinsics = []
    for i in range(len(cams)):
        entry: dict[str, Any] = {
            "w": int(cams.width[i]), "h": int(cams.height[i]), "fl_x": cams.fx[i].item(), "fl_y": cams.fy[i].item(),
            "cx": cams.cx[i].item(), "cy": cams.cy[i].item(),
        }
        if cams.model == "opencv":
            k1, k2, p1, p2, k3 = cams.dist[i].tolist()
            entry.update(k1=k1, k2=k2, k3=k3, p1=p1, p2=p2)
        elif cams.model == "fisheye":
            entry.update(zip(("k1", "k2", "k3", "k4"), cams.dist[i].tolist(), strict=True))
        intrinsics.append(entry)
    shared = all(e == intrinsics[0] for e in intrinsics)

    data: dict[str, Any] = {"camera_model": model}
    if shared and intrinsics:
        data.update(intrinsics[0])
    for key in ("applied_transform", "applied_scale"):
        if key in scene.metadata:
            value = scene.metadata[key]
            data[key] = np.asarray(value, dtype=np.float64).tolist() if key == "applied_transform" else float(value)
    frames = []
    for i, frame in enumerate(scene.frames):
        if image_dir is not None:
            file_path = posixpath.join(str(image_dir).replace("\\", "/"), frame.name)
        elif frame.image_path is not None:
            file_path = _relative(frame.image_path, folder)
        else:
            raise ValueError(f"frame {frame.name!r} has no image_path; pass image_dir= to name its file")
        entry = {"file_path": file_path, "transform_matrix": c2w[i].tolist()}
        if not shared:
            entry.update(intrinsics[i])
        if frame.depth_path is not None:
            entry["depth_file_path"] = _relative(frame.depth_path, folder)
            if frame.depth_scale != _DEPTH_SCALE:
                entry["depth_unit_scale_factor"] = float(frame.depth_scale)
        if frame.mask_path is not None:
            if frame.mask_invert:
                raise ValueError(f"frame {frame.name!r}: an inverted mask (non-zero = drop) cannot be written; "
                                 "transforms.json masks keep non-zero pixels")
            entry["mask_path"] = _relative(frame.mask_path, folder)
        for key, value in frame.metadata.items():
            if key not in entry and key not in _FRAME_FILE_KEYS and key not in _INTRINSIC_KEYS and _json_scalar(value):
                entry[key] = value
        frames.append(entry)
    data["frames"] = frames

    folder.mkdir(parents=True, exist_ok=True)
    if scene.points is not None:
        save_points(scene.points, ply, overwrite=True)  # an existing one was refused above
        data["ply_file_path"] = ply.name
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path
