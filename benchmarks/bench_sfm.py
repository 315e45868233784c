"""Benchmark of structure from motion (scenegrad.recon.sfm) against COLMAP (pycolmap) on real photos with
laser ground truth.

Scenes (``--scene``): Strecha Herz-Jesu-P8 (``../shared/data/posed/herzjesu_p8``: 8 photos 3072x2048, laser
ground truth), the VGGSfM kitchen (``unposed/kitchen``: 25 views 1558x1039 of one camera) and Sacre Coeur
(``unposed/sacre_coeur``: 10 Flickr photos of many cameras and sizes), downscaled to the long side
``--side`` (default 1024; ground-truth cameras scaled to match); both methods get the same images and
exhaustive matching, with cameras of model ``--camera-model`` (default SIMPLE_RADIAL; also SIMPLE_PINHOLE,
PINHOLE, RADIAL, OPENCV) self-calibrated: one shared camera for Herz-Jesu and the kitchen, one per image for
Sacre Coeur. The principal point (``--principal-point``): ``auto`` (default) runs each method's default,
scenegrad's ``refine_principal_point="auto"`` (refined in the final bundle adjustment when significant) and
COLMAP's (held at the centre); ``refined`` has both refine it in every global bundle adjustment, ``held``
neither. Without ground truth only registration, points and runtime are reported.

Figures per method: images registered, mean and median rotation error over all camera pairs (relative
rotations, degrees: no alignment needed), ATE (RMSE of camera centres after a Sim(3) alignment, metres),
focal error ``|fx / fx_gt - 1|`` (the JSON also has ``fy``'s and the principal point), runtime (seconds,
wall, features to model); without ground truth, the relative rotations' differences to COLMAP's over the
images both registered (a note). A table on stdout and JSON (``--json`` or
``benchmarks/results/bench_sfm.json``).

    python benchmarks/bench_sfm.py [--scene herzjesu|kitchen|sacre_coeur] [--side 1024] [--camera-model OPENCV]
                                   [--principal-point auto|refined|held] [--no-peers] [--json PATH]
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

from scenegrad.datasets.strecha import load_strecha  # noqa: E402
from scenegrad.recon.evaluate import ate, rotation_angles  # noqa: E402
from scenegrad.recon.sfm import CAMERA_MODELS, SfMOptions, incremental_sfm  # noqa: E402
from scenegrad.render.cameras import Cameras, resize  # noqa: E402
from scenegrad.render.conventions import intrinsics_from_colmap  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SCENES = {"herzjesu": DATA / "posed" / "herzjesu_p8", "kitchen": DATA / "unposed" / "kitchen" / "images",
          "sacre_coeur": DATA / "unposed" / "sacre_coeur" / "mapping"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="scenegrad benchmark: structure from motion (Herz-Jesu-P8, CPU)")
    parser.add_argument("--scene", default="herzjesu", choices=tuple(SCENES), help="image set")
    parser.add_argument("--side", type=int, default=1024, help="long side of the images every method gets")
    parser.add_argument("--camera-model", default="SIMPLE_RADIAL", choices=tuple(CAMERA_MODELS),
                        help="camera model both methods self-calibrate (COLMAP's names)")
    parser.add_argument("--principal-point", default="auto", choices=("auto", "refined", "held"),
                        help="auto: each method's default; refined / held: both refine it / neither does")
    parser.add_argument("--no-peers", action="store_true", help="skip COLMAP (pycolmap)")
    parser.add_argument("--json", default=None, help="output path (default benchmarks/results/bench_sfm.json)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a busy machine)")
    return parser.parse_args(argv)


def load_images(name: str, side: int) -> tuple[list[np.ndarray], Cameras | None, list[str]]:
    """The images downscaled to long side ``side`` (RGB uint8), the ground truth scaled to match (or
    ``None``) and the file names."""
    import cv2

    if name == "herzjesu":
        scene = load_strecha(SCENES[name])
        paths = [frame.image_path for frame in scene.frames]
    else:
        scene = None
        paths = sorted(p for p in SCENES[name].iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    images, names = [], []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        h, w = bgr.shape[:2]
        s = side / max(h, w)
        small = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        images.append(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        names.append(path.name)
    h, w = images[0].shape[:2]
    return images, (resize(scene.cameras, (w, h)) if scene is not None else None), names


def run_scenegrad(images: list[np.ndarray], names: list[str], camera_model: str = "SIMPLE_RADIAL",
                  principal_point: str = "auto") -> tuple[Cameras, list[int], float, dict]:
    t = time.perf_counter()
    pp = {"auto": "auto", "refined": True, "held": False}[principal_point]
    result = incremental_sfm(images, names, SfMOptions(camera_model=camera_model, refine_principal_point=pp))
    seconds = time.perf_counter() - t
    return result.scene.cameras, result.registered, seconds, {
        "points": len(result.scene.points), "stages_s": {k: round(v, 2) for k, v in result.seconds.items()}}


def run_colmap(images: list[np.ndarray], names: list[str], camera_model: str = "SIMPLE_RADIAL",
               principal_point: str = "auto") -> tuple[Cameras | None, list[int], float, dict]:
    """pycolmap: SIFT, exhaustive matching, incremental mapping, ``camera_model`` cameras (one shared camera
    when every image has the same size, else one per image)."""
    import cv2
    import pycolmap

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        for image, name in zip(images, names, strict=True):
            cv2.imwrite(str(root / "images" / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        t = time.perf_counter()
        db = root / "database.db"
        one_size = len({im.shape for im in images}) == 1
        mode = pycolmap.CameraMode.SINGLE if one_size else pycolmap.CameraMode.PER_IMAGE
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = camera_model
        pycolmap.extract_features(db, root / "images", camera_mode=mode, reader_options=reader,
                                  device=pycolmap.Device.cpu)
        pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)
        (root / "sparse").mkdir()
        mapper = pycolmap.IncrementalPipelineOptions()
        mapper.ba_refine_principal_point = principal_point == "refined"
        models = pycolmap.incremental_mapping(db, root / "images", root / "sparse", options=mapper)
        seconds = time.perf_counter() - t
        if not models:
            return None, [], seconds, {}
        model = max(models.values(), key=lambda m: m.num_reg_images())
        index = {name: k for k, name in enumerate(names)}
        rows = []
        for image in model.images.values():
            if image.has_pose:
                M = np.asarray(image.cam_from_world().matrix())
                camera = model.cameras[image.camera_id]
                rows.append((index[image.name], M[:, :3], M[:, 3], np.asarray(camera.params, np.float64)))
                kind = camera.model.name
        rows.sort(key=lambda r: r[0])
        col = list(zip(*rows, strict=True))
        w = torch.tensor([images[i].shape[1] for i in col[0]])
        h = torch.tensor([images[i].shape[0] for i in col[0]])
        intr = intrinsics_from_colmap(kind, torch.tensor(np.stack(col[3])))
        cams = Cameras(intr.fx, intr.fy, intr.cx, intr.cy, torch.tensor(np.array(col[1])),
                       torch.tensor(np.array(col[2])), w, h, model=intr.model, dist=intr.dist)
        return cams, list(col[0]), seconds, {"points": model.num_points3D()}


def evaluate(name: str, cams: Cameras | None, posed: list[int], seconds: float, gt: Cameras | None, count: int,
             extra: dict) -> dict:
    row = {"method": name, "images": count, "registered": len(posed), "seconds": seconds, **extra}
    if cams is None or gt is None or len(posed) < 3:
        return row
    g = gt[posed]
    Re, Rg = cams.R.double(), g.R.double()
    i, j = torch.triu_indices(len(posed), len(posed), 1)
    pair = rotation_angles(Re[j] @ Re[i].transpose(-1, -2), Rg[j] @ Rg[i].transpose(-1, -2))
    return row | {"rot_pairs_mean_deg": float(pair.mean()), "rot_pairs_median_deg": float(pair.median()),
                  "ate_m": ate(cams.centers, g.centers),
                  "focal_rel": abs(float(cams.fx.double().mean() / g.fx.double().mean()) - 1),
                  "focal_px": float(cams.fx.double().mean()), "focal_gt_px": float(g.fx.double().mean()),
                  "focal_y_rel": abs(float(cams.fy.double().mean() / g.fy.double().mean()) - 1),
                  "principal_point_px": [float(cams.cx.double().mean()), float(cams.cy.double().mean())],
                  "principal_point_gt_px": [float(g.cx.double().mean()), float(g.cy.double().mean())]}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if not SCENES[args.scene].is_dir():
        raise SystemExit(f"bench_sfm: the {args.scene} photos are missing ({SCENES[args.scene]})")
    images, gt, names = load_images(args.scene, args.side)
    h, w = images[0].shape[:2]
    print(f"{args.scene}: {len(images)} images, first {w}x{h}", file=sys.stderr)
    rows, models = [], {}
    kw = {"camera_model": args.camera_model, "principal_point": args.principal_point}
    try:
        rows.append(_row("scenegrad sfm", run_scenegrad, images, names, gt, models, kw))
    except Exception as error:  # report, and still run the peer
        rows.append({"method": "scenegrad sfm", "error": f"{type(error).__name__}: {error}"})
    if not args.no_peers:
        try:
            rows.append(_row("colmap (pycolmap)", run_colmap, images, names, gt, models, kw))
        except Exception as error:  # a peer failing must not hide our figures
            rows.append({"method": "colmap (pycolmap)", "error": f"{type(error).__name__}: {error}"})
        if gt is None and len(models) == 2 and rows[0]["method"] == "scenegrad sfm":
            rows[0].update(agreement(*models["scenegrad sfm"], *models["colmap (pycolmap)"]))
    _print_table(rows, args.scene, args.side, f"{args.camera_model}, principal point {args.principal_point}")
    payload = {"benchmark": "bench_sfm", "machine": machine(), "scene": args.scene, "side": args.side,
               "camera_model": args.camera_model, "principal_point": args.principal_point, "rows": rows}
    path = Path(args.json) if args.json else RESULTS_DIR / f"bench_sfm_{args.scene}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")


def _row(name, run, images, names, gt, models: dict, kw: dict) -> dict:
    cams, posed, seconds, extra = run(images, names, **kw)
    if cams is not None:
        models[name] = (cams, posed)
    return evaluate(name, cams, posed, seconds, gt, len(images), extra)


def agreement(cams: Cameras, posed: list[int], ref: Cameras, ref_posed: list[int]) -> dict:
    """Without ground truth: relative rotation differences (degrees) to the reference (COLMAP) over the
    camera pairs both registered, and how many images that is."""
    common = [i for i in posed if i in ref_posed]
    if len(common) < 2:
        return {}
    Ra = cams.R.double()[[posed.index(i) for i in common]]
    Rb = ref.R.double()[[ref_posed.index(i) for i in common]]
    i, j = torch.triu_indices(len(common), len(common), 1)
    pair = rotation_angles(Ra[j] @ Ra[i].transpose(-1, -2), Rb[j] @ Rb[i].transpose(-1, -2))
    return {"rot_vs_colmap_mean_deg": float(pair.mean()), "rot_vs_colmap_max_deg": float(pair.max()),
            "common_with_colmap": len(common)}


def _agreement_note(r: dict) -> str:
    if "rot_vs_colmap_mean_deg" not in r:
        return ""
    return (f"vs COLMAP ({r['common_with_colmap']} images): rot. pairs mean {r['rot_vs_colmap_mean_deg']:.3f}°, "
            f"max {r['rot_vs_colmap_max_deg']:.3f}°")


def _print_table(rows: list[dict], scene: str, side: int, setting: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def fmt(x, spec):
        return "–" if x is None else format(x, spec)

    threads = torch.get_num_threads()
    table = Table(title=f"bench_sfm: {scene}, long side {side}, {setting}, CPU ({threads} threads)")
    for column in ("method", "registered", "points", "rot. pairs mean °", "median °", "ATE m", "focal err", "seconds",
                   "note"):
        table.add_column(column, justify="left" if column in ("method", "note") else "right")
    for r in rows:
        table.add_row(r["method"], f"{r.get('registered', '–')}/{r.get('images', '–')}", str(r.get("points", "–")),
                      fmt(r.get("rot_pairs_mean_deg"), ".3f"), fmt(r.get("rot_pairs_median_deg"), ".3f"),
                      fmt(r.get("ate_m"), ".4f"),
                      "–" if r.get("focal_rel") is None else f"{100 * r['focal_rel']:.2f} %",
                      fmt(r.get("seconds"), ".1f"), r.get("error", "") or _agreement_note(r))
    Console(width=170).print(table)


if __name__ == "__main__":
    main()
