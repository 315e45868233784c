"""texture: native vs reference (every filter and boundary mode), finite differences, analytic cases."""

from __future__ import annotations

import pytest
import torch

from scenegrad.render.mesh import interpolate, mip_pyramid, rasterize, texture

from ..conftest import requires_cuda
from .test_rasterize import random_scene


def inputs(B=2, H=9, W=11, C=3, Ho=6, Wo=7, seed=0, dtype=torch.float32, shared=False):
    g = torch.Generator().manual_seed(seed)
    tex = torch.rand(1 if shared else B, H, W, C, generator=g, dtype=dtype)
    uv = torch.rand(B, Ho, Wo, 2, generator=g, dtype=dtype) * 1.6 - 0.3  # some outside [0, 1]
    uv_da = (torch.rand(B, Ho, Wo, 4, generator=g, dtype=dtype) - 0.5) * 0.8  # lod from about -1 to 2
    return tex, uv, uv_da


@pytest.mark.parametrize("filter_mode", ["nearest", "linear", "linear-mipmap-linear"])
@pytest.mark.parametrize("boundary_mode", ["wrap", "clamp", "zero"])
@pytest.mark.parametrize("shared", [False, True])
def test_native_matches_reference(native, filter_mode, boundary_mode, shared):
    tex, uv, uv_da = inputs(shared=shared, seed=3)
    results = []
    for backend in ("native", "reference"):
        t = tex.clone().requires_grad_(True)
        u = uv.clone().requires_grad_(True)
        d = uv_da.clone().requires_grad_(True)
        out = texture(t, u, d, filter_mode=filter_mode, boundary_mode=boundary_mode, backend=backend)
        cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        grads = torch.autograd.grad((out * cot).sum(), (t, u, d), allow_unused=True)
        results.append((out, grads))
    (o_n, g_n), (o_r, g_r) = results
    torch.testing.assert_close(o_n, o_r, rtol=1e-5, atol=1e-5)
    for got, want in zip(g_n, g_r, strict=True):
        if want is None:
            assert got is None or (got == 0).all()
            continue
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert g_r[0].abs().sum() > 0
    if filter_mode != "nearest":
        assert g_r[1].abs().sum() > 0
    if filter_mode == "linear-mipmap-linear":
        assert g_r[2].abs().sum() > 0


