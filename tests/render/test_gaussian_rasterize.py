"""rasterize_to_pixels: reference vs a per-pixel loop, native vs reference (forward and backward),
float64 gradcheck, analytic cases, early termination, input checks, CUDA vs CPU."""

from __future__ import annotations

import math

import pytest
import torch

from scenegrad.render._reference import gaussian_rasterize as reference
from scenegrad.render.gaussians.rasterize import rasterize_to_pixels

from ..conftest import requires_cuda


def random_scene(C=1, N=30, W=40, H=30, D=3, seed=0, dtype=torch.float32, background=False, pad=6.0,
                 scale=(0.6, 6.0), culled=0.1):
    """Random projected Gaussians: means over the image and a border of ``pad`` pixels (so some
    straddle it), random anisotropic covariances, about ``culled`` of them with radius 0."""
    g = torch.Generator().manual_seed(seed)

    def u(*shape, lo=0.0, hi=1.0):
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)

    means = torch.stack([u(C, N, lo=-pad, hi=W + pad), u(C, N, lo=-pad, hi=H + pad)], -1)
    s = torch.exp(u(C, N, 2, lo=math.log(scale[0]), hi=math.log(scale[1])))
    theta = u(C, N, lo=0, hi=math.pi)
    cos, sin = torch.cos(theta), torch.sin(theta)
    R = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    cov = R @ torch.diag_embed(s * s) @ R.transpose(-1, -2)
    inv = torch.linalg.inv(cov)
    conics = torch.stack([inv[..., 0, 0], inv[..., 0, 1], inv[..., 1, 1]], -1)
    radii = torch.ceil(3 * s.max(-1).values).to(torch.int32)
    radii[u(C, N) < culled] = 0
    scene = dict(
        means2d=means.to(dtype), conics=conics.to(dtype), colors=u(C, N, D).to(dtype),
        opacities=u(C, N, lo=0.05, hi=0.95).to(dtype), depths=u(C, N, lo=1.0, hi=10.0).to(dtype), radii=radii,
    )
    bg = u(C, D).to(dtype) if background else None
    return scene, bg


def naive_loop(scene, W, H, tile_size=16, backgrounds=None):
    """The per-pixel loop of the documented semantics, in plain Python (tiny scenes only)."""
    means, conics, colors = scene["means2d"].double(), scene["conics"].double(), scene["colors"].double()
    opac, depths, radii = scene["opacities"].double(), scene["depths"].double(), scene["radii"]
    C, N, D = colors.shape
    tx_n, ty_n = math.ceil(W / tile_size), math.ceil(H / tile_size)
    bounds = reference.tile_bounds(means, radii, tile_size, tx_n, ty_n)
    out = torch.zeros(C, H, W, D, dtype=torch.float64)
    alphas = torch.zeros(C, H, W, 1, dtype=torch.float64)
    for c in range(C):
        order = sorted(range(N), key=lambda i: (depths[c, i].item(), i))
        for y in range(H):
            for x in range(W):
                tx, ty = x // tile_size, y // tile_size
                T, acc = 1.0, torch.zeros(D, dtype=torch.float64)
                for i in order:
                    x0, x1, y0, y1 = bounds[c, i].tolist()
                    if not (x0 <= tx < x1 and y0 <= ty < y1):
                        continue
                    dx, dy = means[c, i, 0].item() - (x + 0.5), means[c, i, 1].item() - (y + 0.5)
                    a, b, cc = conics[c, i].tolist()
                    sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
                    if sigma < 0:
                        continue
                    alpha = min(0.999, opac[c, i].item() * math.exp(-sigma))
                    if alpha < 1 / 255:
                        continue
                    if T * (1 - alpha) < 1e-4:
                        break
                    acc += alpha * T * colors[c, i]
                    T *= 1 - alpha
                if backgrounds is not None:
                    acc += T * backgrounds[c].double()
                out[c, y, x], alphas[c, y, x, 0] = acc, 1 - T
    return out, alphas


