"""``scenegrad reconstruct``: the command-line face of :mod:`scenegrad.recon.reconstruct`, and the
built-in sample clip it runs on when no input is given."""

from __future__ import annotations

from pathlib import Path

#: The built-in sample: a walk through a textured room, rendered by scenegrad with camera shake.
SAMPLE_NAME = "sample_room_walk.mp4"


def sample_clip(folder: Path) -> Path:
    """Render the sample clip into ``folder`` (once; reused when already there) and return its path."""
    path = folder / SAMPLE_NAME
    if path.is_file():
        return path
    from scenegrad.datasets.generate import synthetic_scene
    from scenegrad.datasets.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    scene = synthetic_scene("room", path="walk", count=48, size=(320, 240))
    write_video(path, (frame.image() for frame in scene.frames), fps=12)
    return path


def run(input_path: Path | None, out: Path, **options) -> dict:
    """Reconstruct ``input_path`` (or the sample clip, rendered into ``out/input/``) into ``out``."""
    from scenegrad.recon.device import resolve_device
    from scenegrad.recon.reconstruct import ReconstructConfig
    from scenegrad.recon.reconstruct import run as reconstruct

    config = ReconstructConfig(**options)
    resolve_device(config.device)  # before the sample clip is rendered: a device that cannot run fails first
    if input_path is None:
        input_path = sample_clip(out / "input")
        print(f"no input given: using the built-in sample clip {input_path}")
    report = reconstruct(input_path, out, config)
    stages = report["stages"]
    psnr = stages.get("splats", {}).get("heldout_psnr")
    print(f"done in {report['total_seconds']:.0f} s: {stages['poses']['frames_posed']} of "
          f"{stages['frames']['count']} frames posed, "
          f"{stages['splats']['gaussians']} Gaussians"
          + (f" (held-out PSNR {psnr:.1f} dB)" if psnr is not None else "")
          + f", mesh with {stages['mesh']['faces']} faces; outputs in {out}/ "
          "(sparse/0, transforms.json, splats.ply, mesh.glb, renders/orbit.mp4, report.html)")
    return report
