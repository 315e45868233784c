"""Benchmark of Pulsar-style sphere rendering (scenegrad.render.spheres.render_spheres).

Scene: ``N`` spheres uniformly at random in the cube [-1, 1]^3 centred 3 units in front of one
pinhole camera (focal length = image width, so the cube fills the view), radius
``0.6 (8 / N)^(1/3)`` (about two spheres overlap each point of the cube), random RGB, opacity 1,
gamma 0.01, depth range [1, 5]. Cases: 10k, 100k and 1M spheres at 512x512 and 1024x1024
(``--quick``: 10k and 100k at 512x512), float32.
Implementations, in the same run: scenegrad native (forward; forward+backward of the sum of the
features to positions, radii and features) and, where affordable, the pure-PyTorch reference
(a [pixels x spheres] computation: run at 10k spheres and 128x128 only, a case of its own);
PyTorch3D's Pulsar where installed, through ``backend="pytorch3d"`` (the same scene and camera; its
forward+backward also takes the alpha channel the adapter adds, one more feature channel; Pulsar
renders with its own blending and tracks gradients for the 5 nearest hits of a pixel; its CPU
path has no OpenMP in the builds seen, so it runs on one thread).
Goals (issue 10) on 2 CPU cores: 1M spheres at 1024x1024 forward+backward under 1 s; at least 20x
faster than Pulsar's CPU path at every size.

    python benchmarks/bench_spheres.py [--quick] [--device cuda] [--json PATH]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Benchmark, parse_args  # noqa: E402

from scenegrad.render.cameras import Cameras  # noqa: E402
from scenegrad.render.spheres import render_spheres  # noqa: E402

KW = dict(near=1.0, far=5.0, gamma=1e-2)


def scene(n: int, res: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(n, 3, generator=g) * 2 - 1 + torch.tensor([0.0, 0.0, 3.0])
    radii = torch.full((n,), 0.6 * (8 / n) ** (1 / 3))
    feats = torch.rand(n, 3, generator=g)
    cams = Cameras(float(res), float(res), res / 2, res / 2, torch.eye(3)[None], torch.zeros(1, 3), res, res)
    return pos.to(device), radii.to(device), feats.to(device), cams.to(device)


def time_backend(bench: Benchmark, case: str, backend: str, pos, radii, feats, cams, repeat: int | None,
                 label: str | None = None) -> None:
    label = label or backend

    def forward():
        with torch.no_grad():
            render_spheres(pos, radii, feats, cams, backend=backend, **KW)

    def forward_backward():
        p, r, f = (x.detach().requires_grad_(True) for x in (pos, radii, feats))
        render_spheres(p, r, f, cams, backend=backend, **KW).features.sum().backward()

    bench.run(case, f"{label} fwd", forward, repeat=repeat)
    bench.run(case, f"{label} fwd+bwd", forward_backward, repeat=repeat)


def main() -> None:
    args = parse_args("spheres")
    device = torch.device(args.device)
    bench = Benchmark("spheres", args)
    sizes = [(10_000, 512), (100_000, 512)] if args.quick else [
        (10_000, 512), (100_000, 512), (1_000_000, 512), (10_000, 1024), (100_000, 1024), (1_000_000, 1024)]
    case = "10k spheres 128x128"
    time_backend(bench, case, "native", *scene(10_000, 128, device), repeat=None)
    time_backend(bench, case, "reference", *scene(10_000, 128, device), repeat=3)
    pulsar = importlib.util.find_spec("pytorch3d") is not None
    for n, res in sizes:
        case = f"{n // 1000}k spheres {res}x{res}"
        data = scene(n, res, device)
        time_backend(bench, case, "native", *data, repeat=None if n < 1_000_000 else 3)
        bench.skip(case, "reference", "the reference's [pixels x spheres] tensors take minutes here; "
                   "it runs in the 10k spheres 128x128 case")
        if not pulsar:
            bench.skip(case, "pulsar fwd+bwd", "pytorch3d is not installed")
        else:
            time_backend(bench, case, "pytorch3d", *data, repeat=3 if n < 1_000_000 else 1, label="pulsar")
    bench.finish(baseline="native fwd+bwd")


if __name__ == "__main__":
    main()
