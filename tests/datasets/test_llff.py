"""LLFF poses_bounds.npy: the "down, right, backwards" axis order checked by projection and against
NeRF's own conversion, downscaled image folders, save / load round trips, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scenegrad.datasets.llff import load_llff, save_llff
from scenegrad.datasets.scene import Frame, Points, Scene
from scenegrad.datasets.synthetic import orbit_cameras
from scenegrad.render.cameras import Cameras, project
from scenegrad.render.conventions import cameras_to_opengl_c2w
from scenegrad.render.rotations import matrix_to_quat, quat_to_matrix


def write_images(folder: Path, names: list[str], size: tuple[int, int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        Image.new("RGB", size, (10, 20, 30)).save(folder / name)
        paths.append(folder / name)
    return paths


def drb_row(centre, forward, up, h: float, w: float, f: float, near: float = 1.0, far: float = 10.0) -> np.ndarray:
    """One poses_bounds row written from LLFF's definition: columns down, right, backwards, centre, hwf."""
    fwd = np.asarray(forward, float) / np.linalg.norm(forward)
    right = np.cross(fwd, up)
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)  # = -up, orthogonalised
    m = np.stack([down, right, -fwd, np.asarray(centre, float), [h, w, f]], axis=-1)
    return np.concatenate([m.ravel(), [near, far]])


def test_drb_convention_projects_as_the_camera_looks(tmp_path):
    rows = [drb_row([0, 0, 5], [0, 0, -1], [0, 1, 0], 48, 64, 50, 2.0, 8.0),
            drb_row([4, 2, 3], [-4, -2, -3], [0, 1, 0], 48, 64, 50)]
    np.save(tmp_path / "poses_bounds.npy", np.stack(rows))
    write_images(tmp_path / "images", ["b.png", "a.png"], (64, 48))
    scene = load_llff(tmp_path)
    assert [f.name for f in scene.frames] == ["a.png", "b.png"]
    assert scene.frames[0].metadata == {"near": 2.0, "far": 8.0}
    cams = scene.cameras
    assert cams.model == "pinhole" and cams.fx.tolist() == [50.0, 50.0] and cams.cx.tolist() == [32.0, 32.0]
    pts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float64)
    uv, depth = project(cams, pts)
    torch.testing.assert_close(uv[:, 0], torch.tensor([[32.0, 24.0]] * 2, dtype=torch.float64))
    assert depth[0, 0].item() == pytest.approx(5.0) and depth[1, 0].item() == pytest.approx(29 ** 0.5)
    assert uv[0, 1, 0] > 32 and abs(uv[0, 1, 1] - 24) < 1e-9  # world +X: to the right
    assert uv[0, 2, 1] < 24 and abs(uv[0, 2, 0] - 32) < 1e-9  # world +Y (up): towards the top row
    assert uv[1, 2, 1] < 24


def test_matches_nerf_pytorch_conversion(tmp_path):
    """nerf / nerf-pytorch ``load_llff.py`` turn the DRB columns into OpenGL ones as
    ``[col 1, -col 0, col 2]``: our cameras must give the same OpenGL camera-to-world matrices."""
    rng = np.random.default_rng(0)
    q = torch.tensor(rng.normal(size=(4, 4)))
    R_c2w = quat_to_matrix(q).numpy()
    centres = rng.normal(size=(4, 3))
    poses = np.concatenate([R_c2w, centres[:, :, None], np.tile([[30.0], [40.0], [35.0]], (4, 1, 1))], axis=-1)
    np.save(tmp_path / "poses_bounds.npy", np.concatenate([poses.reshape(4, 15), np.ones((4, 2))], axis=1))
    write_images(tmp_path / "images", [f"{i}.jpg" for i in range(4)], (40, 30))
    cams = load_llff(tmp_path).cameras
    nerf_gl = np.concatenate([poses[:, :, 1:2], -poses[:, :, 0:1], poses[:, :, 2:4]], axis=2)
    np.testing.assert_allclose(cameras_to_opengl_c2w(cams)[:, :3].numpy(), nerf_gl, rtol=0, atol=1e-12)


