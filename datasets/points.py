"""Point clouds to and from :class:`~scenegrad.datasets.scene.Points`: PLY (ASCII or binary, with
or without colours, through trimesh), ``.xyz`` / ``.txt`` (``x y z [r g b]`` per line, colours in
0..255) and ``.npy`` / ``.npz`` (``xyz`` / ``rgb`` arrays).

Colours are floats in ``[0, 1]`` in :class:`Points` and 8-bit in the files. A PLY holding a mesh
contributes its vertices.

>>> import tempfile, torch
>>> from pathlib import Path
>>> pts = Points(xyz=torch.rand(5, 3, dtype=torch.float64), rgb=torch.rand(5, 3, dtype=torch.float64))
>>> path = save_points(pts, Path(tempfile.mkdtemp()) / "cloud.ply")
>>> back = load_points(path)
>>> torch.equal(back.xyz.float(), pts.xyz.float()), bool((back.rgb - pts.rgb).abs().max() <= 0.5 / 255)
(True, True)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scenegrad.datasets.scene import Points

__all__ = ["load_points", "save_points"]


def load_points(path: str | Path, dtype: torch.dtype = torch.float64) -> Points:
    """Read a point cloud file (see the module docstring). Raises ``FileNotFoundError`` or
    ``ValueError`` naming the file when it is missing, unreadable, or holds no finite points."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such point cloud file")
    suffix = path.suffix.lower()
    rgb = None
    try:
        if suffix == ".ply":
            import trimesh

            cloud = trimesh.load(path, process=False)
            xyz = np.asarray(getattr(cloud, "vertices", np.zeros((0, 3))), dtype=np.float64)
            colors = getattr(cloud, "colors", None)
            if colors is None or len(colors) != len(xyz):
                colors = getattr(getattr(cloud, "visual", None), "vertex_colors", None)
            if colors is not None and len(colors) == len(xyz) and len(xyz):
                rgb = np.asarray(colors, dtype=np.float64)[:, :3] / 255.0
        elif suffix in (".xyz", ".txt"):
            table = np.loadtxt(path, ndmin=2, comments="#")
            if table.shape[1] not in (3, 6):
                raise ValueError(f"expected 3 (x y z) or 6 (x y z r g b) columns, got {table.shape[1]}")
            xyz = table[:, :3]
            rgb = table[:, 3:6] / 255.0 if table.shape[1] == 6 else None
        elif suffix in (".npy", ".npz"):
            data = np.load(path)
            if suffix == ".npy":
                xyz = np.asarray(data, dtype=np.float64)
            else:
                if "xyz" not in data:
                    raise ValueError(f"an .npz point cloud needs an 'xyz' array, found {sorted(data.files)}")
                xyz = np.asarray(data["xyz"], dtype=np.float64)
                rgb = np.asarray(data["rgb"], dtype=np.float64) if "rgb" in data else None
                if rgb is not None and rgb.max(initial=0) > 1:
                    rgb = rgb / 255.0
        else:
            raise ValueError(f"unknown point cloud format {suffix!r} (.ply, .xyz, .txt, .npy, .npz)")
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    except Exception as e:  # trimesh and numpy raise many kinds on corrupt files
        raise ValueError(f"{path}: not a readable point cloud ({type(e).__name__}: {e})") from e
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3) if np.size(xyz) % 3 == 0 else xyz
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"{path}: points must be [P, 3], got shape {list(np.shape(xyz))}")
    finite = np.isfinite(xyz).all(1)
    if not finite.any():
        raise ValueError(f"{path}: holds no finite points")
    if not finite.all():
        xyz, rgb = xyz[finite], (rgb[finite] if rgb is not None else None)
    return Points(xyz=torch.tensor(xyz, dtype=dtype),
                  rgb=torch.tensor(np.clip(rgb, 0, 1), dtype=dtype) if rgb is not None else None)


def save_points(points: Points, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``points`` as binary PLY (``.ply``: ``double x y z``, ``uchar red green blue`` when
    coloured; Open3D, MeshLab and CloudCompare read it), ``.xyz`` / ``.txt`` or ``.npz``; returns
    the path. Raises ``FileExistsError`` naming an existing file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    xyz = points.xyz.detach().cpu().double().numpy()
    rgb8 = None
    if points.rgb is not None:
        rgb8 = np.round(points.rgb.detach().cpu().double().clamp(0, 1).numpy() * 255).astype(np.uint8)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".ply":
        _write_ply(path, xyz, rgb8)
    elif suffix in (".xyz", ".txt"):
        table = xyz if rgb8 is None else np.concatenate([xyz, rgb8.astype(np.float64)], 1)
        fmt = ["%.17g"] * 3 + (["%d"] * 3 if rgb8 is not None else [])
        np.savetxt(path, table, fmt=fmt)
    elif suffix == ".npz":
        arrays = {"xyz": xyz} if rgb8 is None else {"xyz": xyz, "rgb": rgb8}
        np.savez(path, **arrays)
    else:
        raise ValueError(f"{path}: unknown point cloud format {suffix!r} (.ply, .xyz, .txt, .npz)")
    return path


def _write_ply(path: Path, xyz: np.ndarray, rgb8: np.ndarray | None) -> None:
    """Binary little-endian PLY with one ``vertex`` element: double x y z [uchar red green blue]."""
    fields = [("x", "<f8"), ("y", "<f8"), ("z", "<f8")]
    if rgb8 is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    table = np.empty(len(xyz), dtype=fields)
    table["x"], table["y"], table["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if rgb8 is not None:
        table["red"], table["green"], table["blue"] = rgb8[:, 0], rgb8[:, 1], rgb8[:, 2]
    types = {"<f8": "double", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", "comment written by scenegrad", f"element vertex {len(xyz)}"]
    header += [f"property {types[t]} {name}" for name, t in fields] + ["end_header"]
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(table.tobytes())
