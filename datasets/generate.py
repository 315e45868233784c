"""Rendered synthetic scenes with exact ground truth: images, cameras, depth, masks and points.

:func:`synthetic_scene` renders a textured mesh (a built-in ``"torus"`` or ``"room"``, any mesh
file such as Spot or the avocado scan, or a :class:`~scenegrad.render.mesh.Mesh`) with scenegrad's
mesh renderer along a camera path (:func:`scenegrad.datasets.synthetic.camera_path`) and returns a
:class:`~scenegrad.datasets.scene.Scene` whose frames hold their pixels in memory, with exact
cameras, depth (camera ``z``, 0 on background), masks (``True`` on the mesh) and points sampled
on the surface with their texture colours. :func:`write_scene` writes it as an image folder, a
video and every scene format scenegrad reads (COLMAP, transforms.json, LLFF), so tests of poses,
depth and reconstruction start from ground truth.

>>> scene = synthetic_scene("torus", path="arc", count=3, size=(64, 48))
>>> len(scene), scene.frames[0].image().shape, bool(scene.frames[0].mask().any())
(3, torch.Size([48, 64, 3]), True)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from scenegrad.datasets.scene import Frame, Points, Scene
from scenegrad.datasets.synthetic import camera_path, look_at, room_mesh, torus_mesh
from scenegrad.render.cameras import Cameras
from scenegrad.render.mesh import Mesh

__all__ = ["synthetic_scene", "render_views", "sample_surface", "write_scene", "FORMATS"]

FORMATS = ("images", "video", "colmap", "transforms", "llff")


def _resolve_mesh(mesh: str | Path | Mesh) -> tuple[Mesh, str]:
    if isinstance(mesh, Mesh):
        return mesh, "mesh"
    if mesh == "torus":
        return torus_mesh(), "torus"
    if mesh == "room":
        return room_mesh(), "room"
    from scenegrad.datasets.meshes import load_mesh

    path = Path(mesh)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such mesh file (built-in meshes: 'torus', 'room')")
    return load_mesh(path), path.stem


def render_views(mesh: Mesh, cameras: Cameras, *, batch: int = 8, shading: str = "lambert",
                 background: float | tuple[float, float, float] = 1.0, near: float = 0.01,
                 far: float = 1000.0) -> tuple[Tensor, Tensor, Tensor]:
    """Render ``mesh`` from every camera, ``batch`` views at a time, without gradients.

    Returns ``images [N, H, W, 3]`` in ``[0, 1]`` (antialiased, over ``background``),
    ``depth [N, H, W]`` (camera ``z``, 0 on background) and ``masks [N, H, W]`` bool (pixel centres
    on the mesh).
    """
    from scenegrad.render.mesh import antialias_topology, render_mesh

    topology = antialias_topology(mesh.faces)
    images, depths, masks = [], [], []
    with torch.no_grad():
        for i in range(0, len(cameras), batch):
            idx = torch.arange(i, min(i + batch, len(cameras)))
            out = render_mesh(mesh, cameras[idx], shading=shading, background=torch.tensor(background).expand(3),
                              topology=topology, near=near, far=far)
            images.append(out.color.clamp(0, 1))
            depths.append(out.depth)
            masks.append(out.triangle_ids >= 0)
    return torch.cat(images), torch.cat(depths), torch.cat(masks)


def sample_surface(mesh: Mesh, count: int, seed: int = 0) -> Points:
    """``count`` points uniformly on the surface (area-weighted) with their albedo as colour."""
    g = torch.Generator().manual_seed(seed)
    v, f = mesh.vertices.double(), mesh.faces.long()
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = torch.linalg.cross(b - a, c - a, dim=-1).norm(dim=-1)
    face = torch.multinomial(area / area.sum(), count, replacement=True, generator=g)
    r1, r2 = torch.rand(count, generator=g, dtype=torch.float64), torch.rand(count, generator=g, dtype=torch.float64)
    s = r1.sqrt()
    w = torch.stack([1 - s, s * (1 - r2), s * r2], -1)  # barycentrics, uniform on the triangle
    xyz = (w[:, :, None] * torch.stack([a[face], b[face], c[face]], 1)).sum(1)
    rgb = torch.full((count, 3), 0.8, dtype=torch.float64)
    if mesh.texture is not None and mesh.uvs is not None:
        uf = (mesh.uv_faces if mesh.uv_faces is not None else mesh.faces).long()[face]
        uv = (w[:, :, None] * mesh.uvs.double()[uf]).sum(1) % 1.0
        H, W = mesh.texture.shape[:2]
        px = (uv[:, 0] * W).long().clamp(0, W - 1)
        py = (uv[:, 1] * H).long().clamp(0, H - 1)
        rgb = mesh.texture[py, px, :3].double()
    elif mesh.vertex_colors is not None:
        rgb = (w[:, :, None] * mesh.vertex_colors.double()[f[face]][..., :3]).sum(1)
    return Points(xyz=xyz, rgb=rgb.clamp(0, 1), ids=torch.arange(1, count + 1))


def synthetic_scene(
    mesh: str | Path | Mesh = "torus",
    *,
    path: Literal["orbit", "arc", "walk", "handheld"] = "orbit",
    count: int = 24,
    size: tuple[int, int] = (320, 240),
    fov_deg: float = 60.0,
    radius: float | None = None,
    points: int = 2000,
    background: float | tuple[float, float, float] = 1.0,
    shading: str = "auto",
    seed: int = 0,
) -> Scene:
    """Render a textured mesh along a camera path; everything returned is exact ground truth.

    Args:
        mesh: ``"torus"`` or ``"room"`` (built in), a mesh file (OBJ / PLY / GLB, e.g. Spot or the
            avocado scan), or a :class:`Mesh`.
        path: camera path (:func:`scenegrad.datasets.synthetic.camera_path`). Around objects the
            cameras look at the bounding-box centre from ``radius`` (default: 2.2 x the bounding
            radius, raised along the mesh's up axis: world -Y for the built-ins, +Y for mesh files,
            which are Y-up by glTF/OBJ convention). ``"walk"`` goes down the long axis of the room
            (for other meshes, towards the centre from ``radius``).
        count: number of frames; ``size``: ``(width, height)``; ``fov_deg``: horizontal field of view.
        points: surface points sampled into ``scene.points`` (their colour is the texture albedo).
        background, shading: see :func:`render_views`; ``"auto"`` is ``"none"`` (albedo) for the
            room, whose walls face away from the default light, and ``"lambert"`` otherwise.
        seed: camera shake, point sampling and the room's texture.

    Returns:
        A :class:`Scene`: frames ``frame_000000 ...`` with ``timestamp = index / 10`` and in-memory
        image, depth and mask; pinhole cameras (float32); ``metadata`` with the mesh name, path and
        the bounds ``near``/``far`` of the rendered depth.
    """
    m, name = _resolve_mesh(mesh)
    width, height = size
    lo, hi = m.vertices.min(0).values.double(), m.vertices.max(0).values.double()
    centre = (lo + hi) / 2
    bound = float((hi - lo).norm() / 2)
    up = (0.0, -1.0, 0.0) if name in ("torus", "room") else (0.0, 1.0, 0.0)
    kw = dict(width=width, height=height, fov_deg=fov_deg, up=up, seed=seed)
    if name == "room":
        if path == "walk":
            ext = hi - lo
            axis = int(torch.argmax(ext[[0, 2]])) * 2  # X or Z: the room's long axis
            start, end = centre.clone(), centre.clone()
            start[axis] = hi[axis] - 0.2 * ext[axis]
            end[axis] = lo[axis] + 0.45 * ext[axis]
            cams = camera_path("walk", count, start=tuple(start.tolist()), end=tuple(end.tolist()), **kw)
        else:  # stand near the centre and look out at the walls
            r = radius if radius is not None else 0.25 * float(min(hi[0] - lo[0], hi[2] - lo[2]))
            around = camera_path(path, count, target=tuple(centre.tolist()), radius=r, elevation=0.0, **kw)
            eyes = around.centers.double()
            R, t = look_at(eyes, 2 * eyes - centre, up)
            cams = Cameras(around.fx, around.fy, around.cx, around.cy, R.float(), t.float(), width, height)
    else:
        r = radius if radius is not None else 2.2 * bound / math.tan(math.radians(min(fov_deg, 90.0)) / 1.2)
        if path == "walk":
            start = centre + torch.tensor([0.0, 0.0, r], dtype=torch.float64)
            end = centre + torch.tensor([0.0, 0.0, 1.3 * bound], dtype=torch.float64)
            cams = camera_path("walk", count, start=tuple(start.tolist()), end=tuple(end.tolist()), **kw)
        else:
            cams = camera_path(path, count, target=tuple(centre.tolist()), radius=r, **kw)

    if shading == "auto":
        shading = "none" if name == "room" else "lambert"
    images, depth, masks = render_views(m, cams, shading=shading, background=background)
    frames = [
        Frame(name=f"frame_{i:06d}", timestamp=i / 10.0, image_fn=_constant(images[i]),
              depth_fn=_constant(depth[i]), mask_fn=_constant(masks[i]))
        for i in range(count)
    ]
    valid = depth[depth > 0]
    metadata = {"mesh": name, "path": path, "near": float(valid.min()) if valid.numel() else 0.01,
                "far": float(valid.max()) if valid.numel() else 100.0}
    pts = sample_surface(m, points, seed) if points > 0 else None
    return Scene(frames=frames, cameras=cams, points=pts, metadata=metadata)


def _constant(x: Tensor):
    return lambda: x


def write_scene(scene: Scene, out_dir: str | Path, formats: tuple[str, ...] = FORMATS, *, fps: float = 10.0,
                overwrite: bool = False) -> dict[str, Path]:
    """Write ``scene`` into ``out_dir`` in the formats asked for and return their paths:

    - ``"images"``: ``images/<name>.png`` (8-bit), ``depth/<name>.png`` (16-bit, millimetres of the
      scene's unit, 0 = none) and ``masks/<name>.png`` (255 = on the mesh), when the frames have them;
    - ``"video"``: ``video.mp4`` (H.264, ``fps``);
    - ``"colmap"``: ``sparse/0`` (binary) with the points;
    - ``"transforms"``: ``transforms.json`` (nerfstudio) pointing at ``images/``, ``depth/``, ``masks/``;
    - ``"llff"``: ``poses_bounds.npy`` for ``images/``.

    The scene formats need the image files, so ``"images"`` is written whenever one of them is
    asked for. Existing files are never replaced unless ``overwrite`` (``FileExistsError`` names
    the first one found).
    """
    from PIL import Image

    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; choose from {FORMATS}")
    out = Path(out_dir)
    wants_files = bool({"images", "colmap", "transforms", "llff"} & set(formats))
    planned = {"images": out / "images", "video": out / "video.mp4", "colmap": out / "sparse" / "0",
               "transforms": out / "transforms.json", "llff": out / "poses_bounds.npy"}
    if not overwrite:
        for fmt in formats:
            target = planned[fmt]
            if target.exists() and (target.is_file() or any(target.iterdir())):
                raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    frames = list(scene.frames)
    if wants_files:
        new_frames = []
        for folder in ("images", "depth", "masks"):
            (out / folder).mkdir(exist_ok=True)
        for f in frames:
            image = (f.image()[..., :3].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
            image_path = out / "images" / f"{f.name}.png"
            Image.fromarray(image).save(image_path)
            depth, mask = f.depth(), f.mask()
            depth_path = mask_path = None
            if depth is not None:
                depth_path = out / "depth" / f"{f.name}.png"
                mm = (depth.double() * 1000).round().clamp(0, 65535).numpy().astype(np.uint16)
                Image.fromarray(mm).save(depth_path)
            if mask is not None:
                mask_path = out / "masks" / f"{f.name}.png"
                Image.fromarray((mask.numpy() * 255).astype(np.uint8)).save(mask_path)
            new_frames.append(Frame(name=image_path.name, image_path=image_path, timestamp=f.timestamp,
                                    depth_path=depth_path, depth_scale=1e-3, mask_path=mask_path,
                                    metadata=dict(f.metadata)))
        for folder in ("depth", "masks"):
            if not any((out / folder).iterdir()):
                (out / folder).rmdir()
        frames = new_frames
        written["images"] = out / "images"
    on_disk = Scene(frames=frames, cameras=scene.cameras, points=scene.points, root=out,
                    metadata=dict(scene.metadata))
    if "video" in formats:
        from scenegrad.datasets.video import write_video

        written["video"] = write_video(out / "video.mp4", (f.image() for f in scene.frames), fps=fps,
                                       overwrite=overwrite)
    if "colmap" in formats:
        from scenegrad.datasets.colmap import save_colmap

        (out / "sparse" / "0").mkdir(parents=True, exist_ok=True)
        save_colmap(on_disk, out / "sparse" / "0")
        written["colmap"] = out / "sparse" / "0"
    if "transforms" in formats:
        from scenegrad.datasets.transforms import save_transforms

        written["transforms"] = save_transforms(on_disk, out / "transforms.json", overwrite=overwrite)
    if "llff" in formats:
        from scenegrad.datasets.llff import save_llff

        for f in frames:
            f.metadata.setdefault("near", scene.metadata.get("near", 0.1))
            f.metadata.setdefault("far", scene.metadata.get("far", 100.0))
        written["llff"] = save_llff(on_disk, out, copy_images=False, overwrite=overwrite)
    return written
