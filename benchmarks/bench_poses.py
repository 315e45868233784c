"""Benchmark of camera poses from video (scenegrad.recon.flowmap) on a real RGB-D capture with ground truth.

Scene: 7-Scenes redkitchen, every 10th frame of a 1000-frame loop (``../shared/data/rgbd/redkitchen_sub10``:
100 colour frames 640x480 with camera-to-world poses in metres), taken as a video (frames in order), all
methods on the same frames at the same resolution (``--side``, long side; default 320x240).

Figures per method: frames posed, ATE (RMSE of camera centres after a Sim(3) alignment to ground truth,
metres), the median error of consecutive relative rotations (degrees), the focal length error (against the
file's fx = 585 at 640 px; that K is the *depth* camera's: colour and depth are not registered in 7-Scenes,
so a few percent of focal error is expected even from a perfect method), runtime (seconds, wall).

Methods: ``scenegrad`` (:func:`scenegrad.recon.flowmap.fit`, ``--preset``); with ``--peers``, COLMAP through
pycolmap (SIFT, sequential matching, incremental mapping, one shared camera) in the same run. Both use
``--camera-model`` (default SIMPLE_RADIAL, COLMAP's default: one focal length and ``k1``).
A table on stdout and JSON (``--json`` or ``benchmarks/results/bench_poses.json``).

Any other video or frames folder (``--input``, e.g. the apple phone video in ``../shared/data/video``): its
frames (a video's chosen by :func:`scenegrad.datasets.video.select_frames`, a folder's evenly spaced in name
order) have no ground truth; the figures are frames posed, the mean reprojection error and runtime, and
with ``--peers`` how far scenegrad's cameras are from COLMAP's (ATE after a Sim(3) alignment, relative to
the length of COLMAP's trajectory, and the median error of relative rotations).

    python benchmarks/bench_poses.py [--frames 100] [--side 320] [--preset default|fast] [--peers] [--json PATH]
    python benchmarks/bench_poses.py --input ../shared/data/video/apple/apple.mp4 --frames 50 --side 640 --peers
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS_DIR, machine  # noqa: E402

from scenegrad.datasets.rgbd import load_7scenes  # noqa: E402
from scenegrad.recon.evaluate import pose_errors  # noqa: E402
from scenegrad.recon.flowmap import FlowMapConfig, fit  # noqa: E402
from scenegrad.render.cameras import Cameras  # noqa: E402

KITCHEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "rgbd" / "redkitchen_sub10"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="scenegrad benchmark: poses from video (redkitchen, CPU)")
    parser.add_argument("--frames", type=int, default=100, help="first N frames of the sequence")
    parser.add_argument("--side", type=int, default=320, help="long side of the frames every method gets")
    parser.add_argument("--preset", default="default", choices=("default", "fast"), help="FlowMapConfig preset")
    parser.add_argument("--camera-model", default="SIMPLE_RADIAL", choices=("SIMPLE_PINHOLE", "SIMPLE_RADIAL"),
                        help="camera model of both methods (COLMAP's default: SIMPLE_RADIAL)")
    parser.add_argument("--peers", action="store_true", help="also run COLMAP (pycolmap) on the same frames")
    parser.add_argument("--json", default=None, help="output path (default benchmarks/results/bench_poses.json)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's, one per core; FlowMap's gradient descent runs on "
                             "FlowMapConfig.fit_threads = 1 either way)")
    parser.add_argument("--quick", action="store_true", help="20 frames, fast preset (a smoke run)")
    parser.add_argument("--input", default=None,
                        help="a video or frames folder instead of redkitchen (no ground truth)")
    return parser.parse_args(argv)


def load_frames(count: int, side: int) -> tuple[list[np.ndarray], Cameras, list[str]]:
    """The first ``count`` colour frames resized to long side ``side`` (uint8), ground-truth cameras resized
    to match, and the frame names."""
    from scenegrad.render.cameras import resize

    scene = load_7scenes(KITCHEN)
    frames = [_resized(frame, side) for frame in scene.frames[:count]]
    names = [frame.name for frame in scene.frames[:count]]

    h, w = frames[0].shape[:2]
    return frames, resize(scene.cameras[list(range(len(frames)))], (w, h)), names


def load_input(path: Path, count: int, side: int) -> tuple[list[np.ndarray], list[str]]:
    """``count`` frames of a video (sharp, spread over the motion) or of a folder of images (evenly spaced in
    name order), uint8, resized to long side ``side``, and their names."""
    if path.is_dir():
        from scenegrad.datasets.images import load_image_folder

        scene = load_image_folder(path, masks=None)
        keep = np.linspace(0, len(scene.frames) - 1, min(count, len(scene.frames))).round().astype(int)
        chosen = [scene.frames[k] for k in keep]
    else:
        from scenegrad.datasets.video import select_frames

        chosen = select_frames(path, count, max_side=None, progress=False).frames
    return [_resized(frame, side) for frame in chosen], [Path(frame.name).stem for frame in chosen]


def _resized(frame, side: int) -> np.ndarray:
    """A scene frame's colour image as uint8, resized to long side ``side``."""
    import cv2

    image = (frame.image()[..., :3].numpy() * 255 + 0.5).astype(np.uint8)
    H, W = image.shape[:2]
    s = side / max(H, W)
    return cv2.resize(image, (round(W * s), round(H * s)), interpolation=cv2.INTER_AREA)


