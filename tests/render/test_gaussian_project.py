"""project_gaussians: closed forms, an independent per-Gaussian float64 twin, float64 gradcheck and
culling, each for the reference and the native kernel; native vs reference forward and backward on
random scenes (behind the camera, at the border, clamped, degenerate scales); CUDA vs CPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scenegrad.render.gaussians import project_gaussians
from scenegrad.render.rotations import random_rotations, rt_to_matrix

W, H = 64, 48


@pytest.fixture(params=["reference", "native"], autouse=True)
def backend(request, monkeypatch):
    """Every test runs once per implementation (through ``$SCENEGRAD_BACKEND``)."""
    if request.param == "native":
        request.getfixturevalue("native")
    monkeypatch.setenv("SCENEGRAD_BACKEND", request.param)
    return request.param


def _K(fx=80.0, fy=90.0, cx=30.0, cy=25.0, dtype=torch.float64):
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def _scene(n=5, c=2, seed=0, dtype=torch.float64):
    """Gaussians in front of ``c`` cameras looking roughly down +Z, away from culling boundaries."""
    g = torch.Generator().manual_seed(seed)
    means = torch.cat([torch.rand(n, 2, generator=g, dtype=dtype) - 0.5,
                       torch.rand(n, 1, generator=g, dtype=dtype) + 2.5], dim=1)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = 0.05 + 0.2 * torch.rand(n, 3, generator=g, dtype=dtype)
    R = torch.stack([
        torch.linalg.matrix_exp(torch.tensor([[0, -a, b], [a, 0, -d], [-b, d, 0]], dtype=dtype))
        for a, b, d in (0.1 * torch.randn(c, 3, generator=g, dtype=dtype)).tolist()
    ])
    t = 0.1 * torch.randn(c, 3, generator=g, dtype=dtype)
    viewmats = rt_to_matrix(R, t)
    Ks = torch.stack([_K(80.0 + 5 * i, 90.0 - 3 * i, 30.0 + i, 25.0 - i, dtype) for i in range(c)])
    return means, quats, scales, viewmats, Ks


def _twin(mean, quat, scale, viewmat, K, width, height, eps2d=0.3):
    """Plain numpy float64 re-derivation for one Gaussian and one camera (no culling)."""
    w, x, y, z = np.asarray(quat, dtype=np.float64) / np.linalg.norm(quat)
    R = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])
    S = np.diag(scale)
    cov = R @ S @ S.T @ R.T
    V = np.asarray(viewmat)
    p = V[:3, :3] @ np.asarray(mean) + V[:3, 3]
    cov_c = V[:3, :3] @ cov @ V[:3, :3].T
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lim_x, lim_y = 1.3 * 0.5 * width / fx, 1.3 * 0.5 * height / fy
    u = min(max(p[0] / p[2], -lim_x), lim_x)
    v = min(max(p[1] / p[2], -lim_y), lim_y)
    J = np.array([[fx / p[2], 0, -fx * u / p[2]], [0, fy / p[2], -fy * v / p[2]]])
    cov2d = J @ cov_c @ J.T + eps2d * np.eye(2)
    inv = np.linalg.inv(cov2d)
    mean2d = np.array([fx * p[0] / p[2] + cx, fy * p[1] / p[2] + cy])
    radius = math.ceil(3 * math.sqrt(np.linalg.eigvalsh(cov2d).max()))
    comp = math.sqrt(np.linalg.det(cov2d - eps2d * np.eye(2)) / np.linalg.det(cov2d))
    return radius, mean2d, p[2], np.array([inv[0, 0], inv[0, 1], inv[1, 1]]), comp


def test_matches_independent_twin():
    means, quats, scales, viewmats, Ks = _scene(n=6, c=3)
    radii, means2d, depths, conics, comp = project_gaussians(means, quats, scales, viewmats, Ks, W, H,
                                                             antialiased=True)
    assert radii.dtype == torch.int32 and radii.shape == (3, 6)
    assert means2d.shape == (3, 6, 2) and depths.shape == (3, 6) and conics.shape == (3, 6, 3)
    for ci in range(3):
        for ni in range(6):
            r, m2, d, con, cp = _twin(means[ni].numpy(), quats[ni].numpy(), scales[ni].numpy(),
                                      viewmats[ci].numpy(), Ks[ci].numpy(), W, H)
            assert int(radii[ci, ni]) == r
            np.testing.assert_allclose(means2d[ci, ni].numpy(), m2, rtol=1e-12)
            np.testing.assert_allclose(float(depths[ci, ni]), d, rtol=1e-12)
            np.testing.assert_allclose(conics[ci, ni].numpy(), con, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(float(comp[ci, ni]), cp, rtol=1e-9)


def test_closed_form_on_axis_anisotropic():
    # A Gaussian on the optical axis, rotated by theta about z: cov2d = (f/z)^2 R2 diag(s0^2, s1^2) R2^T + eps.
    theta, s0, s1, z, f, eps = 0.4, 0.3, 0.1, 4.0, 100.0, 0.3
    quat = torch.tensor([[math.cos(theta / 2), 0.0, 0.0, math.sin(theta / 2)]], dtype=torch.float64)
    K = _K(f, f, 32.0, 24.0)[None]
    radii, means2d, depths, conics, comp = project_gaussians(
        torch.tensor([[0.0, 0.0, z]], dtype=torch.float64), quat,
        torch.tensor([[s0, s1, 0.7]], dtype=torch.float64), torch.eye(4, dtype=torch.float64)[None], K, W, H,
        eps2d=eps, antialiased=True)
    c, s = math.cos(theta), math.sin(theta)
    R2 = np.array([[c, -s], [s, c]])
    cov2d = (f / z) ** 2 * R2 @ np.diag([s0**2, s1**2]) @ R2.T + eps * np.eye(2)
    inv = np.linalg.inv(cov2d)
    np.testing.assert_allclose(conics[0, 0].numpy(), [inv[0, 0], inv[0, 1], inv[1, 1]], rtol=1e-12)
    assert means2d[0, 0].tolist() == [32.0, 24.0]  # K applied directly: the principal point
    assert float(depths[0, 0]) == z
    lam = (f / z * s0) ** 2 + eps
    assert int(radii[0, 0]) == math.ceil(3 * math.sqrt(lam))
    expected = math.sqrt((f / z) ** 4 * s0**2 * s1**2 / np.linalg.det(cov2d))
    assert float(comp[0, 0]) == pytest.approx(expected, rel=1e-12)


def test_pixel_convention_and_unnormalised_quats():
    means, quats, scales, viewmats, Ks = _scene(n=4, c=1)
    out1 = project_gaussians(means, quats, scales, viewmats, Ks, W, H)
    out2 = project_gaussians(means, 7.5 * quats, scales, viewmats, Ks, W, H)
    for a, b in zip(out1[:4], out2[:4], strict=True):
        torch.testing.assert_close(a, b)
    assert out1[4] is None
    p = means @ viewmats[0, :3, :3].T + viewmats[0, :3, 3]
    uv = (p / p[:, 2:]) @ Ks[0].T
    torch.testing.assert_close(out1[1][0], uv[:, :2])


def test_jacobian_clamp_far_off_axis():
    # x/z = 1.5 is beyond lim_x = 1.3 * 32 / 50 = 0.832: the Jacobian uses the clamped value; the
    # Gaussian is big enough for its box to reach into the image, so it is not culled.
    K = _K(50.0, 50.0, 32.0, 24.0)
    mean = np.array([3.0, 0.0, 2.0])
    scale = np.array([1.0, 0.8, 0.6])
    quat = np.array([0.9, 0.1, -0.2, 0.3])
    radii, means2d, _, conics, _ = project_gaussians(
        torch.tensor(mean[None]), torch.tensor(quat[None]), torch.tensor(scale[None]),
        torch.eye(4, dtype=torch.float64)[None], K[None], W, H)
    r, m2, _, con, _ = _twin(mean, quat, scale, np.eye(4), K.numpy(), W, H)
    assert int(radii[0, 0]) == r > 0
    np.testing.assert_allclose(conics[0, 0].numpy(), con, rtol=1e-10)
    assert float(means2d[0, 0, 0]) == pytest.approx(50.0 * 1.5 + 32.0)  # the mean is not clamped
    # Without the clamp the conic would differ: check the twin is sensitive to it.
    J_unclamped = np.array([[25.0, 0, -25.0 * 1.5], [0, 25.0, 0]])
    assert not np.allclose(np.linalg.inv(J_unclamped @ np.eye(3) @ J_unclamped.T + 0.3 * np.eye(2))[0, 0], con[0])


def test_gradcheck_float64():
    means, quats, scales, viewmats, Ks = _scene(n=3, c=2, seed=3)
    inputs = [x.clone().requires_grad_() for x in (means, quats, scales, viewmats, Ks)]

    def fn(m, q, s, v, k):
        _, means2d, depths, conics, comp = project_gaussians(m, q, s, v, k, W, H, antialiased=True)
        return means2d, depths, conics, comp

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradients_reach_every_input():
    means, quats, scales, viewmats, Ks = _scene(n=4, c=2, dtype=torch.float32)
    inputs = [x.clone().requires_grad_() for x in (means, quats, scales, viewmats, Ks)]
    _, means2d, depths, conics, comp = project_gaussians(*inputs, W, H, antialiased=True)
    (means2d.sum() + depths.sum() + conics.sum() * 100 + comp.sum()).backward()
    for name, x in zip(("means", "quats", "scales", "viewmats", "Ks"), inputs, strict=True):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, name


@pytest.mark.parametrize("case", ["behind", "near", "far", "outside", "degenerate", "radius_clip"])
def test_culling(case):
    dtype = torch.float64
    means = torch.tensor([[0.0, 0.0, 3.0], [0.1, -0.1, 2.0]], dtype=dtype)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.9, 0.2, 0.1, 0.0]], dtype=dtype)
    scales = torch.full((2, 3), 0.1, dtype=dtype)
    kwargs = {}
    eps2d = 0.3
    if case == "behind":
        means[0, 2] = -3.0
    elif case == "near":
        means[0, 2] = 0.005
    elif case == "far":
        kwargs["far"] = 2.5
    elif case == "outside":
        means[0] = torch.tensor([30.0, 0.0, 3.0], dtype=dtype)  # far right of the image
    elif case == "degenerate":
        scales[0] = 0.0  # a point: cov2d = 0, det 0 with eps2d = 0
        eps2d = 0.0
    elif case == "radius_clip":
        scales[0] = 0.001
        kwargs["radius_clip"] = 2.0  # eps2d alone gives ceil(3 sqrt(0.3)) = 2
    inputs = [x.clone().requires_grad_() for x in (means, quats, scales)]
    viewmats = torch.eye(4, dtype=dtype)[None].requires_grad_()
    radii, means2d, depths, conics, comp = project_gaussians(*inputs, viewmats, _K()[None], W, H, eps2d=eps2d,
                                                             antialiased=True, **kwargs)
    assert int(radii[0, 0]) == 0 and int(radii[0, 1]) > 0
    for t in (means2d[0, 0], depths[0, 0], conics[0, 0], comp[0, 0]):
        assert (t == 0).all()
    (means2d.sum() + depths.sum() + conics.sum() + comp.sum()).backward()
    for x in inputs:
        assert torch.isfinite(x.grad).all()
        assert (x.grad[0] == 0).all()  # the culled Gaussian gets no gradient
        assert (x.grad[1] != 0).any() or x is inputs[1]  # quats may have a zero-gradient component
    assert torch.isfinite(viewmats.grad).all()


def test_box_overlap_edges():
    # Means just outside the image are kept while their box [mean - r, mean + r] still overlaps it.
    dtype = torch.float64
    K = _K(100.0, 100.0, 32.0, 24.0)
    z = 4.0
    means = torch.tensor([[(-2.0 - 32.0) * z / 100, 0.0, z], [(W + 2.0 - 32.0) * z / 100, 0.0, z]], dtype=dtype)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=dtype).expand(2, 4)
    radii, means2d, *_ = project_gaussians(means, quats, torch.full((2, 3), 0.1, dtype=dtype),
                                           torch.eye(4, dtype=dtype)[None], K[None], W, H)
    assert means2d[0, :, 0].tolist() == pytest.approx([-2.0, W + 2.0])
    assert (radii > 2).all()
    radii, *_ = project_gaussians(means * torch.tensor([[1.5, 1, 1]], dtype=dtype), quats,
                                  torch.full((2, 3), 0.01, dtype=dtype), torch.eye(4, dtype=dtype)[None], K[None], W, H)
    assert (radii == 0).all()


def test_random_rotations_invariance():
    # Rotating the world and the cameras together changes nothing.
    means, quats, scales, viewmats, Ks = _scene(n=5, c=2, seed=7)
    R = random_rotations(1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)[0]
    from scenegrad.render.rotations import matrix_to_quat, quat_multiply

    T = rt_to_matrix(R, torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64))
    means_w = means @ R.T + T[:3, 3]
    quats_w = quat_multiply(matrix_to_quat(R).expand(5, 4), quats)
    viewmats_w = viewmats @ torch.linalg.inv(T)
    a = project_gaussians(means, quats, scales, viewmats, Ks, W, H)
    b = project_gaussians(means_w, quats_w, scales, viewmats_w, Ks, W, H)
    assert torch.equal(a[0], b[0])
    for x, y in zip(a[1:4], b[1:4], strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)


def test_backend_and_shape_errors(monkeypatch):
    means, quats, scales, viewmats, Ks = _scene(n=2, c=1)
    with pytest.raises(ValueError, match="unknown backend"):
        project_gaussians(means, quats, scales, viewmats, Ks, W, H, backend="bogus")
    monkeypatch.setenv("SCENEGRAD_BACKEND", "bogus")
    with pytest.raises(ValueError, match="SCENEGRAD_BACKEND"):
        project_gaussians(means, quats, scales, viewmats, Ks, W, H)
    monkeypatch.delenv("SCENEGRAD_BACKEND")
    with pytest.raises(ValueError, match="quats"):
        project_gaussians(means, quats[:, :3], scales, viewmats, Ks, W, H)
    with pytest.raises(ValueError, match="Ks"):
        project_gaussians(means, quats, scales, viewmats, Ks.expand(2, 3, 3), W, H)
    with pytest.raises(ValueError, match="one dtype"):
        project_gaussians(means, quats, scales, viewmats.float(), Ks, W, H)
    with pytest.raises(ValueError, match="width"):
        project_gaussians(means, quats, scales, viewmats, Ks, 0, H)
