"""The synthetic-scene generator: its ground truth agrees with itself (depth warps between views,
points land on the mask), and write_scene's files load back through every reader unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from scenegrad.datasets.generate import FORMATS, synthetic_scene, write_scene
from scenegrad.datasets.rgbd import warp_depth
from scenegrad.render.cameras import project

from ..conftest import SHARED_DATA


@pytest.fixture(scope="module")
def torus():
    return synthetic_scene("torus", path="handheld", count=6, size=(96, 72), points=500, seed=3)


@pytest.mark.parametrize("mesh,path", [("torus", "orbit"), ("room", "walk"), ("room", "handheld")])
def test_depth_warps_between_views(mesh, path):
    scene = synthetic_scene(mesh, path=path, count=12, size=(96, 72), points=0)
    cams = scene.cameras.to(dtype=torch.float64)
    for i, j in [(0, 1), (6, 7)]:  # neighbours: a forward warp cannot fill what the source did not see
        src, dst = scene.frames[i].depth(), scene.frames[j].depth()
        warped = warp_depth(src.double(), cams[i], cams[j])
        both = (warped > 0) & (dst > 0)
        assert both.float().mean() > 0.05, "the views should overlap"
        rel = ((warped[both] - dst[both]).abs() / dst[both]).median()
        assert rel < 5e-3, f"{mesh}/{path} views {i}->{j}: median relative depth error {rel:.2e}"


def test_masks_depth_and_points_agree(torus):
    for k, frame in enumerate(torus.frames):
        depth, mask, image = frame.depth(), frame.mask(), frame.image()
        assert torch.equal(mask, depth > 0)
        assert image.shape == (72, 96, 3) and 0 <= image.min() and image.max() <= 1
        far_from_mesh = torch.nn.functional.max_pool2d(mask[None, None].float(), 5, 1, 2)[0, 0] == 0
        assert (image[far_from_mesh] == 1.0).all()  # white background; antialiasing only blends at edges
        uv, z = project(torus.cameras[k].to(dtype=torch.float64), torus.points.xyz)
        px = uv[0].floor().long()
        inside = (px[:, 0] >= 0) & (px[:, 0] < 96) & (px[:, 1] >= 0) & (px[:, 1] < 72) & (z[0] > 0)
        d = depth[px[inside, 1], px[inside, 0]]
        visible = (d - z[0][inside]).abs() < 0.05 * z[0][inside]
        assert visible.float().mean() > 0.2  # a torus hides part of itself
        assert mask[px[inside, 1], px[inside, 0]][visible].all()


def test_write_scene_loads_back_in_every_format(torus, tmp_path):
    from scenegrad.datasets.colmap import load_colmap
    from scenegrad.datasets.images import load_image_folder
    from scenegrad.datasets.llff import load_llff
    from scenegrad.datasets.transforms import load_transforms
    from scenegrad.datasets.video import probe_video

    written = write_scene(torus, tmp_path / "out")
    assert set(written) == set(FORMATS)
    want = torus.cameras.to(dtype=torch.float64)
    loaded = {
        "colmap": load_colmap(written["colmap"], tmp_path / "out" / "images"),
        "transforms": load_transforms(written["transforms"]),
        "llff": load_llff(tmp_path / "out"),
    }
    for fmt, scene in loaded.items():
        assert [Path(f.name).stem for f in scene.frames] == [f.name for f in torus.frames], fmt
        got = scene.cameras.to(dtype=torch.float64)
        for field in ("fx", "fy", "cx", "cy", "R", "t"):
            torch.testing.assert_close(getattr(got, field), getattr(want, field), atol=2e-5, rtol=1e-5,
                                       msg=f"{fmt}: {field}")
        image = scene.frames[2].image()
        assert (image - torus.frames[2].image()).abs().max() <= 1 / 255 + 1e-6, fmt
    depth = loaded["transforms"].frames[1].depth()
    assert (depth - torus.frames[1].depth()).abs().max() <= 5e-4 + 1e-6  # millimetre PNG
    assert torch.equal(loaded["transforms"].frames[1].mask(), torus.frames[1].mask())
    assert len(loaded["colmap"].points) == len(torus.points)
    folder = load_image_folder(written["images"])
    assert len(folder) == len(torus)
    assert probe_video(written["video"]).frame_count == len(torus)

    with pytest.raises(FileExistsError, match="exists"):
        write_scene(torus, tmp_path / "out", ("colmap",))
    with pytest.raises(ValueError, match="unknown formats"):
        write_scene(torus, tmp_path / "other", ("ply",))


@pytest.mark.parametrize("name", ["spot/spot.obj", "avocado/avocado.gltf"])
def test_real_meshes_render_with_their_textures(name):
    path = SHARED_DATA / "meshes" / name
    if not path.exists():
        pytest.skip(f"needs {path} (../shared/data)")
    scene = synthetic_scene(path, path="arc", count=3, size=(80, 60), points=200)
    for frame in scene.frames:
        mask, image = frame.mask(), frame.image()
        assert 0.05 < mask.float().mean() < 0.9, "the object is in view and not filling it"
        on = image[mask]
        assert on.std(0).mean() > 0.03, "a textured surface, not a flat colour"
    assert np.isfinite(scene.points.xyz.numpy()).all()
