"""Benchmark of Gaussian ``rasterize_to_pixels`` (tile-binned alpha compositing).

Case: the Mip-NeRF 360 garden points (``../shared/data/points/garden/test_garden.npz``, 138,766
points, 3 views at 648x420) as isotropic Gaussians: scale = mean distance to the 3 nearest
neighbours, opacity 0.8, RGB from the points. They are projected once per view (untimed) with
:func:`project_gaussians` (or an inline isotropic projection where that module is absent), then
``rasterize_to_pixels`` is timed per view, forward and forward+backward (gradients to means2d,
conics, colors, opacities), native and reference. The reference keeps an autograd graph of
``[pixels, Gaussians]`` tensors per tile, too large for the full view on this machine: it is
timed once on a 160x160 crop (the same crop is timed natively too, for the ratio).

    python benchmarks/bench_gaussians.py [--quick] [--device cuda] [--json PATH]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Benchmark, parse_args  # noqa: E402

from scenegrad.render.gaussians.rasterize import rasterize_to_pixels  # noqa: E402

GARDEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "points" / "garden" / "test_garden.npz"


def knn_scale(points: np.ndarray, k: int = 3) -> np.ndarray:
    """Mean distance of each point to its k nearest neighbours."""
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(points).query(points, k=k + 1)
    return np.maximum(dist[:, 1:].mean(1), 1e-7)


def project(means: torch.Tensor, scales: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor, width: int,
            height: int) -> tuple[torch.Tensor, ...]:
    """(radii, means2d, depths, conics) of isotropic Gaussians, by project_gaussians where it exists."""
    try:
        from scenegrad.render.gaussians.project import project_gaussians
    except ImportError:
        project_gaussians = None
    if project_gaussians is not None:
        quats = torch.zeros(len(means), 4, device=means.device)
        quats[:, 0] = 1
        radii, means2d, depths, conics, _ = project_gaussians(
            means, quats, scales[:, None].expand(-1, 3).contiguous(), viewmats, Ks, width, height
        )
        return radii, means2d, depths, conics
    # Isotropic: 2D covariance (f s / z)^2 I + 0.3 I (f = mean focal length).
    cam = torch.einsum("cij,nj->cni", viewmats[:, :3, :3], means) + viewmats[:, None, :3, 3]
    z = cam[..., 2]
    f = 0.5 * (Ks[:, 0, 0] + Ks[:, 1, 1])[:, None]
    xy = cam[..., :2] / z.clamp(min=1e-6)[..., None]
    means2d = xy * torch.stack([Ks[:, 0, 0], Ks[:, 1, 1]], -1)[:, None] + Ks[:, None, :2, 2]
    var = (f * scales[None] / z.clamp(min=1e-6)) ** 2 + 0.3
    conics = torch.stack([1 / var, torch.zeros_like(var), 1 / var], -1)
    radii = torch.ceil(3 * var.sqrt()).to(torch.int32)
    inside = ((means2d + radii[..., None] > 0) & (means2d - radii[..., None] < torch.tensor(
        [width, height], device=means.device))).all(-1)
    radii = torch.where((z > 0.01) & inside, radii, torch.zeros_like(radii))
    return radii, means2d, z, conics


def load_views(device: torch.device):
    data = np.load(GARDEN)
    width, height = int(data["width"]), int(data["height"])
    points = data["means3d"].astype(np.float32)
    means = torch.tensor(points, device=device)
    scales = torch.tensor(knn_scale(points), dtype=torch.float32, device=device)
    viewmats = torch.tensor(data["viewmats"], device=device)
    Ks = torch.tensor(data["Ks"], device=device)
    colors = torch.tensor(data["colors"], device=device).float() / 255
    with torch.no_grad():
        radii, means2d, depths, conics = project(means, scales, viewmats, Ks, width, height)
    opacities = torch.full_like(depths, 0.8)
    return width, height, radii, means2d, depths, conics, colors, opacities


def full_render(bench: Benchmark, device: torch.device, view: int) -> None:
    """The whole renderer as a trainer calls it: rasterize_gaussians (native projection and
    rasterization) of anisotropic Gaussians, gradients to every parameter; project_gaussians alone,
    native and reference; gsplat's whole render in the same run where it is installed (CUDA)."""
    import importlib.util

    from scenegrad.render.gaussians import project_gaussians, rasterize_gaussians

    data = np.load(GARDEN)
    width, height = int(data["width"]), int(data["height"])
    points = data["means3d"].astype(np.float32)
    means = torch.tensor(points, device=device)
    log_scales = torch.tensor(np.log(knn_scale(points)), dtype=torch.float32, device=device)[:, None].repeat(1, 3)
    quats = torch.nn.functional.normalize(torch.randn(len(points), 4, generator=torch.Generator().manual_seed(0)),
                                          dim=-1).to(device)
    colors = torch.tensor(data["colors"], device=device).float() / 255
    viewmats = torch.tensor(data["viewmats"][view:view + 1], device=device)
    Ks = torch.tensor(data["Ks"][view:view + 1], device=device)
    opacities = torch.full((len(points),), 0.8, device=device)
    case = f"garden {width}x{height} view {view}"

    def render(grad: bool, backend: str = "native"):
        params = [t.detach().requires_grad_(grad) for t in (means, quats, log_scales, opacities, colors)]
        out = rasterize_gaussians(params[0], params[1], params[2].exp(), params[3], params[4], viewmats, Ks, width,
                                  height, backend=backend)
        if grad:
            out.colors.square().sum().backward()

    def project(backend: str) -> None:
        params = [t.detach().requires_grad_(True) for t in (means, quats, log_scales)]
        _, m2d, dep, con, _ = project_gaussians(params[0], params[1], params[2].exp(), viewmats, Ks, width, height,
                                                backend=backend)
        (m2d.sum() + dep.sum() + con.sum()).backward()

    bench.run(case, "rasterize_gaussians fwd", lambda: render(False))
    bench.run(case, "rasterize_gaussians fwd+bwd", lambda: render(True))
    if device.type == "cuda" and importlib.util.find_spec("gsplat") is not None:
        bench.run(case, "gsplat rasterization fwd", lambda: render(False, "gsplat"))
        bench.run(case, "gsplat rasterization fwd+bwd", lambda: render(True, "gsplat"))
    bench.run(case, "project_gaussians native fwd+bwd", lambda: project("native"))
    bench.run(case, "project_gaussians reference fwd+bwd", lambda: project("reference"), repeat=3)


