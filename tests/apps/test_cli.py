"""The ``scenegrad`` command line: fast ``--help``, ``info`` for bug reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("scenegrad")


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "scenegrad.apps", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "COLUMNS": "120"}, check=False,
    )


def test_help_is_fast_and_imports_no_torch():
    code = (
        "import sys\n"
        "from scenegrad.apps.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        "assert 'torch' not in sys.modules, 'scenegrad --help imported torch'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "info" in result.stdout


def test_console_script_installed():
    assert SCRIPT.exists(), "the scenegrad console script is not installed next to this Python"
    result = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and "info" in result.stdout


def test_info_json():
    result = run("info", "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    for key in ("scenegrad", "python", "torch cuda", "c++ compiler", "native build", "cuda devices", "backends"):
        assert key in facts, key
    assert facts["packages"]["torch"].startswith("2.")
    assert "mesh (cpu)" in facts["backends"]


def test_info_build_reports_native(native):
    result = run("info", "--build", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "native build: built:" in result.stdout
    assert "mesh (cpu): native" in result.stdout


def test_unknown_command_fails_clearly():
    result = run("frobnicate")
    assert result.returncode != 0
    assert "frobnicate" in result.stderr or "invalid" in result.stderr.lower()


def test_render_mesh_writes_a_video_and_refuses_to_overwrite(native, tmp_path):
    import imageio.v3 as iio

    out = tmp_path / "out"
    result = run("render-mesh", "--out", str(out), "--frames", "3", "--size", "64", timeout=300)
    assert result.returncode == 0, result.stderr
    frames = list(iio.imiter(out / "orbit.mp4"))
    assert len(frames) == 3 and frames[0].shape == (64, 64, 3)
    first = iio.imread(out / "first_frame.png")
    assert first.shape == (64, 64, 3) and first.min() < 200, "the torus is not in the picture"
    before = (out / "orbit.mp4").read_bytes()
    again = run("render-mesh", "--out", str(out), "--frames", "2", "--size", "32")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert (out / "orbit.mp4").read_bytes() == before, "an existing output was overwritten"


def test_render_mesh_reports_a_missing_file(tmp_path):
    result = run("render-mesh", str(tmp_path / "nope.obj"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("scenegrad render-mesh:") and "nope.obj" in result.stderr
    assert not (tmp_path / "o").exists(), "an output folder was created for a failed run"


def test_render_mesh_draws_a_mesh_file(native, tmp_path):
    from scenegrad.datasets.meshes import save_mesh
    from scenegrad.datasets.synthetic import torus_mesh

    save_mesh(torus_mesh(rings=16, sides=8, texture_size=32), tmp_path / "torus.glb")
    result = run("render-mesh", str(tmp_path / "torus.glb"), "--out", str(tmp_path / "o"), "--frames", "2",
                 "--size", "48", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "torus.glb" in result.stdout and (tmp_path / "o" / "orbit.mp4").exists()
