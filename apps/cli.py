"""The ``scenegrad`` command line. Subcommands import their heavy dependencies lazily, so that
``scenegrad --help`` answers at once."""

from __future__ import annotations

import json
import sys
from typing import Annotated

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


COMMANDS = {
    "info": info,
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
