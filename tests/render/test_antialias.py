"""antialias: native vs reference, finite differences, exact coverage gradients, silhouettes only."""

from __future__ import annotations

import math

import pytest
import torch

from scenegrad.render.mesh import antialias, antialias_topology, interpolate, rasterize

from ..conftest import requires_cuda


def icosphere_scene(B=2, size=48, dtype=torch.float32, seed=0):
    """A closed mesh (subdivided octahedron pushed to a sphere) seen in perspective, per-vertex colours."""
    verts = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64)
    faces = torch.tensor(
        [[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]]
    )
    for _ in range(2):
        verts, faces = subdivide(verts, faces)
    verts = verts / verts.norm(dim=1, keepdim=True)
    g = torch.Generator().manual_seed(seed)
    pos = []
    for b in range(B):
        angle = 0.7 * b + 0.3
        R = torch.tensor(
            [[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]],
            dtype=torch.float64,
        )
        cam = verts @ R.T + torch.tensor([0.1 * b, -0.05, 3.0], dtype=torch.float64)
        f = 2.2
        pos.append(torch.stack([f * cam[:, 0], -f * cam[:, 1], cam[:, 2] * 1.02 - 0.2, cam[:, 2]], -1))
    pos = torch.stack(pos).to(dtype)
    colors = torch.rand(verts.shape[0], 3, generator=g, dtype=torch.float64).to(dtype)
    tri = faces.to(torch.int32)
    rast, _ = rasterize(pos, tri, (size, size), backend="reference")
    color, _ = interpolate(colors, rast, tri, backend="reference")
    return pos, tri, rast, color


def subdivide(verts, faces):
    edges = {}
    new = [v for v in verts]
    out = []
    for a, b, c in faces.tolist():
        mids = []
        for u, v in ((a, b), (b, c), (c, a)):
            key = (min(u, v), max(u, v))
            if key not in edges:
                edges[key] = len(new)
                new.append((verts[u] + verts[v]) / 2)
            mids.append(edges[key])
        ab, bc, ca = mids
        out += [[a, ab, ca], [ab, b, bc], [ca, bc, c], [ab, bc, ca]]
    return torch.stack(new), torch.tensor(out)


def test_native_matches_reference(native):
    pos, tri, rast, color = icosphere_scene()
    topo = antialias_topology(tri)
    cot = torch.randn(color.shape, generator=torch.Generator().manual_seed(5))
    results = []
    for backend in ("native", "reference"):
        c = color.clone().requires_grad_(True)
        p = pos.clone().requires_grad_(True)
        out = antialias(c, rast, p, tri, topology=topo, backend=backend)
        gc, gp = torch.autograd.grad((out * cot).sum(), (c, p))
        results.append((out, gc, gp))
    (o_n, gc_n, gp_n), (o_r, gc_r, gp_r) = results
    assert (o_r != color).any(), "nothing was antialiased: the test would be vacuous"
    torch.testing.assert_close(o_n, o_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gc_n, gc_r, rtol=1e-5, atol=1e-5)
    assert gp_r.abs().sum() > 0
    torch.testing.assert_close(gp_n, gp_r, rtol=1e-4, atol=1e-4 * gp_r.abs().max().item())


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_gradcheck_float64(native, backend):
    pos, tri, rast, color = icosphere_scene(B=1, size=14, dtype=torch.float64)
    topo = antialias_topology(tri)
    c = color.clone().requires_grad_(True)
    p = pos.clone().requires_grad_(True)
    assert (antialias(color, rast, pos, tri, topology=topo, backend=backend) != color).any()
    assert torch.autograd.gradcheck(
        lambda c_, p_: antialias(c_, rast, p_, tri, topology=topo, backend=backend), (c, p), eps=1e-7, atol=1e-5
    )


def square(x0, x1, y0, y1, H, W, dtype=torch.float64):
    """An axis-aligned square in pixel coordinates, as two triangles with w = 1."""
    px = torch.tensor([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=dtype)
    ndc = torch.stack([2 * px[:, 0] / W - 1, 1 - 2 * px[:, 1] / H], -1)
    pos = torch.cat([ndc, torch.zeros(4, 1, dtype=dtype), torch.ones(4, 1, dtype=dtype)], -1)
    return pos, torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)


