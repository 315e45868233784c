"""backend="gsplat" for rasterize_gaussians: error paths and output translation everywhere; the
render against scenegrad's native one where gsplat and a GPU exist."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from scenegrad.render.gaussians import project_gaussians, rasterize_gaussians, rasterize_to_pixels
from scenegrad.render.gaussians.gsplat_adapter import to_render

from ..conftest import fake_module

HAS_GSPLAT = importlib.util.find_spec("gsplat") is not None


def _scene(n=300, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * 0.6 + torch.tensor([0.0, 0.0, 3.0])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.08 + 0.01
    opacities = torch.rand(n, generator=g) * 0.8 + 0.1
    sh = torch.randn(n, 4, 3, generator=g) * 0.3
    viewmats = torch.eye(4)[None].repeat(2, 1, 1)
    viewmats[1, 0, 3] = 0.2
    Ks = torch.tensor([[[60.0, 0, 32.0], [0, 60.0, 24.0], [0, 0, 1]]]).repeat(2, 1, 1)
    return [x.to(device) for x in (means, quats, scales, opacities, sh, viewmats, Ks)]


@pytest.fixture
def fake_gsplat(monkeypatch):
    return fake_module(monkeypatch, "gsplat")


@pytest.mark.skipif(HAS_GSPLAT, reason="gsplat is installed")
def test_missing_gsplat_is_named():
    with pytest.raises(RuntimeError, match="gsplat is not installed"):
        rasterize_gaussians(*_scene(), 64, 48, sh_degree=1, backend="gsplat")


def test_gsplat_needs_cuda_and_primitives_refuse_it(fake_gsplat):
    scene = _scene()
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs CUDA tensors"):
            rasterize_gaussians(*scene, 64, 48, sh_degree=1, backend="gsplat")
    means, quats, scales, _, _, viewmats, Ks = scene
    with pytest.raises(ValueError, match="adapter of rasterize_gaussians only"):
        project_gaussians(means, quats, scales, viewmats, Ks, 64, 48, backend="gsplat")
    z = torch.zeros(1, 1)
    with pytest.raises(ValueError, match="adapter of rasterize_gaussians only"):
        rasterize_to_pixels(torch.zeros(1, 1, 2), torch.zeros(1, 1, 3), torch.zeros(1, 1, 3), z, z,
                            torch.zeros(1, 1, dtype=torch.int32), 8, 8, backend="gsplat")


@pytest.mark.parametrize("mode", ["RGB", "D", "ED", "RGB+D", "RGB+ED"])
def test_outputs_translate(mode):
    C, N, H, W = 2, 5, 4, 6
    D = {"RGB": 3, "D": 1, "ED": 1, "RGB+D": 4, "RGB+ED": 4}[mode]
    image, alphas = torch.rand(C, H, W, D), torch.rand(C, H, W, 1)
    radii = torch.tensor([[3, 0], [1, 4], [0, 0], [2, 2], [5, 1]], dtype=torch.int32)[None].repeat(C, 1, 1)
    meta = {"radii": radii, "means2d": torch.rand(C, N, 2, requires_grad=True), "depths": torch.rand(C, N) + 1}
    out = to_render(image, alphas, meta, mode)
    assert out.radii.tolist() == [[3, 4, 0, 2, 5]] * C and out.radii.dtype == torch.int32
    assert out.visible.tolist() == [[True, True, False, True, True]] * C
    assert out.view_depths[:, 2].eq(0).all() and out.view_depths[:, 0].eq(meta["depths"][:, 0]).all()
    assert (out.colors is None) == (mode in ("D", "ED"))
    assert (out.depths is None) == (mode == "RGB")
    if out.colors is not None:
        assert out.colors.shape == (C, H, W, 3)
    if out.depths is not None:
        assert torch.equal(out.depths, image[..., -1:])
    assert out.alphas is alphas and out.means2d is meta["means2d"]


@pytest.mark.cuda
@pytest.mark.skipif(not (HAS_GSPLAT and torch.cuda.is_available()), reason="needs gsplat and a CUDA device")
def test_gsplat_matches_native_on_gpu():
    scene = [x.requires_grad_() if x.is_floating_point() else x for x in _scene(device="cuda")]
    outs = {}
    for backend in ("native", "gsplat"):
        leaves = [x.detach().clone().requires_grad_() for x in scene]
        r = rasterize_gaussians(*leaves, 64, 48, sh_degree=1, render_mode="RGB+ED", backend=backend)
        (r.colors.square().sum() + r.depths.sum()).backward()
        outs[backend] = (r.colors, r.alphas, r.depths, r.radii, [x.grad for x in leaves[:5]])
    a, b = outs["native"], outs["gsplat"]
    for x, y in zip(a[:3], b[:3], strict=True):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-3)
    assert (a[3] - b[3]).abs().max() <= 1
    for x, y in zip(a[4], b[4], strict=True):
        torch.testing.assert_close(x, y, rtol=1e-2, atol=1e-3 * y.abs().max().item())
