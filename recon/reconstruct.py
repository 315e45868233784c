"""``scenegrad reconstruct``: a video or a folder of images to cameras, depth, splats, a mesh and renders.

Stages, each writing its result to the output folder before the next starts (so ``resume`` continues
from the last finished one; ``report.json`` records which are done and how long they took):

1. ``frames``: frames chosen from the video (:func:`scenegrad.datasets.video.select_frames`: sharp,
   spread over the motion) or the images of the folder, downscaled to ``resolution`` -> ``images/``.
2. ``poses``: cameras, a shared focal length and dense depth by :mod:`scenegrad.recon.flowmap` ->
   ``sparse/0`` (COLMAP), ``transforms.json`` (nerfstudio), ``depth/``, ``points.ply``; or, with
   ``poses="sfm"`` or ``"colmap"``, the cameras and sparse points of scenegrad's structure from motion
   (:mod:`scenegrad.recon.sfm`) or of COLMAP (:mod:`scenegrad.recon.colmap_poses`): no dense depth,
   and frames that cannot be registered are left out.
3. ``splats``: 3D Gaussians trained from the posed frames, seeded with the dense points
   (:func:`scenegrad.recon.splat.train`, every 8th frame held out) -> ``splats.ply`` (3DGS layout),
   checkpoints in ``splat/`` (resumed from).
4. ``mesh``: TSDF fusion of the splats' rendered depth, then scenegrad's marching cubes
   (:mod:`scenegrad.recon.mesh`) -> ``mesh.ply`` and ``mesh.glb`` (vertex colours).
5. ``render``: a video rendered from the splats -> ``renders/orbit.mp4``: a circle around the scene
   when the input cameras went at least half-way around it, else the input trajectory itself (a
   walk-through cannot be shown from behind).

At the end ``report.html`` (:mod:`scenegrad.recon.report_html`) shows the timings, the held-out
scores, the camera trajectory, frames beside their depth, and frames of the render.

Presets: ``tiny`` (tests and smoke runs: seconds), ``fast`` (a CPU budget: minutes), ``default``.

Device: ``device`` (``"cpu"``, ``"cuda"`` or ``"cuda:N"``) is checked before anything runs
(:func:`scenegrad.recon.device.resolve_device`: a clear ``ValueError`` where CUDA is unavailable). FlowMap's
gradient descent, the splat training and the rendering of the depth maps and the video run there; the
OpenCV parts (frame selection, flow, point tracks), the bundle adjustment, the TSDF fusion and marching
cubes, and every file written stay on the CPU.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

__all__ = ["ReconstructConfig", "STAGES", "OUTPUTS", "run", "orbit_cameras", "spiral_cameras"]

STAGES = ("frames", "poses", "splats", "mesh", "render")
#: Everything the pipeline writes in the output folder (what ``overwrite`` replaces).
OUTPUTS = ("images", "sparse", "transforms.json", "sparse_pc.ply", "depth", "points.ply", "splat", "splats.ply",
           "mesh.ply", "mesh.glb", "renders", "report.json", "report.html")
#: ``--poses sfm`` matches every pair of frames up to this many, else each frame with its neighbours.
SFM_EXHAUSTIVE_UP_TO = 40
#: Below this sharpness (:func:`_sharpness`) in every frame the input is refused as blurred.
MIN_SHARPNESS = 15.0
#: Dense depth points seeding the splats (a random subset): more only slows the first iterations down.
SEED_POINTS = 20_000
VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm"}


@dataclass
class ReconstructConfig:
    """Settings of :func:`run` (the CLI's options).

    preset: ``tiny``, ``fast`` or ``default`` (iteration counts, resolutions); the fields below left at
        ``None`` take the preset's value.
    max_frames: frames taken from a video (a folder's images are all used, up to this many).
    resolution: longest side of the frames used (pixels).
    iterations: splat training iterations.
    mesh_resolution: voxels along the longest side of the TSDF grid.
    poses: ``flowmap`` (scenegrad's own from the video, the default), ``sfm`` (scenegrad's structure from
        motion, :mod:`scenegrad.recon.sfm`: better for photos than for videos) or ``colmap`` (COLMAP
        through pycolmap).
    seed: the random seed (the same draws on every device).
    device: where the gradient descent and the rendering run: ``cpu``, ``cuda`` or ``cuda:N`` (see the
        module docstring; ``ValueError`` at once when it cannot run here).
    resume: continue after the last finished stage (and the last splat checkpoint).
    overwrite: replace the outputs of an earlier run in the folder (other files are left alone).
    progress: progress bars.
    """

    preset: Literal["tiny", "fast", "default"] = "fast"
    max_frames: int | None = None
    resolution: int | None = None
    iterations: int | None = None
    mesh_resolution: int | None = None
    poses: Literal["flowmap", "sfm", "colmap"] = "flowmap"
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    overwrite: bool = False
    progress: bool = True

    def resolved(self) -> ReconstructConfig:
        base = {"tiny": (12, 96, 150, 48), "fast": (40, 320, 3000, 128), "default": (80, 640, 7000, 192)}[self.preset]
        values = dict(zip(("max_frames", "resolution", "iterations", "mesh_resolution"), base, strict=True))
        for name in values:
            if getattr(self, name) is not None:
                values[name] = getattr(self, name)
        return dataclasses.replace(self, **values)


class _Report:
    """``report.json``: stage records, written after every stage."""

    def __init__(self, path: Path, fresh: bool):
        self.path = path
        self.data: dict = {"stages": {}}
        if not fresh and path.is_file():
            self.data = json.loads(path.read_text())

    def done(self, stage: str) -> bool:
        return bool(self.data["stages"].get(stage, {}).get("done"))

    def record(self, stage: str, seconds: float, **facts) -> None:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.data["stages"][stage] = {"done": True, "seconds": round(seconds, 3), "peak_memory_mb": round(peak_mb),
                                      **facts}
        self.path.write_text(json.dumps(self.data, indent=2))


def _check_output(input_path: Path, out: Path, config: ReconstructConfig) -> None:
    if out.resolve() == input_path.resolve() or input_path.resolve() in out.resolve().parents:
        raise ValueError(f"the output folder {out} must not be (inside) the input {input_path}")
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not (config.resume or config.overwrite):
        raise FileExistsError(f"{out} already holds outputs of a run ({', '.join(existing)}); pass --resume to "
                              "continue it or --overwrite to start again")
    if config.overwrite and not config.resume:
        for name in existing:
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()


def _load_frames(input_path: Path, config: ReconstructConfig) -> tuple[list[np.ndarray], list[str], list]:
    """Frames as float32 ``[H, W, 3]`` arrays in ``[0, 1]`` (one size), their names, and where each came
    from (the video's frame index, or the image's file name in the folder)."""
    import torch.nn.functional as F

    if input_path.is_file():
        if input_path.suffix.lower() not in VIDEO_SUFFIXES:
            raise ValueError(f"{input_path}: not a video ({', '.join(sorted(VIDEO_SUFFIXES))}) or a folder of images")
        from scenegrad.datasets.video import select_frames

        scene = select_frames(input_path, config.max_frames, max_side=config.resolution, progress=config.progress)
    elif input_path.is_dir():
        from scenegrad.datasets.images import load_image_folder

        scene = load_image_folder(input_path, masks=None)
        if len(scene.frames) > config.max_frames:  # evenly spaced, in name order
            keep = np.linspace(0, len(scene.frames) - 1, config.max_frames).round().astype(int)
            scene.frames = [scene.frames[i] for i in keep]
    else:
        raise FileNotFoundError(f"{input_path} does not exist")
    images = []
    for frame in scene.frames:
        image = frame.image()[..., :3].float()
        h, w = image.shape[:2]
        scale = config.resolution / max(h, w)
        if scale < 1:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            image = F.interpolate(image.permute(2, 0, 1)[None], size=size, mode="area")[0].permute(1, 2, 0)
        images.append(image.numpy())
    if len(images) < 3:
        raise ValueError(f"{input_path}: {len(images)} usable frame(s); reconstruction needs at least 3")
    if len({im.shape for im in images}) > 1:
        raise ValueError(f"{input_path}: the images differ in size ({sorted({im.shape[:2] for im in images})}); "
                         "reconstruction needs one camera size")
    means = np.array([im.mean() for im in images])
    if (means < 0.02).all():
        raise ValueError(f"{input_path}: every frame is black (mean brightness {means.max():.3f})")
    sharpness = np.array([_sharpness(im) for im in images])
    if (sharpness < MIN_SHARPNESS).all():
        raise ValueError(f"{input_path}: every frame is blurred or without texture (sharpness at most "
                         f"{sharpness.max():.1f} < {MIN_SHARPNESS}); reconstruction needs sharp, textured frames")
    names = [f"frame_{i:06d}.png" for i in range(len(images))]
    sources = [int(f.metadata["index"]) if f.metadata and "index" in f.metadata else f.name for f in scene.frames]
    return images, names, sources


def _sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image, brought down to 320 pixels on its long side, in
    8-bit units: sharp video frames score about 80 to 1000, frames blurred by a 6-pixel Gaussian
    below 10."""
    import cv2

    grey = cv2.cvtColor((image * 255).clip(0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    scale = 320 / max(grey.shape)
    if scale < 1:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _flowmap_config(config: ReconstructConfig):
    from scenegrad.recon.flowmap import FlowMapConfig

    if config.preset == "tiny":
        return FlowMapConfig.fast(steps=60, refine_steps=40, focal_search_steps=30, progress=config.progress,
                                  device=config.device)
    if config.preset == "fast":
        return FlowMapConfig.fast(progress=config.progress, device=config.device)
    return FlowMapConfig.default(progress=config.progress, device=config.device)


def _splat_config(config: ReconstructConfig):
    from scenegrad.recon.splat import SplatConfig

    base = SplatConfig.fast() if config.preset != "default" else SplatConfig.default()
    return dataclasses.replace(base.scaled(config.iterations), max_side=None, seed=config.seed,
                               checkpoint_every=max(50, config.iterations // 5), test_every=8, device=config.device)


def _circle_frame(cameras, centre: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The plane the cameras move in around ``centre``: the cameras' mean up direction ``up`` (OpenCV:
    image up is -Y), the camera centres' ``offset`` from ``centre`` and its ``radial`` part (orthogonal
    to ``up``), and two unit axes ``a`` (towards the first camera), ``b = up x a`` of the plane."""
    up = -cameras.R[:, 1, :].double().mean(0)
    up = up / up.norm()
    offset = cameras.centers.double() - centre
    radial = offset - (offset @ up)[:, None] * up
    a = radial[0] / radial[0].norm().clamp_min(1e-12)
    return up, offset, radial, a, torch.linalg.cross(up, a)


def _coverage_deg(cameras, centre: torch.Tensor) -> float:
    """How far around ``centre`` the camera centres go (degrees, in the plane of their mean up)."""
    _, _, radial, a, b = _circle_frame(cameras, centre)
    angles = torch.sort(torch.atan2(radial @ b, radial @ a)).values
    gaps = torch.diff(torch.cat([angles, angles[:1] + 2 * np.pi]))
    return float(360.0 - torch.rad2deg(gaps.max()))


def orbit_cameras(cameras, centre: torch.Tensor, count: int):
    """``count`` cameras on a circle around ``centre`` at the training cameras' mean distance and height,
    in the plane their mean up direction defines, with the first camera's intrinsics."""
    from scenegrad.datasets.synthetic import look_at
    from scenegrad.render.cameras import Cameras

    up, offset, radial, a, b = _circle_frame(cameras, centre)
    height = (offset @ up).mean()
    radius = float(radial.norm(dim=1).mean().clamp_min(1e-6))
    angles = torch.linspace(0, 2 * np.pi, count + 1, dtype=torch.float64)[:-1]
    eyes = centre + height * up + radius * (torch.cos(angles)[:, None] * a + torch.sin(angles)[:, None] * b)
    R, t = look_at(eyes, centre.expand_as(eyes), tuple(up.tolist()))  # ``up`` shows up in the images
    return Cameras(cameras.fx[:1].expand(count), cameras.fy[:1].expand(count), cameras.cx[:1].expand(count),
                   cameras.cy[:1].expand(count), R.float(), t.float(), cameras.width[:1].expand(count),
                   cameras.height[:1].expand(count))


def spiral_cameras(cameras, points: torch.Tensor, count: int, turns: float = 2.0):
    """``count`` cameras on an LLFF-style spiral for forward-facing captures: around the mean camera
    (mean centre, mean viewing direction), with radii along its right, down and forward axes from the
    90th percentile of the input cameras' offsets (at least 5% of the focus distance sideways), all
    looking at a focus point on the mean viewing ray at the median depth of ``points [N, 3]`` in
    front of the mean camera; intrinsics of the first camera."""
    from scenegrad.datasets.synthetic import look_at
    from scenegrad.render.cameras import Cameras

    R = cameras.R.double()
    centre = cameras.centers.double().mean(0)
    forward = torch.nn.functional.normalize(R[:, 2, :].mean(0), dim=0)
    down = R[:, 1, :].mean(0)
    down = torch.nn.functional.normalize(down - (down @ forward) * forward, dim=0)
    right = torch.linalg.cross(down, forward)
    depths = (points.double() - centre) @ forward
    depths = depths[depths > 0]
    spread = (cameras.centers.double() - centre).norm(dim=1).max().clamp_min(1e-6)
    focus = float(depths.median()) if len(depths) else float(4 * spread)
    axes = torch.stack([right, down, forward])
    offsets = (cameras.centers.double() - centre) @ axes.T
    radii = torch.quantile(offsets.abs(), 0.9, dim=0)
    radii[:2] = radii[:2].clamp_min(0.05 * focus)
    angles = torch.linspace(0, 2 * np.pi * turns, count + 1, dtype=torch.float64)[:-1]
    eyes = centre + (radii[0] * torch.cos(angles))[:, None] * right + (radii[1] * torch.sin(angles))[:, None] * down \
        + (radii[2] * torch.sin(angles / turns))[:, None] * forward
    target = centre + focus * forward
    Rs, ts = look_at(eyes, target.expand_as(eyes), -down)
    return Cameras(cameras.fx[:1].expand(count), cameras.fy[:1].expand(count), cameras.cx[:1].expand(count),
                   cameras.cy[:1].expand(count), Rs.float(), ts.float(), cameras.width[:1].expand(count),
                   cameras.height[:1].expand(count))


def run(input_path: str | Path, out: str | Path, config: ReconstructConfig | None = None) -> dict:
    """Run the pipeline (stages: see the module docstring); returns the report's data."""
    config = (config or ReconstructConfig()).resolved()
    from scenegrad.recon.device import resolve_device

    resolve_device(config.device)  # a device that cannot run here fails now, not stages later
    input_path, out = Path(input_path), Path(out)
    if not input_path.exists():
        raise FileNotFoundError(f"{input_path} does not exist")
    _check_output(input_path, out, config)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    report = _Report(out / "report.json", fresh=not config.resume)
    report.data.update(input=str(input_path), config=dataclasses.asdict(config))

    from scenegrad.datasets.colmap import load_colmap
    from scenegrad.datasets.splats import load_splats_ply, save_splats_ply

    # 1. frames
    if not report.done("frames"):
        start = time.perf_counter()
        images, names, sources = _load_frames(input_path, config)
        (out / "images").mkdir(exist_ok=True)
        import cv2

        for image, name in zip(images, names, strict=True):
            cv2.imwrite(str(out / "images" / name),
                        cv2.cvtColor((image * 255 + 0.5).clip(0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
        report.record("frames", time.perf_counter() - start, count=len(images),
                      size=[int(images[0].shape[1]), int(images[0].shape[0])], sources=sources)
    else:
        from scenegrad.datasets.scene import read_image

        names = sorted(p.name for p in (out / "images").glob("frame_*.png"))
        images = [read_image(out / "images" / n).astype(np.float32) / 255 for n in names]

    # 2. poses
    if not report.done("poses"):
        from scenegrad.datasets.transforms import save_transforms
        from scenegrad.recon import flowmap

        start = time.perf_counter()
        if config.poses == "colmap":
            from scenegrad.datasets.points import save_points
            from scenegrad.recon.colmap_poses import colmap_poses

            posed = colmap_poses(out / "images", out / "sparse" / "0")
            colmap_scene = load_colmap(out / "sparse" / "0", out / "images")
            if colmap_scene.points is not None:
                save_points(colmap_scene.points, out / "points.ply", overwrite=True)
            save_transforms(colmap_scene, out, image_dir="images", overwrite=True)
            facts = {"frames_posed": len(posed.registered), "sparse_points": posed.points,
                     "focal_px": float(colmap_scene.cameras.fx[0])}
        elif config.poses == "sfm":
            from scenegrad.datasets.colmap import save_colmap
            from scenegrad.datasets.points import save_points
            from scenegrad.recon.sfm import SfMOptions, incremental_sfm

            matching = "exhaustive" if len(images) <= SFM_EXHAUSTIVE_UP_TO else "sequential"
            sfm = incremental_sfm(images, names, SfMOptions(camera_model="SIMPLE_PINHOLE", matching=matching))
            if len(sfm.registered) < 3:
                raise RuntimeError(f"{input_path}: structure from motion registered {len(sfm.registered)} of "
                                   f"{len(images)} frames; try --poses flowmap")
            (out / "sparse" / "0").mkdir(parents=True, exist_ok=True)
            save_colmap(sfm.scene, out / "sparse" / "0")
            if sfm.scene.points is not None:
                save_points(sfm.scene.points, out / "points.ply", overwrite=True)
            save_transforms(load_colmap(out / "sparse" / "0", out / "images"), out, image_dir="images",
                            overwrite=True)
            facts = {"frames_posed": len(sfm.registered), "focal_px": float(sfm.scene.cameras.fx[0]),
                     "sparse_points": 0 if sfm.scene.points is None else len(sfm.scene.points)}
        else:
            result = flowmap.fit(images, _flowmap_config(config))
            flowmap.save(result, out, np.stack(images))
            save_transforms(load_colmap(out / "sparse" / "0", out / "images"), out, image_dir="images",
                            overwrite=True)
            facts = {"frames_posed": len(result.cameras), "focal_px": float(result.cameras.fx[0])}
        report.record("poses", time.perf_counter() - start, method=config.poses, **facts)
    scene = load_colmap(out / "sparse" / "0", out / "images", dtype=torch.float32)

    # 3. splats
    if not report.done("splats"):
        from scenegrad.recon.splat import train

        start = time.perf_counter()
        points = scene.points
        if points is not None and len(points) > SEED_POINTS:  # a seed, not the whole depth cloud
            keep = torch.randperm(len(points), generator=torch.Generator().manual_seed(config.seed))[:SEED_POINTS]
            points = dataclasses.replace(points, xyz=points.xyz[keep], rgb=points.rgb[keep],
                                         error=None if points.error is None else points.error[keep],
                                         ids=None if points.ids is None else points.ids[keep])
        result = train(scene, points, _splat_config(config), out_dir=out / "splat", progress=config.progress,
                       resume=config.resume)
        save_splats_ply(result.splats, out / "splats.ply", overwrite=True)
        report.record("splats", time.perf_counter() - start, iterations=result.iterations,
                      gaussians=result.num_gaussians, heldout_psnr=result.final_psnr, heldout_ssim=result.final_ssim,
                      heldout_frames=result.test_indices)
    splats = load_splats_ply(out / "splats.ply")

    # 4. mesh
    if not report.done("mesh"):
        from scenegrad.datasets.meshes import save_mesh
        from scenegrad.recon.mesh import extract_mesh, fuse_tsdf, render_splat_depths, scene_bounds

        start = time.perf_counter()
        colors, depths = render_splat_depths(splats, scene.cameras, device=config.device)  # on the CPU
        lo, hi = scene_bounds(scene.points.xyz.float() if scene.points is not None else splats.means.float())
        volume = fuse_tsdf(depths, colors, scene.cameras, lo, hi, config.mesh_resolution)
        mesh = extract_mesh(volume)
        save_mesh(mesh, out / "mesh.ply", overwrite=True)
        save_mesh(mesh, out / "mesh.glb", overwrite=True)
        report.record("mesh", time.perf_counter() - start, vertices=int(mesh.vertices.shape[0]),
                      faces=int(mesh.faces.shape[0]), voxel=volume.voxel)

    # 5. render
    if not report.done("render"):
        from scenegrad.recon.splat import render_video

        start = time.perf_counter()
        centre = splats.means.double().median(dim=0).values
        coverage = _coverage_deg(scene.cameras, centre)
        if coverage >= 180:
            cams, path = orbit_cameras(scene.cameras, centre, 24 if config.preset == "tiny" else 120), "orbit"
        else:
            cams, path = scene.cameras, "input trajectory"
        (out / "renders").mkdir(exist_ok=True)
        render_video(splats, cams, out / "renders" / "orbit.mp4", fps=24 if path == "orbit" else 8,
                     device=config.device)
        report.record("render", time.perf_counter() - start, frames=len(cams), path=path,
                      camera_coverage_deg=round(coverage, 1))

    report.data["total_seconds"] = round(sum(s["seconds"] for s in report.data["stages"].values()), 3)
    report.path.write_text(json.dumps(report.data, indent=2))
    from scenegrad.recon.report_html import write_report_html

    write_report_html(out)
    return report.data
