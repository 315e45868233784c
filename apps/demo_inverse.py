"""Inverse rendering for ``scenegrad demo``: fit a mesh's appearance and pose to pictures with
:func:`scenegrad.render.mesh.render_mesh`, step by step so a page can watch.

Targets are either a *turntable* (the mesh rendered by itself from cameras on a circle; the fit then
starts from a grey appearance and a moved pose, and must find both again) or *photos with known
cameras* (a folder with a nerfstudio ``transforms.json`` or a COLMAP ``sparse/0`` model). The
appearance is the texture when the mesh has UVs, else per-vertex colours; the pose is a rotation
(axis-angle) about the mesh's centre and a translation. Shading is ``none`` (albedo only), so a
photo's colours are taken as the surface's.

>>> from scenegrad.datasets.synthetic import torus_mesh
>>> mesh = torus_mesh(rings=16, sides=8, texture_size=16)
>>> cams, targets, alphas = turntable_targets(mesh, views=2, size=24)
>>> steps = list(fit(mesh, cams, targets, alphas, FitConfig(steps=3, every=1)))
>>> [s.step for s in steps], steps[-1].losses[-1] < steps[0].losses[0]
([1, 2, 3], True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scenegrad.render.cameras import Cameras
from scenegrad.render.mesh import Mesh


@dataclass
class FitConfig:
    """steps: optimisation steps; every: report every this many steps; lr_appearance, lr_rotation
    (radians), lr_translation (fraction of the mesh size): Adam step sizes; fit_pose,
    fit_appearance: what is optimised; start_degrees, start_shift: how far a turntable fit's pose
    starts from the truth (degrees; fraction of the size); seed: for that start."""

    steps: int = 100
    every: int = 5
    lr_appearance: float = 0.05
    lr_rotation: float = 0.01
    lr_translation: float = 0.01
    fit_pose: bool = True
    fit_appearance: bool = True
    start_degrees: float = 10.0
    start_shift: float = 0.05
    seed: int = 0


@dataclass
class FitStep:
    """``step`` done so far, ``losses`` one per step, ``preview`` ``[H, 2W, 3]`` uint8 (render | target
    of the first view), ``mesh`` the current fitted mesh (detached), ``pose_error`` (degrees, fraction
    of the size) against the truth when the targets are a turntable of the same mesh."""

    step: int
    losses: list[float]
    preview: np.ndarray
    mesh: Mesh
    pose_error: tuple[float, float] | None = field(default=None)


def _size(mesh: Mesh) -> tuple[Tensor, float]:
    lo, hi = mesh.vertices.min(0).values, mesh.vertices.max(0).values
    return (lo + hi) / 2, float((hi - lo).norm())


def _with_appearance(mesh: Mesh) -> Mesh:
    """The mesh itself when it has a texture or vertex colours, else coloured by position."""
    if (mesh.texture is not None and mesh.uvs is not None) or mesh.vertex_colors is not None:
        return mesh
    lo, hi = mesh.vertices.min(0).values, mesh.vertices.max(0).values
    colors = 0.15 + 0.7 * (mesh.vertices - lo) / (hi - lo).clamp_min(1e-9)
    return Mesh(vertices=mesh.vertices, faces=mesh.faces, normals=mesh.normals, vertex_colors=colors)


def turntable_targets(mesh: Mesh, views: int = 8, size: int = 96) -> tuple[Cameras, Tensor, Tensor]:
    """``views`` cameras on a circle around ``mesh`` (glTF/OBJ convention, +Y up) and the mesh's renders
    from them: ``(cameras, colours [N, size, size, 3], coverage [N, size, size, 1])``. A mesh without
    texture or vertex colours is coloured by position first."""
    from scenegrad.datasets.synthetic import orbit_cameras
    from scenegrad.render.mesh import render_mesh

    mesh = _with_appearance(mesh)
    centre, diameter = _size(mesh)
    cams = orbit_cameras(views, 1.3 * diameter, size, size, 1.2 * size, centre=tuple(centre.tolist()),
                         up=(0.0, 1.0, 0.0))
    with torch.no_grad():
        out = render_mesh(mesh, cams, shading="none", near=0.01 * diameter, far=10 * diameter)
    return cams, out.color, out.alpha


def photo_targets(folder: Path, size: int = 128, max_views: int = 16) -> tuple[Cameras, Tensor]:
    """Cameras and images of a folder holding ``transforms.json`` or ``sparse/0`` (at any depth below
    it), resized so the longest side is ``size``: ``(cameras, images [N, H, W, 3])``."""
    import torch.nn.functional as F

    from scenegrad.render.cameras import resize

    folder = Path(folder)
    found = sorted(folder.rglob("transforms.json")) or sorted(folder.rglob("cameras.txt")) or sorted(
        folder.rglob("cameras.bin"))
    if not found:
        raise ValueError("no cameras found: the zip needs a nerfstudio transforms.json or a COLMAP model "
                         "(sparse/0 with cameras, images and points files) beside the images")
    if found[0].name == "transforms.json":
        from scenegrad.datasets.transforms import load_transforms

        scene = load_transforms(found[0].parent, dtype=torch.float32)
    else:
        from scenegrad.datasets.colmap import load_colmap

        sparse = found[0].parent
        images = next((p / "images" for p in (sparse, *sparse.parents) if (p / "images").is_dir()), None)
        scene = load_colmap(sparse, images, dtype=torch.float32)
    if scene.cameras.is_distorted:
        raise ValueError("the cameras have lens distortion; undistort the photos first (pinhole cameras only)")
    keep = np.linspace(0, len(scene.frames) - 1, min(max_views, len(scene.frames))).round().astype(int)
    cams = scene.cameras[keep.tolist()]
    width, height = int(cams.width[0]), int(cams.height[0])
    if (cams.width != width).any() or (cams.height != height).any():
        raise ValueError("the photos differ in size; the fit needs one image size")
    scale = size / max(width, height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    images = []
    for i in keep:
        image = scene.frames[i].image()[..., :3].float()
        images.append(F.interpolate(image.permute(2, 0, 1)[None], size=new[::-1], mode="area")[0].permute(1, 2, 0))
    return resize(cams, new), torch.stack(images)


def _preview(render: Tensor, target: Tensor) -> np.ndarray:
    pair = torch.cat([render, target], dim=1).detach().clamp(0, 1)
    return (pair * 255 + 0.5).byte().numpy()


def fit(mesh: Mesh, cameras: Cameras, targets: Tensor, alphas: Tensor | None = None,
        config: FitConfig | None = None, turntable: bool | None = None) -> Iterator[FitStep]:
    """Fit the appearance and pose of ``mesh`` so its renders match ``targets`` (``[N, H, W, 3]``;
    ``alphas [N, H, W, 1]``, when given, adds a silhouette term). Yields a :class:`FitStep` every
    ``config.every`` steps and after the last.

    ``turntable`` (default: ``alphas is not None``): the targets are renders of ``mesh`` itself, so
    the fit starts from a grey appearance and a pose moved by ``start_degrees`` / ``start_shift``,
    and reports its pose error."""
    from scenegrad.render.mesh import antialias_topology, render_mesh
    from scenegrad.render.rotations import so3_exp

    config = config or FitConfig()
    turntable = alphas is not None if turntable is None else turntable
    base = _with_appearance(mesh) if turntable else mesh
    centre, diameter = _size(base)
    g = torch.Generator().manual_seed(config.seed)
    if base.texture is not None and base.uvs is not None:
        start = torch.full_like(base.texture[..., :3], 0.5) if turntable else base.texture[..., :3].clone()
    else:
        colors = base.vertex_colors[..., :3] if base.vertex_colors is not None else None
        start = torch.full((base.num_vertices, 3), 0.5) if turntable or colors is None else colors.clone()
    appearance = start.requires_grad_(config.fit_appearance)
    rotation, shift = torch.zeros(3), torch.zeros(3)
    if turntable:
        axis = torch.nn.functional.normalize(torch.randn(3, generator=g), dim=0)
        rotation = axis * math.radians(config.start_degrees)
        shift = torch.nn.functional.normalize(torch.randn(3, generator=g), dim=0) * config.start_shift * diameter
    rotation, shift = rotation.requires_grad_(config.fit_pose), shift.clone().requires_grad_(config.fit_pose)
    groups = [{"params": [appearance], "lr": config.lr_appearance}] if config.fit_appearance else []
    if config.fit_pose:
        groups += [{"params": [rotation], "lr": config.lr_rotation},
                   {"params": [shift], "lr": config.lr_translation * diameter}]
    if not groups:
        raise ValueError("nothing to fit: enable the pose, the appearance or both")
    optimiser = torch.optim.Adam(groups)
    topology = antialias_topology(base.faces)
    normals = base.normals if base.normals is not None else base.vertex_normals()

    def posed() -> Mesh:
        R = so3_exp(rotation)
        textured = base.texture is not None and base.uvs is not None
        return Mesh(vertices=(base.vertices - centre) @ R.T + centre + shift, faces=base.faces, normals=normals @ R.T,
                    uvs=base.uvs if textured else None, uv_faces=base.uv_faces if textured else None,
                    texture=appearance if textured else None, vertex_colors=None if textured else appearance)

    losses: list[float] = []
    for step in range(1, config.steps + 1):
        optimiser.zero_grad()
        out = render_mesh(posed(), cameras, shading="none", topology=topology, near=0.01 * diameter,
                          far=100 * diameter)
        loss = (out.color - targets).square().mean()
        if alphas is not None:
            loss = loss + (out.alpha - alphas).square().mean()
        loss.backward()
        optimiser.step()
        with torch.no_grad():
            appearance.clamp_(0, 1)
        losses.append(float(loss.detach()))
        if step % config.every == 0 or step == config.steps:
            with torch.no_grad():
                current = posed()
                error = None
                if turntable:
                    error = (math.degrees(float(rotation.norm())), float(shift.norm()) / diameter)
                yield FitStep(step, list(losses), _preview(out.color[0], targets[0]),
                              _detached(current), error)


def _detached(mesh: Mesh) -> Mesh:
    values = {f.name: getattr(mesh, f.name) for f in dataclasses.fields(mesh)}
    return Mesh(**{k: v.detach().clone() if isinstance(v, Tensor) else v for k, v in values.items()})


def loss_figure(losses: list[float]):
    """The loss per step on a log scale (Matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 3))
    axes.semilogy(np.arange(1, len(losses) + 1), losses, color="#d62728")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    plt.close(figure)
    return figure
