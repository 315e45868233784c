"""Benchmark of the mesh primitives (issue: differentiable triangle-mesh rendering).

Cases: Spot (5.8k faces, from ../shared/data/meshes/spot; an icosphere of similar size where that
is absent) at 512x512, and a ~1M-face mesh (Spot subdivided, or an icosphere) at 1024x1024,
each seen by 1 and 8 orbiting cameras. Implementations: scenegrad native (forward, and
forward+backward with a random cotangent), the pure-torch reference (small cases only), and
Open3D's RaycastingScene for the visibility pass where Open3D is installed.

    python benchmarks/bench_mesh.py [--quick] [--device cuda] [--json PATH]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Benchmark, parse_args  # noqa: E402

from scenegrad.render.conventions import world_to_clip  # noqa: E402
from scenegrad.render.mesh import rasterize  # noqa: E402

SPOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "meshes" / "spot" / "spot.obj"


def load_mesh(min_faces: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Vertices [V, 3] and faces [F, 3], subdivided until at least ``min_faces``."""
    import trimesh

    if SPOT.exists():
        mesh = trimesh.load(SPOT, force="mesh", process=False)
        name = "spot"
    else:
        mesh = trimesh.creation.icosphere(subdivisions=5)
        name = "icosphere"
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    while len(faces) < min_faces:
        vertices, faces = trimesh.remesh.subdivide(vertices, faces)
    return vertices.astype(np.float32), faces.astype(np.int32), f"{name} {len(faces) / 1000:.0f}k"


def orbit_cameras(vertices: np.ndarray, views: int, size: int, device: torch.device):
    """OpenCV cameras on a circle around the mesh, all looking at its centre."""
    from scenegrad.render.cameras import Cameras

    centre = vertices.mean(0)
    radius = float(np.linalg.norm(vertices - centre, axis=1).max())
    Rs, ts = [], []
    for k in range(views):
        angle = 2 * math.pi * k / views
        eye = centre + 2.5 * radius * np.array([math.sin(angle), -0.3, math.cos(angle)])
        forward = (centre - eye) / np.linalg.norm(centre - eye)
        right = np.cross(forward, [0.0, -1.0, 0.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        R = np.stack([right, down, forward])  # rows: camera axes in world coordinates
        Rs.append(R)
        ts.append(-R @ eye)
    f = 1.2 * size
    n = views
    return Cameras(
        fx=torch.full((n,), f), fy=torch.full((n,), f),
        cx=torch.full((n,), size / 2), cy=torch.full((n,), size / 2),
        R=torch.tensor(np.stack(Rs), dtype=torch.float32), t=torch.tensor(np.stack(ts), dtype=torch.float32),
        width=torch.full((n,), size), height=torch.full((n,), size),
    ).to(device)


def main() -> None:
    args = parse_args("mesh")
    device = torch.device(args.device)
    bench = Benchmark("mesh", args)
    cases = [(5000, 512, 1), (5000, 512, 8)]
    if not args.quick:
        cases += [(1_000_000, 1024, 1), (1_000_000, 1024, 8)]
    for min_faces, size, views in cases:
        run_case(bench, device, min_faces, size, views)
    bench.finish(baseline="reference fwd")


def run_case(bench: Benchmark, device: torch.device, min_faces: int, size: int, views: int) -> None:
    vertices, faces, mesh_name = load_mesh(min_faces)
    cams = orbit_cameras(vertices, views, size, device)
    v = torch.tensor(vertices, device=device)
    pos = world_to_clip(cams, v.expand(views, -1, -1), near=0.01, far=100.0).contiguous()
    tri = torch.tensor(faces, device=device)
    case = f"{mesh_name} {size}² ×{views}"
    cot = torch.randn(views, size, size, 4, device=device)

    bench.run(case, "native fwd", lambda: rasterize(pos, tri, (size, size), backend="native"))

    def fwd_bwd(backend: str) -> None:
        p = pos.detach().requires_grad_(True)
        rast, _ = rasterize(p, tri, (size, size), backend=backend)
        (rast[..., :3] * cot[..., :3]).sum().backward()

    bench.run(case, "native fwd+bwd", lambda: fwd_bwd("native"))
    if len(faces) * size * size * views <= 5000 * 512 * 512 * 8:
        bench.run(case, "reference fwd", lambda: rasterize(pos, tri, (size, size), backend="reference"),
                  repeat=2, warmup=0)
    else:
        bench.skip(case, "reference fwd", "too slow at this size (pure torch, O(pixels x faces))")
    open3d_raycast(bench, case, vertices, faces, cams, size)


def open3d_raycast(bench: Benchmark, case: str, vertices, faces, cams, size: int) -> None:
    try:
        import open3d as o3d
    except ImportError:
        bench.skip(case, "open3d raycast", "open3d not installed (pip install scenegrad[open3d])")
        return
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(vertices), o3d.core.Tensor(faces.astype(np.uint32)))
    rays = []
    K = cams.K.cpu().numpy().astype(np.float64)
    E = cams.viewmats.cpu().numpy().astype(np.float64)
    for k in range(len(cams)):
        rays.append(scene.create_rays_pinhole(o3d.core.Tensor(K[k]), o3d.core.Tensor(E[k]), size, size))
    all_rays = o3d.core.concatenate(rays, 0)
    bench.run(case, "open3d raycast", lambda: scene.cast_rays(all_rays))


if __name__ == "__main__":
    main()
