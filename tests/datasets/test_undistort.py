"""Undistortion: an analytic image through a distorted camera comes back as the same function seen by the
pinhole camera; maps equal OpenCV's (with the half-pixel shift); new intrinsics as getOptimalNewCameraMatrix;
lazy and written scenes; the real fox photos (OpenCV k1 k2 p1 p2)."""

from __future__ import annotations

import dataclasses
import functools
import json
import math

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from scenegrad.datasets.scene import Frame, Scene
from scenegrad.datasets.undistort import undistort_cameras, undistort_image, undistort_maps, undistort_scene
from scenegrad.render.cameras import Cameras, pixel_centers, undistort_points

from ..conftest import SHARED_DATA

FOX = SHARED_DATA / "posed" / "fox"

DISTORTIONS = {
    "opencv": [-0.25, 0.08, 0.001, -0.0005, -0.01],
    "fisheye": [0.05, -0.01, 0.003, -0.001],
}


def camera(model: str, w: int = 320, h: int = 240, R: torch.Tensor | None = None) -> Cameras:
    R = torch.eye(3, dtype=torch.float64)[None] if R is None else R
    return Cameras(300.0, 305.0, 163.0, 118.0, R, torch.zeros(1, 3, dtype=torch.float64), w, h, model=model,
                   dist=torch.tensor(DISTORTIONS[model], dtype=torch.float64))


def opencv_K(cam: Cameras) -> np.ndarray:
    """``K`` in OpenCV's pixel convention (pixel centres at integers)."""
    K = cam.K[0].double().numpy().copy()
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    return K


def pattern(xy: torch.Tensor) -> torch.Tensor:
    """A smooth function of normalised image coordinates ``(x/z, y/z)`` -> ``[..., 3]`` in [0, 1]."""
    x, y = xy[..., 0], xy[..., 1]
    return torch.stack([0.5 + 0.4 * torch.sin(30 * x + 1) * torch.cos(20 * y),
                        0.5 + 0.4 * torch.cos(25 * x - 40 * y),
                        0.5 + 0.3 * x + 0.2 * y], dim=-1)


def render_pattern(cam: Cameras) -> torch.Tensor:
    """``pattern`` sampled at every pixel centre of ``cam`` (any model): ``[H, W, 3]`` float32."""
    if cam.is_distorted:  # the Newton inversion over every pixel is the slow part: once per camera
        key = tuple(torch.cat([cam.K.flatten(), cam.R.flatten(), cam.dist.flatten()]).tolist())
        return _render_distorted(cam.model, key, int(cam.width[0]), int(cam.height[0])).clone()
    return _render(cam)


@functools.cache
def _render_distorted(model: str, key: tuple[float, ...], w: int, h: int) -> torch.Tensor:
    K, R, dist = torch.tensor(key[:9]).reshape(3, 3), torch.tensor(key[9:18]).reshape(1, 3, 3), torch.tensor(key[18:])
    cam = Cameras.from_K(K.double(), R.double(), torch.zeros(1, 3, dtype=torch.float64), w, h, model, dist.double())
    return _render(cam)


def _render(cam: Cameras) -> torch.Tensor:
    w, h = int(cam.width[0]), int(cam.height[0])
    xy = undistort_points(cam, pixel_centers(w, h, torch.float64).reshape(-1, 2), normalized=True)[0]
    return pattern(xy).reshape(h, w, 3).float()


TOLERANCE = 4e-3  # max |undistorted - analytic| away from the border


@pytest.mark.parametrize("model", ["opencv", "fisheye"])
def test_analytic_image(model):
    """Undistorting an image of a known function gives that function sampled by the pinhole camera.

    The pattern changes by up to ~0.06 per pixel, so a half-pixel error in the maps shows as ~3e-2, while
    bilinear interpolation (~1e-3 for this curvature) and cv2's 1/32-pixel map quantisation (~1e-3) stay
    below ``TOLERANCE``."""
    cam = camera(model)
    new = undistort_cameras(cam, "valid")
    out = undistort_image(render_pattern(cam), cam, new)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (240, 320, 3)
    expected = render_pattern(new)
    interior = (slice(3, -3), slice(3, -3))
    err = (out - expected)[interior].abs()
    print(f"\n{model}: max |undistorted - analytic| = {err.max().item():.2e}, mean {err.mean().item():.2e}")
    assert err.max() < TOLERANCE
    # the same comparison with a map off by half a pixel (cv2's convention taken as ours) fails
    mx, my = undistort_maps(cam, new)
    shifted = undistort_image(render_pattern(cam), cam, new, maps=(mx + 0.5, my + 0.5))
    assert (shifted - expected)[interior].abs().max() > 5 * TOLERANCE