def test_downscaled_image_folder(tmp_path):
    rows = [drb_row([0, 0, 5], [0, 0, -1], [0, 1, 0], 3024, 4032, 3200.0)] * 2
    np.save(tmp_path / "poses_bounds.npy", np.stack(rows))
    write_images(tmp_path / "images_8", ["0.png", "1.png"], (504, 378))
    write_images(tmp_path / "images_7", ["0.png", "1.png"], (576, 432))
    write_images(tmp_path / "images_3", ["0.png", "1.png"], (1344, 1000))  # not a scaled copy
    with pytest.raises(FileNotFoundError, match=r"images: no such image folder"):
        load_llff(tmp_path)
    cams = load_llff(tmp_path, factor=8).cameras
    assert cams.width.tolist() == [504, 504] and cams.height.tolist() == [378, 378]
    assert cams.fx.tolist() == [400.0, 400.0] and cams.fy.tolist() == [400.0, 400.0]  # f / factor
    assert cams.cx.tolist() == [252.0, 252.0] and cams.cy.tolist() == [189.0, 189.0]
    cams = load_llff(tmp_path, factor=7).cameras
    assert cams.fx.tolist() == pytest.approx([3200 * 576 / 4032] * 2) and cams.cy.tolist() == [216.0] * 2
    with pytest.raises(ValueError, match=r"0\.png is 1344x1000 but .* stores 4032x3024"):
        load_llff(tmp_path, factor=3)
    with pytest.raises(FileNotFoundError, match=r"images_4: no such image folder \(downscale images/ by 4"):
        load_llff(tmp_path, factor=4)
    with pytest.raises(ValueError, match="factor must be a positive integer"):
        load_llff(tmp_path, factor=0)


def synthetic_scene(tmp_path: Path, n: int = 5) -> Scene:
    cams = orbit_cameras(n, radius=3.0, width=40, height=30, focal=35.0).to(dtype=torch.float64)
    cams.R = quat_to_matrix(matrix_to_quat(cams.R))  # orthonormal to float64 precision
    paths = write_images(tmp_path / "src", [f"v{i}.png" for i in range(n)], (40, 30))
    frames = [Frame(name=p.name, image_path=p, metadata={"near": 0.5 + i, "far": 20.0 + i})
              for i, p in enumerate(paths)]
    return Scene(frames[::-1], cams[list(range(n))[::-1]])  # not in file-name order


def test_save_load_round_trip(tmp_path):
    scene = synthetic_scene(tmp_path)
    g = torch.Generator().manual_seed(1)
    scene.cameras.R = scene.cameras.R + 1e-6 * torch.randn(5, 3, 3, generator=g, dtype=torch.float64)  # not quite
    npy = save_llff(scene, tmp_path / "out")
    assert npy == tmp_path / "out" / "poses_bounds.npy"
    back = load_llff(tmp_path / "out")
    assert [f.name for f in back.frames] == sorted(f.name for f in scene.frames)
    order = [[f.name for f in scene.frames].index(f.name) for f in back.frames]
    ref = scene.cameras[order]
    for name in ("fx", "fy", "cx", "cy", "R", "t", "width", "height"):
        torch.testing.assert_close(getattr(back.cameras, name), getattr(ref, name), rtol=0, atol=1e-12)
    assert [f.metadata for f in back.frames] == [scene.frames[i].metadata for i in order]
    assert (tmp_path / "out" / "images" / "v0.png").read_bytes() == (tmp_path / "src" / "v0.png").read_bytes()
    with pytest.raises(FileExistsError, match="poses_bounds.npy: already exists"):
        save_llff(scene, tmp_path / "out")
    save_llff(scene, tmp_path / "out", overwrite=True)  # copies onto itself are fine
    assert len(load_llff(tmp_path / "out")) == 5


