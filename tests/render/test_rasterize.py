"""rasterize: native (CPU, CUDA) against the pure-torch reference, gradients against finite
differences, and analytic cases (coverage, depth order, triangles crossing w = 0)."""

from __future__ import annotations

import math

import pytest
import torch

from scenegrad.render.mesh import rasterize
from scenegrad.render.mesh.rasterize import Rasterized

from ..conftest import requires_cuda


def random_scene(B: int, T: int, seed: int, dtype=torch.float32, behind: float = 0.1):
    """Random triangles in clip space, mostly in front, some crossing w = 0 or the far plane."""
    g = torch.Generator().manual_seed(seed)
    V = 3 * T
    xy = torch.rand(B, V, 2, generator=g, dtype=dtype) * 2.4 - 1.2
    w = torch.rand(B, V, 1, generator=g, dtype=dtype) * 1.5 + 0.5
    # Jitter per triangle so triangles are not tiny or degenerate.
    centre = (torch.rand(B, T, 1, 2, generator=g, dtype=dtype) * 2 - 1).expand(B, T, 3, 2).reshape(B, V, 2)
    xy = 0.35 * xy + centre
    z = torch.rand(B, V, 1, generator=g, dtype=dtype) * 2.2 - 1.1
    flip = torch.rand(B, V, 1, generator=g, dtype=dtype) < behind
    w = torch.where(flip, -w * 0.3, w)
    pos = torch.cat([xy * w.abs(), z * w.abs(), w], -1)
    tri = torch.arange(V, dtype=torch.int32).reshape(T, 3)
    return pos, tri


def id_mismatch(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a[..., 3] != b[..., 3]).float().mean().item()