def run_scenegrad(frames: list[np.ndarray], preset: str, camera_model: str
                  ) -> tuple[Cameras, list[int], float, dict, dict]:
    """FlowMap; its cameras, the frames posed, seconds, the config and the last refinement's figures."""
    config = (FlowMapConfig.fast if preset == "fast" else FlowMapConfig.default)(camera_model=camera_model)
    t = time.perf_counter()
    result = fit(frames, config)
    seconds = time.perf_counter() - t
    ref = result.matching if result.matching is not None and result.matching.accepted else result.refinement
    extra = {} if ref is None else {"reproj_mean_px": ref.mean_error_final, "reproj_rmse_px": ref.rmse_final,
                                    "observations": ref.observations}
    extra["stages_s"], extra["background_s"] = result.stages, result.background
    print("scenegrad stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result.stages.items())
          + "; on other threads meanwhile: " + ", ".join(f"{k} {v:.1f}" for k, v in result.background.items()),
          file=sys.stderr)
    return result.cameras, list(range(len(frames))), seconds, dataclasses.asdict(config), extra


def run_colmap(frames: list[np.ndarray], names: list[str], camera_model: str
               ) -> tuple[Cameras | None, list[int], float, dict]:
    """pycolmap: SIFT, sequential matching, incremental mapping; the largest model's cameras and the indices
    of the frames it registered."""
    import cv2
    import pycolmap

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        files = [f"{n}.png" for n in names]
        for f, name in zip(frames, files, strict=True):
            cv2.imwrite(str(root / "images" / name), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        t = time.perf_counter()
        db = root / "database.db"
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = camera_model
        pycolmap.extract_features(db, root / "images", camera_mode=pycolmap.CameraMode.SINGLE,
                                  reader_options=reader, device=pycolmap.Device.cpu)
        pycolmap.match_sequential(db, device=pycolmap.Device.cpu)
        (root / "sparse").mkdir()
        models = pycolmap.incremental_mapping(db, root / "images", root / "sparse")
        seconds = time.perf_counter() - t
        if not models:
            return None, [], seconds, {}
        model = max(models.values(), key=lambda m: m.num_reg_images())
        index = {name: k for k, name in enumerate(files)}
        Rs, ts, fs, idx = [], [], [], []
        for image in model.images.values():
            if not image.has_pose:
                continue
            pose = image.cam_from_world()
            M = np.asarray(pose.matrix())
            Rs.append(M[:, :3])
            ts.append(M[:, 3])
            fs.append(model.cameras[image.camera_id].params[0])
            idx.append(index[image.name])
        order = np.argsort(idx)
        h, w = frames[0].shape[:2]
        cams = Cameras(fx=torch.tensor(np.array(fs)[order]), fy=torch.tensor(np.array(fs)[order]), cx=w / 2,
                       cy=h / 2, R=torch.tensor(np.array(Rs)[order]), t=torch.tensor(np.array(ts)[order]),
                       width=w, height=h)
        extra = {"models": len(models), "reproj_mean_px": float(model.compute_mean_reprojection_error()),
                 "observations": int(model.compute_num_observations())}
        return cams, [idx[k] for k in order], seconds, extra


def evaluate(name: str, cams: Cameras | None, posed: list[int], seconds: float, gt: Cameras | int,
             extra: dict) -> dict:
    """A table row: ``gt`` the ground-truth cameras of every frame, or the number of frames (no ground truth)."""
    row = {"method": name, "frames": gt if isinstance(gt, int) else len(gt), "posed": len(posed), "seconds": seconds,
           **extra}
    if cams is None or len(posed) < 3 or isinstance(gt, int):
        return row | {"ate_m": None, "rel_rot_median_deg": None, "focal_rel": None}
    e = pose_errors(cams, gt[posed])
    return row | {"ate_m": e.ate, "ate_rel": e.ate_rel, "rot_mean_deg": e.rot_mean_deg,
                  "rel_rot_median_deg": e.rel_rot_median_deg, "focal_rel": e.focal_rel,
                  "focal_px": float(cams.fx.double().mean()), "focal_gt_px": float(gt.fx.double().mean())}


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    count, preset = (20, "fast") if args.quick else (args.frames, args.preset)
    if args.input:
        source = Path(args.input)
        if not source.exists():
            raise SystemExit(f"bench_poses: {source} does not exist")
        frames, names = load_input(source, count, args.side)
        gt, label = len(frames), source.name
    else:
        if not KITCHEN.is_dir():
            raise SystemExit(f"bench_poses: the redkitchen frames are missing ({KITCHEN})")
        frames, gt, names = load_frames(count, args.side)
        label = "redkitchen"
    h, w = frames[0].shape[:2]
    print(f"{label}: {len(frames)} frames {w}x{h}", file=sys.stderr)
    rows = []
    ours, ours_posed, seconds, config, extra = run_scenegrad(frames, preset, args.camera_model)
    rows.append(evaluate(f"scenegrad flowmap ({preset})", ours, ours_posed, seconds, gt, extra))
    if args.peers:
        try:
            cams, posed, seconds, extra = run_colmap(frames, names, args.camera_model)
            rows.append(evaluate("colmap (pycolmap)", cams, posed, seconds, gt, extra))
            if isinstance(gt, int) and cams is not None and len(posed) >= 3:  # no ground truth: agreement
                e = pose_errors(ours[posed], cams)
                rows[0] |= {"vs_colmap_ate_rel": e.ate_rel, "vs_colmap_rel_rot_median_deg": e.rel_rot_median_deg,
                            "vs_colmap_focal_rel": e.focal_rel}
        except Exception as error:  # a peer failing must not hide our figures
            rows.append({"method": "colmap (pycolmap)", "error": f"{type(error).__name__}: {error}"})
    _print_table(rows, w, h, label)
    scene = "7-Scenes redkitchen (every 10th frame)" if not args.input else str(args.input)
    payload = {"benchmark": "bench_poses", "machine": machine(), "scene": scene, "camera_model": args.camera_model,
               "resolution": [w, h], "rows": rows, "flowmap_config": config}
    path = Path(args.json) if args.json else RESULTS_DIR / "bench_poses.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")


