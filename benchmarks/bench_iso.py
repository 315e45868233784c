"""Benchmark of iso-surface extraction (scenegrad.render.iso.marching_cubes).

Cases: a sphere-plus-noise field (a sphere SDF of radius 0.6 plus smooth noise of amplitude 0.05,
on [-1, 1]^3) at 128^3, 256^3 and 512^3 (``--quick``: 128^3 only), float32.
Implementations, in the same run: scenegrad native and reference, forward (the mesh) and
forward+backward (the mesh, then the gradient of the sum of the vertex coordinates to the grid
values); Open3D's ``t.geometry.TriangleMesh.create_isosurfaces`` (Flying Edges), scikit-image's
``measure.marching_cubes`` and PyMCubes' ``marching_cubes`` where installed (forward only: none of
them is differentiable). The reference runs at 128^3 and 256^3 only (memory).
Goal on 2 CPU cores: forward at least as fast as Open3D's at every size; backward no slower than
forward.

    python benchmarks/bench_iso.py [--quick] [--device cuda] [--json PATH]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Benchmark, parse_args  # noqa: E402

from scenegrad.render.iso import marching_cubes  # noqa: E402


def sphere_plus_noise(n: int, device: torch.device) -> torch.Tensor:
    x = torch.linspace(-1, 1, n, device=device)
    X, Y, Z = torch.meshgrid(x, x, x, indexing="ij")
    noise = torch.sin(9 * X + 1) * torch.sin(7 * Y + 2) * torch.sin(8 * Z + 3)
    return (X.square() + Y.square() + Z.square()).sqrt() - 0.6 + 0.05 * noise


def main() -> None:
    args = parse_args("iso")
    device = torch.device(args.device)
    bench = Benchmark("iso", args)
    sizes = [128] if args.quick else [128, 256, 512]
    for n in sizes:
        values = sphere_plus_noise(n, device)
        case = f"sphere+noise {n}^3"
        step = 2.0 / (n - 1)
        for backend in ("native", "reference"):
            if backend == "reference" and n > 256:
                bench.skip(case, backend, "the reference's [X, Y, Z, 3] masks need too much memory at 512^3")
                continue

            def forward(backend=backend, values=values, step=step):
                with torch.no_grad():
                    marching_cubes(values, spacing=step, backend=backend)

            def forward_backward(backend=backend, values=values, step=step):
                leaf = values.detach().requires_grad_(True)
                marching_cubes(leaf, spacing=step, backend=backend).vertices.sum().backward()

            bench.run(case, f"{backend} fwd", forward, repeat=None if backend == "native" else 3)
            bench.run(case, f"{backend} fwd+bwd", forward_backward, repeat=None if backend == "native" else 3)
        if device.type != "cpu":
            continue
        grid = values.numpy()
        if importlib.util.find_spec("open3d") is not None:
            import open3d as o3d

            volume = o3d.core.Tensor(grid)
            bench.run(case, "open3d fwd", lambda volume=volume: o3d.t.geometry.TriangleMesh.create_isosurfaces(
                volume, [0.0]))
        else:
            bench.skip(case, "open3d fwd", "open3d is not installed")
        if importlib.util.find_spec("skimage") is not None:
            from skimage.measure import marching_cubes as sk_marching_cubes

            bench.run(case, "scikit-image fwd", lambda grid=grid: sk_marching_cubes(grid, 0.0), repeat=3)
        else:
            bench.skip(case, "scikit-image fwd", "scikit-image is not installed")
        if importlib.util.find_spec("mcubes") is not None:
            import mcubes

            bench.run(case, "pymcubes fwd", lambda grid=grid: mcubes.marching_cubes(grid, 0.0), repeat=3)
        else:
            bench.skip(case, "pymcubes fwd", "PyMCubes is not installed")
    bench.finish(baseline="open3d fwd" if device.type == "cpu" else "native fwd")


if __name__ == "__main__":
    main()
