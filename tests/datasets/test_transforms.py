"""transforms.json: the instant-ngp fox (real data), Blender NeRF-synthetic and nerfstudio variants,
the OpenGL -> OpenCV pose conversion checked by projection, save / load round trips, and bad input."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scenegrad.datasets.scene import Frame, Points, Scene
from scenegrad.datasets.synthetic import orbit_cameras
from scenegrad.datasets.transforms import load_transforms, save_transforms
from scenegrad.render.cameras import Cameras, project

from ..conftest import SHARED_DATA

FOX = SHARED_DATA / "posed" / "fox"


def write_image(path: Path, size: tuple[int, int] = (16, 12), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)
    return path


def c2w_gl(centre, forward, up=(0.0, 1.0, 0.0)) -> list[list[float]]:
    """OpenGL camera-to-world: columns right, up, back (= -forward) and the centre."""
    f = np.asarray(forward, float) / np.linalg.norm(forward)
    r = np.cross(f, up)
    r /= np.linalg.norm(r)
    u = np.cross(r, f)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = r, u, -f, centre
    return m.tolist()


def write_json(folder: Path, data: dict, name: str = "transforms.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(data))
    return folder / name


# ----------------------------------------------------------------------------------------------
# Real data: instant-ngp's fox
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fox() -> Path:
    if not (FOX / "transforms.json").is_file():
        pytest.skip("../shared/data/posed/fox not found")
    return FOX


def test_fox_loads_existing_frames_with_one_warning(fox):
    raw = json.loads((fox / "transforms.json").read_text())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = load_transforms(fox)
    ours = [w for w in caught if "no image file" in str(w.message)]
    assert len(ours) == 1 and "17 of 67 frames" in str(ours[0].message)
    assert len(scene) == 50
    present = [f for f in raw["frames"] if (fox / f["file_path"]).is_file()]
    assert [f.name for f in scene.frames] == [f["file_path"] for f in present]
    assert scene.frames[0].metadata["sharpness"] == present[0]["sharpness"]

    cams = scene.cameras
    assert cams.model == "opencv" and cams.dtype == torch.float64
    assert cams.fx.unique().tolist() == [1375.52] and cams.fy.unique().tolist() == [1374.49]
    assert cams.cx.unique().tolist() == [554.558] and cams.cy.unique().tolist() == [965.268]
    assert cams.width.unique().tolist() == [1080] and cams.height.unique().tolist() == [1920]
    assert cams.dist.unique(dim=0).tolist() == [[raw["k1"], raw["k2"], raw["p1"], raw["p2"], 0.0]]
    # OpenCV camera-to-world = the json's OpenGL matrix with columns 1 and 2 negated. The fox's rotations
    # are orthonormal only to ~1e-6, so check the blocks as stored: R^T, and t = -R @ centre.
    expected = torch.tensor([f["transform_matrix"] for f in present], dtype=torch.float64)
    expected[:, :3, 1:3] *= -1
    torch.testing.assert_close(cams.R.transpose(1, 2), expected[:, :3, :3], rtol=0, atol=1e-15)
    torch.testing.assert_close(cams.t, -(cams.R @ expected[:, :3, 3:])[..., 0], rtol=0, atol=1e-12)
    torch.testing.assert_close(cams.camtoworlds, expected, rtol=0, atol=1e-4)
    assert scene.metadata["aabb_scale"] == 4
    assert tuple(scene.frames[0].image().shape) == (1920, 1080, 3)


def test_fox_save_load_round_trip(fox, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scene = load_transforms(fox)
    back = load_transforms(save_transforms(scene, tmp_path))
    assert [f.image_path.resolve() for f in back.frames] == [f.image_path.resolve() for f in scene.frames]
    for name in ("fx", "fy", "cx", "cy", "R", "t", "dist", "width", "height"):  # exact despite 1e-6-orthonormal R
        torch.testing.assert_close(getattr(back.cameras, name), getattr(scene.cameras, name), rtol=0, atol=1e-12)
    assert back.frames[3].metadata["sharpness"] == scene.frames[3].metadata["sharpness"]


def test_fox_cameras_see_the_fox_together(fox):
    # instant-ngp's fox cameras all look at the fox near the origin: rays through the image centres
    # pass close to one common point, which lies in front of every camera.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cams = load_transforms(fox).cameras
    centres, dirs = cams.centers, cams.R[:, 2]  # OpenCV +Z row of R = viewing direction in the world
    A = torch.eye(3, dtype=torch.float64) - dirs[:, :, None] * dirs[:, None, :]
    point = torch.linalg.solve(A.sum(0), (A @ centres[:, :, None]).sum(0))[:, 0]
    uv, depth = project(cams, point[None])
    assert bool((depth > 0).all())
    offset = (uv[:, 0] - torch.stack([cams.cx, cams.cy], -1)).norm(dim=-1) / cams.width
    assert float(offset.median()) < 0.2


# ----------------------------------------------------------------------------------------------
# Synthetic variants
# ----------------------------------------------------------------------------------------------


def test_blender_synthetic_split_angle_and_extensionless_paths(tmp_path):
    for i in range(3):
        write_image(tmp_path / "train" / f"r_{i}.png", (20, 10), "RGBA")
    frames = [{"file_path": f"./train/r_{i}", "rotation": 0.1, "transform_matrix": c2w_gl([0, 0, 4 + i], [0, 0, -1])}
              for i in range(3)]
    write_json(tmp_path, {"camera_angle_x": 0.7, "frames": frames}, "transforms_train.json")
    with pytest.raises(FileNotFoundError, match=r"transforms\.json: no such file \(there is transforms_train\.json"):
        load_transforms(tmp_path)
    scene = load_transforms(tmp_path, split="train")
    assert [f.name for f in scene.frames] == ["train/r_0.png", "train/r_1.png", "train/r_2.png"]
    assert scene.frames[1].image_path == tmp_path / "train" / "r_1.png"
    assert scene.frames[0].metadata == {"rotation": 0.1, "file_path": "./train/r_0"}
    cams = scene.cameras
    assert cams.model == "pinhole" and cams.width.tolist() == [20] * 3 and cams.height.tolist() == [10] * 3
    f = 0.5 * 20 / math.tan(0.35)
    assert cams.fx.tolist() == [f] * 3 and cams.fy.tolist() == [f] * 3
    assert cams.cx.tolist() == [10.0] * 3 and cams.cy.tolist() == [5.0] * 3
    assert scene.frames[0].image().shape == (10, 20, 4)
    # camera_angle_y gives its own vertical focal length
    write_json(tmp_path, {"camera_angle_x": 0.7, "camera_angle_y": 0.5, "frames": frames}, "transforms_val.json")
    cams = load_transforms(tmp_path / "transforms_val.json").cameras
    assert cams.fy.tolist() == [0.5 * 10 / math.tan(0.25)] * 3


def test_pose_conversion_projects_as_the_camera_looks(tmp_path):
    write_image(tmp_path / "a.png", (64, 48))
    write_image(tmp_path / "b.png", (64, 48))
    frames = [
        {"file_path": "a.png", "transform_matrix": c2w_gl([0, 0, 5], [0, 0, -1])},  # looking down -Z, +Y up
        {"file_path": "b.png", "transform_matrix": c2w_gl([3, 1, 2], [-3, -1, -2])},  # looking at the origin
    ]
    write_json(tmp_path, {"fl_x": 50.0, "fl_y": 50.0, "w": 64, "h": 48, "frames": frames})
    cams = load_transforms(tmp_path).cameras
    pts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float64)
    uv, depth = project(cams, pts)
    torch.testing.assert_close(uv[:, 0], torch.tensor([[32.0, 24.0]] * 2, dtype=torch.float64))
    torch.testing.assert_close(depth[0], torch.tensor([5.0, 5.0, 5.0], dtype=torch.float64))
    assert uv[0, 1, 0] > 32 and uv[0, 1, 1] == 24  # world +X is to the right in the image
    assert uv[0, 2, 1] < 24 and uv[0, 2, 0] == 32  # world +Y (up) is towards the top row
    assert uv[1, 2, 1] < 24  # also for the tilted camera (its up vector is world +Y)


def test_nerfstudio_per_frame_intrinsics_depth_mask_points(tmp_path):
    write_image(tmp_path / "images" / "frame_00001.jpg", (40, 30))
    write_image(tmp_path / "images" / "frame_00002.jpg", (40, 30))
    depth = (np.arange(30 * 40).reshape(30, 40) % 5000).astype(np.uint16)
    (tmp_path / "depths").mkdir()
    Image.fromarray(depth).save(tmp_path / "depths" / "frame_00001.png")
    mask = np.zeros((30, 40), np.uint8)
    mask[:, :10] = 255
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / "frame_00001.png")
    import trimesh

    xyz = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    rgb = np.random.default_rng(1).integers(0, 256, (8, 3)).astype(np.uint8)
    trimesh.PointCloud(xyz, colors=rgb).export(tmp_path / "sparse_pc.ply")
    applied = [[0.0, 1.0, 0.0, 0.5], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 2.0]]
    data = {
        "camera_model": "OPENCV_FISHEYE", "w": 40, "h": 30, "k1": 0.01, "k2": -0.002, "k3": 0.003, "k4": -0.001,
        "applied_transform": applied, "ply_file_path": "sparse_pc.ply",
        "frames": [
            {"file_path": "images/frame_00001.jpg", "fl_x": 30.0, "fl_y": 31.0, "cx": 20.5, "cy": 14.5,
             "depth_file_path": "depths/frame_00001.png", "mask_path": "masks/frame_00001.png", "colmap_im_id": 4,
             "transform_matrix": c2w_gl([0, 0, 3], [0, 0, -1])},
            {"file_path": "images/frame_00002.jpg", "fl_x": 35.0, "fl_y": 36.0, "cx": 19.0, "cy": 15.0, "k4": 0.0,
             "depth_unit_scale_factor": 0.5, "transform_matrix": c2w_gl([1, 0, 3], [0, 0, -1])},
        ],
    }
    write_json(tmp_path, data)
    scene = load_transforms(tmp_path / "transforms.json")
    cams = scene.cameras
    assert cams.model == "fisheye"
    assert cams.fx.tolist() == [30.0, 35.0] and cams.fy.tolist() == [31.0, 36.0] and cams.cx.tolist() == [20.5, 19.0]
    assert cams.dist.tolist() == [[0.01, -0.002, 0.003, -0.001], [0.01, -0.002, 0.003, 0.0]]
    f0, f1 = scene.frames
    assert f0.metadata["colmap_im_id"] == 4
    torch.testing.assert_close(f0.depth(), torch.tensor(depth, dtype=torch.float32) / 1000)
    assert f0.depth_scale == 1e-3 and f1.depth_scale == 0.5 and f1.depth() is None
    assert f0.mask()[:, :10].all() and not f0.mask()[:, 10:].any()
    assert np.array_equal(scene.metadata["applied_transform"], np.array(applied))
    assert scene.metadata["ply_file_path"] == tmp_path / "sparse_pc.ply"
    np.testing.assert_array_equal(scene.points.xyz.numpy(), xyz.astype(np.float64))
    assert torch.equal(torch.round(scene.points.rgb * 255).to(torch.uint8), torch.tensor(rgb))


def test_instant_ngp_distortion_without_camera_model_and_missing_ply(tmp_path):
    write_image(tmp_path / "a.png", (10, 10))
    data = {"fl_x": 9.0, "w": 10, "h": 10, "k1": 0.1, "p2": 0.01, "ply_file_path": "nope.ply",
            "frames": [{"file_path": "a.png", "transform_matrix": np.eye(4)[:3].tolist()}]}  # 3x4 accepted
    write_json(tmp_path, data)
    with pytest.warns(UserWarning, match="nope.ply does not exist"):
        scene = load_transforms(tmp_path)
    assert scene.cameras.model == "opencv" and scene.cameras.fy.item() == 9.0
    assert scene.cameras.dist.tolist() == [[0.1, 0.0, 0.0, 0.01, 0.0]]
    assert scene.points is None
    data.update(is_fisheye=True, k1=0.0, p2=0.0, ply_file_path=None)
    write_json(tmp_path, data)
    assert load_transforms(tmp_path).cameras.model == "fisheye"


# ----------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------


def synthetic_scene(tmp_path: Path, model: str = "opencv", shared: bool = False, n: int = 5) -> Scene:
    cams = orbit_cameras(n, radius=3.0, width=40, height=30, focal=35.0).to(dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    fx = cams.fx if shared else cams.fx + torch.rand(n, generator=g, dtype=torch.float64)
    dist = None
    if model != "pinhole":
        dist = (torch.rand(1 if shared else n, 5 if model == "opencv" else 4, generator=g, dtype=torch.float64) - 0.5)
        dist = dist * 0.02
    cams = Cameras(fx, cams.fy, cams.cx, cams.cy, cams.R, cams.t, cams.width, cams.height, model, dist)
    frames = []
    for i in range(n):
        image = write_image(tmp_path / "data" / "rgb" / f"{i:03d}.png", (40, 30))
        frames.append(Frame(name=f"{i:03d}.png", image_path=image, metadata={"sharpness": float(i), "arr": [1]}))
    points = Points(torch.randn(10, 3, generator=g, dtype=torch.float64), torch.rand(10, 3, generator=g))
    return Scene(frames, cams, points, metadata={"applied_transform": np.eye(4)[:3]})


@pytest.mark.parametrize("model, shared", [("opencv", False), ("opencv", True), ("fisheye", False),
                                           ("pinhole", True)])
def test_save_load_round_trip(tmp_path, model, shared):
    scene = synthetic_scene(tmp_path, model, shared)
    path = save_transforms(scene, tmp_path / "out")
    data = json.loads(path.read_text())
    assert data["camera_model"] == {"opencv": "OPENCV", "fisheye": "OPENCV_FISHEYE", "pinhole": "PINHOLE"}[model]
    assert ("fl_x" in data) == shared and ("fl_x" in data["frames"][0]) == (not shared)
    assert data["frames"][0]["file_path"] == "../data/rgb/000.png" and data["frames"][2]["sharpness"] == 2.0
    assert "arr" not in data["frames"][0] and data["ply_file_path"] == "sparse_pc.ply"
    back = load_transforms(path)
    assert [f.image_path.resolve() for f in back.frames] == [f.image_path.resolve() for f in scene.frames]
    for name in ("fx", "fy", "cx", "cy", "R", "t", "width", "height"):
        torch.testing.assert_close(getattr(back.cameras, name), getattr(scene.cameras, name), rtol=0, atol=1e-6)
    assert back.cameras.model == model
    if model != "pinhole":
        torch.testing.assert_close(back.cameras.dist, scene.cameras.dist, rtol=0, atol=1e-12)
    torch.testing.assert_close(back.points.xyz, scene.points.xyz, rtol=1e-6, atol=1e-6)  # float32 PLY
    assert torch.equal(back.points.rgb, torch.round(scene.points.rgb * 255).double() / 255)
    assert np.array_equal(back.metadata["applied_transform"], np.eye(4)[:3])


def test_save_refuses_to_overwrite_and_other_options(tmp_path):
    scene = synthetic_scene(tmp_path, "pinhole", shared=True)
    path = save_transforms(scene, tmp_path / "out" / "cams.json", image_dir="../data/rgb")
    assert path == tmp_path / "out" / "cams.json"
    assert json.loads(path.read_text())["frames"][1]["file_path"] == "../data/rgb/001.png"
    with pytest.raises(FileExistsError, match=r"cams\.json: already exists"):
        save_transforms(scene, path)
    save_transforms(Scene(scene.frames, scene.cameras), path, overwrite=True)
    assert "ply_file_path" not in json.loads(path.read_text())
    assert len(load_transforms(path)) == 5

    frames = [Frame(name=f.name, image_fn=lambda: np.zeros((30, 40, 3))) for f in scene.frames]
    with pytest.raises(ValueError, match="has no image_path; pass image_dir="):
        save_transforms(Scene(frames, scene.cameras), tmp_path / "x")
    frames[0] = Frame(name="000.png", image_path=scene.frames[0].image_path, mask_path=tmp_path / "m.png",
                      mask_invert=True)
    with pytest.raises(ValueError, match="inverted mask"):
        save_transforms(Scene(frames, scene.cameras), tmp_path / "x", image_dir="rgb")
    with pytest.raises(ValueError, match="needs a scene with cameras"):
        save_transforms(Scene(scene.frames), tmp_path / "x")


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------

EYE = np.eye(4).tolist()


@pytest.mark.parametrize("data, message", [
    ({"fl_x": 5, "frames": []}, "no frames"),
    ({"fl_x": 5}, "no frames"),
    ([1, 2], "no frames"),
    ({"fl_x": 5, "frames": [{"transform_matrix": EYE}]}, r"frames\[0\]: needs a 'file_path'"),
    ({"fl_x": 5, "frames": [{"file_path": "a.png"}]}, r"frames\[0\]: needs a 'transform_matrix'"),
    ({"fl_x": 5, "frames": [{"file_path": "a.png", "transform_matrix": [[1, 0], [0, 1]]}]},
     r"frames\[0\]: transform_matrix must be a finite 4x4"),
    ({"fl_x": 5, "frames": [{"file_path": "a.png", "transform_matrix": [["x"] * 4] * 4}]},
     r"frames\[0\]: transform_matrix must be a 4x4"),
    ({"frames": [{"file_path": "a.png", "transform_matrix": EYE}]}, r"frames\[0\]: no focal length"),
    ({"fl_x": "5", "frames": [{"file_path": "a.png", "transform_matrix": EYE}]}, "fl_x must be a finite number"),
    ({"fl_x": 5, "camera_model": "EQUIRECTANGULAR", "frames": [{"file_path": "a.png", "transform_matrix": EYE}]},
     "camera_model 'EQUIRECTANGULAR' is not supported"),
    ({"fl_x": 5, "camera_model": "OPENCV", "k4": 0.1, "frames": [{"file_path": "a.png", "transform_matrix": EYE}]},
     "k4 = 0.1"),
    ({"fl_x": 5, "frames": [{"file_path": "a.png", "transform_matrix": EYE},
                            {"file_path": "b.png", "transform_matrix": EYE, "camera_model": "OPENCV_FISHEYE"}]},
     "mix fisheye and non-fisheye"),
    ({"fl_x": 5, "frames": [{"file_path": "a.png", "transform_matrix": EYE},
                            {"file_path": "./a", "transform_matrix": EYE}]},
     "several frames use the same image: a.png"),
    ({"fl_x": 5, "frames": [{"file_path": "gone.png", "transform_matrix": EYE}]},
     "none of the 1 frames' images exist"),
])
def test_bad_transforms_name_the_file(tmp_path, data, message):
    write_image(tmp_path / "a.png", (8, 8))
    write_image(tmp_path / "b.png", (8, 8))
    path = write_json(tmp_path, data)
    with pytest.raises(ValueError, match=message) as info:
        load_transforms(path)
    assert str(path) in str(info.value)


def test_invalid_json_and_missing_paths(tmp_path):
    (tmp_path / "transforms.json").write_text('{"frames": [\n  {"file_path": }\n]}')
    with pytest.raises(ValueError, match=r"transforms\.json: invalid JSON at line 2"):
        load_transforms(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such transforms.json"):
        load_transforms(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match=r"transforms_test\.json: no such file"):
        load_transforms(tmp_path, split="test")