@pytest.mark.parametrize("model", ["opencv", "fisheye"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_maps_match_opencv(model, alpha):
    cam = camera(model)
    new = undistort_cameras(cam, alpha)
    mx, my = undistort_maps(cam, new)
    D = np.array(DISTORTIONS[model])
    if model == "opencv":
        cx, cy = cv2.initUndistortRectifyMap(opencv_K(cam), D, None, opencv_K(new), (320, 240), cv2.CV_32FC1)
    else:
        cx, cy = cv2.fisheye.initUndistortRectifyMap(opencv_K(cam), D, np.eye(3), opencv_K(new), (320, 240),
                                                     cv2.CV_32FC1)
    assert np.abs(mx - cx).max() < 1e-3 and np.abs(my - cy).max() < 1e-3


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_new_intrinsics_like_opencv(alpha):
    cam = camera("opencv")
    new = undistort_cameras(cam, alpha)
    K_cv, _ = cv2.getOptimalNewCameraMatrix(opencv_K(cam), np.array(DISTORTIONS["opencv"]), (320, 240), alpha)
    ours = opencv_K(new)
    # OpenCV fits the rectangles to a 9 x 9 grid of points, we to 64 points per edge: a few hundredths of a pixel
    np.testing.assert_allclose(ours, K_cv, atol=0.05)
    assert new.model == "pinhole" and new.dist is None
    torch.testing.assert_close(new.R, cam.R)


@pytest.mark.parametrize("model", ["opencv", "fisheye"])
def test_alpha_valid_and_all(model):
    cam = camera(model)
    valid = undistort_cameras(cam, "valid")
    mx, my = undistort_maps(cam, valid)  # OpenCV convention: source pixel centres span [0, W - 1]
    assert mx.min() >= -1e-3 and mx.max() <= 319 + 1e-3 and my.min() >= -1e-3 and my.max() <= 239 + 1e-3
    full = undistort_cameras(cam, "all")
    border = torch.cat([pixel_centers(320, 240, torch.float64)[[0, -1]].reshape(-1, 2),
                        pixel_centers(320, 240, torch.float64)[:, [0, -1]].reshape(-1, 2)])
    xy = undistort_points(cam, border, normalized=True)[0]
    u = full.fx * xy[:, 0] + full.cx
    v = full.fy * xy[:, 1] + full.cy
    assert u.min() >= 0.5 - 1e-6 and u.max() <= 319.5 + 1e-6 and v.min() >= 0.5 - 1e-6 and v.max() <= 239.5 + 1e-6
    # some pixels of the "all" image are empty, none of the "valid" one
    mxa, mya = undistort_maps(cam, full)
    assert ((mxa < 0) | (mxa > 319) | (mya < 0) | (mya > 239)).any()
    with pytest.raises(ValueError, match="alpha"):
        undistort_cameras(cam, 1.5)
    with pytest.raises(ValueError, match="alpha"):
        undistort_cameras(cam, "most")


def test_rotation_and_size():
    """A new camera with another rotation and size resamples like a rectification."""
    angle = 0.05
    Rz = torch.tensor([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]],
                      dtype=torch.float64)[None]
    cam = camera("opencv")
    new = Cameras(250.0, 250.0, 100.0, 80.0, Rz, torch.zeros(1, 3, dtype=torch.float64), 200, 160)
    out = undistort_image(render_pattern(cam), cam, new)
    # the pinhole image of the rotated camera: a ray through its pixel, expressed in the source frame
    uv = pixel_centers(200, 160, torch.float64).reshape(-1, 2)
    rays = torch.cat([(uv - torch.tensor([100.0, 80.0], dtype=torch.float64)) / 250.0, torch.ones(len(uv), 1,
                      dtype=torch.float64)], -1) @ Rz[0]  # R_src R_new^T with R_src = I
    expected = pattern(rays[:, :2] / rays[:, 2:]).reshape(160, 200, 3).float()
    assert (out - expected)[3:-3, 3:-3].abs().max() < TOLERANCE
    moved = dataclasses.replace(new, t=torch.tensor([[0.1, 0.0, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="same centre"):
        undistort_maps(cam, moved)


def test_dtypes_and_channels():
    cam = camera("opencv")
    new = undistort_cameras(cam, "all")
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    out = undistort_image(u8, cam, new)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == (240, 320, 3)
    mask = torch.ones(240, 320, dtype=torch.bool)
    m = undistort_image(mask, cam, new, "nearest")
    assert m.dtype == torch.bool and m.shape == (240, 320) and m.any() and not m.all()  # "all": empty corners
    many = rng.random((240, 320, 7)).astype(np.float32)
    out7 = undistort_image(many, cam, new, "nearest")
    np.testing.assert_array_equal(out7[..., 4:], undistort_image(many[..., 4:], cam, new, "nearest"))
    labels = rng.integers(0, 10**6, (240, 320)).astype(np.int32)
    assert undistort_image(labels, cam, new, "nearest").dtype == np.int32
    with pytest.raises(ValueError, match="camera's size"):
        undistort_image(u8[:100], cam, new)
    with pytest.raises(ValueError, match="interpolation"):
        undistort_image(u8, cam, new, "area")


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------


def synthetic_scene(tmp_path) -> Scene:
    cams = camera("opencv")
    cams = Cameras(cams.fx.repeat(2), cams.fy.repeat(2), cams.cx.repeat(2), cams.cy.repeat(2),
                   cams.R.repeat(2, 1, 1), cams.t.repeat(2, 1), 320, 240, "opencv", cams.dist.repeat(2, 1))
    image = (render_pattern(cams[0]).numpy() * 255).round().astype(np.uint8)
    frames = []
    for i in range(2):
        path = tmp_path / "src" / "sub" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=98)
        mask = np.zeros((240, 320), np.uint8)
        mask[:, 160:] = 255  # keep the right half
        Image.fromarray(mask).save(tmp_path / "src" / f"mask{i}.png")
        frames.append(Frame(name=f"sub/{i}.jpg", image_path=path, timestamp=0.5 * i,
                            depth_fn=lambda: np.full((240, 320), 2000, np.uint16), depth_scale=1e-3,
                            mask_path=tmp_path / "src" / f"mask{i}.png", metadata={"k": i}))
    return Scene(frames, cams, root=tmp_path / "src")


def test_undistort_scene_lazy_and_written(tmp_path):
    scene = synthetic_scene(tmp_path)
    lazy = undistort_scene(scene, alpha="all")
    assert lazy.cameras.model == "pinhole" and len(lazy) == 2
    f = lazy.frames[1]
    assert f.name == "sub/1.jpg" and f.timestamp == 0.5 and f.metadata["k"] == 1
    assert f.image_fn is not None and f.image_path is None
    img = f.image()
    assert img.shape == (240, 320, 3)
    expected = render_pattern(lazy.cameras[1])
    mask = f.mask()
    assert mask.dtype == torch.bool and not mask[:, :150].any()  # the source mask kept only the right half
    # the undistorted image is the pattern seen by the pinhole camera (JPEG and 8 bits: ~1e-2)
    inside = mask.clone()
    inside[:3], inside[-3:], inside[:, -3:] = False, False, False
    assert (img - expected)[inside].abs().mean() < 1e-2
    depth = f.depth()
    assert depth.shape == (240, 320) and torch.all((depth == 2.0) | (depth == 0.0)) and (depth == 0).any()
    # written to disk: the same pixels, read back from files
    out = tmp_path / "out"
    written = undistort_scene(scene, alpha="all", out_dir=out)
    g = written.frames[1]
    assert g.image_path == out / "images" / "sub" / "1.png" and g.image_path.is_file()
    assert (g.image() - img).abs().max() <= 0.5 / 255 + 1e-6
    torch.testing.assert_close(g.depth(), depth)
    assert torch.equal(g.mask(), mask)
    assert written.root == out


def test_undistort_scene_valid_and_pinhole(tmp_path):
    scene = synthetic_scene(tmp_path)
    for frame in scene.frames:
        frame.mask_path = None
    valid = undistort_scene(scene)  # "valid": no empty pixels, so no mask is added
    assert valid.frames[0].mask() is None and valid.frames[0].image().shape == (240, 320, 3)
    same = undistort_scene(valid)
    assert same.cameras is valid.cameras and same.frames == valid.frames
    with pytest.raises(ValueError, match="cameras"):
        undistort_scene(Scene(frames=list(scene.frames)))


# ----------------------------------------------------------------------------------------------
# Real photos: instant-ngp's fox (OpenCV k1 k2 p1 p2, not undistorted)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fox():
    if not (FOX / "transforms.json").is_file():
        pytest.skip(f"{FOX} not found")
    meta = json.loads((FOX / "transforms.json").read_text())
    image = next(FOX / f["file_path"] for f in meta["frames"] if (FOX / f["file_path"]).is_file())
    cam = Cameras(meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"], torch.eye(3, dtype=torch.float64)[None],
                  torch.zeros(1, 3, dtype=torch.float64), int(meta["w"]), int(meta["h"]), model="opencv",
                  dist=torch.tensor([meta["k1"], meta["k2"], meta["p1"], meta["p2"]], dtype=torch.float64))
    return cam, np.asarray(Image.open(image).convert("RGB"))


def test_fox_photo(fox):
    """The fox photo undistorted by scenegrad equals OpenCV's undistortion of it (same K, half-pixel shift)."""
    cam, image = fox
    assert image.shape == (1920, 1080, 3)
    new = undistort_cameras(cam, "valid")
    out = undistort_image(image, cam, new)
    assert out.shape == image.shape and out.dtype == np.uint8
    mx, my = cv2.initUndistortRectifyMap(opencv_K(cam), cam.dist[0].numpy(), None, opencv_K(new), (1080, 1920),
                                         cv2.CV_32FC1)
    reference = cv2.remap(image, mx, my, cv2.INTER_LINEAR)
    diff = np.abs(out.astype(int) - reference.astype(int))
    print(f"\nfox: new fx {new.fx.item():.1f} (was {cam.fx.item():.1f}), max |ours - cv2| = {diff.max()} / 255")
    assert diff.max() <= 1
    # mild pincushion (k1 > 0): the valid view is narrower than the source, nothing is black
    assert new.fx > cam.fx and (out.reshape(-1, 3).max(1) > 0).mean() > 0.999
