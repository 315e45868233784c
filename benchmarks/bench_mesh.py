"""Benchmark of the mesh primitives (issue: differentiable triangle-mesh rendering).

Cases: Spot (5.8k faces, from ../shared/data/meshes/spot; an icosphere of similar size where that
is absent) at 512x512, and a ~1M-face mesh (Spot subdivided, or an icosphere) at 1024x1024,
each seen by 1 and 8 orbiting cameras. Figures: rasterize forward and forward+backward (native;
the pure-torch reference on the small cases), Open3D's RaycastingScene for the visibility pass
where Open3D is installed, and for Spot the full textured render (rasterize + interpolate +
trilinear texture + antialias) forward and forward+backward, native and reference, plus
``render_mesh`` with Lambert shading (native). With ``--device cuda`` and nvdiffrast installed,
the same rasterize and full-render rows through ``backend="nvdiffrast"`` (nvdiffrast's CUDA
rasterizer and kernels), for the issue's goal of 1.5x nvdiffrast's time on a GPU. Speed-ups are
against the reference rasterizer.

    python benchmarks/bench_mesh.py [--quick] [--device cuda] [--json PATH]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Benchmark, parse_args  # noqa: E402

from scenegrad.datasets.synthetic import orbit_cameras  # noqa: E402
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


def full_render(bench: Benchmark, case: str, cams, size: int, device: torch.device, backend: str) -> None:
    """The textured Spot, forward and forward+backward (to vertices and texture), three ways:

    - ``render``: the four primitives as a user composes them (rasterize, interpolate UVs with
      their screen-space derivatives, trilinear texture of the covered pixels (``mask``), antialias):
      the issue's "full render";
    - ``render where``: the same with nvdiffrast's idiom for the background, the texture sampled
      everywhere and ``torch.where(rast[..., 3:] > 0, color, 0)`` after it (on the CPU, that
      ``where`` with its backward costs more than any of the native kernels but the texture's);
    - ``render_mesh``: :func:`render_mesh` with Lambert shading, which adds depth and normals
      interpolation, shading and alpha in torch.
    """
    from scenegrad.datasets.meshes import load_mesh
    from scenegrad.render.mesh import antialias, antialias_topology, interpolate, render_mesh, texture

    if not SPOT.exists():
        bench.skip(case, f"{backend} render", "needs the textured Spot mesh (../shared/data)")
        return
    mesh = load_mesh(SPOT).to(device=device)
    topology = antialias_topology(mesh.faces)
    label = backend

    def primitives(vertices: torch.Tensor, tex: torch.Tensor, where: bool = False) -> torch.Tensor:
        pos = world_to_clip(cams, vertices.expand(len(cams), -1, -1), near=0.01, far=100.0).contiguous()
        rast, rast_db = rasterize(pos, mesh.faces, (size, size), backend=backend)
        uv, uv_da = interpolate(mesh.uvs, rast, mesh.uv_faces, rast_db, diff_attrs="all", backend=backend)
        if where:
            color = texture(tex, uv, uv_da, filter_mode="linear-mipmap-linear", backend=backend)
            color = torch.where(rast[..., 3:] > 0, color, 0.0)
        else:
            color = texture(tex, uv, uv_da, filter_mode="linear-mipmap-linear", mask=rast[..., 3] > 0,
                            backend=backend)
        return antialias(color, rast, pos, mesh.faces, topology=topology, backend=backend)

    def shaded(vertices: torch.Tensor, tex: torch.Tensor) -> torch.Tensor:
        m = type(mesh)(vertices=vertices, faces=mesh.faces, normals=mesh.normals, uvs=mesh.uvs,
                       uv_faces=mesh.uv_faces, texture=tex)
        return render_mesh(m, cams, shading="lambert", topology=topology, backend=backend, near=0.01,
                           far=100.0).color

    # The reference takes about a minute per 512^2 render on 2 cores: time it once, without warm-up.
    repeat, warmup = (1, 0) if backend == "reference" else (None, 1)
    variants = (("render", primitives), ("render where", lambda v, t: primitives(v, t, where=True)),
                ("render_mesh", shaded))
    for name, fn in variants:
        def forward(fn=fn) -> None:
            with torch.no_grad():
                fn(mesh.vertices, mesh.texture)

        def forward_backward(fn=fn) -> None:
            vertices = mesh.vertices.detach().requires_grad_(True)
            tex = mesh.texture.detach().requires_grad_(True)
            fn(vertices, tex).square().mean().backward()

        bench.run(case, f"{label} {name} fwd", forward, repeat=repeat, warmup=warmup)
        bench.run(case, f"{label} {name} fwd+bwd", forward_backward, repeat=repeat, warmup=warmup)
        if backend == "reference":
            break  # the reference render_mesh adds nothing the reference primitives do not show


def run_case(bench: Benchmark, device: torch.device, min_faces: int, size: int, views: int) -> None:
    vertices, faces, mesh_name = load_mesh(min_faces)
    centre = vertices.mean(0)
    radius = float(np.linalg.norm(vertices - centre, axis=1).max())
    cams = orbit_cameras(views, 2.5 * radius, size, size, 1.2 * size, centre=tuple(centre.tolist())).to(device)
    v = torch.tensor(vertices, device=device)
    pos = world_to_clip(cams, v.expand(views, -1, -1), near=0.01, far=100.0).contiguous()
    tri = torch.tensor(faces, device=device)
    case = f"{mesh_name} {size}² ×{views}"
    nvdiffrast = device.type == "cuda" and importlib.util.find_spec("nvdiffrast") is not None
    cot = torch.randn(views, size, size, 4, device=device)

    bench.run(case, "native fwd", lambda: rasterize(pos, tri, (size, size), backend="native"))

    def fwd_bwd(backend: str) -> None:
        p = pos.detach().requires_grad_(True)
        rast, _ = rasterize(p, tri, (size, size), backend=backend)
        (rast[..., :3] * cot[..., :3]).sum().backward()

    bench.run(case, "native fwd+bwd", lambda: fwd_bwd("native"))
    if nvdiffrast:
        bench.run(case, "nvdiffrast fwd", lambda: rasterize(pos, tri, (size, size), backend="nvdiffrast"))
        bench.run(case, "nvdiffrast fwd+bwd", lambda: fwd_bwd("nvdiffrast"))
    if len(faces) * size * size * views <= 5000 * 512 * 512 * 8:
        bench.run(case, "reference fwd", lambda: rasterize(pos, tri, (size, size), backend="reference"),
                  repeat=2, warmup=0)
    else:
        bench.skip(case, "reference fwd", "too slow at this size (pure torch, O(pixels x faces))")
    open3d_raycast(bench, case, vertices, faces, cams, size)
    if min_faces <= 5000:
        full_render(bench, case, cams, size, device, "native")
        if nvdiffrast:
            full_render(bench, case, cams, size, device, "nvdiffrast")
        if views == 1:
            full_render(bench, case, cams, size, device, "reference")


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
