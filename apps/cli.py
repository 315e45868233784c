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


COMMANDS = {
    "info": info,
    "render-mesh": render_mesh,
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
