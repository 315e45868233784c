"""Tests for scenegrad.render.cameras: against OpenCV, round trips, rays, image edits, gradients."""

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from scenegrad.render.cameras import (
    Cameras,
    camera_to_world,
    crop,
    distort_points,
    pixel_centers,
    pixel_rays,
    project,
    rays_from_pixels,
    resize,
    undistort_points,
    unproject,
    world_to_camera,
)
from scenegrad.render.rotations import random_rotations

F64 = torch.float64
W, H = 640, 480
CV_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-15)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uniform(g: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=F64)


def make_cameras(model: str, n: int = 4, seed: int = 0) -> Cameras:
    """Random realistic cameras: f in [400, 600] px, principal point near the centre, |k1| < 0.3."""
    g = gen(seed)
    fx = uniform(g, 400, 600, n)
    fy = fx * uniform(g, 0.95, 1.05, n)
    cx = W / 2 + uniform(g, -20, 20, n)
    cy = H / 2 + uniform(g, -20, 20, n)
    R = random_rotations(n, generator=g, dtype=F64)
    t = uniform(g, -2, 2, n, 3)
    if model == "opencv":
        dist = torch.stack([uniform(g, -0.3, 0.3, n), uniform(g, -0.1, 0.1, n), uniform(g, -2e-3, 2e-3, n),
                            uniform(g, -2e-3, 2e-3, n), uniform(g, -0.05, 0.05, n)], dim=-1)
    elif model == "fisheye":
        dist = uniform(g, -0.1, 0.1, n, 4)
    else:
        dist = None
    return Cameras(fx, fy, cx, cy, R, t, W, H, model, dist)


def make_points(cams: Cameras, p: int = 100, seed: int = 1) -> torch.Tensor:
    """[N, P, 3] world points in front of each camera, projecting (roughly) inside its image."""
    g = gen(seed)
    z = uniform(g, 1, 5, len(cams), p)
    half = torch.tensor([W / 2, H / 2], dtype=F64) / cams.fx[:, None, None]
    xy = uniform(g, -1, 1, len(cams), p, 2) * half
    return camera_to_world(cams, torch.cat([xy * z[..., None], z[..., None]], dim=-1))