@pytest.mark.parametrize("B,T,H,W", [(1, 4, 16, 16), (2, 20, 37, 53), (1, 200, 64, 48), (3, 60, 128, 96)])
def test_native_matches_reference_forward(native, B, T, H, W):
    pos, tri = random_scene(B, T, seed=B * 1000 + T)
    r_nat, db_nat = rasterize(pos, tri, (H, W), backend="native")
    r_ref, db_ref = rasterize(pos, tri, (H, W), backend="reference")
    assert r_nat.shape == (B, H, W, 4) and db_nat.shape == (B, H, W, 4)
    # Both run the same float32 operations in the same order: coverage agrees exactly.
    assert id_mismatch(r_nat, r_ref) == 0.0
    assert (r_nat[..., 3] > 0).any(), "scene covers nothing: the test would be vacuous"
    torch.testing.assert_close(r_nat, r_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(db_nat, db_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("B,T,H,W", [(1, 3, 16, 16), (2, 30, 33, 41)])
def test_native_matches_reference_backward(native, B, T, H, W):
    pos, tri = random_scene(B, T, seed=7 + T)
    g = torch.Generator().manual_seed(3)
    cot = torch.randn(B, H, W, 4, generator=g)
    cot_db = torch.randn(B, H, W, 4, generator=g)
    grads = []
    for backend in ("native", "reference"):
        p = pos.clone().requires_grad_(True)
        rast, db = rasterize(p, tri, (H, W), backend=backend)
        loss = (rast[..., :3] * cot[..., :3]).sum() + (db * cot_db).sum()
        (grad,) = torch.autograd.grad(loss, p)
        grads.append(grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-3 * grads[1].abs().max().item())


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_gradcheck_float64(native, backend):
    pos, tri = random_scene(1, 3, seed=11, dtype=torch.float64, behind=0.0)
    pos.requires_grad_(True)

    def f(p):
        rast, db = rasterize(p, tri, (12, 10), backend=backend)
        return rast[..., :3], db

    assert (rasterize(pos, tri, (12, 10), backend=backend).rast[..., 3] > 0).sum() > 5
    assert torch.autograd.gradcheck(f, (pos,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_only_rast_or_only_db_gradient(native):
    pos, tri = random_scene(1, 10, seed=5)
    for backend in ("native", "reference"):
        p = pos.clone().requires_grad_(True)
        rast, db = rasterize(p, tri, (20, 20), backend=backend)
        (g_rast,) = torch.autograd.grad(rast[..., 2].sum(), p)
        p2 = pos.clone().requires_grad_(True)
        _, db2 = rasterize(p2, tri, (20, 20), backend=backend)
        (g_db,) = torch.autograd.grad(db2.sum(), p2)
        assert g_rast.abs().sum() > 0 and g_db.abs().sum() > 0


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_single_triangle_coverage_and_barycentrics(native, backend):
    # Screen-space triangle with w = 1: area in pixels is known, barycentrics are affine.
    H, W = 64, 80
    corners_px = torch.tensor([[8.0, 10.0], [70.0, 20.0], [30.0, 58.0]])
    ndc = torch.stack([2 * corners_px[:, 0] / W - 1, 1 - 2 * corners_px[:, 1] / H], -1)
    pos = torch.cat([ndc, torch.full((3, 1), 0.25), torch.ones(3, 1)], -1)
    tri = torch.tensor([[0, 1, 2]])
    rast, db = rasterize(pos, tri, (H, W), backend=backend)
    assert rast.shape == (H, W, 4)
    covered = rast[..., 3] == 1
    (x0, y0), (x1, y1), (x2, y2) = corners_px.tolist()
    area = abs((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)) / 2
    assert abs(covered.sum().item() - area) < 0.05 * area
    # Barycentrics at a covered pixel centre reproduce that centre.
    j, i = 30, 35
    assert covered[j, i]
    u, v = rast[j, i, 0].item(), rast[j, i, 1].item()
    x = u * x0 + v * x1 + (1 - u - v) * x2
    y = u * y0 + v * y1 + (1 - u - v) * y2
    assert math.isclose(x, i + 0.5, abs_tol=1e-4) and math.isclose(y, j + 0.5, abs_tol=1e-4)
    assert math.isclose(rast[j, i, 2].item(), 0.25, abs_tol=1e-6)
    # Screen-space derivatives of an affine map: constant, matching finite differences.
    du_dx = (rast[j, i + 1, 0] - rast[j, i, 0]).item()
    dv_dy = (rast[j + 1, i, 1] - rast[j, i, 1]).item()
    assert math.isclose(db[j, i, 0].item(), du_dx, abs_tol=1e-5)
    assert math.isclose(db[j, i, 3].item(), dv_dy, abs_tol=1e-5)
    # Rows run top to bottom: the vertex at the top of the image (y = 10 px) is in the upper rows.
    rows = covered.any(1).nonzero()
    assert rows.min().item() == 10 and rows.max().item() == 57


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_depth_order_and_ties(native, backend):
    big = torch.tensor([[-1.0, -1.0], [3.0, -1.0], [-1.0, 3.0]])

    def tri_at(z):
        return torch.cat([big, torch.full((3, 1), z), torch.ones(3, 1)], -1)

    pos = torch.cat([tri_at(0.5), tri_at(-0.2), tri_at(0.1), tri_at(-0.2)])
    tri = torch.arange(12).reshape(4, 3)
    rast, _ = rasterize(pos, tri, (8, 8), backend=backend)
    assert (rast[..., 3] == 2).all(), "nearest wins, and the lower id wins a tie"
    assert torch.allclose(rast[..., 2], torch.tensor(-0.2))
    # Fragments outside the depth range are dropped.
    rast, _ = rasterize(tri_at(1.5), torch.tensor([[0, 1, 2]]), (8, 8), backend=backend)
    assert (rast[..., 3] == 0).all()


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_plane_crossing_camera_plane(native, backend):
    """A quad reaching behind the camera is drawn exactly where the pixel rays hit it."""
    H, W, f, near, far = 40, 60, 50.0, 0.1, 100.0
    # Camera-space quad (OpenCV axes): the floor y = 1, from z = -3 (behind) to z = 20, x in [-4, 4].
    quad = torch.tensor([[-4.0, 1.0, -3.0], [4.0, 1.0, -3.0], [4.0, 1.0, 20.0], [-4.0, 1.0, 20.0]])
    P = torch.tensor(
        [
            [2 * f / W, 0.0, 0.0, 0.0],
            [0.0, -2 * f / H, 0.0, 0.0],
            [0.0, 0.0, (far + near) / (far - near), -2 * far * near / (far - near)],
            [0.0, 0.0, 1.0, 0.0],
        ]
    )
    pos = torch.cat([quad, torch.ones(4, 1)], -1) @ P.T
    tri = torch.tensor([[0, 1, 2], [0, 2, 3]])
    rast, _ = rasterize(pos, tri, (H, W), backend=backend)
    # Independent answer: intersect each pixel ray (principal point at the centre) with y = 1.
    i = torch.arange(W) + 0.5
    j = torch.arange(H) + 0.5
    dx = ((i - W / 2) / f)[None, :].expand(H, W)
    dy = ((j - H / 2) / f)[:, None].expand(H, W)
    t = 1.0 / dy  # ray (dx, dy, 1) * t hits y = 1
    hit = (dy > 0) & (t * dx).abs().le(4) & (t <= 20) & (t >= near)
    got = rast[..., 3] > 0
    assert hit.sum() > 100
    assert (got != hit).sum() <= 0.01 * hit.sum(), "coverage differs from the ray-plane answer"
    assert not got[: H // 2].any(), "nothing above the horizon: the part behind the camera is not drawn"


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_degenerate_and_behind(native, backend):
    pos = torch.tensor(
        [
            [0.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0],  # collinear
            [0.0, 0.0, 0.0, -1.0], [1.0, 0.0, 0.0, -1.0], [0.0, 1.0, 0.0, -1.0],  # behind
        ]
    )
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]])
    rast, db = rasterize(pos, tri, (16, 16), backend=backend)
    assert (rast == 0).all() and (db == 0).all()
    assert torch.isfinite(rast).all()


def test_empty_triangle_list_and_validation(native):
    pos = torch.rand(5, 4)
    empty = torch.zeros(0, 3, dtype=torch.int32)
    for backend in ("native", "reference"):
        rast, _ = rasterize(pos, empty, (4, 4), backend=backend)
        assert (rast == 0).all()
    with pytest.raises(ValueError, match="outside"):
        rasterize(pos, torch.tensor([[0, 1, 5]]), (4, 4))
    with pytest.raises(ValueError, match="shape"):
        rasterize(torch.rand(5, 3), torch.tensor([[0, 1, 2]]), (4, 4))
    with pytest.raises(ValueError, match="integer"):
        rasterize(pos, torch.tensor([[0.0, 1.0, 2.0]]), (4, 4))
    with pytest.raises(ValueError, match="positive"):
        rasterize(pos, torch.tensor([[0, 1, 2]]), (0, 4))
    with pytest.raises(ValueError, match="unknown backend"):
        rasterize(pos, torch.tensor([[0, 1, 2]]), (4, 4), backend="nope")


def test_returns_named_tuple(native):
    pos, tri = random_scene(1, 2, seed=1)
    out = rasterize(pos, tri, (8, 8))
    assert isinstance(out, Rasterized)
    rast, rast_db = out
    assert rast is out.rast and rast_db is out.rast_db


@requires_cuda
@pytest.mark.parametrize("B,T,H,W", [(1, 50, 64, 64), (2, 300, 128, 160)])
def test_cuda_matches_cpu(native, B, T, H, W):
    pos, tri = random_scene(B, T, seed=T)
    r_cpu, db_cpu = rasterize(pos, tri, (H, W), backend="native")
    r_gpu, db_gpu = rasterize(pos.cuda(), tri.cuda(), (H, W), backend="native")
    assert id_mismatch(r_cpu, r_gpu.cpu()) < 1e-3
    same = r_cpu[..., 3] == r_gpu.cpu()[..., 3]
    torch.testing.assert_close(r_gpu.cpu()[same], r_cpu[same], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(db_gpu.cpu()[same], db_cpu[same], rtol=1e-3, atol=1e-4)
    cot = torch.randn(B, H, W, 4)
    grads = []
    for p in (pos.clone().requires_grad_(True), pos.cuda().requires_grad_(True)):
        rast, _ = rasterize(p, tri.to(p.device), (H, W), backend="native")
        (g,) = torch.autograd.grad((rast[..., :3] * cot.to(p.device)[..., :3]).sum(), p)
        grads.append(g.cpu())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-2, atol=1e-2 * grads[0].abs().max().item())