def render(scene, W, H, backend, tile_size=16, backgrounds=None):
    return rasterize_to_pixels(**scene, width=W, height=H, tile_size=tile_size, backgrounds=backgrounds,
                               backend=backend)


def forward_backward(scene, bg, W, H, backend, tile_size=16, seed=5):
    inputs = {k: (v.clone().requires_grad_(True) if v.is_floating_point() and k != "depths" else v)
              for k, v in scene.items()}
    bgr = bg.clone().requires_grad_(True) if bg is not None else None
    colors, alphas = render(inputs, W, H, backend, tile_size, bgr)
    g = torch.Generator().manual_seed(seed)
    cot_c = torch.randn(colors.shape, generator=g, dtype=colors.dtype).to(colors.device)
    cot_a = torch.randn(alphas.shape, generator=g, dtype=alphas.dtype).to(alphas.device)
    loss = (colors * cot_c).sum() + (alphas * cot_a).sum()
    wrt = [inputs[k] for k in ("means2d", "conics", "colors", "opacities")] + ([bgr] if bgr is not None else [])
    grads = torch.autograd.grad(loss, wrt)
    return colors.detach(), alphas.detach(), grads


def test_reference_matches_per_pixel_loop():
    for seed, (W, H, tile) in enumerate([(21, 17, 8), (13, 11, 16)]):
        scene, bg = random_scene(C=2, N=25, W=W, H=H, D=2, seed=seed, dtype=torch.float64, background=True)
        want_c, want_a = naive_loop(scene, W, H, tile, bg)
        got_c, got_a = render(scene, W, H, "reference", tile, bg)
        torch.testing.assert_close(got_c, want_c, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got_a, want_a, rtol=1e-10, atol=1e-10)


SCENES = {
    # name: (random_scene kwargs, W, H, tile_size)
    "small": (dict(C=1, N=20, W=24, H=18, D=3), 24, 18, 16),
    "batch_bg_d4": (dict(C=2, N=60, W=40, H=30, D=4, background=True), 40, 30, 16),
    "d1_tile8": (dict(C=1, N=80, W=37, H=29, D=1, seed=3), 37, 29, 8),
    "tiny_and_huge": (dict(C=1, N=50, W=48, H=40, D=3, seed=4, scale=(0.05, 40.0)), 48, 40, 16),
    "dense": (dict(C=2, N=300, W=64, H=48, D=3, seed=5, scale=(1.0, 8.0), background=True), 64, 48, 16),
    "odd_tile": (dict(C=1, N=40, W=30, H=22, D=5, seed=6), 30, 22, 7),
    # enough (Gaussian, pixel) pairs for the parallel path of the CPU kernels
    "many_parallel": (dict(C=2, N=500, W=64, H=48, D=3, seed=8, scale=(0.5, 4.0), background=True), 64, 48, 16),
}


@pytest.mark.parametrize("name", list(SCENES))
def test_native_matches_reference(native, name):
    kwargs, W, H, tile = SCENES[name]
    scene, bg = random_scene(**kwargs)
    got = forward_backward(scene, bg, W, H, "native", tile)
    want = forward_backward(scene, bg, W, H, "reference", tile)
    assert want[1].max() > 0.5, "the scene should cover part of the image"
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    for g_got, g_want in zip(got[2], want[2], strict=True):
        assert g_want.abs().sum() > 0
        scale = g_want.abs().max().item()
        torch.testing.assert_close(g_got, g_want, rtol=1e-3, atol=1e-4 * scale)