def _print_table(rows: list[dict], w: int, h: int, label: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(x, spec):
        return "–" if x is None else format(x, spec)

    table = Table(title=f"bench_poses: {label} {w}x{h}, CPU ({torch.get_num_threads()} threads)")
    for column in ("method", "posed", "ATE m", "rel. rot. median °", "focal err", "mean reproj. px", "obs.", "seconds",
                   "note"):
        table.add_column(column, justify="left" if column in ("method", "note") else "right")
    for r in rows:
        table.add_row(r["method"], f"{r.get('posed', '–')}/{r.get('frames', '–')}", fmt(r.get("ate_m"), ".3f"),
                      fmt(r.get("rel_rot_median_deg"), ".2f"),
                      "–" if r.get("focal_rel") is None else f"{100 * r['focal_rel']:.1f} %",
                      fmt(r.get("reproj_mean_px"), ".2f"), fmt(r.get("observations"), "d"),
                      fmt(r.get("seconds"), ".1f"), r.get("error", "") or _agreement(r))
    Console(width=140).print(table)


def _agreement(row: dict) -> str:
    if "vs_colmap_ate_rel" not in row:
        return ""
    return (f"vs COLMAP: ATE {100 * row['vs_colmap_ate_rel']:.1f} % of its length, "
            f"rel. rot. {row['vs_colmap_rel_rot_median_deg']:.2f}°, focal {100 * row['vs_colmap_focal_rel']:.1f} %")


if __name__ == "__main__":
    main()
