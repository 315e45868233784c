"""Issue 7, the optimisation test of differentiable iso-surface extraction: starting from a sphere,
fit an SDF grid so that the silhouettes of its marching-cubes mesh, rendered with the mesh renderer
(rasterize + antialias) from 8 views, match those of Spot; the fitted surface must come within 2%
of Spot's size (bounding-box diagonal) in mean symmetric surface distance.

Gradients flow: silhouette pixels -> antialias (edge coverage) -> clip positions -> marching-cubes
vertices -> SDF grid values next to the surface. An eikonal term on the grid (finite differences,
|grad| ~ 1 in grid units) keeps the field distance-like so the surface can keep moving.

Silhouettes only constrain the visual hull: Spot's concave parts cannot be recovered, which is
part of the measured distance (see the assertion comments for the figures measured).
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from scenegrad.datasets.generate import sample_surface
from scenegrad.render.cameras import Cameras
from scenegrad.render.conventions import world_to_clip
from scenegrad.render.iso import marching_cubes
from scenegrad.render.mesh import Mesh, antialias, rasterize

from ..conftest import load_spot


@pytest.fixture(scope="module")
def spot() -> Mesh:
    return load_spot()


def look_at_cameras(directions: torch.Tensor, centre: torch.Tensor, distance: float, res: int,
                    focal: float) -> Cameras:
    """OpenCV cameras at ``centre + distance * direction`` looking at ``centre``."""
    Rs, ts = [], []
    for d in directions.double():
        forward = -d / d.norm()
        up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
        if abs(float(forward @ up)) > 0.95:
            up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        right = torch.linalg.cross(forward, -up)
        right = right / right.norm()
        down = torch.linalg.cross(forward, right)
        R = torch.stack([right, down, forward])
        Rs.append(R)
        ts.append(-R @ (centre.double() - distance * forward))
    return Cameras(fx=focal, fy=focal, cx=res / 2, cy=res / 2, R=torch.stack(Rs).float(), t=torch.stack(ts).float(),
                   width=res, height=res)


def silhouettes(vertices: torch.Tensor, faces: torch.Tensor, cams: Cameras, near: float, far: float) -> torch.Tensor:
    """``[N, H, W]`` antialiased coverage (differentiable in ``vertices`` at the silhouette)."""
    H, W = int(cams.height[0]), int(cams.width[0])
    pos = world_to_clip(cams, vertices[None].expand(len(cams), -1, -1), near=near, far=far).contiguous()
    rast, _ = rasterize(pos, faces, (H, W))
    covered = (rast[..., 3:4] > 0).to(vertices.dtype)
    return antialias(covered.contiguous(), rast, pos, faces)[..., 0]


def eikonal(grid: torch.Tensor) -> torch.Tensor:
    """Mean (|forward-difference gradient| - 1)^2 of a grid in grid units."""
    c = grid[:-1, :-1, :-1]
    g = torch.stack([grid[1:, :-1, :-1] - c, grid[:-1, 1:, :-1] - c, grid[:-1, :-1, 1:] - c], -1)
    return (torch.sqrt(g.square().sum(-1) + 1e-8) - 1).square().mean()


def mean_surface_distance(a: Mesh, b: Mesh, count: int = 20000) -> tuple[float, float]:
    """Mean distance of points sampled on ``a`` to surface ``b``, and of points on ``b`` to ``a``."""
    o3d = pytest.importorskip("open3d", reason="Open3D is not installed (pip install open3d-cpu==0.19.0)")

    def distance(points: Mesh, to: Mesh, seed: int) -> float:
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(to.vertices.detach().float().numpy()),
                            o3d.core.Tensor(to.faces.int().numpy().astype("uint32")))
        xyz = sample_surface(points, count, seed=seed).xyz.float().numpy()
        return float(scene.compute_distance(o3d.core.Tensor(xyz)).numpy().mean())

    return distance(a, b, 1), distance(b, a, 2)


def is_closed(faces: torch.Tensor) -> bool:
    """Every undirected edge is shared by exactly two faces."""
    f = faces.long()
    edges = torch.sort(torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), dim=1).values
    _, counts = torch.unique(edges, dim=0, return_counts=True)
    return bool(f.numel() > 0 and (counts == 2).all())


@pytest.mark.slow
def test_sdf_grid_fits_spot_silhouettes(native, spot, one_thread):
    start_time = time.perf_counter()
    lo, hi = spot.vertices.min(0).values, spot.vertices.max(0).values
    centre = (lo + hi) / 2
    size = (hi - lo).norm().item()  # Spot's bounding-box diagonal

    # 8 views from jittered cube-corner directions (above, below and all around), fixed seed.
    g = torch.Generator().manual_seed(0)
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float64)
    directions = corners + 0.3 * torch.randn(8, 3, generator=g, dtype=torch.float64)
    res, distance = 128, 2.0 * size
    cams = look_at_cameras(directions, centre, distance, res, focal=res * distance / (1.1 * size))
    near, far = 0.1 * size, 10 * size
    target = silhouettes(spot.vertices, spot.faces, cams, near, far)
    assert 0.05 < target.mean() < 0.5  # Spot is in view and not cut off

    # SDF grid (stored in grid units) over Spot's box padded by 15% of its longest side: 40 points
    # along the longest axis; initialised as a sphere at the box centre.
    pad = 0.15 * (hi - lo).max()
    h = ((hi - lo + 2 * pad) / 39).max().item()
    dims = [int(math.ceil((hi - lo + 2 * pad)[i].item() / h)) + 1 for i in range(3)]
    origin = centre - h * (torch.tensor(dims) - 1) / 2
    axes = [origin[i] + h * torch.arange(dims[i]) for i in range(3)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    radius = 0.35 * (hi - lo).max().item()
    grid = (((points - centre).norm(dim=-1) - radius) / h).requires_grad_(True)

    def extract(values: torch.Tensor):
        return marching_cubes(values * h, spacing=h, origin=tuple(origin.tolist()))

    with torch.no_grad():
        sphere = extract(grid)
        sphere_msd = sum(mean_surface_distance(Mesh(vertices=sphere.vertices, faces=sphere.faces), spot)) / 2

    opt = torch.optim.Adam([grid], lr=0.15)
    losses = []
    for _ in range(250):
        iso = extract(grid)
        sil_loss = (silhouettes(iso.vertices, iso.faces, cams, near, far) - target).square().mean()
        loss = sil_loss + 0.1 * eikonal(grid)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(sil_loss.item())

    with torch.no_grad():
        iso = extract(grid)
        fitted = Mesh(vertices=iso.vertices.detach(), faces=iso.faces)
        sil = silhouettes(fitted.vertices, fitted.faces, cams, near, far) > 0.5
    inside = target > 0.5
    iou = ((sil & inside).sum() / (sil | inside).sum()).item()
    fit_to_spot, spot_to_fit = mean_surface_distance(fitted, spot)
    msd = (fit_to_spot + spot_to_fit) / 2
    elapsed = time.perf_counter() - start_time
    print(f"\nsilhouette MSE {losses[0]:.4f} -> {losses[-1]:.5f}, IoU {iou:.4f}, "
          f"mean surface distance {msd:.4f} = {100 * msd / size:.2f}% of size {size:.3f} "
          f"(sphere: {100 * sphere_msd / size:.2f}%; fit->Spot {100 * fit_to_spot / size:.2f}%, "
          f"Spot->fit {100 * spot_to_fit / size:.2f}%), {fitted.num_faces} faces, {elapsed:.1f} s")

    assert is_closed(fitted.faces)
    # Measured (40-point grid, 128^2, 250 steps): MSE 0.093 -> 0.0022, IoU 0.984, mean surface
    # distance 1.14% of Spot's size (fit->Spot 1.59%, Spot->fit 0.70%; the starting sphere: 6.51%).
    # Camera seeds 1-3 gave 0.99-1.09% (fit->Spot up to 1.51%): fit->Spot is the larger side since
    # the visual hull fills Spot's concavities, which silhouettes cannot see.
    assert losses[-1] < 0.05 * losses[0]
    assert iou > 0.97
    assert msd < 0.015 * size  # the goal is 2%; measured 1.14%
    assert max(fit_to_spot, spot_to_fit) < 0.02 * size


def components(faces: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """Connected-component label ``0..C-1`` of every face (min-label propagation over edges)."""
    f = faces.long()
    a = torch.cat([f[:, 0], f[:, 1], f[:, 2]])
    b = torch.cat([f[:, 1], f[:, 2], f[:, 0]])
    labels = torch.arange(num_vertices)
    while True:
        new = labels.scatter_reduce(0, a, labels[b], "amin").scatter_reduce(0, b, labels[a], "amin")
        if torch.equal(new, labels):
            return torch.unique(labels[f[:, 0]], return_inverse=True)[1]
        labels = new


def test_sdf_grid_changes_topology_to_fit_two_spheres(native, one_thread):
    """Topology change that a mesh with fixed connectivity cannot make: one sphere splits into two
    (target: two spheres of radius 0.5 at x = +-0.8), driven by silhouettes alone."""
    def two_spheres(p: torch.Tensor) -> torch.Tensor:
        c = torch.tensor([0.8, 0.0, 0.0])
        return torch.minimum((p - c).norm(dim=-1), (p + c).norm(dim=-1)) - 0.5

    x = torch.linspace(-1.6, 1.6, 81)
    truth = marching_cubes(two_spheres(torch.stack(torch.meshgrid(x, x, x, indexing="ij"), -1)),
                           spacing=3.2 / 80, origin=(-1.6, -1.6, -1.6))
    g = torch.Generator().manual_seed(0)
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float64)
    directions = corners + 0.3 * torch.randn(8, 3, generator=g, dtype=torch.float64)
    res, distance, near, far = 96, 6.0, 0.3, 30.0
    cams = look_at_cameras(directions, torch.zeros(3), distance, res, focal=res * distance / 3.3)
    target = silhouettes(truth.vertices, truth.faces, cams, near, far)

    n = 32
    h = 3.2 / (n - 1)
    xs = torch.linspace(-1.6, 1.6, n)
    grid = ((torch.stack(torch.meshgrid(xs, xs, xs, indexing="ij"), -1).norm(dim=-1) - 1.0) / h).requires_grad_(True)
    start = marching_cubes(grid.detach() * h, spacing=h, origin=(-1.6,) * 3)
    assert int(components(start.faces, len(start.vertices)).max()) == 0  # a single piece to begin with
    opt = torch.optim.Adam([grid], lr=0.1)
    losses = []
    for _ in range(200):
        iso = marching_cubes(grid * h, spacing=h, origin=(-1.6,) * 3)
        loss = (silhouettes(iso.vertices, iso.faces, cams, near, far) - target).square().mean()
        opt.zero_grad()
        (loss + 0.1 * eikonal(grid)).backward()
        opt.step()
        losses.append(loss.item())

    iso = marching_cubes(grid.detach() * h, spacing=h, origin=(-1.6,) * 3)
    labels = components(iso.faces, len(iso.vertices))
    counts = torch.bincount(labels)
    big = counts.argsort(descending=True)[:2]
    centres = torch.stack([iso.vertices[iso.faces[labels == c].long().flatten()].mean(0) for c in big])
    print(f"\nsilhouette MSE {losses[0]:.4f} -> {losses[-1]:.5f}; faces per component {counts.tolist()}; "
          f"centres of the two largest {centres.tolist()}")
    assert is_closed(iso.faces)
    assert losses[-1] < 0.05 * losses[0]
    # Two large pieces, one around each sphere centre. Silhouettes cannot see inside, so small
    # closed bubbles may remain inside the spheres (measured: one or two, of 8-20 faces, among ~2200).
    assert counts[big].sum() > 0.95 * counts.sum() and counts[big].min() > 0.4 * counts.sum()
    torch.testing.assert_close(centres[:, 0].sort().values, torch.tensor([-0.8, 0.8]), atol=0.05, rtol=0)
    assert centres[:, 1:].abs().max() < 0.05
