"""``scenegrad export`` and ``scenegrad render``: other formats and other videos from a finished
``scenegrad reconstruct`` folder (nothing is recomputed but the renders)."""

from __future__ import annotations

import shutil
from pathlib import Path

FORMATS = ("colmap", "nerfstudio", "ply", "splat", "glb", "obj")
#: Default destination inside the run folder, per format.
DEFAULTS = {"colmap": "export/colmap", "nerfstudio": "export/nerfstudio", "ply": "export/splats.ply",
            "splat": "export/scene.splat", "glb": "export/mesh.glb", "obj": "export/mesh.obj"}


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {what} (run scenegrad reconstruct first, or --resume it)")
    return path


def _fresh(target: Path, overwrite: bool) -> None:
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
        shutil.rmtree(target) if target.is_dir() else target.unlink()


def export(run_dir: Path, fmt: str, to: Path | None = None, overwrite: bool = False) -> Path:
    """Write the reconstruction in ``run_dir`` as ``fmt`` (one of :data:`FORMATS`) to ``to``.

    ``colmap``: a text model in ``to/sparse/0`` with the images in ``to/images``; ``nerfstudio``:
    ``to/transforms.json`` with the images; ``ply``: the splats in the 3DGS PLY layout; ``splat``:
    the compact web format; ``glb`` / ``obj``: the mesh."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    target = Path(to) if to is not None else run_dir / DEFAULTS[fmt]
    _fresh(target, overwrite)
    if fmt in ("colmap", "nerfstudio"):
        from scenegrad.datasets.colmap import load_colmap, save_colmap
        from scenegrad.datasets.transforms import save_transforms

        scene = load_colmap(_need(run_dir / "sparse" / "0", "the cameras"), _need(run_dir / "images", "the frames"))
        shutil.copytree(run_dir / "images", target / "images")
        if fmt == "colmap":
            (target / "sparse" / "0").mkdir(parents=True)
            save_colmap(scene, target / "sparse" / "0", format="txt")
        else:
            save_transforms(scene, target, image_dir="images")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("ply", "splat"):
        from scenegrad.datasets.splats import load_splats_ply, save_splat

        source = _need(run_dir / "splats.ply", "the trained splats")
        if fmt == "ply":
            shutil.copyfile(source, target)
        else:
            save_splat(load_splats_ply(source), target)
        return target
    from scenegrad.datasets.meshes import load_mesh, save_mesh

    save_mesh(load_mesh(_need(run_dir / "mesh.ply", "the mesh")), target.with_suffix(f".{fmt}"))
    return target.with_suffix(f".{fmt}")


def render(run_dir: Path, path: str = "orbit", out: Path | None = None, frames: int = 120, fps: float = 24.0,
           overwrite: bool = False, device: str = "cpu") -> Path:
    """Render the splats of ``run_dir`` along ``path`` (``orbit``: a circle around the scene at the
    cameras' distance and height; ``spiral``: an LLFF-style spiral around the mean input camera, for
    forward-facing captures; ``dataset``: the input cameras in order) to an mp4, on ``device`` (``cpu``,
    ``cuda`` or ``cuda:N``; ``ValueError`` at once where it cannot run)."""
    import torch

    from scenegrad.recon.device import resolve_device

    resolve_device(device)

    from scenegrad.datasets.colmap import load_colmap
    from scenegrad.datasets.splats import load_splats_ply
    from scenegrad.recon.reconstruct import orbit_cameras, spiral_cameras
    from scenegrad.recon.splat import render_video

    if path not in ("orbit", "spiral", "dataset"):
        raise ValueError(f"unknown path {path!r}; choose orbit, spiral or dataset")
    run_dir = Path(run_dir)
    target = Path(out) if out is not None else run_dir / "renders" / f"{path}.mp4"
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
    scene = load_colmap(_need(run_dir / "sparse" / "0", "the cameras"), dtype=torch.float32)
    splats = load_splats_ply(_need(run_dir / "splats.ply", "the trained splats"))
    if path == "orbit":
        cams = orbit_cameras(scene.cameras, splats.means.double().median(dim=0).values, frames)
    elif path == "spiral":
        cams = spiral_cameras(scene.cameras, splats.means, frames)
    else:
        cams = scene.cameras
    target.parent.mkdir(parents=True, exist_ok=True)
    return render_video(splats, cams, target, fps=fps, overwrite=True, device=device)
