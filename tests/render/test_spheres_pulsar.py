"""backend="pytorch3d" for render_spheres: the camera translation everywhere; the render against the
native one where PyTorch3D is installed (Pulsar blends by its own formula, so they agree inside
silhouettes, not to rounding)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from scenegrad.render.cameras import Cameras
from scenegrad.render.rotations import quat_to_matrix
from scenegrad.render.spheres import render_spheres
from scenegrad.render.spheres.pulsar_adapter import pulsar_camera

HAS_PYTORCH3D = importlib.util.find_spec("pytorch3d") is not None
needs_pytorch3d = pytest.mark.skipif(not HAS_PYTORCH3D, reason="pytorch3d is not installed")


def cameras(n=2, dtype=torch.float32, seed=0, width=64, height=48):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64) * torch.tensor([4.0, 0.1, 0.1, 0.1], dtype=torch.float64)
    R = quat_to_matrix(q / q.norm(dim=-1, keepdim=True)).to(dtype)
    t = (torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.1).to(dtype)
    fx = torch.tensor([60.0, 52.0][:n], dtype=dtype)
    fy = torch.tensor([60.0, 57.0][:n], dtype=dtype)
    cx = torch.tensor([30.0, 33.3][:n], dtype=dtype)
    cy = torch.tensor([22.0, 20.1][:n], dtype=dtype)
    return Cameras(fx, fy, cx, cy, R, t, width, height)


def scene(dtype=torch.float32):
    pos = torch.tensor([[0.0, 0.0, 3.0], [0.3, 0.1, 4.0], [-0.6, 0.4, 3.5], [0.5, -0.5, 3.2]], dtype=dtype)
    radii = torch.tensor([0.5, 0.6, 0.3, 0.25], dtype=dtype)
    feats = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.2]], dtype=dtype)
    return pos, radii, feats


def test_pulsar_camera_rays_pass_through_the_points_that_project_there():
    cams = cameras(dtype=torch.float64)
    near = 0.4
    centre, pixel00, step_x, step_y, sensor = pulsar_camera(cams, near)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(2, 50, 3, generator=g, dtype=torch.float64) * 0.5 + torch.tensor([0.0, 0.0, 3.0],
                                                                                       dtype=torch.float64)
    Xc = torch.einsum("bij,bnj->bni", cams.R, X) + cams.t[:, None]
    u = cams.fx[:, None] * Xc[..., 0] / Xc[..., 2] + cams.cx[:, None]
    v = cams.fy[:, None] * Xc[..., 1] / Xc[..., 2] + cams.cy[:, None]
    # Pulsar's ray through continuous pixel position (u, v): pixel centres are at +0.5
    P = pixel00[:, None] + (u - 0.5)[..., None] * step_x[:, None] + (v - 0.5)[..., None] * step_y[:, None]
    ray, to_point = P - centre[:, None], X - centre[:, None]
    cross = torch.linalg.cross(ray, to_point)
    assert cross.norm(dim=-1).max() < 1e-12 * to_point.norm(dim=-1).max() * 10
    assert ((ray * to_point).sum(-1) > 0).all()  # in front, not behind
    # the sensor sits `sensor` = near / 2 in front of the centre, and step_x x step_y points forward
    forward = cams.R[:, 2]
    assert torch.allclose(((pixel00 - centre) * forward).sum(-1), sensor)
    assert torch.allclose(sensor, torch.full_like(sensor, near / 2))
    assert (torch.linalg.cross(step_x, step_y) * forward).sum(-1).min() > 0
    # differentiable in the pose and the intrinsics
    cams.R.requires_grad_(True)
    cams.cx.requires_grad_(True)
    sum(x.sum() for x in pulsar_camera(cams, near)[:4]).backward()
    assert cams.R.grad.abs().sum() > 0 and cams.cx.grad.abs().sum() > 0


@pytest.mark.skipif(HAS_PYTORCH3D, reason="pytorch3d is installed")
def test_missing_pytorch3d_is_named():
    with pytest.raises(RuntimeError, match="pytorch3d is not installed"):
        render_spheres(*scene(), cameras(), near=0.5, far=10.0, backend="pytorch3d")


@needs_pytorch3d
def test_pulsar_agrees_with_native_inside_silhouettes():
    cams = cameras()
    kw = dict(near=0.5, far=10.0, gamma=1e-3)
    ours = render_spheres(*scene(), cams, backend="native", **kw)
    pulsar = render_spheres(*scene(), cams, backend="pytorch3d", **kw)
    for name in ("features", "alpha", "depth", "ids", "weights"):
        assert getattr(ours, name).shape == getattr(pulsar, name).shape, name
    assert pulsar.ids.dtype == torch.int32 and pulsar.weights.isnan().all()
    assert ours.alpha.gt(0.5).float().mean() > 0.1  # the spheres fill a good part of both views
    # silhouette edges differ (Pulsar weighs by 1 - d / r, scenegrad by 1 - d^2 / r^2)
    assert ((ours.features - pulsar.features).abs().amax(-1) > 0.05).float().mean() < 0.02
    assert ((ours.alpha - pulsar.alpha).abs() > 0.05).float().mean() < 0.02
    # Pulsar's hit test measures the centre's distance to the ray's point at the centre's distance,
    # not to the ray: its silhouettes are a little smaller
    ours_hit, pulsar_hit = ours.ids[..., 0] >= 0, pulsar.ids[..., 0] >= 0
    assert (pulsar_hit & ~ours_hit).sum() <= 0.01 * ours_hit.sum()
    assert (ours_hit & ~pulsar_hit).sum() <= 0.1 * ours_hit.sum()
    both = ours_hit & pulsar_hit
    assert (ours.ids[..., 0] == pulsar.ids[..., 0])[both].float().mean() > 0.97
    # depth of the nearest hit where one sphere is hit (Pulsar reports no blended depth)
    one = (ours.ids[..., 0] >= 0) & (ours.ids[..., 1] < 0) & (pulsar.ids[..., 0] == ours.ids[..., 0])
    assert one.sum() > 500
    rel = ((ours.depth - pulsar.depth).abs() / ours.depth)[one]
    assert (rel < 1e-3).float().mean() > 0.97
    assert (pulsar.depth[pulsar.ids[..., 0] < 0] == 0).all()


@needs_pytorch3d
def test_pulsar_gradients_reach_every_input_with_the_right_sign():
    pos, radii, feats = (x.requires_grad_(True) for x in scene())
    cams = cameras()
    cams.R.requires_grad_(True)
    cams.t.requires_grad_(True)
    out = render_spheres(pos, radii, feats, cams, near=0.5, far=10.0, gamma=1e-2, backend="pytorch3d")
    (out.features.sum() + out.alpha.sum()).backward()
    for name, x in (("positions", pos), ("radii", radii), ("features", feats), ("R", cams.R), ("t", cams.t)):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, name
    # brighter spheres brighten the image; Pulsar averages each sphere's gradient over its pixels
    assert (feats.grad > 0).all()


@needs_pytorch3d
def test_pulsar_adapter_refuses_what_pulsar_cannot_do():
    with pytest.raises(ValueError, match="float32 only"):
        render_spheres(*scene(torch.float64), cameras(dtype=torch.float64), near=0.5, far=10.0, backend="pytorch3d")
    with pytest.raises(ValueError, match="gamma"):
        render_spheres(*scene(), cameras(), near=0.5, far=10.0, gamma=2.0, backend="pytorch3d")
