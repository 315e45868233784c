"""Benchmark of 3D Gaussian splatting training (scenegrad.recon.splat) on a real capture, on CPU
(or ``--device cuda``).

Scene: the instant-ngp fox (``../shared/data/posed/fox``: 50 phone photos 1080x1920 with OpenCV
distortion, ``transforms.json``), undistorted (:func:`scenegrad.datasets.undistort.undistort_scene`,
``alpha="valid"``), trained at 1/8 resolution (135x240), every 8th image held out (7 test views).

Initialisation: scenegrad has no SfM yet and the fox ships no seed points, so the run starts from
random points in the cameras' frustum intersection (:func:`scenegrad.recon.splat.random_frustum_points`,
the fast preset's 20k points, grey). Schedule: :meth:`SplatConfig.fast` (SH degree 1, at most 50k
Gaussians) *scaled* to the number of iterations the time budget allows: a short calibration run
measures seconds per iteration (iterations 10 to 30, after the warm-up), the run is planned for the
budget at that rate and stopped at the budget in any case.

Figures: held-out PSNR / SSIM over training time, the final Gaussian count, iterations per second;
a table on stdout and JSON (``--json`` or ``benchmarks/results/splat_train.json``). Goal: > 24 dB
held-out PSNR after 15 minutes on CPU.

``--scene torus`` trains instead on a synthetic scene with exact cameras (issue 5's other goal,
> 30 dB held-out): the textured torus of :func:`scenegrad.datasets.generate.synthetic_scene`, 40
orbit views at 160x120, every 8th held out, initialised from 2000 points sampled on its surface
(what an SfM would give), white background, the same fast schedule.

    python benchmarks/bench_splat_train.py [--scene fox|torus] [--minutes 15] [--json PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS_DIR, machine  # noqa: E402

from scenegrad.datasets.scene import Frame, Scene  # noqa: E402
from scenegrad.datasets.transforms import load_transforms  # noqa: E402
from scenegrad.datasets.undistort import undistort_scene  # noqa: E402
from scenegrad.recon.splat import SplatConfig, train  # noqa: E402
from scenegrad.render.cameras import resize  # noqa: E402

FOX = Path(__file__).resolve().parents[2] / "shared" / "data" / "posed" / "fox"
GOAL_PSNR = {"fox": 24.0, "torus": 30.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="scenegrad benchmark: splat_train (3DGS training on CPU)")
    parser.add_argument("--scene", choices=["fox", "torus"], default="fox", help="real fox or synthetic torus")
    parser.add_argument("--minutes", type=float, default=15.0, help="training time budget (evaluation excluded)")
    parser.add_argument("--downscale", type=float, default=8.0, help="image downscale factor (8: 135x240)")
    parser.add_argument("--json", default=None, help="output path (default benchmarks/results/splat_train.json)")
    parser.add_argument("--out", default=None, help="also write checkpoints, point_cloud.ply, metrics.json here")
    parser.add_argument("--device", default="cpu", help="where the trainer runs: cpu, cuda or cuda:N")
    parser.add_argument("--evals", type=int, default=10, help="held-out evaluations during the run")
    parser.add_argument("--quick", action="store_true", help="a 1-minute smoke run")
    return parser.parse_args(argv)


def load_fox(downscale: float) -> tuple[Scene, tuple[int, int]]:
    """The undistorted fox with every image decoded once, area-downscaled and held in memory, and
    cameras resized to match (so calibration and training share one decode)."""
    scene = undistort_scene(load_transforms(FOX), alpha="valid")
    cams = scene.cameras.to(dtype=torch.float32)
    W, H = int(cams.width[0]), int(cams.height[0])
    size = (max(1, round(W / downscale)), max(1, round(H / downscale)))
    frames = []
    for frame in scene.frames:
        img = frame.image()[..., :3].permute(2, 0, 1)[None]
        small = F.interpolate(img, size=(size[1], size[0]), mode="area")[0].permute(1, 2, 0).contiguous()
        frames.append(Frame(name=frame.name, image_fn=lambda x=small: x))
    return Scene(frames, resize(cams, size), None, scene.root, dict(scene.metadata)), size


def main() -> None:
    args = parse_args()
    from scenegrad.recon.device import resolve_device

    try:
        resolve_device(args.device)
    except ValueError as error:
        raise SystemExit(f"bench_splat_train: {error}") from error
    budget = 60.0 * (1.0 if args.quick else args.minutes)
    goal = GOAL_PSNR[args.scene]
    t = time.perf_counter()
    if args.scene == "fox":
        if not (FOX / "transforms.json").is_file():
            raise SystemExit(f"bench_splat_train: the fox capture is missing ({FOX})")
        scene, size = load_fox(args.downscale)
        init_points, init = None, "random frustum intersection, 20000 points"
        base = dataclasses.replace(SplatConfig.fast(), name="fast (fox)", downscale=1.0, max_side=None)
        label = "fox (instant-ngp), undistorted"
    else:
        from scenegrad.datasets.generate import synthetic_scene

        size = (160, 120)
        scene = synthetic_scene("torus", path="orbit", count=40, size=size, points=2000)
        init_points, init = scene.points, "2000 points sampled on the surface (SfM-like)"
        base = dataclasses.replace(SplatConfig.fast(), name="fast (torus)", max_side=None,
                                   background=(1.0, 1.0, 1.0))
        label = "synthetic torus, exact cameras, 40 orbit views"

    # calibration: seconds per iteration at the start of the schedule (images are loaded here too)
    base = dataclasses.replace(base, device=args.device)
    calib = dataclasses.replace(base.scaled(1000), iterations=30, checkpoint_every=None, test_every=None)
    setup_s = time.perf_counter() - t
    probe = train(scene, init_points, calib, eval_every=10, progress=False)
    first, last = probe.history[0], probe.history[-1]  # iterations 10 and 30: skip the warm-up
    sec_per_it = (last.seconds - first.seconds) / max(last.iteration - first.iteration, 1)
    iterations = int(max(100, min(base.iterations, budget / max(sec_per_it, 1e-6))))
    config = dataclasses.replace(base.scaled(iterations), max_seconds=budget,
                                 checkpoint_every=None if args.out is None else max(1, iterations // 5))
    print(f"{args.scene}: {len(scene)} frames, {sec_per_it:.3f} s/iteration at the start -> planning "
          f"{iterations} iterations in {budget:.0f} s (setup {time.perf_counter() - t:.1f} s)", file=sys.stderr)

    result = train(scene, init_points, config, out_dir=args.out, eval_every=max(1, iterations // args.evals),
                   progress=True)
    rows = [dataclasses.asdict(r) for r in result.history]
    final = result.history[-1]
    payload = {
        "benchmark": "splat_train",
        "machine": machine(),
        "device": args.device,
        "scene": label,
        "resolution": list(size),
        "train_views": len(result.train_indices),
        "test_views": len(result.test_indices),
        "init": init,
        "budget_seconds": budget,
        "setup_seconds": setup_s,
        "planned_iterations": iterations,
        "iterations": result.iterations,
        "train_seconds": result.seconds,
        "iterations_per_second": result.iterations / max(result.seconds, 1e-9),
        "final_psnr": final.psnr,
        "final_ssim": final.ssim,
        "lpips": None,
        "num_gaussians": result.num_gaussians,
        "goal_psnr": goal,
        "goal_met": final.psnr is not None and final.psnr > goal,
        "history": rows,
        "densify": [dataclasses.asdict(r) for r in result.densify_log],
        "config": dataclasses.asdict(config),
    }
    _print_table(result, payload)
    default = "splat_train.json" if args.scene == "fox" else f"splat_train_{args.scene}.json"
    path = Path(args.json) if args.json else RESULTS_DIR / default
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")


def _print_table(result, payload: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"splat_train: {payload['scene']} {payload['resolution'][0]}x{payload['resolution'][1]}, "
                        f"{payload['train_views']} train / {payload['test_views']} held-out views, CPU "
                        f"({torch.get_num_threads()} threads)")
    for column in ("iteration", "train s", "loss", "held-out PSNR", "SSIM", "Gaussians"):
        table.add_column(column, justify="right")
    for r in result.history:
        table.add_row(str(r.iteration), f"{r.seconds:.0f}", f"{r.loss:.4f}",
                      "–" if r.psnr is None else f"{r.psnr:.2f}", "–" if r.ssim is None else f"{r.ssim:.3f}",
                      str(r.num_gaussians))
    Console(width=120).print(table)
    print(f"final: {payload['final_psnr']:.2f} dB after {payload['train_seconds']:.0f} s "
          f"({payload['iterations']} iterations, {payload['iterations_per_second']:.2f} it/s), "
          f"{payload['num_gaussians']} Gaussians; goal > {payload['goal_psnr']} dB: "
          f"{'met' if payload['goal_met'] else 'not met'}")


if __name__ == "__main__":
    main()
