"""Pulsar-style sphere rendering: the reference against analytic silhouettes and depths, its
gradients (float64 gradcheck) and invariances; the native kernel against the reference."""

from __future__ import annotations

import math

import pytest
import torch

from scenegrad.render.cameras import Cameras
from scenegrad.render.rotations import quat_to_matrix
from scenegrad.render.spheres import BG_EPS, render_spheres


def camera(width=24, height=20, f=30.0, dtype=torch.float64, device="cpu", n=1, R=None, t=None):
    R = torch.eye(3, dtype=dtype, device=device).expand(n, 3, 3) if R is None else R
    t = torch.zeros(n, 3, dtype=dtype, device=device) if t is None else t
    return Cameras(f, f * 1.1, width / 2 + 0.3, height / 2 - 0.2, R, t, width, height)


def random_scene(n, d, dtype=torch.float64, seed=0, device="cpu", spread=1.0):
    g = torch.Generator().manual_seed(seed)
    pos = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([2.0, 2.0, 1.5], dtype=dtype) * spread
    pos[:, 2] += 3.0
    radii = 0.15 + 0.3 * torch.rand(n, generator=g, dtype=dtype)
    feats = torch.rand(n, d, generator=g, dtype=dtype)
    opac = 0.3 + 0.7 * torch.rand(n, generator=g, dtype=dtype)
    return [x.to(device) for x in (pos, radii, feats, opac)]


def test_single_sphere_silhouette_and_depth_are_analytic():
    # a sphere on the optical axis projects to a disk of radius f r / sqrt(|c|^2 - r^2) around (cx, cy)
    W, H, f = 64, 48, 40.0
    cams = Cameras(f, f, 32.0, 24.0, torch.eye(3, dtype=torch.float64)[None], torch.zeros(1, 3, dtype=torch.float64),
                   W, H)
    c, r = torch.tensor([[0.0, 0.0, 4.0]], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    out = render_spheres(c, r, torch.ones(1, 1, dtype=torch.float64), cams, near=0.5, far=10.0, gamma=1e-3,
                         backend="reference")
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                            indexing="ij")
    rho = ((xs - 32.0) ** 2 + (ys - 24.0) ** 2).sqrt()
    disk = rho < f * 1.0 / math.sqrt(16.0 - 1.0)
    assert torch.equal(out.alpha[0] > 0, disk)
    # front intersection of the ray s (a, b, 1) with |x - c| = r
    a, b = (xs - 32.0) / f, (ys - 24.0) / f
    dd, dc = a * a + b * b + 1, 4.0
    z = (dc - (dc * dc - dd * (16.0 - 1.0)).clamp(min=0).sqrt()) / dd
    torch.testing.assert_close(out.depth[0][disk], z[disk], atol=1e-10, rtol=0)
    assert bool((out.depth[0][~disk] == 0).all())
    assert bool((out.ids[0, ..., 0][disk] == 0).all()) and bool((out.ids[0, ..., 0][~disk] == -1).all())
    # well inside the disk the sphere dominates the background (gamma small)
    inner = rho < 3
    assert bool((out.alpha[0][inner] > 1 - 1e-10).all())
    torch.testing.assert_close(out.features[0][inner], torch.ones_like(out.features[0][inner]))