def test_native_matches_reference_float64_with_ties(native):
    scene, bg = random_scene(C=2, N=60, W=33, H=25, D=3, seed=7, dtype=torch.float64, background=True)
    scene["depths"] = torch.round(scene["depths"])  # many equal depths: ties are broken by index
    got = forward_backward(scene, bg, 33, 25, "native")
    want = forward_backward(scene, bg, 33, 25, "reference")
    torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[1], want[1], rtol=1e-10, atol=1e-10)
    for g_got, g_want in zip(got[2], want[2], strict=True):
        torch.testing.assert_close(g_got, g_want, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_gradcheck_float64(native, backend):
    scene, bg = random_scene(C=1, N=6, W=10, H=9, D=2, seed=11, dtype=torch.float64, background=True,
                             scale=(1.0, 3.0), culled=0.0)
    scene["opacities"] = scene["opacities"].clamp(0.1, 0.8)  # away from the 0.999 clamp

    def f(means2d, conics, colors, opacities, bgs):
        return rasterize_to_pixels(means2d, conics, colors, opacities, scene["depths"], scene["radii"], 10, 9,
                                   tile_size=4, backgrounds=bgs, backend=backend)

    args = tuple(scene[k].clone().requires_grad_(True) for k in ("means2d", "conics", "colors", "opacities"))
    assert torch.autograd.gradcheck(f, (*args, bg.clone().requires_grad_(True)), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_single_gaussian_closed_form(native, backend):
    W, H = 20, 14
    mean, (a, b, c), opacity = (9.3, 6.1), (0.2, 0.05, 0.15), 0.7
    scene = dict(means2d=torch.tensor([[mean]], dtype=torch.float64),
                 conics=torch.tensor([[[a, b, c]]], dtype=torch.float64),
                 colors=torch.tensor([[[0.25, 1.0]]], dtype=torch.float64),
                 opacities=torch.tensor([[opacity]], dtype=torch.float64),
                 depths=torch.tensor([[3.0]], dtype=torch.float64), radii=torch.tensor([[40]], dtype=torch.int32))
    colors, alphas = render(scene, W, H, backend)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    dx, dy = mean[0] - (xs + 0.5), mean[1] - (ys + 0.5)
    alpha = opacity * torch.exp(-(0.5 * (a * dx**2 + c * dy**2) + b * dx * dy))
    alpha = torch.where(alpha < 1 / 255, torch.zeros_like(alpha), alpha)
    torch.testing.assert_close(alphas[0, ..., 0], alpha, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(colors[0], alpha[..., None] * torch.tensor([0.25, 1.0], dtype=torch.float64))
    assert alphas[0, 6, 9, 0] > 0.65 and alphas[0, 0, 0, 0] == 0


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_early_termination_keeps_front_most(native, backend):
    # Eight flat opaque layers at one spot (alpha = 0.95 each): T after k layers is 0.05^k, so the
    # third leaves 1.25e-4 and the fourth would leave 6.25e-6 < 1e-4: exactly three contribute.
    W = H = 8
    n = 8
    depths = torch.randperm(n, generator=torch.Generator().manual_seed(0)).double()[None] + 1.0
    scene = dict(means2d=torch.full((1, n, 2), 4.0, dtype=torch.float64),
                 conics=torch.full((1, n, 3), 0.0, dtype=torch.float64),
                 colors=torch.eye(n, dtype=torch.float64)[None],
                 opacities=torch.full((1, n), 0.95, dtype=torch.float64),
                 depths=depths, radii=torch.full((1, n), 8, dtype=torch.int32))
    scene["conics"][..., 0] = scene["conics"][..., 2] = 1e-6
    inputs = {k: (v.clone().requires_grad_(True) if k in ("colors", "opacities") else v) for k, v in scene.items()}
    colors, alphas = render(inputs, W, H, backend)
    front = torch.argsort(depths[0])[:3]
    expected = torch.zeros(n, dtype=torch.float64)
    T = 1.0
    for i in front.tolist():
        alpha = 0.95 * math.exp(-1e-6 * 0.5 * (0.5**2 + 0.5**2))  # pixel (3, 3) and the others vary slightly
        expected[i] = alpha * T
        T *= 1 - alpha
    torch.testing.assert_close(colors[0, 3, 3], expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(alphas[0, 3, 3, 0].item(), 1 - T, rtol=1e-9, atol=1e-12)
    behind = torch.argsort(depths[0])[3:]
    assert torch.all(colors[0, ..., behind] == 0)
    colors.sum().backward()
    assert torch.all(inputs["opacities"].grad[0, behind] == 0)
    assert torch.all(inputs["colors"].grad[0, behind] == 0)
    assert torch.all(inputs["opacities"].grad[0, front] != 0)
    # Rendering only the three front-most gives the same image.
    sub = {k: v[:, front] for k, v in scene.items()}
    torch.testing.assert_close(render(sub, W, H, backend)[0], colors.detach())


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_culled_and_empty(native, backend):
    scene, bg = random_scene(C=2, N=10, W=16, H=12, D=3, seed=2, background=True)
    scene["radii"].zero_()
    colors, alphas = render(scene, 16, 12, backend, backgrounds=bg)
    torch.testing.assert_close(colors, bg[:, None, None, :].expand(2, 12, 16, 3))
    assert torch.all(alphas == 0)
    empty = {k: v[:, :0] for k, v in scene.items()}
    colors, alphas = render(empty, 16, 12, backend)
    assert colors.shape == (2, 12, 16, 3) and torch.all(colors == 0) and torch.all(alphas == 0)


@pytest.mark.parametrize("used", ["colors", "alphas"])
def test_native_gradient_of_an_unused_output_is_zero(native, used):
    """An output the loss leaves out reaches the backward as None (no zero fill): the gradients equal
    those of a loss that adds it times 0."""
    scene, bg = random_scene(N=40, seed=3, background=True)
    grads = []
    for padded in (False, True):
        inputs = {k: (v.clone().requires_grad_(True) if v.is_floating_point() and k != "depths" else v)
                  for k, v in scene.items()}
        colors, alphas = render(inputs, 40, 30, "native", backgrounds=bg)
        out = colors if used == "colors" else alphas
        loss = (out * torch.linspace(-1, 2, out.numel()).view(out.shape)).sum()
        if padded:
            loss = loss + 0 * (colors.sum() + alphas.sum())
        grads.append(torch.autograd.grad(loss, [inputs[k] for k in ("means2d", "conics", "opacities")]))
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert all(g.abs().sum() > 0 for g in grads[0])


def test_input_checks():
    scene, _ = random_scene(C=1, N=5, W=8, H=8)
    with pytest.raises(ValueError, match="conics must have shape"):
        rasterize_to_pixels(**{**scene, "conics": scene["conics"][..., :2]}, width=8, height=8)
    with pytest.raises(ValueError, match="radii must be int32"):
        rasterize_to_pixels(**{**scene, "radii": scene["radii"].long()}, width=8, height=8)
    with pytest.raises(ValueError, match="dtype"):
        rasterize_to_pixels(**{**scene, "colors": scene["colors"].double()}, width=8, height=8)
    with pytest.raises(ValueError, match="non-finite"):
        bad = scene["means2d"].clone()
        bad[0, int(torch.nonzero(scene["radii"][0])[0])] = float("nan")
        rasterize_to_pixels(**{**scene, "means2d": bad}, width=8, height=8)
    with pytest.raises(ValueError, match="backgrounds"):
        rasterize_to_pixels(**scene, width=8, height=8, backgrounds=torch.zeros(1, 4))
    with pytest.raises(ValueError, match="tile_size"):
        rasterize_to_pixels(**scene, width=8, height=8, tile_size=64)
    with pytest.raises(ValueError, match="opacities"):
        rasterize_to_pixels(**{**scene, "opacities": scene["opacities"] + 1.5}, width=8, height=8)


@requires_cuda
def test_cuda_matches_cpu(native):
    for name in ("batch_bg_d4", "dense", "odd_tile"):
        kwargs, W, H, tile = SCENES[name]
        scene, bg = random_scene(**kwargs)
        want = forward_backward(scene, bg, W, H, "native", tile)
        cuda_scene = {k: v.cuda() for k, v in scene.items()}
        got = forward_backward(cuda_scene, bg.cuda() if bg is not None else None, W, H, "native", tile)
        torch.testing.assert_close(got[0].cpu(), want[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[1].cpu(), want[1], rtol=1e-5, atol=1e-5)
        for g_got, g_want in zip(got[2], want[2], strict=True):
            scale = g_want.abs().max().item()
            torch.testing.assert_close(g_got.cpu(), g_want, rtol=1e-3, atol=1e-4 * scale)
