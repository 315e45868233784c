"""rasterize_gaussians and spherical harmonics: closed-form images, SH, render modes, gradients, culling.

The renderer composites through ``scenegrad.render.gaussians.rasterize.rasterize_to_pixels``. A tiny
dense compositor (:func:`dense_composite`, written from the 3DGS rule) stands in for it while that
module cannot be imported, and cross-checks it when it can.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scenegrad.render.gaussians import (
    num_sh_bases,
    project_gaussians,
    rasterize_gaussians,
    rgb_to_sh,
    sh_to_rgb,
    spherical_harmonics,
)
from scenegrad.render.gaussians import render as render_mod
from scenegrad.render.gaussians.sh import SH_C0, SH_C1, sh_bases

B = "reference"  # never trigger a native build from these tests


def dense_composite(means2d, conics, colors, opacities, depths, radii, width, height, *, tile_size=16,
                    backgrounds=None, backend=None):
    """Every pixel against every visible Gaussian, sorted by depth per camera (3DGS's rule, no tiles)."""
    C, N, D = colors.shape
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pix = torch.stack([xs, ys], -1).reshape(-1, 2).to(means2d.dtype) + 0.5  # [P, 2]
    out_c, out_a = [], []
    for c in range(C):
        order = torch.sort(depths[c].detach(), stable=True).indices
        order = order[radii[c, order] > 0]
        d = means2d[c, order][None] - pix[:, None]  # [P, M, 2]
        a, b, cc = conics[c, order].unbind(-1)
        sigma = 0.5 * (a * d[..., 0] ** 2 + cc * d[..., 1] ** 2) + b * d[..., 0] * d[..., 1]
        alpha = torch.clamp_max(opacities[c, order] * torch.exp(-sigma), 0.999)
        use = (sigma >= 0) & (alpha >= 1 / 255)
        T = torch.ones(pix.shape[0], dtype=means2d.dtype)
        col = torch.zeros(pix.shape[0], D, dtype=means2d.dtype)
        done = torch.zeros(pix.shape[0], dtype=torch.bool)
        for i in range(order.numel()):
            ai = torch.where(use[:, i], alpha[:, i], torch.zeros_like(alpha[:, i]))
            nxt = T * (1 - ai)
            done = done | (nxt < 1e-4)
            ai = torch.where(done, torch.zeros_like(ai), ai)
            col = col + (ai * T)[:, None] * colors[c, order[i]]
            T = T * (1 - ai)
        if backgrounds is not None:
            col = col + T[:, None] * backgrounds[c]
        out_c.append(col.reshape(height, width, D))
        out_a.append((1 - T).reshape(height, width, 1))
    return torch.stack(out_c), torch.stack(out_a)


def _real_rasterizer():
    try:
        from scenegrad.render.gaussians.rasterize import rasterize_to_pixels
    except ImportError:
        return None
    return rasterize_to_pixels


@pytest.fixture(params=["rasterize", "dense"])
def compositor(request, monkeypatch):
    """Each rendering test runs on the real rasterizer (skipped while it does not import) and on the
    dense stand-in."""
    if request.param == "dense":
        monkeypatch.setattr(render_mod, "_rasterize_to_pixels", dense_composite)
    elif _real_rasterizer() is None:
        pytest.skip("scenegrad.render.gaussians.rasterize does not import yet")
    return request.param


def _K(f=60.0, cx=16.0, cy=12.0, dtype=torch.float64):
    return torch.tensor([[[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]]], dtype=dtype)


def _one(theta=0.5, s=(0.3, 0.15, 0.2), z=3.0, dtype=torch.float64):
    means = torch.tensor([[0.0, 0.0, z]], dtype=dtype)
    quats = torch.tensor([[math.cos(theta / 2), 0.0, 0.0, math.sin(theta / 2)]], dtype=dtype)
    return means, quats, torch.tensor([s], dtype=dtype)


def _random_scene(n=6, c=2, seed=0, dtype=torch.float64, sh_k=None):
    g = torch.Generator().manual_seed(seed)
    means = torch.cat([0.8 * (torch.rand(n, 2, generator=g, dtype=dtype) - 0.5),
                       2.5 + torch.rand(n, 1, generator=g, dtype=dtype)], 1)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = 0.05 + 0.15 * torch.rand(n, 3, generator=g, dtype=dtype)
    opac = 0.3 + 0.6 * torch.rand(n, generator=g, dtype=dtype)
    cols = torch.rand(n, 3, generator=g, dtype=dtype) if sh_k is None else \
        0.3 * torch.randn(n, sh_k, 3, generator=g, dtype=dtype)
    viewmats = torch.eye(4, dtype=dtype).repeat(c, 1, 1)
    viewmats[:, 0, 3] = torch.linspace(-0.1, 0.1, c, dtype=dtype)
    viewmats[:, 2, 3] = torch.linspace(0.0, 0.3, c, dtype=dtype)
    return means, quats, scales, opac, cols, viewmats, _K(dtype=dtype).expand(c, 3, 3)


# ---------------------------------------------------------------------------------------------
# Spherical harmonics
# ---------------------------------------------------------------------------------------------


def test_sh_constants_and_helpers():
    assert SH_C0 == 0.28209479177387814 and SH_C1 == 0.4886025119029199
    assert SH_C0 == pytest.approx(0.5 / math.sqrt(math.pi), rel=1e-15)
    assert [num_sh_bases(d) for d in range(4)] == [1, 4, 9, 16]
    with pytest.raises(ValueError):
        num_sh_bases(4)
    rgb = torch.rand(10, 3, dtype=torch.float64)
    torch.testing.assert_close(sh_to_rgb(rgb_to_sh(rgb)), rgb)


def test_sh_bases_orthonormal():
    # Real SH are orthonormal on the sphere: integrate Y_i Y_j with a fine Gauss-Legendre x uniform grid.
    ct, wt = np.polynomial.legendre.leggauss(24)
    phi = torch.arange(48, dtype=torch.float64) * (2 * math.pi / 48)
    ct, wt = torch.tensor(ct), torch.tensor(wt)
    st = torch.sqrt(1 - ct**2)
    dirs = torch.stack([st[:, None] * torch.cos(phi), st[:, None] * torch.sin(phi), ct[:, None].expand(-1, 48)], -1)
    weights = (wt[:, None] * (2 * math.pi / 48)).expand(-1, 48)
    Y = sh_bases(3, dirs.reshape(-1, 3))  # [P, 16]
    gram = Y.T @ (Y * weights.reshape(-1, 1))
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=1e-12, rtol=0)


