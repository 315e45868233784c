"""project_gaussians: the native kernel against the reference, forward and backward, on random
scenes with Gaussians behind the camera, beyond the near and far planes, at and beyond the image
border, far off-axis (the Jacobian clamp), with degenerate scales and unnormalised quaternions;
and the CUDA kernel against the CPU one where a GPU exists."""

from __future__ import annotations

import pytest
import torch

from scenegrad.render.gaussians import project_gaussians
from scenegrad.render.rotations import rt_to_matrix

from ..conftest import requires_cuda

W, H = 80, 60


def random_scene(n: int, c: int, seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Gaussians spread in front of, beside and behind ``c`` cameras near the origin looking down +Z."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * torch.tensor([2.0, 1.5, 2.0], dtype=dtype)
    means[:, 2] += 2.0  # mostly in front; some behind, some within the near plane
    quats = torch.randn(n, 4, generator=g, dtype=dtype) * 3.0  # unnormalised
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.4 + 1e-3
    scales[: n // 10, 0] = 0.0  # degenerate: flat Gaussians
    scales[n // 10: n // 8] = 1e-6  # points: the low-pass filter alone
    R = torch.linalg.matrix_exp(_skew(0.2 * torch.randn(c, 3, generator=g, dtype=dtype)))  # near-identity
    t = 0.3 * torch.randn(c, 3, generator=g, dtype=dtype)
    viewmats = rt_to_matrix(R, t)
    Ks = torch.zeros(c, 3, 3, dtype=dtype)
    Ks[:, 0, 0] = 40.0 + 30.0 * torch.rand(c, generator=g, dtype=dtype)
    Ks[:, 1, 1] = Ks[:, 0, 0] * (0.9 + 0.2 * torch.rand(c, generator=g, dtype=dtype))
    Ks[:, 0, 1] = 0.3  # skew reaches means2d
    Ks[:, 0, 2] = W / 2 + 3.0 * torch.randn(c, generator=g, dtype=dtype)
    Ks[:, 1, 2] = H / 2 + 3.0 * torch.randn(c, generator=g, dtype=dtype)
    Ks[:, 2, 2] = 1.0
    return means, quats, scales, viewmats, Ks


def _skew(w: torch.Tensor) -> torch.Tensor:
    z = torch.zeros_like(w[:, 0])
    return torch.stack([z, -w[:, 2], w[:, 1], w[:, 2], z, -w[:, 0], -w[:, 1], w[:, 0], z], dim=-1).view(-1, 3, 3)


def forward_backward(inputs, backend: str, **kwargs):
    """Outputs and the gradients of a random linear function of them, for one backend."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    radii, means2d, depths, conics, comps = project_gaussians(*leaves, W, H, backend=backend, **kwargs)
    g = torch.Generator().manual_seed(123)
    outs = [means2d, depths, conics] + ([comps] if comps is not None else [])
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    grads = torch.autograd.grad(loss, leaves)
    return radii, outs, grads


CASES = {
    "float64_3cams": ({"n": 400, "c": 3, "seed": 0, "dtype": torch.float64}, {}),
    "float64_antialiased": ({"n": 400, "c": 2, "seed": 1, "dtype": torch.float64}, {"antialiased": True}),
    "float32_planes_clip": ({"n": 600, "c": 2, "seed": 2, "dtype": torch.float32},
                            {"near": 0.5, "far": 4.0, "radius_clip": 1.5, "antialiased": True}),
    "float64_no_filter": ({"n": 300, "c": 1, "seed": 3, "dtype": torch.float64}, {"eps2d": 0.0}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_native_matches_reference(native, name):
    scene_kwargs, kwargs = CASES[name]
    inputs = random_scene(**scene_kwargs)
    r_ref, o_ref, g_ref = forward_backward(inputs, "reference", **kwargs)
    r_nat, o_nat, g_nat = forward_backward(inputs, "native", **kwargs)
    visible = r_ref > 0
    assert 0.2 < visible.float().mean() < 0.9, "the scene should mix visible and culled Gaussians"
    if scene_kwargs["dtype"] == torch.float64:
        assert torch.equal(r_nat, r_ref)
        tol = {"rtol": 1e-9, "atol": 1e-9}
    else:  # float32: a radius may round the other way at an integer boundary
        assert (r_nat != r_ref).float().mean() < 0.01
        o_nat = [torch.where(((r_nat > 0) == (r_ref > 0)).view(*r_ref.shape, *[1] * (o.dim() - 2)), o, p)
                 for o, p in zip(o_nat, o_ref, strict=True)]
        tol = {"rtol": 1e-4, "atol": 1e-4}
    for got, want in zip(o_nat, o_ref, strict=True):
        torch.testing.assert_close(got, want, **tol)
    for got, want, what in zip(g_nat, g_ref, ("means", "quats", "scales", "viewmats", "Ks"), strict=True):
        scale = want.abs().max().item()
        assert scale > 0, what
        if scene_kwargs["dtype"] == torch.float64:
            torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8 * scale, msg=what)
        else:
            torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4 * scale, msg=what)


def test_native_gradcheck_float64(native):
    inputs = [x.requires_grad_() for x in random_scene(n=12, c=2, seed=5, dtype=torch.float64)]

    def fn(*xs):
        _, means2d, depths, conics, comps = project_gaussians(*xs, W, H, antialiased=True, backend="native")
        return means2d, depths, conics, comps

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_native_without_camera_gradients(native):
    means, quats, scales, viewmats, Ks = random_scene(n=50, c=2, seed=6, dtype=torch.float32)
    means.requires_grad_()
    _, means2d, depths, conics, _ = project_gaussians(means, quats, scales, viewmats, Ks, W, H, backend="native")
    (means2d.sum() + depths.sum() + conics.sum()).backward()
    assert means.grad is not None and viewmats.grad is None and Ks.grad is None
    empty = [x[:0] for x in (means, quats, scales)]
    radii, means2d, *_ = project_gaussians(*empty, viewmats, Ks, W, H, backend="native")
    assert radii.shape == (2, 0) and means2d.shape == (2, 0, 2)


@requires_cuda
def test_cuda_matches_cpu(native):
    for name in CASES:
        scene_kwargs, kwargs = CASES[name]
        inputs = random_scene(**scene_kwargs)
        r_cpu, o_cpu, g_cpu = forward_backward(inputs, "native", **kwargs)
        r_gpu, o_gpu, g_gpu = forward_backward([x.cuda() for x in inputs], "native", **kwargs)
        assert (r_gpu.cpu() != r_cpu).float().mean() < 0.01
        same = ((r_gpu.cpu() > 0) == (r_cpu > 0))
        for got, want in zip(o_gpu, o_cpu, strict=True):
            mask = same.view(*same.shape, *[1] * (want.dim() - 2)).expand_as(want)
            torch.testing.assert_close(got.cpu()[mask], want[mask], rtol=1e-4, atol=1e-4)
        for got, want in zip(g_gpu, g_cpu, strict=True):
            scale = want.abs().max().item()
            torch.testing.assert_close(got.cpu(), want, rtol=1e-3, atol=1e-4 * scale)
