"""``--poses colmap``: COLMAP through pycolmap on a synthetic walk recovers the generator's cameras."""

from __future__ import annotations

import pytest

pycolmap = pytest.importorskip("pycolmap", reason="pycolmap is not installed (pip install scenegrad[peers])")

FRAMES = 10


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    import imageio.v2 as imageio
    import numpy as np

    from scenegrad.datasets.generate import synthetic_scene

    folder = tmp_path_factory.mktemp("walk")
    scene = synthetic_scene("room", path="walk", count=FRAMES, size=(640, 480))
    for i, frame in enumerate(scene.frames):
        imageio.imwrite(folder / f"frame_{i:06d}.png", (frame.image()[..., :3].numpy() * 255 + 0.5).astype(np.uint8))
    return folder, scene


def test_colmap_poses_match_the_generator(walk, tmp_path):
    from scenegrad.datasets.colmap import load_colmap
    from scenegrad.recon.colmap_poses import colmap_poses
    from scenegrad.recon.evaluate import pose_errors

    folder, scene = walk
    posed = colmap_poses(folder, tmp_path / "sparse" / "0", threads=2)
    assert posed.total == FRAMES and len(posed.registered) >= FRAMES - 1 and posed.points > 200
    got = load_colmap(tmp_path / "sparse" / "0", folder)
    index = [int(f.name.split("_")[1].split(".")[0]) for f in got.frames]
    errors = pose_errors(got.cameras, scene.cameras[index])
    print(errors)
    assert errors.ate_rel < 0.02 and errors.rot_mean_deg < 1.0 and errors.focal_rel < 0.05


def test_colmap_poses_says_when_it_fails(tmp_path):
    import imageio.v2 as imageio
    import numpy as np

    from scenegrad.recon.colmap_poses import colmap_poses

    for i in range(4):  # flat grey frames: no features, nothing registered
        imageio.imwrite(tmp_path / f"{i}.png", np.full((64, 64, 3), 128, np.uint8))
    with pytest.raises(RuntimeError, match="registered 0 of 4"):
        colmap_poses(tmp_path, tmp_path / "sparse")
    assert not (tmp_path / "sparse").exists()