def main() -> None:
    args = parse_args("gaussians")
    device = torch.device(args.device)
    bench = Benchmark("gaussians", args)
    if not GARDEN.exists():
        bench.skip("garden", "all", f"missing {GARDEN}")
        bench.finish(baseline="reference fwd+bwd")
        return
    width, height, radii, means2d, depths, conics, colors, opacities = load_views(device)
    C, N = radii.shape
    views = 1 if args.quick else C
    print(f"garden: {N} Gaussians, {width}x{height}, {views} views; visible per view: "
          f"{(radii > 0).sum(1).tolist()}", file=sys.stderr)

    def inputs(view: int, crop: tuple[int, int, int, int] | None):
        m2d, r = means2d[view:view + 1], radii[view:view + 1]
        w, h = width, height
        if crop is not None:  # shift the image origin to (x0, y0): the crop renders as a w x h image
            x0, y0, w, h = crop
            m2d = m2d - torch.tensor([x0, y0], dtype=m2d.dtype, device=device)
        cols = colors[None].expand(1, N, 3).contiguous()
        return m2d, conics[view:view + 1], cols, opacities[view:view + 1], depths[view:view + 1], r, w, h

    def timed(case: str, label: str, backend: str, view: int, crop=None, repeat=None, warmup=1) -> None:
        m2d, con, cols, op, dep, r, w, h = inputs(view, crop)

        def forward() -> None:
            with torch.no_grad():
                rasterize_to_pixels(m2d, con, cols, op, dep, r, w, h, backend=backend)

        def forward_backward() -> None:
            leaves = [t.detach().requires_grad_(True) for t in (m2d, con, cols, op)]
            img, alpha = rasterize_to_pixels(*leaves, dep, r, w, h, backend=backend)
            (img.square().sum() + alpha.sum()).backward()

        bench.run(case, f"{label} fwd", forward, repeat=repeat, warmup=warmup)
        bench.run(case, f"{label} fwd+bwd", forward_backward, repeat=repeat, warmup=warmup)

    for view in range(views):
        timed(f"garden {width}x{height} view {view}", "native", "native", view)
    full_render(bench, device, view=0)
    # The reference on a crop (once, no warm-up), and native on the same crop.
    crop = (240, 130, 160, 160)
    case = f"garden crop {crop[2]}x{crop[3]} view 0"
    timed(case, "native", "native", 0, crop)
    timed(case, "reference", "reference", 0, crop, repeat=1, warmup=0)
    bench.finish(baseline="reference fwd+bwd")
    by = {(t.case, t.impl): t.median_ms for t in bench.timings}
    for mode in ("fwd", "fwd+bwd"):
        native_ms, ref_ms = by.get((case, f"native {mode}")), by.get((case, f"reference {mode}"))
        if native_ms and ref_ms:
            print(f"{case}: native {mode} is {ref_ms / native_ms:.1f}x faster than reference {mode}")
    full = [t for t in bench.timings if t.case.startswith("garden 6") and t.impl == "native fwd+bwd"]
    if full:
        mean = sum(t.median_ms for t in full) / len(full)
        print(f"native fwd+bwd per view: {mean:.1f} ms (goal < 1000 ms on 2 CPU cores); "
              f"pixels per view {width * height}, tiles {math.ceil(width / 16) * math.ceil(height / 16)}")


if __name__ == "__main__":
    main()
