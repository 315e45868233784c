"""Benchmark of bundle adjustment (scenegrad.recon.ba) against COLMAP's Ceres bundle adjuster (pycolmap).

Cases: random scenes (points in a cube, cameras on a sphere looking at it, each point seen by 5 random
cameras, 0.5 px noise), started from perturbed poses (2 degrees, 0.1 units) and points (0.05 units):
``N`` cameras x ``M`` points x ``5 M`` observations, pinhole intrinsics fixed. Figures per method: wall
time of the solve, final reprojection RMSE (pixels) and mean rotation error after alignment (degrees).
scenegrad also times the backward pass of its implicit layer (gradients of the points and translations
with respect to all observations). COLMAP gets the same scene through a COLMAP text model with the
Huber loss of the same scale (pycolmap ``bundle_adjustment``, default Ceres options).

    python benchmarks/bench_ba.py [--quick] [--no-peers] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS_DIR, machine  # noqa: E402

from scenegrad.datasets.colmap import save_colmap  # noqa: E402
from scenegrad.datasets.scene import Frame, Points, Scene  # noqa: E402
from scenegrad.recon.ba import BAOptions, Observations, bundle_adjust, reprojection_residuals  # noqa: E402
from scenegrad.recon.evaluate import pose_errors  # noqa: E402
from scenegrad.render.cameras import Cameras, project  # noqa: E402
from scenegrad.render.rotations import so3_exp  # noqa: E402

CASES = [(30, 2000), (100, 20000)]
F64 = torch.float64


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="scenegrad benchmark: bundle adjustment (CPU)")
    parser.add_argument("--quick", action="store_true", help="the small case only")
    parser.add_argument("--no-peers", action="store_true", help="skip COLMAP (pycolmap)")
    parser.add_argument("--json", default=None, help="output path (default benchmarks/results/bench_ba.json)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a busy machine)")
    return parser.parse_args(argv)


def make_scene(n_cams: int, n_pts: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n_pts, 3, generator=g, dtype=F64) * 2 - 1
    C = torch.randn(n_cams, 3, generator=g, dtype=F64)
    C = 5 * C / C.norm(dim=1, keepdim=True)
    z = -C / 5
    x = torch.linalg.cross(z, torch.randn(n_cams, 3, generator=g, dtype=F64))
    x = x / x.norm(dim=1, keepdim=True)
    R = torch.stack([x, torch.linalg.cross(z, x), z], 1)
    gt = Cameras(500.0, 500.0, 320.0, 240.0, R, -(R @ C[:, :, None])[:, :, 0], 640, 480)
    cam = torch.rand(n_pts, n_cams, generator=g).argsort(1)[:, :5].reshape(-1)
    pt = torch.arange(n_pts).repeat_interleave(5)
    uv = project(gt, X)[0][cam, pt] + 0.5 * torch.randn(len(cam), 2, generator=g, dtype=F64)
    phi = torch.randn(n_cams, 3, generator=g, dtype=F64) * math.radians(2.0)
    start = Cameras(500.0, 500.0, 320.0, 240.0, so3_exp(phi) @ R,
                    gt.t + 0.1 * torch.randn(n_cams, 3, generator=g, dtype=F64), 640, 480)
    X0 = X + 0.05 * torch.randn(X.shape, generator=g, dtype=F64)
    return gt, start, X0, Observations(cam, pt, uv)


def run_scenegrad(start, X0, obs) -> tuple[Cameras, torch.Tensor, float, dict]:
    uv = obs.uv.clone().requires_grad_()
    t = time.perf_counter()
    res = bundle_adjust(start, X0, Observations(obs.camera_idx, obs.point_idx, uv),
                        options=BAOptions(loss="huber", loss_scale=2.0))
    seconds = time.perf_counter() - t
    t = time.perf_counter()
    (res.points.sum() + res.cameras.t.sum()).backward()
    backward = time.perf_counter() - t
    return res.cameras, res.points.detach(), seconds, {"iterations": res.iterations, "backward_s": backward}


def run_colmap(start, X0, obs) -> tuple[Cameras, torch.Tensor, float, dict]:
    import pycolmap

    n = len(start)
    frames = []
    for i in range(n):
        mine = obs.camera_idx == i
        frames.append(Frame(name=f"{i:05d}.png", metadata={"colmap_xys": obs.uv[mine].numpy(),
                                                            "colmap_point3d_ids": (obs.point_idx[mine] + 1).numpy(),
                                                            "colmap_image_id": i + 1}))
    scene = Scene(frames, start, Points(X0, ids=torch.arange(1, len(X0) + 1)))
    with tempfile.TemporaryDirectory() as tmp:
        save_colmap(scene, tmp, format="bin")
        rec = pycolmap.Reconstruction(tmp)
        options = pycolmap.BundleAdjustmentOptions()
        options.refine_focal_length = False
        options.refine_principal_point = False
        options.refine_extra_params = False
        options.ceres.loss_function_type = pycolmap.LossFunctionType.HUBER
        options.ceres.loss_function_scale = 2.0
        t = time.perf_counter()
        pycolmap.bundle_adjustment(rec, options)
        seconds = time.perf_counter() - t
        R = torch.zeros(n, 3, 3, dtype=F64)
        tt = torch.zeros(n, 3, dtype=F64)
        for image in rec.images.values():
            M = torch.tensor(np.asarray(image.cam_from_world().matrix()))
            R[image.image_id - 1], tt[image.image_id - 1] = M[:, :3], M[:, 3]
        X = torch.zeros_like(X0)
        for pid, p in rec.points3D.items():
            X[pid - 1] = torch.tensor(np.asarray(p.xyz))
    cams = Cameras(500.0, 500.0, 320.0, 240.0, R, tt, 640, 480)
    return cams, X, seconds, {}


def evaluate(name, case, gt, cams, X, obs, seconds, extra) -> dict:
    rmse = float(reprojection_residuals(cams, X, obs).norm(dim=1).pow(2).mean().sqrt())
    return {"case": case, "method": name, "seconds": seconds, "rmse_px": rmse,
            "rot_mean_deg": pose_errors(cams, gt).rot_mean_deg, **extra}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for n_cams, n_pts in CASES[:1] if args.quick else CASES:
        gt, start, X0, obs = make_scene(n_cams, n_pts)
        case = f"{n_cams} cams x {n_pts} pts x {len(obs.uv)} obs"
        print(case, file=sys.stderr)
        rows.append(_row("scenegrad ba", case, gt, run_scenegrad, start, X0, obs))
        if not args.no_peers:
            try:
                rows.append(_row("colmap (pycolmap, Ceres)", case, gt, run_colmap, start, X0, obs))
            except Exception as error:  # a peer failing must not hide our figures
                rows.append({"case": case, "method": "colmap (pycolmap, Ceres)",
                             "error": f"{type(error).__name__}: {error}"})
    _print_table(rows)
    path = Path(args.json) if args.json else RESULTS_DIR / "bench_ba.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": "bench_ba", "machine": machine(), "rows": rows}, indent=2))
    print(f"wrote {path}")


def _row(name, case, gt, run, start, X0, obs) -> dict:
    cams, X, seconds, extra = run(start, X0, obs)
    return evaluate(name, case, gt, cams, X, obs, seconds, extra)


def _print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(x, spec):
        return "–" if x is None else format(x, spec)

    table = Table(title=f"bench_ba: CPU ({torch.get_num_threads()} threads)")
    for column in ("case", "method", "solve s", "backward s", "RMSE px", "rot. err °", "note"):
        table.add_column(column, justify="left" if column in ("case", "method", "note") else "right")
    for r in rows:
        table.add_row(r["case"], r["method"], fmt(r.get("seconds"), ".2f"), fmt(r.get("backward_s"), ".2f"),
                      fmt(r.get("rmse_px"), ".3f"), fmt(r.get("rot_mean_deg"), ".4f"), r.get("error", ""))
    Console(width=130).print(table)


if __name__ == "__main__":
    main()