def test_bounds_from_points_and_default(tmp_path):
    scene = synthetic_scene(tmp_path, n=3)
    g = torch.Generator().manual_seed(0)
    seen = torch.randn(500, 3, generator=g, dtype=torch.float64) * 0.2  # inside every view
    unseen = torch.tensor([[0.0, 100.0, 0.0], [0.0, -100.0, 0.0]], dtype=torch.float64)  # outside every view
    points = Points(torch.cat([seen, unseen]))
    save_llff(Scene(scene.frames, scene.cameras, points), tmp_path / "pts")
    arr = np.load(tmp_path / "pts" / "poses_bounds.npy")
    uv, depth = project(scene.cameras, seen)
    assert bool(((uv > 0).all(-1) & (uv[..., 0] < 40) & (uv[..., 1] < 30)).all())
    for i, frame in enumerate(scene.frames):
        row = sorted(f.name for f in scene.frames).index(frame.name)
        z = depth[i].numpy()
        assert arr[row, 15:].tolist() == pytest.approx([np.percentile(z, 0.1), np.percentile(z, 99.9)])
    frames = [Frame(name=f.name, image_path=f.image_path) for f in scene.frames]
    save_llff(Scene(frames, scene.cameras), tmp_path / "default", default_bounds=(0.2, 30.0))
    assert np.load(tmp_path / "default" / "poses_bounds.npy")[:, 15:].tolist() == [[0.2, 30.0]] * 3


def test_save_rejects_what_llff_cannot_store(tmp_path):
    scene = synthetic_scene(tmp_path, n=2)
    c = scene.cameras
    opencv = Cameras(c.fx, c.fy, c.cx, c.cy, c.R, c.t, c.width, c.height, "opencv", torch.tensor([0.1, 0, 0, 0]))
    with pytest.raises(ValueError, match="no lens distortion"):
        save_llff(Scene(scene.frames, opencv), tmp_path / "a")
    zero = Cameras(c.fx, c.fy, c.cx, c.cy, c.R, c.t, c.width, c.height, "opencv")
    save_llff(Scene(scene.frames, zero), tmp_path / "zero")  # zero distortion is a pinhole camera
    aniso = Cameras(c.fx, c.fy * 1.1, c.cx, c.cy, c.R, c.t, c.width, c.height)
    with pytest.raises(ValueError, match="fx != fy"):
        save_llff(Scene(scene.frames, aniso), tmp_path / "b")
    shifted = Cameras(c.fx, c.fy, c.cx + 3, c.cy, c.R, c.t, c.width, c.height)
    with pytest.warns(UserWarning, match="off by up to 3 px"):
        save_llff(Scene(scene.frames, shifted), tmp_path / "c")
    with pytest.raises(ValueError, match="needs a scene with cameras"):
        save_llff(Scene(scene.frames), tmp_path / "d")
    memory = [Frame(name="x.png", image_fn=lambda: np.zeros((30, 40, 3))), scene.frames[1]]
    with pytest.raises(ValueError, match="'x.png' has no image file to copy"):
        save_llff(Scene(memory, c), tmp_path / "e")
    write_images(tmp_path / "f" / "images", ["stranger.png"], (4, 4))
    with pytest.raises(ValueError, match="holds other images .*stranger.png"):
        save_llff(scene, tmp_path / "f")


@pytest.mark.parametrize("array, message", [
    (np.zeros((2, 15)), r"expected a \[N, 17\] numeric array"),
    (np.zeros(17), r"expected a \[N, 17\] numeric array"),
    (np.full((2, 17), np.nan), "non-finite"),
    (np.zeros((2, 17)), "must be > 0"),
    (np.ones((3, 17)), "has 3 poses but .*images has 2 images"),
])
def test_bad_poses_bounds(tmp_path, array, message):
    np.save(tmp_path / "poses_bounds.npy", array)
    write_images(tmp_path / "images", ["a.png", "b.png"], (4, 4))
    (tmp_path / "images" / "notes.txt").write_text("ignored")
    with pytest.raises(ValueError, match=message) as info:
        load_llff(tmp_path)
    assert "poses_bounds.npy" in str(info.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="poses_bounds.npy: no such file"):
        load_llff(tmp_path)
    (tmp_path / "poses_bounds.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="not a readable .npy array"):
        load_llff(tmp_path)