def test_sh_values_and_truncation():
    dirs = torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0], [0.0, -3.0, 0.0]], dtype=torch.float64)
    coeffs = torch.zeros(3, 16, 3, dtype=torch.float64)
    coeffs[:, 3] = 2.0  # the -C1 x basis, weight 2
    coeffs[:, 2, 1] = 1.0  # the C1 z basis, green only
    out = spherical_harmonics(1, dirs, coeffs)
    assert 0.5 - 2 * SH_C1 < 0  # so the second row is clamped at 0
    expected = torch.tensor([[0.5, 0.5 + SH_C1, 0.5], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(out, expected)
    full = torch.randn(3, 16, 3, dtype=torch.float64)
    for d in range(4):
        k = num_sh_bases(d)
        torch.testing.assert_close(spherical_harmonics(d, dirs, full), spherical_harmonics(d, dirs, full[:, :k]))
    with pytest.raises(ValueError, match="K >= 16"):
        spherical_harmonics(3, dirs, full[:, :9])


def test_sh_gradcheck():
    dirs = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    coeffs = (0.1 * torch.randn(4, 16, 3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda d, c: spherical_harmonics(3, d, c), (dirs, coeffs))


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("compositor")
def test_one_gaussian_is_the_analytic_image():
    W, H, f, z, theta, s0, s1, eps, opacity = 32, 24, 60.0, 3.0, 0.5, 0.3, 0.15, 0.3, 0.8
    means, quats, scales = _one(theta, (s0, s1, 0.2), z)
    color = torch.tensor([[0.2, 0.6, 1.0]], dtype=torch.float64)
    bg = torch.tensor([[0.1, 0.0, 0.3]], dtype=torch.float64)
    out = rasterize_gaussians(means, quats, scales, torch.tensor([opacity], dtype=torch.float64), color,
                              torch.eye(4, dtype=torch.float64)[None], _K(f, 16.0, 12.0), W, H, backgrounds=bg,
                              eps2d=eps, backend=B)
    # The footprint box [mean - r, mean + r] covers the whole image, so every tile sees the Gaussian.
    assert int(out.radii[0, 0]) >= max(16, W - 16, 12, H - 12)
    c, s = math.cos(theta), math.sin(theta)
    R2 = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov = (f / z) ** 2 * R2 @ torch.diag(torch.tensor([s0**2, s1**2], dtype=torch.float64)) @ R2.T
    inv = torch.linalg.inv(cov + eps * torch.eye(2, dtype=torch.float64))
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    d = torch.stack([xs + 0.5 - 16.0, ys + 0.5 - 12.0], -1)
    sigma = 0.5 * torch.einsum("hwi,ij,hwj->hw", d, inv, d)
    alpha = opacity * torch.exp(-sigma)
    alpha = torch.where(alpha >= 1 / 255, alpha, torch.zeros_like(alpha))
    assert (alpha == 0).any() and (alpha > 0.7).any()  # both regimes are exercised
    torch.testing.assert_close(out.alphas[0, ..., 0], alpha, rtol=1e-10, atol=1e-12)
    expected = alpha[..., None] * color[0] + (1 - alpha[..., None]) * bg[0]
    torch.testing.assert_close(out.colors[0], expected, rtol=1e-10, atol=1e-12)


def test_dense_stand_in_matches_the_real_rasterizer():
    real = _real_rasterizer()
    if real is None:
        pytest.skip("scenegrad.render.gaussians.rasterize does not import yet")
    means, quats, scales, opac, cols, viewmats, Ks = _random_scene(n=8, c=2, seed=4)
    radii, means2d, depths, conics, _ = project_gaussians(means, quats, scales, viewmats, Ks, 32, 24)
    args = (means2d, conics, cols[None].expand(2, -1, -1), opac[None].expand(2, -1), depths, radii, 32, 24)
    bg = torch.rand(2, 3, dtype=torch.float64)
    a = real(*args, tile_size=8, backgrounds=bg, backend=B)
    b = dense_composite(*args, backgrounds=bg)
    # Inside their 3-sigma boxes both agree; outside, the tiled one skips what the dense one adds (< 1/255).
    torch.testing.assert_close(a[0], b[0], atol=2e-2, rtol=0)
    torch.testing.assert_close(a[1], b[1], atol=2e-2, rtol=0)


@pytest.mark.usefixtures("compositor")
def test_sh_colour_is_view_dependent_and_matches_spherical_harmonics():
    means, quats, scales, opac, sh, viewmats, Ks = _random_scene(n=1, c=2, seed=1, sh_k=16)
    means = torch.tensor([[0.05, -0.05, 3.0]], dtype=torch.float64)
    scales = torch.full((1, 3), 0.4, dtype=torch.float64)
    opac = torch.tensor([0.99], dtype=torch.float64)
    out = rasterize_gaussians(means, quats, scales, opac, sh, viewmats, Ks, 32, 24, sh_degree=3, backend=B)
    centres = -(viewmats[:, :3, :3].transpose(1, 2) @ viewmats[:, :3, 3:])[..., 0]
    for c in range(2):
        col = spherical_harmonics(3, means[0] - centres[c], sh[0])
        u, v = out.means2d[c, 0].detach()
        px, py = int(u), int(v)
        alpha = out.alphas[c, py, px, 0]
        torch.testing.assert_close(out.colors[c, py, px], alpha * col)
    assert not torch.allclose(out.colors[0].sum((0, 1)), out.colors[1].sum((0, 1)))
    # Degree 1 from 16 coefficients equals degree 1 from the first 4.
    a = rasterize_gaussians(means, quats, scales, opac, sh, viewmats, Ks, 32, 24, sh_degree=1, backend=B)
    b = rasterize_gaussians(means, quats, scales, opac, sh[:, :4], viewmats, Ks, 32, 24, sh_degree=1, backend=B)
    torch.testing.assert_close(a.colors, b.colors)
    d0 = rasterize_gaussians(means, quats, scales, opac, sh, viewmats, Ks, 32, 24, sh_degree=0, backend=B)
    centre = d0.colors[0, 12, 16] / d0.alphas[0, 12, 16]
    torch.testing.assert_close(centre, torch.clamp_min(sh_to_rgb(sh[0, 0]), 0))


@pytest.mark.parametrize("mode", ["RGB", "D", "ED", "RGB+D", "RGB+ED"])
@pytest.mark.usefixtures("compositor")
def test_render_modes(mode):
    means, quats, scales = _one(z=2.0)
    opac = torch.tensor([0.6], dtype=torch.float64)
    col = torch.tensor([[1.0, 0.5, 0.25]], dtype=torch.float64)
    out = rasterize_gaussians(means, quats, scales, opac, col, torch.eye(4, dtype=torch.float64)[None], _K(), 32, 24,
                              render_mode=mode, backend=B)
    assert out.alphas.shape == (1, 24, 32, 1)
    a = out.alphas[0, 12, 16, 0]
    if mode.startswith("RGB"):
        assert out.colors.shape == (1, 24, 32, 3)
        torch.testing.assert_close(out.colors[0, 12, 16], a * col[0])
    else:
        assert out.colors is None
    if mode == "RGB":
        assert out.depths is None
    else:
        assert out.depths.shape == (1, 24, 32, 1)
        expected = 2.0 if mode.endswith("ED") else 2.0 * float(a)
        assert float(out.depths[0, 12, 16, 0]) == pytest.approx(expected, rel=1e-12)
    assert out.visible.tolist() == [[True]] and out.view_depths.tolist() == [[2.0]]


@pytest.mark.usefixtures("compositor")
def test_expected_depth_of_two_layers():
    # Two Gaussians on the axis at depths 2 and 4: ED = (w1 z1 + w2 z2) / (w1 + w2).
    means = torch.tensor([[0.0, 0.0, 4.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64).expand(2, 4)
    scales = torch.tensor([[0.4, 0.4, 0.4], [0.2, 0.2, 0.2]], dtype=torch.float64)
    opac = torch.tensor([0.9, 0.5], dtype=torch.float64)
    out = rasterize_gaussians(means, quats, scales, opac, torch.ones(2, 1, dtype=torch.float64),
                              torch.eye(4, dtype=torch.float64)[None], _K(cx=16.5, cy=12.5), 32, 24,
                              render_mode="RGB+ED", backend=B)
    a_front, a_back = 0.5, 0.9  # at the shared centre pixel sigma = 0
    w_front, w_back = a_front, (1 - a_front) * a_back
    assert float(out.alphas[0, 12, 16, 0]) == pytest.approx(w_front + w_back)
    assert float(out.depths[0, 12, 16, 0]) == pytest.approx((2 * w_front + 4 * w_back) / (w_front + w_back))


@pytest.mark.usefixtures("compositor")
def test_antialiased_mode_scales_opacity_by_compensation():
    means, quats, scales = _one(s=(0.02, 0.01, 0.02))
    opac = torch.tensor([0.9], dtype=torch.float64)
    col = torch.ones(1, 1, dtype=torch.float64)
    args = (means, quats, scales, opac, col, torch.eye(4, dtype=torch.float64)[None], _K(cx=16.5, cy=12.5), 32, 24)
    classic = rasterize_gaussians(*args, backend=B)
    aa = rasterize_gaussians(*args, rasterize_mode="antialiased", backend=B)
    comp = project_gaussians(means, quats, scales, torch.eye(4, dtype=torch.float64)[None], _K(), 32, 24,
                             antialiased=True)[4]
    assert 0 < float(comp) < 0.9
    assert float(classic.alphas[0, 12, 16, 0]) == pytest.approx(0.9)
    assert float(aa.alphas[0, 12, 16, 0]) == pytest.approx(0.9 * float(comp))


@pytest.mark.usefixtures("compositor")
def test_gradients_reach_every_input_and_means2d_is_retained():
    means, quats, scales, opac, sh, viewmats, Ks = _random_scene(n=5, c=2, seed=2, sh_k=16)
    leaves = [x.clone().requires_grad_() for x in (means, quats, scales, opac, sh, viewmats)]
    bg = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    out = rasterize_gaussians(*leaves[:5], leaves[5], Ks, 32, 24, sh_degree=3, backgrounds=bg,
                              render_mode="RGB+ED", backend=B)
    target = torch.rand_like(out.colors)
    loss = ((out.colors - target) ** 2).mean() + out.depths.mean() * 0.1
    loss.backward()
    names = ("means", "quats", "scales", "opacities", "sh", "viewmats")
    for name, x in zip(names, [*leaves, bg], strict=False):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, name
    assert bg.grad is not None and bg.grad.abs().sum() > 0
    assert out.means2d.grad is not None and out.means2d.grad.shape == (2, 5, 2)
    assert out.means2d.grad[out.visible].abs().sum() > 0


@pytest.mark.usefixtures("compositor")
def test_plain_colour_gradients_and_per_camera_colours():
    means, quats, scales, opac, cols, viewmats, Ks = _random_scene(n=4, c=2, seed=5)
    cols = cols.clone().requires_grad_()
    out = rasterize_gaussians(means, quats, scales, opac, cols, viewmats, Ks, 32, 24, backend=B)
    out.colors.sum().backward()
    assert cols.grad.abs().sum() > 0
    per_cam = torch.stack([cols.detach(), cols.detach()])
    out2 = rasterize_gaussians(means, quats, scales, opac, per_cam, viewmats, Ks, 32, 24, backend=B)
    torch.testing.assert_close(out.colors.detach(), out2.colors)


@pytest.mark.parametrize("case", ["behind", "outside", "degenerate"])
@pytest.mark.usefixtures("compositor")
def test_culled_gaussians_render_nothing(case):
    # Gaussian 0 is culled; Gaussian 1, small and off to the side, keeps the render differentiable.
    means = torch.tensor([[0.0, 0.0, 3.0], [-0.5, -0.4, 3.0]], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64).expand(2, 4)
    scales = torch.tensor([[0.3, 0.15, 0.2], [0.05, 0.05, 0.05]], dtype=torch.float64)
    if case == "behind":
        means[0, 2] = -3.0
    elif case == "outside":
        means[0, 0] = 40.0
    else:
        scales[0] = 0.0
        scales[1] = 0.2
    means, scales = means.clone().requires_grad_(), scales.clone().requires_grad_()
    out = rasterize_gaussians(means, quats, scales, torch.tensor([0.9, 0.9], dtype=torch.float64),
                              torch.ones(2, 3, dtype=torch.float64), torch.eye(4, dtype=torch.float64)[None], _K(),
                              32, 24, eps2d=0.0 if case == "degenerate" else 0.3, backend=B)
    assert out.visible.tolist() == [[False, True]]
    alone = rasterize_gaussians(means[1:].detach(), quats[1:], scales[1:].detach(),
                                torch.tensor([0.9], dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64),
                                torch.eye(4, dtype=torch.float64)[None], _K(), 32, 24,
                                eps2d=0.0 if case == "degenerate" else 0.3, backend=B)
    torch.testing.assert_close(out.colors.detach(), alone.colors)
    out.colors.sum().backward()
    assert (means.grad[0] == 0).all() and (scales.grad[0] == 0).all()
    assert means.grad[1].abs().sum() > 0 and torch.isfinite(scales.grad).all()


@pytest.mark.usefixtures("compositor")
def test_front_gaussian_occludes_back_one():
    means = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64).expand(2, 4)
    scales = torch.tensor([[0.5] * 3, [0.3] * 3], dtype=torch.float64)
    cols = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    out = rasterize_gaussians(means, quats, scales, torch.tensor([0.99, 0.99], dtype=torch.float64), cols,
                              torch.eye(4, dtype=torch.float64)[None], _K(cx=16.5, cy=12.5), 32, 24, backend=B)
    centre = out.colors[0, 12, 16]
    assert centre[1] > 0.98 and centre[0] < 0.02


def test_argument_errors():
    means, quats, scales = _one()
    args = (means, quats, scales, torch.tensor([0.5], dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64),
            torch.eye(4, dtype=torch.float64)[None], _K(), 32, 24)
    with pytest.raises(ValueError, match="render_mode"):
        rasterize_gaussians(*args, render_mode="RGBD", backend=B)
    with pytest.raises(ValueError, match="rasterize_mode"):
        rasterize_gaussians(*args, rasterize_mode="fancy", backend=B)
    with pytest.raises(ValueError, match="backgrounds"):
        rasterize_gaussians(*args, render_mode="D", backgrounds=torch.zeros(1, 3, dtype=torch.float64), backend=B)
    with pytest.raises(ValueError, match="backgrounds"):
        rasterize_gaussians(*args, backgrounds=torch.zeros(1, 4, dtype=torch.float64), backend=B)
    with pytest.raises(ValueError, match="sh_degree"):
        rasterize_gaussians(*args, sh_degree=1, backend=B)
    with pytest.raises(ValueError, match="opacities"):
        rasterize_gaussians(*args[:3], torch.tensor([[0.5]]), *args[4:], backend=B)
    with pytest.raises(ValueError, match="unknown backend"):
        rasterize_gaussians(*args, backend="bogus")
