"""Tests for scenegrad.render.conventions: round trips, plus one independent statement of each convention."""

import math

import pytest
import torch

from scenegrad.render.cameras import Cameras, camera_to_world, project, world_to_camera
from scenegrad.render.conventions import (
    cameras_from_colmap,
    cameras_from_opengl_c2w,
    cameras_from_pytorch3d,
    cameras_to_colmap,
    cameras_to_opengl_c2w,
    cameras_to_pytorch3d,
    clip_matrix,
    from_nvdiffrast_clip,
    intrinsics_from_colmap,
    intrinsics_to_colmap,
    to_nvdiffrast_clip,
    world_to_clip,
)
from scenegrad.render.rotations import quat_normalize, random_rotations

F64 = torch.float64
W, H = 320, 200  # non-square on purpose: exposes width/height and min-side mix-ups
EYE = torch.eye(3, dtype=F64)[None]
ZERO = torch.zeros(1, 3, dtype=F64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_cameras(n: int = 4, seed: int = 0, model: str = "pinhole") -> Cameras:
    g = gen(seed)
    fx = 200 + 100 * torch.rand(n, generator=g, dtype=F64)
    fy = fx * (0.9 + 0.2 * torch.rand(n, generator=g, dtype=F64))
    cx = W / 2 + 15 * torch.randn(n, generator=g, dtype=F64)
    cy = H / 2 + 15 * torch.randn(n, generator=g, dtype=F64)
    R = random_rotations(n, generator=g, dtype=F64)
    t = torch.randn(n, 3, generator=g, dtype=F64)
    return Cameras(fx, fy, cx, cy, R, t, W, H, model)


def points_in_front(cams: Cameras, p: int = 50, seed: int = 1) -> torch.Tensor:
    g = gen(seed)
    z = 1.0 + 5.0 * torch.rand(len(cams), p, generator=g, dtype=F64)
    xy = (torch.rand(len(cams), p, 2, generator=g, dtype=F64) - 0.5) * z[..., None]
    return camera_to_world(cams, torch.cat([xy, z[..., None]], dim=-1))


# -- OpenGL / NeRF ----------------------------------------------------------------------------------


def test_opengl_round_trips():
    cams = make_cameras()
    c2w = cameras_to_opengl_c2w(cams)
    back = cameras_from_opengl_c2w(c2w, cams.fx, cams.fy, cams.cx, cams.cy, W, H)
    torch.testing.assert_close(back.R, cams.R, atol=1e-12, rtol=0)
    torch.testing.assert_close(back.t, cams.t, atol=1e-12, rtol=0)
    torch.testing.assert_close(cameras_to_opengl_c2w(back), c2w, atol=1e-12, rtol=0)


def test_opengl_camera_looks_down_minus_z_with_y_up():
    # Independent statement: an OpenGL camera-to-world matrix has columns (right, up, backward, centre).
    R = random_rotations(3, generator=gen(2), dtype=F64)
    centre = torch.randn(3, 3, generator=gen(3), dtype=F64)
    c2w = torch.eye(4, dtype=F64).repeat(3, 1, 1)
    c2w[:, :3, :3], c2w[:, :3, 3] = R, centre
    right, up, forward = R[:, :, 0], R[:, :, 1], -R[:, :, 2]
    a, b, d = 0.3, -0.7, 2.5
    x_world = centre + d * forward + a * right + b * up
    cams = cameras_from_opengl_c2w(c2w, 100.0, 100.0, 50.0, 50.0, 100, 100)
    # OpenGL frame: (a, b, -d); scenegrad/OpenCV frame: +x right, +y down, +z forward
    expected = torch.tensor([a, -b, d], dtype=F64).expand(3, 3)
    torch.testing.assert_close(world_to_camera(cams, x_world[:, None])[:, 0], expected)
    torch.testing.assert_close(cams.centers, centre)


# -- PyTorch3D --------------------------------------------------------------------------------------


def test_pytorch3d_round_trip():
    cams = make_cameras(seed=4)
    p = cameras_to_pytorch3d(cams)
    assert p.image_size.tolist() == [[H, W]] * 4
    back = cameras_from_pytorch3d(p.R, p.T, p.focal_length, p.principal_point, p.image_size)
    for name in ("fx", "fy", "cx", "cy", "R", "t"):
        torch.testing.assert_close(getattr(back, name), getattr(cams, name), atol=1e-12, rtol=0)
    assert back.width.tolist() == [W] * 4 and back.height.tolist() == [H] * 4


def test_pytorch3d_ndc_projection_lands_on_the_opencv_pixel():
    # PyTorch3D's PerspectiveCameras (in_ndc=True), written out:
    #   X_view = X_world @ R + T                          (row vectors; +X left, +Y up, +Z forward)
    #   x_ndc = fx_ndc * X / Z + px_ndc,  y_ndc = fy_ndc * Y / Z + py_ndc
    #   screen = (W / 2 - s * x_ndc, H / 2 - s * y_ndc),  s = min(H, W) / 2   (get_ndc_to_screen, xy-flip)
    cams = make_cameras(seed=5)
    pts = points_in_front(cams, seed=6)
    p = cameras_to_pytorch3d(cams)
    torch.testing.assert_close(torch.linalg.det(p.R), torch.ones(4, dtype=F64))
    x_view = pts @ p.R + p.T[:, None]
    ndc = p.focal_length[:, None] * x_view[..., :2] / x_view[..., 2:] + p.principal_point[:, None]
    s = min(H, W) / 2
    screen = torch.tensor([W / 2, H / 2], dtype=F64) - s * ndc
    torch.testing.assert_close(screen, project(cams, pts)[0], atol=1e-9, rtol=0)
    # view axes: +X left and +Y up are OpenCV's x and y negated
    x_cam = world_to_camera(cams, pts)
    torch.testing.assert_close(x_view, x_cam * torch.tensor([-1.0, -1.0, 1.0], dtype=F64))


def test_pytorch3d_rejects_distorted_cameras():
    cams = make_cameras(model="opencv")
    with pytest.raises(ValueError, match="distortion"):
        cameras_to_pytorch3d(cams)


# -- clip space / nvdiffrast ------------------------------------------------------------------------


def test_clip_matrix_maps_to_pixels_and_depth_range():
    cams = make_cameras(seed=7)
    near, far = 0.5, 20.0
    pts = points_in_front(cams, seed=8)
    clip = world_to_clip(cams, pts, near, far)
    uv, depth = project(cams, pts)
    torch.testing.assert_close(clip[..., 3], depth)  # w_clip = camera depth
    ndc = clip[..., :3] / clip[..., 3:]
    u = (ndc[..., 0] + 1) * W / 2  # x_ndc = 2u/W - 1
    v = (1 - ndc[..., 1]) * H / 2  # y_ndc = 1 - 2v/H
    torch.testing.assert_close(torch.stack([u, v], dim=-1), uv, atol=1e-9, rtol=0)
    # z_ndc: -1 at near, +1 at far, increasing in between
    x_cam = torch.tensor([[0.1, -0.2, near], [0.1, -0.2, far], [0.0, 0.0, 2.0], [0.0, 0.0, 3.0]], dtype=F64)
    clip = clip_matrix(cams, near, far) @ torch.cat([x_cam, torch.ones(4, 1, dtype=F64)], -1).T  # [N, 4, 4]
    z_ndc = clip[:, 2] / clip[:, 3]  # [N, 4 points]
    torch.testing.assert_close(z_ndc[:, 0], torch.full((4,), -1.0, dtype=F64))
    torch.testing.assert_close(z_ndc[:, 1], torch.full((4,), 1.0, dtype=F64))
    assert (z_ndc[:, 2] < z_ndc[:, 3]).all()


def test_clip_space_pixel_centres_and_row_order():
    # pixel (column 0, row 0) centre (0.5, 0.5) -> x_ndc = 1/W - 1, y_ndc = 1 - 1/H (top row at +y)
    cams = Cameras(100.0, 100.0, W / 2, H / 2, EYE, ZERO, W, H)
    depth = 2.0
    x_cam = torch.tensor([[(0.5 - W / 2) / 100.0 * depth, (0.5 - H / 2) / 100.0 * depth, depth]], dtype=F64)
    clip = world_to_clip(cams, x_cam, 0.1, 10.0)
    ndc = clip[0, 0, :2] / clip[0, 0, 3]
    torch.testing.assert_close(ndc, torch.tensor([1 / W - 1, 1 - 1 / H], dtype=F64))


def test_nvdiffrast_clip_flip_puts_rows_in_scenegrad_order():
    # nvdiffrast (OpenGL rows) writes row r where y_ndc lies in [-1 + 2r/H, -1 + 2(r+1)/H]
    cams = make_cameras(seed=9)
    pts = points_in_front(cams, seed=10)
    uv, _ = project(cams, pts)
    inside = (uv[..., 1] > 0) & (uv[..., 1] < H)
    pos = to_nvdiffrast_clip(world_to_clip(cams, pts, 0.1, 50.0))
    y_ndc = pos[..., 1] / pos[..., 3]
    nvdiffrast_row = torch.floor((y_ndc + 1) / 2 * H)
    assert inside.sum() > 20
    torch.testing.assert_close(nvdiffrast_row[inside], torch.floor(uv[..., 1])[inside])
    torch.testing.assert_close(from_nvdiffrast_clip(pos), world_to_clip(cams, pts, 0.1, 50.0))


def test_clip_rejects_distortion_and_bad_planes():
    with pytest.raises(ValueError, match="undistort"):
        world_to_clip(make_cameras(model="fisheye"), torch.zeros(3, 3, dtype=F64), 0.1, 10.0)
    with pytest.raises(ValueError, match="near < far"):
        clip_matrix(make_cameras(), 1.0, 0.5)


def test_clip_matrix_gradcheck():
    cams = make_cameras(n=2, seed=11)
    fx = cams.fx.clone().requires_grad_(True)
    cy = cams.cy.clone().requires_grad_(True)

    def fn(fx, cy):
        c = Cameras(fx, cams.fy, cams.cx, cy, cams.R, cams.t, W, H)
        return clip_matrix(c, 0.5, 5.0)

    assert torch.autograd.gradcheck(fn, (fx, cy))


# -- COLMAP -----------------------------------------------------------------------------------------


def test_colmap_round_trip_and_canonical_sign():
    q = quat_normalize(torch.randn(6, 4, generator=gen(12), dtype=F64))
    t = torch.randn(6, 3, generator=gen(13), dtype=F64)
    cams = cameras_from_colmap(q, t, 300.0, 300.0, W / 2, H / 2, W, H)
    q_back, t_back = cameras_to_colmap(cams)
    assert (q_back[:, 0] >= 0).all()
    sign = torch.where(q[:, :1] < 0, -1.0, 1.0).to(F64)
    torch.testing.assert_close(q_back, q * sign, atol=1e-12, rtol=0)
    torch.testing.assert_close(t_back, t)
    again = cameras_from_colmap(q_back, t_back, 300.0, 300.0, W / 2, H / 2, W, H)
    torch.testing.assert_close(again.R, cams.R, atol=1e-12, rtol=0)


def test_colmap_pose_is_world_to_camera_with_qw_first():
    # images.txt line: QW QX QY QZ = 90 deg about z, T = (1, 2, 3): the world point (1, 0, 0) maps to
    # R (1, 0, 0) + T = (0, 1, 0) + (1, 2, 3) in the camera frame.
    c = math.sqrt(0.5)
    qvec = torch.tensor([[c, 0.0, 0.0, c]], dtype=F64)
    tvec = torch.tensor([[1.0, 2.0, 3.0]], dtype=F64)
    cams = cameras_from_colmap(qvec, tvec, 100.0, 100.0, 50.0, 50.0, 100, 100)
    x_cam = world_to_camera(cams, torch.tensor([[1.0, 0.0, 0.0]], dtype=F64))
    torch.testing.assert_close(x_cam, torch.tensor([[[1.0, 3.0, 3.0]]], dtype=F64))


def test_colmap_simple_radial_projection_matches_colmap_formula():
    # COLMAP SIMPLE_RADIAL: u = f * x * (1 + k r^2) + cx on normalised (x, y) = (X/Z, Y/Z)
    f, cx, cy, k = 250.0, 160.0, 100.0, -0.12
    intr = intrinsics_from_colmap("SIMPLE_RADIAL", torch.tensor([f, cx, cy, k], dtype=F64))
    cams = Cameras(intr.fx, intr.fy, intr.cx, intr.cy, EYE, ZERO, W, H, intr.model, intr.dist)
    x_cam = torch.tensor([[0.3, -0.2, 1.5], [-0.1, 0.4, 2.0]], dtype=F64)
    xy = x_cam[:, :2] / x_cam[:, 2:]
    r2 = (xy**2).sum(-1, keepdim=True)
    expected = f * xy * (1 + k * r2) + torch.tensor([cx, cy], dtype=F64)
    torch.testing.assert_close(project(cams, x_cam)[0][0], expected)


@pytest.mark.parametrize(
    "name, params, model, fx, dist",
    [
        ("SIMPLE_PINHOLE", [300.0, 160.0, 100.0], "pinhole", 300.0, None),
        ("PINHOLE", [300.0, 310.0, 160.0, 100.0], "pinhole", 300.0, None),
        ("RADIAL", [300.0, 160.0, 100.0, 0.1, 0.01], "opencv", 300.0, [0.1, 0.01, 0.0, 0.0, 0.0]),
        ("OPENCV", [300.0, 310.0, 160.0, 100.0, 0.1, 0.01, 1e-3, 2e-3], "opencv", 300.0,
         [0.1, 0.01, 1e-3, 2e-3, 0.0]),
        ("FULL_OPENCV", [300.0, 310.0, 160.0, 100.0, 0.1, 0.01, 1e-3, 2e-3, 5e-3, 0.0, 0.0, 0.0], "opencv",
         300.0, [0.1, 0.01, 1e-3, 2e-3, 5e-3]),
        ("OPENCV_FISHEYE", [300.0, 310.0, 160.0, 100.0, 0.1, 0.01, 1e-3, 2e-3], "fisheye", 300.0,
         [0.1, 0.01, 1e-3, 2e-3]),
        ("SIMPLE_RADIAL_FISHEYE", [300.0, 160.0, 100.0, 0.1], "fisheye", 300.0, [0.1, 0.0, 0.0, 0.0]),
        ("RADIAL_FISHEYE", [300.0, 160.0, 100.0, 0.1, 0.02], "fisheye", 300.0, [0.1, 0.02, 0.0, 0.0]),
    ],
)
def test_colmap_intrinsics_mapping_and_round_trip(name, params, model, fx, dist):
    intr = intrinsics_from_colmap(name, torch.tensor(params, dtype=F64))
    assert intr.model == model
    torch.testing.assert_close(intr.fx, torch.tensor([fx], dtype=F64))
    torch.testing.assert_close(intr.cx, torch.tensor([160.0], dtype=F64))
    if dist is None:
        assert intr.dist is None
    else:
        torch.testing.assert_close(intr.dist, torch.tensor([dist], dtype=F64))
    cams = Cameras(intr.fx, intr.fy, intr.cx, intr.cy, EYE, ZERO, W, H, intr.model, intr.dist)
    out_name, out_params = intrinsics_to_colmap(cams)
    back = intrinsics_from_colmap(out_name, out_params)
    for field in ("fx", "fy", "cx", "cy", "dist"):
        a, b = getattr(back, field), getattr(intr, field)
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    expected_name = {"pinhole": "PINHOLE", "fisheye": "OPENCV_FISHEYE"}.get(model)
    if model == "opencv":
        expected_name = "FULL_OPENCV" if dist[4] != 0 else "OPENCV"
    assert out_name == expected_name


def test_colmap_intrinsics_rejects_unsupported():
    with pytest.raises(ValueError, match="rational"):
        intrinsics_from_colmap("FULL_OPENCV", torch.tensor([300.0, 300, 160, 100, 0, 0, 0, 0, 0, 0.1, 0, 0]))
    with pytest.raises(ValueError, match="unsupported COLMAP camera model"):
        intrinsics_from_colmap("FOV", torch.tensor([300.0, 300, 160, 100, 0.5]))
    with pytest.raises(ValueError, match="params"):
        intrinsics_from_colmap("PINHOLE", torch.tensor([300.0, 160, 100]))
