"""Meshes from posed depth maps: TSDF fusion on a dense grid, then scenegrad's marching cubes.

:func:`fuse_tsdf` averages, per voxel and over the views that see it, the truncated signed distance
``clamp(depth_observed - z_voxel, -trunc, trunc) / trunc`` (positive in front of the surface, as
KinectFusion; voxels more than ``trunc`` behind the observed surface are not updated) and the colour
of the pixel it projects to. :func:`extract_mesh` then runs
:func:`~scenegrad.render.iso.marching_cubes` on the *negated* field (so the mesh's normals point
towards the cameras, out of the surface), keeps only the triangles whose grid edges join voxels that
some view observed (which removes the spurious surface behind the truncation band), and colours the
vertices from the fused colour grid. :func:`render_splat_depths` gives the depth maps of trained
Gaussians (expected depth) for the reconstruct pipeline, where unreliable pixels (low alpha) are left
out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from scenegrad.render.cameras import Cameras

__all__ = ["TSDFVolume", "fuse_tsdf", "extract_mesh", "render_splat_depths", "scene_bounds"]


@dataclass
class TSDFVolume:
    """A fused volume: ``tsdf [X, Y, Z]`` in ``[-1, 1]`` (units of ``trunc``), ``weight [X, Y, Z]`` (views
    that saw each voxel), ``color [X, Y, Z, 3]``, the grid ``origin`` (world position of voxel
    ``[0, 0, 0]``) and ``voxel`` size, and ``trunc`` (world units)."""

    tsdf: Tensor
    weight: Tensor
    color: Tensor
    origin: tuple[float, float, float]
    voxel: float
    trunc: float


def scene_bounds(points: Tensor, quantile: float = 0.02, pad: float = 0.1) -> tuple[Tensor, Tensor]:
    """Robust axis-aligned bounds of ``points [P, 3]``: the ``quantile`` and ``1 - quantile`` of each axis,
    grown by ``pad`` times the extent on every side."""
    if points.dim() != 2 or points.shape[0] < 4:
        raise ValueError(f"scene_bounds needs at least 4 points [P, 3], got {list(points.shape)}")
    q = torch.tensor([quantile, 1 - quantile], dtype=points.dtype)
    sample = points[torch.randperm(points.shape[0], generator=torch.Generator().manual_seed(0))[:200_000]]
    lo, hi = torch.quantile(sample, q, dim=0)
    ext = (hi - lo).clamp_min(1e-6)
    return lo - pad * ext, hi + pad * ext


def fuse_tsdf(depths: Tensor, colors: Tensor, cameras: Cameras, lo: Tensor, hi: Tensor, resolution: int = 128,
              trunc_voxels: float = 4.0) -> TSDFVolume:
    """Fuse ``depths [N, H, W]`` (camera ``z``, 0 = no measurement) and ``colors [N, H, W, 3]`` seen by
    ``cameras`` (pinhole, OpenCV) into a grid over ``[lo, hi]`` whose longest side has ``resolution``
    voxels (cubic voxels)."""
    if depths.dim() != 3 or colors.shape[:3] != depths.shape or len(cameras) != depths.shape[0]:
        raise ValueError(f"depths [N, H, W], colors [N, H, W, 3] and N cameras expected, got {list(depths.shape)}, "
                         f"{list(colors.shape)} and {len(cameras)} cameras")
    lo, hi = lo.double(), hi.double()
    voxel = float((hi - lo).max()) / resolution
    dims = [max(2, int(torch.ceil((hi[a] - lo[a]) / voxel)) + 1) for a in range(3)]
    trunc = trunc_voxels * voxel
    axes = [lo[a] + voxel * torch.arange(dims[a], dtype=torch.float64) for a in range(3)]
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).float()
    tsdf = torch.zeros(pts.shape[0])
    weight = torch.zeros(pts.shape[0])
    color = torch.zeros(pts.shape[0], 3)
    H, W = depths.shape[1:]
    for i in range(len(cameras)):
        R, t = cameras.R[i].float(), cameras.t[i].float()
        p = pts @ R.T + t
        z = p[:, 2]
        u = cameras.fx[i].float() * p[:, 0] / z.clamp_min(1e-9) + cameras.cx[i].float()
        v = cameras.fy[i].float() * p[:, 1] / z.clamp_min(1e-9) + cameras.cy[i].float()
        col, row = torch.floor(u).long(), torch.floor(v).long()  # pixel centres at +0.5
        inside = (z > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
        idx = inside.nonzero()[:, 0]
        r, c = row[idx], col[idx]
        d = depths[i][r, c].float()
        sdf = d - z[idx]
        keep = (d > 0) & (sdf > -trunc)
        idx, r, c, sdf = idx[keep], r[keep], c[keep], sdf[keep]
        w_old = weight[idx]
        tsdf[idx] = (tsdf[idx] * w_old + (sdf / trunc).clamp(max=1.0)) / (w_old + 1)
        color[idx] = (color[idx] * w_old[:, None] + colors[i][r, c].float()) / (w_old[:, None] + 1)
        weight[idx] = w_old + 1
    return TSDFVolume(tsdf.reshape(dims), weight.reshape(dims), color.reshape(*dims, 3),
                      tuple(float(x) for x in lo), voxel, trunc)


def extract_mesh(volume: TSDFVolume, min_weight: float = 1.0, backend: str | None = None):
    """The zero level set of a fused volume as a vertex-coloured :class:`~scenegrad.render.mesh.Mesh`
    (normals out of the surface, towards the cameras); triangles touching unobserved voxels (weight
    below ``min_weight``) are dropped, and so are vertices no triangle uses."""
    from scenegrad.render.iso import marching_cubes
    from scenegrad.render.mesh import Mesh

    observed = volume.weight >= min_weight
    field = torch.where(observed, -volume.tsdf, torch.full_like(volume.tsdf, -1.0))
    iso = marching_cubes(field, 0.0, spacing=volume.voxel, origin=volume.origin, backend=backend)
    if iso.faces.shape[0] == 0:
        raise ValueError("the fused volume has no surface: no view observed a surface inside the bounds")
    flat_obs = observed.reshape(-1)
    vertex_ok = flat_obs[iso.edges[:, 0]] & flat_obs[iso.edges[:, 1]]
    faces = iso.faces[vertex_ok[iso.faces.long()].all(dim=1)]
    used = torch.zeros(iso.vertices.shape[0], dtype=torch.bool)
    used[faces.long().reshape(-1)] = True
    remap = torch.cumsum(used.long(), 0) - 1
    vertices = iso.vertices.detach()[used].float()
    # colour: the fused colours of each vertex's edge ends, blended like its position
    flat_col = volume.color.reshape(-1, 3)
    e = iso.edges[used]
    v0, v1 = field.reshape(-1)[e[:, 0]], field.reshape(-1)[e[:, 1]]
    t = (-v0 / (v1 - v0)).clamp(0, 1)[:, None]
    colors = (flat_col[e[:, 0]] * (1 - t) + flat_col[e[:, 1]] * t).clamp(0, 1)
    return Mesh(vertices=vertices, faces=remap[faces.long()].int(), vertex_colors=colors.float())


def render_splat_depths(splats, cameras: Cameras, min_alpha: float = 0.9,
                        device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Colour ``[N, H, W, 3]`` and expected depth ``[N, H, W]`` of trained splats from each camera; pixels
    with accumulated opacity below ``min_alpha`` get depth 0 (no measurement). Rendered on ``device``
    (default: the splats' device); returned on the CPU, where :func:`fuse_tsdf` runs."""
    from scenegrad.recon.splat import _render, _splats_inputs

    inputs, degree = _splats_inputs(splats, None, device)
    colors, depths = [], []
    with torch.no_grad():
        for i in range(len(cameras)):
            out = _render(inputs, cameras[i], degree, None, render_mode="RGB+ED")
            depth = out.depths[0, ..., 0]
            depths.append(torch.where(out.alphas[0, ..., 0] >= min_alpha, depth, torch.zeros_like(depth)))
            colors.append(out.colors[0].clamp(0, 1))
    return torch.stack(colors).cpu(), torch.stack(depths).cpu()