@pytest.mark.parametrize("size", [(7, 5), (1, 9), (16, 16)])
def test_native_mip_bias_and_odd_sizes_match_reference(native, size):
    """Odd and single-texel axes (dropped last rows, 1-wide levels), a per-pixel level-of-detail bias
    with its gradient, and max_mip_level: the native pyramid, lod and fold against the torch ones."""
    tex, uv, uv_da = inputs(H=size[0], W=size[1], seed=11)
    bias = torch.randn(uv.shape[:3], generator=torch.Generator().manual_seed(2)) * 0.7
    results = []
    for backend in ("native", "reference"):
        leaves = [x.clone().requires_grad_(True) for x in (tex, uv, uv_da, bias)]
        out = texture(*leaves[:3], mip_level_bias=leaves[3], max_mip_level=2, backend=backend)
        cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        results.append((out, torch.autograd.grad((out * cot).sum(), leaves)))
    (o_n, g_n), (o_r, g_r) = results
    torch.testing.assert_close(o_n, o_r, rtol=1e-5, atol=1e-5)
    for got, want in zip(g_n, g_r, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert g_r[3].abs().sum() > 0 and g_r[0].abs().sum() > 0


@pytest.mark.parametrize("filter_mode", ["nearest", "linear", "linear-mipmap-linear"])
def test_mask_matches_where_composition(native, filter_mode):
    """mask: masked pixels give 0 and pass no gradient, as torch.where after the lookup; native
    (forward and every gradient) against the reference, the reference against the where."""
    tex, uv, uv_da = inputs(seed=5)
    mask = torch.rand(uv.shape[:3], generator=torch.Generator().manual_seed(3)) > 0.4
    cot = torch.randn(*uv.shape[:3], tex.shape[-1], generator=torch.Generator().manual_seed(1))
    results = []
    for backend, masked in (("native", True), ("reference", True), ("reference", False)):
        leaves = [x.clone().requires_grad_(True) for x in (tex, uv, uv_da)]
        out = texture(*leaves, filter_mode=filter_mode, mask=mask if masked else None, backend=backend)
        if not masked:
            out = torch.where(mask[..., None], out, 0.0)
        grads = torch.autograd.grad((out * cot).sum(), leaves, allow_unused=True)
        results.append((out, [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves, strict=True)]))
    (o_n, g_n), (o_r, g_r), (o_w, g_w) = results
    assert (o_n[~mask] == 0).all() and o_n[mask].abs().sum() > 0
    for want, got in ((o_w, o_r), (o_r, o_n)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for want, got in ((g_w, g_r), (g_r, g_n)):
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert (g_n[1][~mask] == 0).all() and g_n[0].abs().sum() > 0
    with pytest.raises(ValueError, match="mask"):
        texture(tex, uv, uv_da, mask=mask.float(), backend="native")


@pytest.mark.parametrize("threads", [1, 2, 8])
def test_native_gradients_match_reference_at_any_thread_count(native, threads):
    """The CPU backward scatters into per-thread copies of the gradient pyramid (up to 4 threads) or
    into one shared copy with atomic adds (more threads), then writes the texture gradient from
    them: each way against the reference, on a texture with several mip levels and gradients
    reaching level 0 directly and through the coarse levels."""
    tex, uv, uv_da = inputs(B=1, H=300, W=260, C=2, Ho=40, Wo=50, seed=4)
    uv_da = uv_da * torch.linspace(0.001, 0.05, 50)[:, None]  # lod from below 0 to about 3
    before = torch.get_num_threads()
    grads = []
    try:
        for backend in ("native", "reference"):
            torch.set_num_threads(threads if backend == "native" else before)
            t = tex.clone().requires_grad_(True)
            out = texture(t, uv, uv_da, backend=backend)
            out.backward(torch.ones_like(out))
            grads.append(t.grad)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)
    assert grads[1].abs().sum() > 0


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("filter_mode", ["linear", "linear-mipmap-linear"])
def test_gradcheck_float64(native, backend, filter_mode):
    tex, uv, uv_da = inputs(B=1, H=5, W=6, C=2, Ho=3, Wo=4, seed=5, dtype=torch.float64)
    tex.requires_grad_(True)
    uv.requires_grad_(True)
    uv_da.requires_grad_(True)

    def f(t, u, d):
        return texture(t, u, d, filter_mode=filter_mode, boundary_mode="wrap", backend=backend)

    assert torch.autograd.gradcheck(f, (tex, uv, uv_da), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_bilinear_and_boundaries(native, backend):
    tex = torch.arange(12.0).reshape(3, 4, 1)  # rows top to bottom
    centre = lambda i, j: [(i + 0.5) / 4, (j + 0.5) / 3]  # noqa: E731  (column i, row j)
    uv = torch.tensor([[centre(0, 0), centre(3, 2), [0.25, (0.5 + 0.5) / 3], [-0.5 / 4 + 1e-6, 0.5 / 3]]])
    for mode, edge in (("wrap", 3.0), ("clamp", 0.0), ("zero", 0.0)):
        out = texture(tex, uv, filter_mode="linear", boundary_mode=mode, backend=backend)[0, :, 0]
        assert out[0].item() == pytest.approx(0.0) and out[1].item() == pytest.approx(11.0)
        # Halfway between texels (0, 0), (1, 0), (0, 1), (1, 1).
        assert out[2].item() == pytest.approx((0 + 1 + 4 + 5) / 4, abs=1e-5)
        # Just left of texel (0, 0)'s centre by a whole texel: wraps to column 3, clamps to column 0.
        assert out[3].item() == pytest.approx(edge, abs=1e-4)
    near = texture(tex, torch.tensor([[[0.99, 0.01]]]), filter_mode="nearest", backend=backend)
    assert near.item() == 3.0


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_mipmaps(native, backend):
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2).float()[..., None]
    levels = mip_pyramid(checker[None])
    assert [tuple(lvl.shape[1:3]) for lvl in levels] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert torch.allclose(levels[1], torch.full_like(levels[1], 0.5))
    uv = torch.rand(1, 5, 5, 2, generator=torch.Generator().manual_seed(0))
    # A footprint of 4 texels per pixel: level 2 of a checkerboard is uniform grey.
    uv_da = torch.tensor([4 / 16, 0.0, 0.0, 4 / 16]).expand(1, 5, 5, 4)
    out = texture(checker, uv, uv_da, boundary_mode="wrap", backend=backend)
    assert torch.allclose(out, torch.full_like(out, 0.5), atol=1e-5)
    # A footprint of one texel or less: level 0, same as bilinear.
    fine = texture(checker, uv, uv_da / 8, backend=backend)
    torch.testing.assert_close(fine, texture(checker, uv, filter_mode="linear", backend=backend))
    # The bias moves the level: +2 from level 0 is level 2 again.
    biased = texture(checker, uv, uv_da / 8, mip_level_bias=3.0, backend=backend)
    assert torch.allclose(biased, torch.full_like(biased, 0.5), atol=1e-5)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_cube_map_faces(native, backend):
    faces = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 4, 4, 1).clone()
    dirs = torch.tensor([[[1.0, 0.1, 0.2], [-1.0, 0.2, 0.1], [0.1, 1.0, 0.3], [0.2, -1.0, 0.1], [0.1, 0.2, 1.0],
                          [0.3, 0.1, -1.0]]])
    out = texture(faces, dirs, boundary_mode="cube", backend=backend)
    torch.testing.assert_close(out[0, :, 0], torch.arange(6.0))
    # Orientation on the +Z face: u grows with +x, v with +y (OpenGL's table, t down the image).
    ramp = torch.zeros(6, 4, 4, 2)
    ramp[4, ..., 0] = torch.arange(4.0)[None, :]
    ramp[4, ..., 1] = torch.arange(4.0)[:, None]
    out = texture(ramp, torch.tensor([[[0.5, 0.5, 1.0], [-0.5, -0.5, 1.0]]]), boundary_mode="cube", backend=backend)
    assert out[0, 0, 0] > out[0, 1, 0] and out[0, 0, 1] < out[0, 1, 1]


