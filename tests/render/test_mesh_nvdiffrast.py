"""backend="nvdiffrast" for the mesh primitives: error paths everywhere; the four primitives against
scenegrad's native CUDA kernels where nvdiffrast and a GPU exist."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from scenegrad.render.mesh import antialias, interpolate, rasterize, texture

from ..conftest import fake_module, requires_cuda
from .test_rasterize import random_scene

HAS_NVDIFFRAST = importlib.util.find_spec("nvdiffrast") is not None
needs_nvdiffrast = pytest.mark.skipif(not HAS_NVDIFFRAST, reason="nvdiffrast is not installed")


def gpu_comparison(test):
    """A comparison with native CUDA: needs a GPU and nvdiffrast, marked ``cuda``."""
    return requires_cuda(needs_nvdiffrast(test))


@pytest.fixture
def fake_nvdiffrast(monkeypatch):
    return fake_module(monkeypatch, "nvdiffrast")


@pytest.mark.skipif(HAS_NVDIFFRAST, reason="nvdiffrast is installed")
def test_missing_nvdiffrast_is_named():
    pos, tri = random_scene(1, 4, seed=0)
    with pytest.raises(RuntimeError, match="nvdiffrast is not installed"):
        rasterize(pos, tri, (16, 16), backend="nvdiffrast")


def test_nvdiffrast_needs_cuda_tensors(fake_nvdiffrast):
    pos, tri = random_scene(1, 4, seed=0)
    rast, rast_db = rasterize(pos, tri, (16, 16), backend="native")
    uv = torch.rand(1, 16, 16, 2)
    calls = (
        lambda: rasterize(pos, tri, (16, 16), backend="nvdiffrast"),
        lambda: interpolate(torch.rand(12, 2), rast, tri, backend="nvdiffrast"),
        lambda: texture(torch.rand(8, 8, 3), uv, backend="nvdiffrast"),
        lambda: antialias(torch.rand(1, 16, 16, 3), rast, pos, tri, backend="nvdiffrast"),
    )
    for call in calls:
        with pytest.raises(RuntimeError, match="needs CUDA tensors"):
            call()


def _scene(B=2, T=300, H=96, W=128, seed=3):
    pos, tri = random_scene(B, T, seed=seed, behind=0.0)
    return pos.cuda(), tri.cuda(), H, W


@gpu_comparison
def test_nvdiffrast_rasterize_and_interpolate_match_native():
    pos, tri, H, W = _scene()
    ours, ours_db = rasterize(pos, tri, (H, W), backend="native")
    theirs, theirs_db = rasterize(pos, tri, (H, W), backend="nvdiffrast")
    covered = (ours[..., 3] > 0) | (theirs[..., 3] > 0)
    same = ours[..., 3] == theirs[..., 3]
    assert same[covered].float().mean() > 0.995  # rows in the same order: the y flip is right
    both = same & covered
    torch.testing.assert_close(theirs[both], ours[both], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(theirs_db[both], ours_db[both], rtol=1e-3, atol=1e-3)
    attr = torch.rand(pos.shape[1], 3, device="cuda")
    a, a_da = interpolate(attr, ours, tri, ours_db, diff_attrs="all", backend="native")
    b, b_da = interpolate(attr, ours, tri, ours_db, diff_attrs="all", backend="nvdiffrast")
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b_da, a_da, rtol=1e-4, atol=1e-4)


@gpu_comparison
def test_nvdiffrast_texture_and_antialias_match_native():
    pos, tri, H, W = _scene()
    rast, rast_db = rasterize(pos, tri, (H, W), backend="native")
    uvs = torch.rand(pos.shape[1], 2, device="cuda")
    uv, uv_da = interpolate(uvs, rast, tri, rast_db, diff_attrs="all", backend="native")
    tex = torch.rand(64, 64, 3, device="cuda")
    for mode in ("linear", "linear-mipmap-linear"):
        for boundary in ("wrap", "clamp"):
            a = texture(tex, uv, uv_da, filter_mode=mode, boundary_mode=boundary, backend="native")
            b = texture(tex, uv, uv_da, filter_mode=mode, boundary_mode=boundary, backend="nvdiffrast")
            assert ((a - b).abs() > 1e-3).float().mean() < 0.01, (mode, boundary)
    color = texture(tex, uv, uv_da, mask=rast[..., 3] > 0, backend="native")
    p = [pos.clone().requires_grad_(True) for _ in range(2)]
    outs = [antialias(color, rast, q, tri, backend=be) for q, be in zip(p, ("native", "nvdiffrast"), strict=True)]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
    cot = torch.randn_like(outs[0])
    grads = [torch.autograd.grad((o * cot).sum(), q)[0] for o, q in zip(outs, p, strict=True)]
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-2, atol=1e-2 * grads[0].abs().max().item())