def cv_pose(cams: Cameras, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rvec, _ = cv2.Rodrigues(cams.R[i].numpy())
    return rvec, cams.t[i].numpy(), cams.K[i].numpy(), cams.dist[i].numpy()


# -- against OpenCV ---------------------------------------------------------------------------------


def test_project_opencv_model_matches_cv2_project_points():
    cams = make_cameras("opencv")
    pts = make_points(cams)
    uv, depth = project(cams, pts)
    for i in range(len(cams)):
        rvec, tvec, K, D = cv_pose(cams, i)
        ref, _ = cv2.projectPoints(pts[i].numpy(), rvec, tvec, K, D)
        np.testing.assert_allclose(uv[i].numpy(), ref.reshape(-1, 2), atol=1e-4, rtol=0)
    torch.testing.assert_close(depth, world_to_camera(cams, pts)[..., 2])


def test_project_fisheye_model_matches_cv2_fisheye_project_points():
    cams = make_cameras("fisheye")
    pts = make_points(cams)
    uv, _ = project(cams, pts)
    for i in range(len(cams)):
        rvec, tvec, K, D = cv_pose(cams, i)
        ref, _ = cv2.fisheye.projectPoints(pts[i].numpy()[:, None], rvec, tvec, K, D)
        np.testing.assert_allclose(uv[i].numpy(), ref.reshape(-1, 2), atol=1e-4, rtol=0)


def test_fisheye_distort_points_matches_cv2_fisheye_distort_points():
    cams = make_cameras("fisheye")
    xy = uniform(gen(2), -0.6, 0.6, len(cams), 50, 2)
    uv = distort_points(cams, xy, normalized=True)
    for i in range(len(cams)):
        _, _, K, D = cv_pose(cams, i)
        ref = cv2.fisheye.distortPoints(xy[i].numpy()[:, None], K, D)
        np.testing.assert_allclose(uv[i].numpy(), ref.reshape(-1, 2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("model", ["opencv", "fisheye"])
def test_undistort_points_matches_cv2(model):
    cams = make_cameras(model, seed=3)
    uv = project(cams, make_points(cams, seed=4))[0]
    pixels = undistort_points(cams, uv)
    normalized = undistort_points(cams, uv, normalized=True)
    undistort = cv2.undistortPoints if model == "opencv" else cv2.fisheye.undistortPoints
    for i in range(len(cams)):
        _, _, K, D = cv_pose(cams, i)
        src = uv[i].numpy()[:, None]
        ref_px = undistort(src, K, D, R=None, P=K, criteria=CV_CRITERIA).reshape(-1, 2)
        ref_norm = undistort(src, K, D, criteria=CV_CRITERIA).reshape(-1, 2)
        np.testing.assert_allclose(pixels[i].numpy(), ref_px, atol=1e-4, rtol=0)
        # normalised units, compared at pixel scale
        np.testing.assert_allclose(normalized[i].numpy() * K[0, 0], ref_norm * K[0, 0], atol=1e-4, rtol=0)


# -- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["pinhole", "opencv", "fisheye"])
def test_unproject_inverts_project(model):
    cams = make_cameras(model, seed=5)
    pts = make_points(cams, seed=6)
    uv, depth = project(cams, pts)
    torch.testing.assert_close(unproject(cams, uv, depth), pts, atol=1e-10, rtol=0)
    torch.testing.assert_close(undistort_points(cams, distort_points(cams, uv)), uv, atol=1e-8, rtol=0)


def test_pinhole_project_is_the_textbook_formula_and_shared_points_broadcast():
    cams = make_cameras("pinhole", n=3, seed=7)
    pts = make_points(cams, seed=8)[0]  # [P, 3] shared by all cameras
    uv, depth = project(cams, pts)
    x_cam = pts @ cams.R.transpose(1, 2) + cams.t[:, None]  # [N, P, 3]
    expected = cams.K[:, None, :2, :2] @ (x_cam[..., :2] / x_cam[..., 2:])[..., None]
    torch.testing.assert_close(uv, expected[..., 0] + torch.stack([cams.cx, cams.cy], -1)[:, None])
    assert uv.shape == (3, pts.shape[0], 2) and depth.shape == (3, pts.shape[0])


def test_world_camera_transforms_invert_each_other_and_match_matrices():
    cams = make_cameras("pinhole", seed=9)
    pts = make_points(cams, seed=10)
    x_cam = world_to_camera(cams, pts)
    torch.testing.assert_close(camera_to_world(cams, x_cam), pts)
    homog = torch.cat([pts, torch.ones_like(pts[..., :1])], dim=-1)
    torch.testing.assert_close((homog @ cams.viewmats.transpose(1, 2))[..., :3], x_cam)
    eye = torch.eye(4, dtype=F64).expand(len(cams), 4, 4)
    torch.testing.assert_close(cams.camtoworlds @ cams.viewmats, eye)
    zeros = torch.zeros(len(cams), 1, 3, dtype=F64)
    torch.testing.assert_close(world_to_camera(cams, cams.centers[:, None]), zeros)


# -- rays -------------------------------------------------------------------------------------------


def test_pixel_centers_use_half_pixel_offsets():
    c = pixel_centers(4, 3, dtype=F64)
    assert c.shape == (3, 4, 2)
    torch.testing.assert_close(c[0, 0], torch.tensor([0.5, 0.5], dtype=F64))
    torch.testing.assert_close(c[2, 1], torch.tensor([1.5, 2.5], dtype=F64))  # column 1, row 2


@pytest.mark.parametrize("model", ["pinhole", "opencv", "fisheye"])
def test_pixel_rays_project_back_to_their_pixel_centres(model):
    cams = dataclasses.replace(make_cameras(model, n=2, seed=11), width=32, height=24)
    cams = dataclasses.replace(cams, fx=cams.fx / 20, fy=cams.fy / 20, cx=cams.cx / 20, cy=cams.cy / 20)
    origins, dirs = pixel_rays(cams)
    assert origins.shape == dirs.shape == (2, 24, 32, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(2, 24, 32, dtype=F64))
    torch.testing.assert_close(origins, cams.centers[:, None, None].expand(2, 24, 32, 3))
    pts = (origins + 2.5 * dirs).reshape(2, -1, 3)
    uv, depth = project(cams, pts)
    torch.testing.assert_close(uv.reshape(2, 24, 32, 2), pixel_centers(32, 24, F64).expand(2, 24, 32, 2),
                               atol=1e-8, rtol=0)
    assert (depth > 0).all()


def test_pixel_ray_direction_of_a_pinhole_camera_is_k_inverse_of_the_centre():
    cams = Cameras(50.0, 40.0, 8.0, 6.0, torch.eye(3, dtype=F64)[None], torch.zeros(1, 3, dtype=F64), 16, 12)
    _, dirs = pixel_rays(cams)
    j, i = 3, 5  # row 3, column 5: centre (5.5, 3.5)
    expected = torch.tensor([(5.5 - 8.0) / 50.0, (3.5 - 6.0) / 40.0, 1.0], dtype=F64)
    torch.testing.assert_close(dirs[0, j, i], expected / expected.norm())
    origins, dirs_p = rays_from_pixels(cams, torch.tensor([[5.5, 3.5]], dtype=F64))
    torch.testing.assert_close(dirs_p[0, 0], dirs[0, j, i])


def test_pixel_rays_rejects_mixed_image_sizes():
    cams = make_cameras("pinhole", n=2)
    cams = dataclasses.replace(cams, width=torch.tensor([640, 320]))
    with pytest.raises(ValueError, match="share one image size"):
        pixel_rays(cams)


# -- resize and crop --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["pinhole", "opencv"])
@pytest.mark.parametrize("size", [0.5, 0.3, (320, 200)])
def test_resize_scales_projections_by_the_size_ratio(model, size):
    cams = make_cameras(model, seed=12)
    pts = make_points(cams, seed=13)
    small = resize(cams, size)
    new_w = round(W * size) if isinstance(size, float) else size[0]
    new_h = round(H * size) if isinstance(size, float) else size[1]
    assert small.width.tolist() == [new_w] * len(cams) and small.height.tolist() == [new_h] * len(cams)
    ratio = torch.tensor([new_w / W, new_h / H], dtype=F64)
    torch.testing.assert_close(project(small, pts)[0], project(cams, pts)[0] * ratio)


def test_resize_by_half_keeps_pixel_centre_convention():
    # new pixel (0, 0) covers old pixels 0..1: its centre (0.5, 0.5) is the old point (1, 1)
    cams = make_cameras("pinhole", n=1, seed=14)
    _, d_new = rays_from_pixels(resize(cams, 0.5), torch.tensor([[0.5, 0.5]], dtype=F64))
    _, d_old = rays_from_pixels(cams, torch.tensor([[1.0, 1.0]], dtype=F64))
    torch.testing.assert_close(d_new, d_old)


def test_crop_shifts_projections():
    cams = make_cameras("opencv", seed=15)
    pts = make_points(cams, seed=16)
    cropped = crop(cams, 100, torch.tensor([10, 20, 30, 40]), 200, 150)
    shift = torch.stack([torch.full((4,), 100.0, dtype=F64), torch.tensor([10.0, 20, 30, 40], dtype=F64)], -1)
    torch.testing.assert_close(project(cropped, pts)[0], project(cams, pts)[0] - shift[:, None])
    assert cropped.width.tolist() == [200] * 4 and cropped.height.tolist() == [150] * 4


# -- the Cameras container --------------------------------------------------------------------------


def test_cameras_batch_indexing_and_conversion():
    cams = make_cameras("opencv", n=5, seed=17)
    assert len(cams) == 5
    one = cams[-1]
    assert len(one) == 1 and one.model == "opencv"
    torch.testing.assert_close(one.R, cams.R[4:])
    sub = cams[1:4]
    torch.testing.assert_close(sub.dist, cams.dist[1:4])
    picked = cams[torch.tensor([0, 2])]
    torch.testing.assert_close(picked.fx, cams.fx[[0, 2]])
    f32 = cams.to(dtype=torch.float32)
    assert f32.R.dtype == f32.fx.dtype == f32.dist.dtype == torch.float32 and f32.width.dtype == torch.int64
    uv32, _ = project(f32, make_points(cams, seed=18).float())
    assert uv32.dtype == torch.float32
    assert cams.to("cpu").device.type == "cpu"


def test_cameras_broadcasts_scalars_and_pads_opencv_k3():
    cams = Cameras(500.0, 510.0, 320.0, 240.0, torch.eye(3).expand(3, 3, 3), torch.zeros(3), 640, 480,
                   model="opencv", dist=torch.tensor([0.1, 0.01, 0.001, 0.002]))
    assert cams.fx.shape == (3,) and cams.t.shape == (3, 3) and cams.width.tolist() == [640] * 3
    torch.testing.assert_close(cams.dist, torch.tensor([0.1, 0.01, 0.001, 0.002, 0.0]).expand(3, 5))
    fisheye = Cameras(500.0, 500.0, 320.0, 240.0, torch.eye(3)[None], torch.zeros(1, 3), 640, 480, "fisheye")
    torch.testing.assert_close(fisheye.dist, torch.zeros(1, 4))


def test_cameras_matrix_constructors_round_trip():
    cams = make_cameras("opencv", seed=19)
    from_k = Cameras.from_K(cams.K, cams.R, cams.t, cams.width, cams.height, "opencv", cams.dist)
    from_view = Cameras.from_viewmats(cams.viewmats, cams.K, W, H, "opencv", cams.dist)
    from_c2w = Cameras.from_camtoworlds(cams.camtoworlds, cams.K, W, H, "opencv", cams.dist)
    pts = make_points(cams, seed=20)
    for other in (from_k, from_view, from_c2w):
        torch.testing.assert_close(project(other, pts)[0], project(cams, pts)[0])
    K = cams.K.clone()
    K[:, 0, 1] = 1.0
    with pytest.raises(ValueError, match="skew"):
        Cameras.from_K(K, cams.R, cams.t, W, H)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"R": torch.eye(3)}, r"R must be a \[N, 3, 3\]"),
        ({"fx": torch.ones(2)}, "fx must have shape"),
        ({"t": torch.tensor([[0.0, float("nan"), 0.0]])}, "finite"),
        ({"fx": -1.0}, "fx and fy must be > 0"),
        ({"width": 0}, "width and height must be > 0"),
        ({"width": 640.0}, "width must be integers"),
        ({"dist": torch.zeros(5)}, "pinhole"),
        ({"model": "fishy"}, "model must be one of"),
        ({"model": "fisheye", "dist": torch.zeros(5)}, "dist"),
    ],
)
def test_cameras_validation(change, match):
    args = dict(fx=100.0, fy=100.0, cx=50.0, cy=50.0, R=torch.eye(3)[None], t=torch.zeros(1, 3),
                width=100, height=100)
    with pytest.raises(ValueError, match=match):
        Cameras(**{**args, **change})