def coverage(pos, tri, H, W, backend):
    rast, _ = rasterize(pos, tri, (H, W), backend=backend)
    white, _ = interpolate(torch.ones(pos.shape[0], 1, dtype=pos.dtype), rast, tri, backend=backend)
    return antialias(white, rast, pos, tri, backend=backend)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_square_area_and_its_gradient_are_exact(native, backend):
    """A white square's antialiased pixel sum is its area up to the corners, and moving its right
    (bottom) edge by one pixel changes the sum by about the edge's length in pixels."""
    H, W = 40, 48
    pos, tri = square(10.3, 30.7, 8.6, 29.2, H, W)
    p = pos.clone().requires_grad_(True)
    image = coverage(p, tri, H, W, backend)
    area = (30.7 - 10.3) * (29.2 - 8.6)
    # Blends run along rows and columns separately, so corner pixels are off by at most the
    # product of their two partial coverages, here (0.3 + 0.3) * (0.4 + 0.2) in all.
    assert abs(image.sum().item() - area) <= 0.24 + 1e-9
    (g,) = torch.autograd.grad(image.sum(), p)
    # d/d x_ndc = d/d X_px * W / 2; vertices 1 and 2 carry the right edge, 2 and 3 the bottom one.
    right = (g[1, 0] + g[2, 0]).item() * 2 / W
    bottom = -(g[2, 1] + g[3, 1]).item() * 2 / H
    # One unit per pixel row (column) whose centre the edge spans: 20 rows of 20.6 px; the corner
    # column whose pixel belongs to the other triangle of the quad has no silhouette to move.
    assert right == pytest.approx(20.0, abs=1e-9)
    assert bottom == pytest.approx(20.0, abs=1e-9)
    assert math.isclose(right, 29.2 - 8.6, rel_tol=0.05) and math.isclose(bottom, 30.7 - 10.3, rel_tol=0.05)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_slanted_triangle_gradient_matches_area_derivative(native, backend):
    """For a slanted triangle the pixel sum approximates the area; its gradient must match the
    analytic area derivative and central finite differences of the image over a pixel."""
    H, W = 64, 64
    px = torch.tensor([[9.3, 12.1], [55.2, 20.4], [24.6, 57.7]], dtype=torch.float64)

    def pos_of(px_):
        ndc = torch.stack([2 * px_[:, 0] / W - 1, 1 - 2 * px_[:, 1] / H], -1)
        return torch.cat([ndc, torch.zeros(3, 1, dtype=px_.dtype), torch.ones(3, 1, dtype=px_.dtype)], -1)

    tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
    q = px.clone().requires_grad_(True)
    image = coverage(pos_of(q), tri, H, W, backend)
    (g,) = torch.autograd.grad(image.sum(), q)
    a = px.clone().requires_grad_(True)
    (x0, y0), (x1, y1), (x2, y2) = a
    area = 0.5 * ((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)).abs()
    (g_area,) = torch.autograd.grad(area, a)
    assert abs(image.sum().item() - area.item()) < 0.02 * area.item()
    torch.testing.assert_close(g, g_area, rtol=0.1, atol=0.1 * g_area.abs().max().item())
    h = 0.5
    for k in range(3):
        for axis in range(2):
            plus, minus = px.clone(), px.clone()
            plus[k, axis] += h
            minus[k, axis] -= h
            up = coverage(pos_of(plus), tri, H, W, backend).sum()
            down = coverage(pos_of(minus), tri, H, W, backend).sum()
            fd = (up - down) / (2 * h)
            assert abs(fd.item() - g[k, axis].item()) < 0.1 * g_area.abs().max().item() + 0.1 * abs(fd.item())


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_only_silhouettes_are_blended(native, backend):
    pos, tri, rast, color = icosphere_scene(B=1, size=64)
    out = antialias(color, rast, pos, tri, backend=backend)
    changed = (out != color).any(-1)[0]
    background = rast[0, ..., 3] == 0
    near_background = background.clone()
    near_background[:, 1:] |= background[:, :-1]
    near_background[:, :-1] |= background[:, 1:]
    near_background[1:] |= background[:-1]
    near_background[:-1] |= background[1:]
    assert changed.any()
    assert not (changed & ~near_background).any(), "an interior (non-silhouette) edge was blended"


def test_topology():
    tri = torch.tensor([[0, 1, 2], [2, 1, 3], [0, 0, 1], [4, 5, 6]])
    topo = antialias_topology(tri)
    assert topo.tolist() == [[3, -1, -1], [-1, -1, 0], [-1, -1, -1], [-1, -1, -1]]
    # A closed mesh: every edge has a neighbour.
    _, tri_s, _, _ = icosphere_scene(B=1, size=8)
    assert (antialias_topology(tri_s) >= 0).all()


def test_validation(native):
    pos, tri, rast, color = icosphere_scene(B=2, size=16)
    with pytest.raises(ValueError, match="must match"):
        antialias(color[:, :8], rast, pos, tri)
    with pytest.raises(ValueError, match="pos"):
        antialias(color, rast, pos[:1], tri)
    with pytest.raises(ValueError, match="topology"):
        antialias(color, rast, pos, tri, topology=torch.zeros(3, 3, dtype=torch.int32))
    single = antialias(color[0], rast[0], pos[0], tri)
    assert single.shape == color.shape[1:]


@requires_cuda
def test_cuda_matches_cpu(native):
    pos, tri, rast, color = icosphere_scene(B=2, size=96)
    res = []
    for device in ("cpu", "cuda"):
        c = color.to(device).requires_grad_(True)
        p = pos.to(device).requires_grad_(True)
        out = antialias(c, rast.to(device), p, tri.to(device), backend="native")
        out.square().sum().backward()
        res.append([t.detach().cpu() for t in (out, c.grad, p.grad)])
    for got, want in zip(res[1], res[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * max(1.0, want.abs().max().item()))