def test_end_to_end_native_matches_reference(native):
    pos, tri = random_scene(2, 20, seed=2)
    V = pos.shape[1]
    g = torch.Generator().manual_seed(7)
    uvs = torch.rand(V, 2, generator=g)
    tex = torch.rand(32, 32, 3, generator=g)
    results = []
    for backend in ("native", "reference"):
        p = pos.clone().requires_grad_(True)
        t = tex.clone().requires_grad_(True)
        rast, db = rasterize(p, tri, (40, 40), backend=backend)
        uv, uv_da = interpolate(uvs, rast, tri, db, diff_attrs="all", backend=backend)
        rgb = texture(t, uv, uv_da, backend=backend)
        loss = (rgb * torch.linspace(0, 1, 3)).sum()
        results.append((rgb, *torch.autograd.grad(loss, (p, t))))
    for got, want in zip(results[0], results[1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3 * max(1.0, want.abs().max().item()))


def test_validation():
    tex, uv, uv_da = inputs()
    with pytest.raises(ValueError, match="filter_mode"):
        texture(tex, uv, filter_mode="cubic")
    with pytest.raises(ValueError, match="boundary_mode"):
        texture(tex, uv, boundary_mode="mirror")
    with pytest.raises(ValueError, match="uv_da"):
        texture(tex, uv, filter_mode="linear-mipmap-linear")
    with pytest.raises(ValueError, match="tex must"):
        texture(tex[None], uv)
    single = texture(tex[0], uv[0])
    assert single.shape == (*uv.shape[1:3], tex.shape[-1])


@requires_cuda
@pytest.mark.parametrize("masked", [False, True])
def test_cuda_matches_cpu(native, masked):
    tex, uv, uv_da = inputs(B=2, H=64, W=48, Ho=50, Wo=40)
    mask = torch.rand(uv.shape[:3], generator=torch.Generator().manual_seed(3)) > 0.4 if masked else None
    res = []
    for device in ("cpu", "cuda"):
        t = tex.to(device).requires_grad_(True)
        u = uv.to(device).requires_grad_(True)
        m = mask.to(device) if masked else None
        out = texture(t, u, uv_da.to(device), mask=m, backend="native")
        out.square().sum().backward()
        res.append([x.detach().cpu() for x in (out, t.grad, u.grad)])
    for got, want in zip(res[1], res[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * max(1.0, want.abs().max().item()))


@pytest.mark.parametrize("shape", [(1, 4, 6, 2), (2, 5, 7, 1), (1, 1, 5, 1), (1, 3, 1, 2)])
def test_mip_pyramid_is_a_box_filter_with_exact_gradient(shape):
    x = torch.rand(shape, dtype=torch.float64, requires_grad=True)
    levels = mip_pyramid(x)
    assert levels[-1].shape[1:3] == (1, 1)
    h, w = shape[1:3]
    if h > 1 and w > 1:
        expected = x[:, : h // 2 * 2, : w // 2 * 2].reshape(shape[0], h // 2, 2, w // 2, 2, shape[3]).mean((2, 4))
        torch.testing.assert_close(levels[1], expected)
    assert torch.autograd.gradcheck(lambda t: torch.cat([lvl.reshape(-1) for lvl in mip_pyramid(t)]), (x,))