def test_point_validation():
    cams = make_cameras("pinhole", n=2)
    with pytest.raises(ValueError, match=r"\[N, P, 3\]"):
        project(cams, torch.zeros(3, 5, 3, dtype=F64))
    with pytest.raises(ValueError, match="convert"):
        project(cams, torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"\[N, P\]"):
        unproject(cams, torch.zeros(2, 5, 2, dtype=F64), torch.zeros(2, 4, dtype=F64))


# -- gradients --------------------------------------------------------------------------------------


def _param_fn(model: str, base: Cameras, op: str):
    def fn(fx, cx, t, R, dist, x, extra=None):
        cams = Cameras(fx, base.fy, cx, base.cy, R, t, base.width, base.height, model, dist)
        if op == "project":
            return project(cams, x)
        return unproject(cams, x, extra)

    return fn


@pytest.mark.parametrize("model", ["opencv", "fisheye"])
def test_project_gradcheck_wrt_points_and_camera_parameters(model):
    cams = make_cameras(model, n=2, seed=21)
    pts = make_points(cams, p=4, seed=22)
    inputs = tuple(x.clone().requires_grad_(True) for x in (cams.fx, cams.cx, cams.t, cams.R, cams.dist, pts))
    assert torch.autograd.gradcheck(_param_fn(model, cams, "project"), inputs)