def test_blending_formula_two_spheres():
    cams = camera(width=8, height=8, f=10.0)
    pos = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    radii = torch.tensor([0.5, 0.5], dtype=torch.float64)
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    opac = torch.tensor([0.5, 0.8], dtype=torch.float64)
    bg = torch.tensor([0.2, 0.3], dtype=torch.float64)
    gamma, near, far = 0.5, 1.0, 5.0
    out = render_spheres(pos, radii, feats, cams, near=near, far=far, opacities=opac, gamma=gamma, background=bg,
                         backend="reference")
    # pixel (4, 4): its ray is a = (4.5 - cx) / fx, b = (4.5 - cy) / fy
    a, b = (4.5 - float(cams.cx)) / float(cams.fx), (4.5 - float(cams.cy)) / float(cams.fy)
    dd = a * a + b * b + 1
    ws, zs = [], []
    for (X, Y, Z), r, o in zip(pos.tolist(), radii.tolist(), opac.tolist(), strict=True):
        dc = a * X + b * Y + Z
        dist2 = X * X + Y * Y + Z * Z - dc * dc / dd
        h = 1 - dist2 / r**2
        z = dc / dd - math.sqrt(r * r * h / dd)
        ws.append(o * h * math.exp((1 - (z - near) / (far - near)) / gamma))
        zs.append(z)
    w_bg = math.exp(BG_EPS / gamma)
    total = sum(ws) + w_bg
    expected = [(ws[0] * 1.0 + w_bg * 0.2) / total, (ws[1] * 1.0 + w_bg * 0.3) / total]
    torch.testing.assert_close(out.features[0, 4, 4], torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(out.alpha[0, 4, 4].item(), sum(ws) / total)
    torch.testing.assert_close(out.depth[0, 4, 4].item(), (ws[0] * zs[0] + ws[1] * zs[1]) / sum(ws))
    order = sorted(range(2), key=lambda i: -ws[i])
    assert out.ids[0, 4, 4, :2].tolist() == order and out.ids[0, 4, 4, 2:].tolist() == [-1, -1]
    torch.testing.assert_close(out.weights[0, 4, 4, :2], torch.tensor([ws[i] / total for i in order],
                                                                       dtype=torch.float64))


def test_invariances():
    pos, radii, feats, opac = random_scene(12, 3, seed=1)
    cams = camera()
    kw = dict(near=0.5, far=8.0, gamma=0.05, backend="reference")
    out = render_spheres(pos, radii, feats, cams, opacities=opac, **kw)
    # permuting the spheres permutes the ids only
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    out_p = render_spheres(pos[perm], radii[perm], feats[perm], cams, opacities=opac[perm], **kw)
    for name in ("features", "alpha", "depth", "weights"):
        torch.testing.assert_close(getattr(out_p, name), getattr(out, name))
    hit = out.ids >= 0
    assert torch.equal(perm[out_p.ids[hit].long()], out.ids[hit].long())
    # moving the world and the camera together (a rigid motion) changes nothing
    R0 = quat_to_matrix(torch.nn.functional.normalize(torch.tensor([0.9, 0.1, -0.3, 0.2], dtype=torch.float64), dim=0))
    t0 = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    moved = pos @ R0.T + t0  # x' = R0 x + t0; camera: x_cam = R0^T (x' - t0)
    cams_m = camera(R=R0.T[None], t=-(R0.T @ t0)[None])
    out_m = render_spheres(moved, radii, feats, cams_m, opacities=opac, **kw)
    torch.testing.assert_close(out_m.features, out.features)
    torch.testing.assert_close(out_m.depth, out.depth)
    # a sphere behind the camera or beyond far changes nothing
    extra = torch.tensor([[0.0, 0.0, -3.0], [0.1, 0.0, 20.0]], dtype=torch.float64)
    out_e = render_spheres(torch.cat([pos, extra]), torch.cat([radii, radii[:2]]), torch.cat([feats, feats[:2]]),
                           cams, opacities=torch.cat([opac, opac[:2]]), **kw)
    torch.testing.assert_close(out_e.features, out.features)


def test_reference_gradcheck():
    pos, radii, feats, opac = random_scene(4, 2, seed=2)
    cams = camera(width=7, height=6, f=6.0)
    bg = torch.tensor([0.1, 0.7], dtype=torch.float64)

    def fn(pos, radii, feats, opac, bg, t, fx, cx):
        c = Cameras(fx, cams.fy, cx, cams.cy, cams.R, t, 7, 6)
        out = render_spheres(pos, radii, feats, c, near=0.5, far=6.0, opacities=opac, gamma=0.3, background=bg,
                             backend="reference")
        return out.features, out.alpha, out.depth

    inputs = [x.clone().requires_grad_(True) for x in (pos, radii, feats, opac, bg, cams.t, cams.fx, cams.cx)]
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


def test_input_errors():
    pos, radii, feats, opac = random_scene(3, 3)
    cams = camera()
    with pytest.raises(ValueError, match="radii must be > 0"):
        render_spheres(pos, -radii, feats, cams, near=0.1, far=5.0)
    with pytest.raises(ValueError, match="features must have shape"):
        render_spheres(pos, radii, torch.zeros(3, 33, dtype=torch.float64), cams, near=0.1, far=5.0)
    with pytest.raises(ValueError, match="near < far"):
        render_spheres(pos, radii, feats, cams, near=2.0, far=1.0)
    with pytest.raises(ValueError, match="pinhole"):
        distorted = Cameras(10.0, 10.0, 5.0, 5.0, cams.R, cams.t, 10, 10, model="opencv")
        render_spheres(pos, radii, feats, distorted, near=0.1, far=5.0)
    with pytest.raises(ValueError, match="float32"):
        render_spheres(pos.float(), radii, feats, cams, near=0.1, far=5.0)
