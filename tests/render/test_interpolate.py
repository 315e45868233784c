"""interpolate: native vs reference (forward and backward), finite differences, analytic cases."""

from __future__ import annotations

import pytest
import torch

from scenegrad.render.mesh import interpolate, rasterize

from ..conftest import requires_cuda
from .test_rasterize import random_scene


def raster(B=2, T=30, H=24, W=20, seed=0, dtype=torch.float32):
    pos, tri = random_scene(B, T, seed=seed, dtype=dtype)
    rast, db = rasterize(pos, tri, (H, W), backend="reference")
    assert (rast[..., 3] > 0).sum() > 10
    return pos, tri, rast, db


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("diff", [None, "all", [1, 3]])
def test_native_matches_reference(native, batched, diff):
    pos, tri, rast, db = raster()
    B, V = pos.shape[:2]
    g = torch.Generator().manual_seed(1)
    attr = torch.randn(B, V, 5, generator=g) if batched else torch.randn(V, 5, generator=g)
    outs, grads = [], []
    for backend in ("native", "reference"):
        a = attr.clone().requires_grad_(True)
        r = rast.clone().requires_grad_(True)
        d = db.clone().requires_grad_(True)
        out, out_da = interpolate(a, r, tri, d, diff_attrs=diff, backend=backend)
        cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
        cot_da = torch.randn(out_da.shape, generator=torch.Generator().manual_seed(3))
        loss = (out * cot).sum() + (out_da * cot_da).sum()
        inputs = (a, r, d) if diff else (a, r)
        grads.append(torch.autograd.grad(loss, inputs))
        outs.append((out, out_da))
    expected_d = {None: 0, "all": 5, (1, 3): 2}[tuple(diff) if isinstance(diff, list) else diff]
    assert outs[0][1].shape[-1] == 2 * expected_d
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-5, atol=1e-5)
    for got, want in zip(grads[0], grads[1], strict=True):
        assert want.abs().sum() > 0
        # Only u, v (channels 0, 1) of rast receive gradient.
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_gradcheck_float64(native, backend):
    pos, tri, rast, db = raster(B=1, T=4, H=8, W=7, seed=3, dtype=torch.float64)
    V = pos.shape[1]
    attr = torch.randn(V, 3, dtype=torch.float64, requires_grad=True)
    uv = rast[..., :2].clone().requires_grad_(True)
    rest = rast[..., 2:]
    dbv = db.clone().requires_grad_(True)

    def f(a, uv_, d):
        out, out_da = interpolate(a, torch.cat([uv_, rest], -1), tri, d, diff_attrs="all", backend=backend)
        return out, out_da

    assert torch.autograd.gradcheck(f, (attr, uv, dbv), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_linear_attribute_is_reproduced(native, backend):
    # w = 1 everywhere: the pixel-space x and y of the vertices interpolate to each pixel centre,
    # with derivative 1 along its own axis and 0 along the other.
    H, W = 30, 40
    px = torch.tensor([[3.0, 4.0], [37.0, 9.0], [12.0, 28.0]])
    ndc = torch.stack([2 * px[:, 0] / W - 1, 1 - 2 * px[:, 1] / H], -1)
    pos = torch.cat([ndc, torch.zeros(3, 1), torch.ones(3, 1)], -1)
    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    rast, db = rasterize(pos, tri, (H, W), backend=backend)
    out, out_da = interpolate(px, rast, tri, db, diff_attrs="all", backend=backend)
    covered = rast[..., 3] > 0
    ys, xs = torch.nonzero(covered, as_tuple=True)
    torch.testing.assert_close(out[covered][:, 0], xs.float() + 0.5, atol=1e-3, rtol=0)
    torch.testing.assert_close(out[covered][:, 1], ys.float() + 0.5, atol=1e-3, rtol=0)
    expected = torch.tensor([1.0, 0.0, 0.0, 1.0]).expand(int(covered.sum()), 4)
    torch.testing.assert_close(out_da[covered], expected, atol=1e-4, rtol=0)
    assert (out[~covered] == 0).all() and (out_da[~covered] == 0).all()


def test_end_to_end_gradient_to_positions(native):
    pos, tri = random_scene(2, 20, seed=9)
    colors = torch.rand(pos.shape[1], 3, generator=torch.Generator().manual_seed(4))
    grads = []
    for backend in ("native", "reference"):
        p = pos.clone().requires_grad_(True)
        rast, db = rasterize(p, tri, (32, 32), backend=backend)
        rgb, rgb_da = interpolate(colors, rast, tri, db, diff_attrs=[0], backend=backend)
        loss = (rgb ** 2).sum() + rgb_da.abs().sum()
        (g,) = torch.autograd.grad(loss, p)
        grads.append(g)
    assert grads[1].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-3 * grads[1].abs().max().item())


def test_validation(native):
    pos, tri, rast, db = raster(B=1)
    V = pos.shape[1]
    with pytest.raises(ValueError, match="rast_db"):
        interpolate(torch.rand(V, 2), rast, tri, None, diff_attrs="all")
    with pytest.raises(ValueError, match="outside"):
        interpolate(torch.rand(V, 2), rast, tri, db, diff_attrs=[2])
    with pytest.raises(ValueError, match="batch"):
        interpolate(torch.rand(3, V, 2), rast, tri)
    with pytest.raises(ValueError, match="must match"):
        interpolate(torch.rand(V, 2, dtype=torch.float64), rast, tri)
    # Unbatched rast gives unbatched outputs.
    out, out_da = interpolate(torch.rand(V, 2), rast[0], tri, db[0], diff_attrs=[0])
    assert out.shape == (*rast.shape[1:3], 2) and out_da.shape == (*rast.shape[1:3], 2)


@requires_cuda
def test_cuda_matches_cpu(native):
    pos, tri, rast, db = raster(B=2, T=40, H=64, W=64)
    attr = torch.randn(pos.shape[1], 4)
    res = []
    for device in ("cpu", "cuda"):
        a = attr.to(device).requires_grad_(True)
        r = rast.to(device).requires_grad_(True)
        out, out_da = interpolate(a, r, tri.to(device), db.to(device), diff_attrs="all", backend="native")
        (out.sum() + out_da.square().sum()).backward()
        res.append([t.detach().cpu() for t in (out, out_da, a.grad, r.grad)])
    for got, want in zip(res[1], res[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