@pytest.mark.parametrize("model", ["opencv", "fisheye"])
def test_unproject_gradcheck_with_distortion(model):
    cams = make_cameras(model, n=2, seed=23)
    uv, depth = project(cams, make_points(cams, p=4, seed=24))
    params = (cams.fx, cams.cx, cams.t, cams.R, cams.dist, uv, depth)
    inputs = tuple(x.clone().requires_grad_(True) for x in params)
    assert torch.autograd.gradcheck(_param_fn(model, cams, "unproject"), inputs)


def test_gradients_finite_on_the_optical_axis():
    for model in ("opencv", "fisheye"):
        cams = Cameras(100.0, 100.0, 50.0, 50.0, torch.eye(3, dtype=F64)[None], torch.zeros(1, 3, dtype=F64),
                       100, 100, model, torch.full((4,), 0.05, dtype=F64))
        pts = torch.tensor([[[0.0, 0.0, 2.0]]], dtype=F64, requires_grad=True)
        uv, _ = project(cams, pts)
        (g,) = torch.autograd.grad(uv.sum(), pts)
        # d(f x / z) / dx = f / z: the distortion has unit slope on the axis
        torch.testing.assert_close(g, torch.tensor([[[50.0, 50.0, 0.0]]], dtype=F64))
        pix = torch.tensor([[[50.0, 50.0]]], dtype=F64, requires_grad=True)
        (g2,) = torch.autograd.grad(undistort_points(cams, pix).sum(), pix)
        torch.testing.assert_close(g2, torch.ones(1, 1, 2, dtype=F64))
