"""The ``scenegrad`` command line. Subcommands import their heavy dependencies lazily, so that
``scenegrad --help`` answers at once."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import tyro


def info(build: bool = False, json_output: Annotated[bool, tyro.conf.arg(name="json")] = False) -> None:
    """Print versions, compiler, native-kernel build, CUDA devices and backends (for bug reports).

    Args:
        build: Build the native kernels now (normally they build on first use) and report the result.
        json_output: Print JSON instead of text.
    """
    from scenegrad.apps.info import collect, format_text

    facts = collect(build_now=build)
    print(json.dumps(facts, indent=2) if json_output else format_text(facts))


def render_mesh(
    mesh: tyro.conf.Positional[Path | None] = None,
    out: Path = Path("scenegrad_out"),
    frames: int = 48,
    size: int = 384,
    shading: Literal["none", "lambert", "phong"] = "phong",
    device: str = "cpu",
    overwrite: bool = False,
) -> None:
    """Render an orbit video of a mesh (OBJ, PLY, GLB/glTF) with scenegrad's mesh renderer.

    Args:
        mesh: Mesh file to draw; the default is a built-in textured torus.
        out: Output folder: orbit.mp4 and first_frame.png are written there.
        frames: Number of frames on the orbit.
        size: Image width and height in pixels.
        shading: Shading model.
        device: Torch device, e.g. cpu or cuda.
        overwrite: Replace existing outputs in the folder.
    """
    from scenegrad.apps import render_mesh as command

    try:
        command.run(mesh, out, frames, size, shading, device, overwrite)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"scenegrad render-mesh: {error}", file=sys.stderr)
        raise SystemExit(2) from error


def reconstruct(
    input: tyro.conf.Positional[Path | None] = None,  # noqa: A002 - the CLI's name for it
    out: Path = Path("scenegrad_out"),
    preset: Literal["tiny", "fast", "default"] = "fast",
    poses: Literal["flowmap", "sfm", "colmap"] = "flowmap",
    max_frames: int | None = None,
    resolution: int | None = None,
    iterations: int | None = None,
    mesh_resolution: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
) -> None:
    """Reconstruct a video or a folder of images: cameras, depth, Gaussian splats, a mesh and renders.

    Args:
        input: A video file or a folder of images; without one, a built-in sample clip.
        out: Output folder (images/, sparse/0, transforms.json, depth/, points.ply, splats.ply,
            mesh.ply, mesh.glb, renders/orbit.mp4, report.json, report.html).
        preset: tiny (seconds, for tests), fast (a CPU budget) or default.
        poses: How cameras are found: flowmap (poses and depth from the video by gradient descent), sfm
            (scenegrad's structure from motion: SIFT, matching, incremental mapping, bundle adjustment) or
            colmap (COLMAP through pycolmap); sfm and colmap give no dense depth.
        max_frames: Frames taken from a video (default from the preset).
        resolution: Longest side of the frames used, pixels (default from the preset).
        iterations: Splat training iterations (default from the preset).
        mesh_resolution: Voxels along the longest side of the fusion grid (default from the preset).
        device: Where the gradient descent and rendering run: cpu, cuda or cuda:N (checked first: an error
            where CUDA is unavailable); OpenCV steps, bundle adjustment, mesh fusion and files stay on the CPU.
        seed: Random seed.
        resume: Continue an interrupted run in the same folder from its last finished stage.
        overwrite: Replace the outputs of an earlier run in the folder.
    """
    from scenegrad.apps import reconstruct as command

    try:
        command.run(input, out, preset=preset, poses=poses, max_frames=max_frames, resolution=resolution,
                    iterations=iterations, mesh_resolution=mesh_resolution, device=device, seed=seed,
                    resume=resume, overwrite=overwrite)
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError, ImportError) as error:
        print(f"scenegrad reconstruct: {error}", file=sys.stderr)
        raise SystemExit(2) from error


def export(
    run_dir: tyro.conf.Positional[Path],
    format: Literal["colmap", "nerfstudio", "ply", "splat", "glb", "obj"] = "colmap",  # noqa: A002
    to: Path | None = None,
    overwrite: bool = False,
) -> None:
    """Export a reconstruct folder: COLMAP text model, nerfstudio transforms.json, 3DGS PLY, .splat, or mesh.

    Args:
        run_dir: A folder written by scenegrad reconstruct.
        format: colmap (sparse/0 as text + images), nerfstudio (transforms.json + images), ply (3DGS
            layout), splat (web viewers), glb or obj (the mesh).
        to: Destination (default: run_dir/export/...).
        overwrite: Replace an existing destination.
    """
    from scenegrad.apps import export as command

    try:
        print(command.export(run_dir, format, to, overwrite))
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"scenegrad export: {error}", file=sys.stderr)
        raise SystemExit(2) from error


def render(
    run_dir: tyro.conf.Positional[Path],
    path: Literal["orbit", "spiral", "dataset"] = "orbit",
    out: Path | None = None,
    frames: int = 120,
    fps: float = 24.0,
    overwrite: bool = False,
    device: str = "cpu",
) -> None:
    """Render a video of the Gaussian splats of a reconstruct folder.

    Args:
        run_dir: A folder written by scenegrad reconstruct.
        path: orbit (a circle around the scene), spiral (around the mean input camera, for forward-facing
            captures) or dataset (the input cameras in order).
        out: The mp4 to write (default: run_dir/renders/<path>.mp4).
        frames: Frames on the orbit.
        fps: Frames per second of the video.
        overwrite: Replace an existing video.
        device: Where the frames are rendered: cpu, cuda or cuda:N.
    """
    from scenegrad.apps import export as command

    try:
        print(command.render(run_dir, path, out, frames, fps, overwrite, device))
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"scenegrad render: {error}", file=sys.stderr)
        raise SystemExit(2) from error


def demo(
    host: str = "127.0.0.1",
    port: int | None = None,
    max_upload_mb: float = 200.0,
    max_frames: int = 60,
    max_iterations: int = 3000,
    max_resolution: int = 640,
    work_dir: Path | None = None,
) -> None:
    """Start the browser demo (Gradio, needs ``pip install scenegrad[app]``): reconstruct a video and look at
    the result, or watch an inverse-rendering fit. It is served on this machine only, never shared.

    Args:
        host: Address to listen on (127.0.0.1: this machine only; 0.0.0.0 opens it to the network).
        port: Port (default: the first free one from 7860).
        max_upload_mb: Largest upload accepted (a video or a zip), MB.
        max_frames: Most frames a reconstruction may use.
        max_iterations: Most splat training iterations a reconstruction may run.
        max_resolution: Longest side, in pixels, of the frames a reconstruction uses.
        work_dir: Folder for uploads and results (default: a temporary folder removed on exit).
    """
    import importlib.util

    from scenegrad.apps.demo_uploads import Limits

    try:
        limits = Limits(max_upload_mb=max_upload_mb, max_frames=max_frames, max_iterations=max_iterations,
                        max_resolution=max_resolution)
    except ValueError as error:
        print(f"scenegrad demo: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    if importlib.util.find_spec("gradio") is None:
        print("scenegrad demo: gradio is not installed; pip install 'scenegrad[app]'", file=sys.stderr)
        raise SystemExit(2)
    from scenegrad.apps.demo import DemoConfig, launch

    launch(DemoConfig(host=host, port=port, limits=limits, work_dir=work_dir))


COMMANDS = {
    "reconstruct": reconstruct,
    "export": export,
    "render": render,
    "info": info,
    "render-mesh": render_mesh,
    "demo": demo,
}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``scenegrad`` console script."""
    args = sys.argv[1:] if argv is None else argv
    tyro.extras.subcommand_cli_from_dict(
        COMMANDS,
        prog="scenegrad",
        description="scenegrad: differentiable rendering and 3D reconstruction.",
        args=args,
    )


if __name__ == "__main__":
    main()
