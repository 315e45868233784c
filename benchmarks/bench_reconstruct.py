"""Benchmark of ``scenegrad reconstruct`` end to end (issue: a phone video to cameras, depth, splats,
a mesh and renders in one command).

Inputs: the apple phone video (``../shared/data/video/apple``), the redkitchen RGB-D colour frames
made into a 10 fps video (``../shared/data/rgbd/redkitchen_sub10``, ground-truth poses), and any
``--input`` video or image folder. For each: wall time per stage, peak memory, frames used and
posed, held-out PSNR/SSIM (every 8th frame), and where ground truth exists the Sim(3)-aligned ATE
(metres) and rotation error of the posed frames. With ``--peers`` the same run repeats every input
with ``--poses colmap`` (COLMAP through pycolmap), so the two pose paths are compared side by side.

    python benchmarks/bench_reconstruct.py [--preset fast] [--peers] [--input PATH ...] [--keep DIR] [--json PATH]

Goal (issue 8, 2 cores, fast preset): the apple video in under 10 minutes with held-out PSNR above 25 dB.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS_DIR, machine  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
APPLE = DATA / "video" / "apple" / "apple.mp4"
KITCHEN = DATA / "rgbd" / "redkitchen_sub10"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="fast", choices=("tiny", "fast", "default"))
    parser.add_argument("--iterations", type=int, default=None, help="splat iterations (default: the preset's)")
    parser.add_argument("--input", nargs="*", default=[], help="more videos or image folders")
    parser.add_argument("--skip-builtin", action="store_true", help="only the --input paths")
    parser.add_argument("--peers", action="store_true", help="also run every input with --poses colmap")
    parser.add_argument("--keep", default=None, help="keep the output folders under this folder")
    parser.add_argument("--json", default=None, help="output path (default benchmarks/results/reconstruct.json)")
    return parser.parse_args(argv)


def kitchen_video(folder: Path) -> tuple[Path, object]:
    """The redkitchen colour frames as an mp4 (10 fps) and their ground-truth cameras."""
    from scenegrad.datasets.rgbd import load_7scenes
    from scenegrad.datasets.video import write_video

    scene = load_7scenes(KITCHEN)
    path = write_video(folder / "redkitchen.mp4", (f.image()[..., :3] for f in scene.frames), fps=10)
    return path, scene.cameras


def pose_figures(out: Path, report: dict, truth) -> dict:
    """ATE and rotation errors of the posed frames against ``truth`` (cameras in video-frame order)."""
    from scenegrad.datasets.colmap import load_colmap
    from scenegrad.recon.evaluate import pose_errors

    sources = report["stages"]["frames"].get("sources")
    if truth is None or sources is None:
        return {}
    scene = load_colmap(out / "sparse" / "0")
    names = sorted(p.name for p in (out / "images").glob("frame_*.png"))
    index = {name: sources[i] for i, name in enumerate(names)}
    frames = [index[f.name] for f in scene.frames]
    from scenegrad.render.cameras import resize

    gt = truth[frames]
    gt = resize(gt, (int(scene.cameras.width[0]), int(scene.cameras.height[0])))
    e = pose_errors(scene.cameras, gt)
    return {"ate_m": e.ate, "ate_rel": e.ate_rel, "rot_mean_deg": e.rot_mean_deg,
            "rel_rot_median_deg": e.rel_rot_median_deg, "focal_rel": e.focal_rel}


def run_one(name: str, path: Path, truth, poses: str, args: argparse.Namespace, root: Path) -> dict:
    from scenegrad.recon.reconstruct import ReconstructConfig, run

    out = root / f"{name}_{poses}"
    config = ReconstructConfig(preset=args.preset, poses=poses, iterations=args.iterations, overwrite=True,
                               progress=False)
    row = {"input": name, "poses": poses}
    start = time.perf_counter()
    try:
        report = run(path, out, config)
    except Exception as error:  # a failing input or peer must not hide the others' figures
        return row | {"error": f"{type(error).__name__}: {error}", "wall_s": time.perf_counter() - start}
    stages = report["stages"]
    row |= {"wall_s": time.perf_counter() - start,
            **{f"{stage}_s": stages[stage]["seconds"] for stage in stages},
            "peak_memory_mb": max(s["peak_memory_mb"] for s in stages.values()),
            "frames": stages["frames"]["count"], "posed": stages["poses"]["frames_posed"],
            "psnr": stages["splats"]["heldout_psnr"], "ssim": stages["splats"]["heldout_ssim"],
            "gaussians": stages["splats"]["gaussians"], "mesh_faces": stages["mesh"]["faces"]}
    return row | pose_figures(out, report, truth)


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="benchmark: reconstruct")
    columns = ["input", "poses", "wall_s", "frames_s", "poses_s", "splats_s", "mesh_s", "render_s", "peak_memory_mb",
               "posed", "psnr", "ssim", "ate_m", "rot_mean_deg", "focal_rel"]
    for c in columns:
        table.add_column(c, justify="right")
    for row in rows:
        table.add_row(*[f"{row[c]:.3g}" if isinstance(row.get(c), float) else str(row.get(c, "–")) for c in columns])
    Console(width=220).print(table)
    for row in rows:
        if "error" in row:
            print(f"{row['input']} / {row['poses']}: {row['error']}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_reconstruct_") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        inputs: list[tuple[str, Path, object]] = []
        if not args.skip_builtin:
            if APPLE.is_file():
                inputs.append(("apple", APPLE, None))
            else:
                print(f"skipped: apple ({APPLE} is missing)")
            if KITCHEN.is_dir():
                inputs.append(("redkitchen", *kitchen_video(Path(tmp))))
            else:
                print(f"skipped: redkitchen ({KITCHEN} is missing)")
        inputs += [(Path(p).stem, Path(p), None) for p in args.input]
        for name, path, truth in inputs:
            for poses in ("flowmap", "colmap") if args.peers else ("flowmap",):
                print(f"== {name} ({poses})", file=sys.stderr)
                rows.append(run_one(name, path, truth, poses, args, root))
    print_table(rows)
    out = Path(args.json) if args.json else RESULTS_DIR / "reconstruct.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "reconstruct", "machine": machine(), "preset": args.preset,
                               "rows": rows}, indent=2, default=lambda x: x.item() if isinstance(x, np.generic) else x))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
