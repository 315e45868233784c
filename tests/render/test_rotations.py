"""Tests for scenegrad.render.rotations: conventions, round trips, independent checks, gradients."""

import math

import pytest
import torch

from scenegrad.render.rotations import (
    axis_angle_to_matrix,
    hat,
    matrix_to_axis_angle,
    matrix_to_quat,
    matrix_to_rot6d,
    matrix_to_rt,
    quat_conjugate,
    quat_multiply,
    quat_normalize,
    quat_to_matrix,
    random_rotations,
    rot6d_to_matrix,
    rt_to_matrix,
    se3_exp,
    se3_log,
    sim3_exp,
    sim3_log,
    so3_exp,
    so3_log,
    umeyama,
)

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_rotvecs(n: int, seed: int = 0, max_angle: float = 3.0) -> torch.Tensor:
    g = gen(seed)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=F64), dim=-1)
    angle = torch.rand(n, 1, generator=g, dtype=F64) * max_angle
    return axis * angle


def assert_rotation(R: torch.Tensor, atol: float = 1e-12) -> None:
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=atol, rtol=0)
    ones = torch.ones(R.shape[:-2], dtype=R.dtype)
    torch.testing.assert_close(torch.linalg.det(R), ones, atol=atol, rtol=0)


# -- quaternions ------------------------------------------------------------------------------------


def test_quaternion_order_is_wxyz_against_known_matrices():
    c = math.sqrt(0.5)
    rz90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    rx90 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=F64)
    torch.testing.assert_close(quat_to_matrix(torch.tensor([c, 0.0, 0.0, c], dtype=F64)), rz90)
    torch.testing.assert_close(quat_to_matrix(torch.tensor([c, c, 0.0, 0.0], dtype=F64)), rx90)
    torch.testing.assert_close(matrix_to_quat(rz90), torch.tensor([c, 0.0, 0.0, c], dtype=F64))


def test_quat_to_matrix_matches_axis_angle_definition():
    # q = (cos(a/2), sin(a/2) n) is the rotation by a about n: compare with so3_exp (Rodrigues).
    rotvec = random_rotvecs(50)
    angle = rotvec.norm(dim=-1, keepdim=True)
    q = torch.cat([torch.cos(angle / 2), torch.sin(angle / 2) * rotvec / angle], dim=-1)
    torch.testing.assert_close(quat_to_matrix(q), so3_exp(rotvec), atol=1e-12, rtol=0)


def test_quat_matrix_round_trip_and_canonical_sign():
    q = quat_normalize(torch.randn(200, 4, generator=gen(1), dtype=F64))
    q_back = matrix_to_quat(quat_to_matrix(q))
    assert (q_back[:, 0] >= 0).all()
    sign = torch.where(q[:, :1] < 0, -1.0, 1.0).to(F64)
    torch.testing.assert_close(q_back, q * sign, atol=1e-12, rtol=0)
    # an unnormalised quaternion gives the same rotation as its normalised version
    torch.testing.assert_close(quat_to_matrix(3.0 * q), quat_to_matrix(q))


def test_quat_multiply_composes_like_matrices_and_conjugate_inverts():
    a = quat_normalize(torch.randn(20, 4, generator=gen(2), dtype=F64))
    b = quat_normalize(torch.randn(20, 4, generator=gen(3), dtype=F64))
    torch.testing.assert_close(quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b))
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=F64).expand(20, 4)
    torch.testing.assert_close(quat_multiply(a, quat_conjugate(a)), identity)


def test_batched_leading_dims():
    q = torch.randn(2, 3, 4, generator=gen(4))
    assert quat_to_matrix(q).shape == (2, 3, 3, 3)
    assert so3_log(so3_exp(torch.randn(2, 3, 3) * 0.5)).shape == (2, 3, 3)
    assert se3_exp(torch.zeros(5, 1, 6)).shape == (5, 1, 4, 4)
    with pytest.raises(ValueError, match="shape"):
        quat_to_matrix(torch.zeros(3, 3))


# -- SO(3) ------------------------------------------------------------------------------------------


def test_so3_exp_matches_matrix_exponential():
    rotvec = random_rotvecs(50, seed=5)
    torch.testing.assert_close(so3_exp(rotvec), torch.linalg.matrix_exp(hat(rotvec)), atol=1e-12, rtol=0)
    assert axis_angle_to_matrix is so3_exp and matrix_to_axis_angle is so3_log


# 0.05 and 0.0999 fall in the series branches (angle^2 < 1e-2, quaternion |v|^2 < 1e-3); 0.1001 does not
ANGLES = [0.0, 1e-9, 1e-5, 0.05, 0.0999, 0.1001, 0.5, 2.0, math.pi - 1e-3, math.pi - 1e-7]


@pytest.mark.parametrize("angle", ANGLES)
def test_so3_log_exp_round_trip_across_angles(angle):
    axis = torch.nn.functional.normalize(torch.tensor([[0.3, -0.5, 0.8], [1.0, 0.0, 0.0]], dtype=F64), dim=-1)
    rotvec = axis * angle
    R = so3_exp(rotvec)
    assert_rotation(R)
    torch.testing.assert_close(so3_log(R), rotvec, atol=1e-9, rtol=0)


def test_so3_log_at_pi_returns_a_valid_rotation_vector():
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=F64))  # pi about x
    phi = so3_log(R)
    torch.testing.assert_close(phi.abs(), torch.tensor([math.pi, 0.0, 0.0], dtype=F64))
    torch.testing.assert_close(so3_exp(phi), R, atol=1e-12, rtol=0)


def test_so3_gradients_finite_and_exact_at_identity():
    phi = torch.zeros(3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(so3_exp, (phi,))
    R = torch.eye(3, dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(so3_log(R).sum(), R)
    # near I, log(R) = vee((R - R^T) / 2), so d sum(log) / dR = hat((1, 1, 1)) / 2
    torch.testing.assert_close(grad, hat(torch.ones(3, dtype=F64)) / 2)
    w = torch.tensor([1e-6, -2e-6, 3e-6], dtype=F64)
    torch.testing.assert_close(so3_log(so3_exp(w)), w, atol=1e-15, rtol=0)


def test_so3_log_gradcheck_near_identity_and_near_pi():
    for phi in ([1e-4, 2e-4, -1e-4], [0.0, 0.0, math.pi - 1e-2]):
        R = so3_exp(torch.tensor(phi, dtype=F64)).requires_grad_(True)
        assert torch.autograd.gradcheck(so3_log, (R,))


def test_quat_to_matrix_gradcheck():
    q = torch.randn(4, 4, generator=gen(6), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(quat_to_matrix, (q,))


# -- 6D ---------------------------------------------------------------------------------------------


def test_rot6d_round_trip_and_gram_schmidt():
    R = random_rotations(10, generator=gen(7), dtype=F64)
    d6 = matrix_to_rot6d(R)
    torch.testing.assert_close(d6[:, :3], R[:, :, 0])  # first column first
    torch.testing.assert_close(d6[:, 3:], R[:, :, 1])
    torch.testing.assert_close(rot6d_to_matrix(d6), R)
    noisy = d6 * 2.0 + 0.1 * torch.randn(10, 6, generator=gen(8), dtype=F64)
    R2 = rot6d_to_matrix(noisy)
    assert_rotation(R2)
    torch.testing.assert_close(R2[:, :, 0], torch.nn.functional.normalize(noisy[:, :3], dim=-1))


# -- SE(3) / Sim(3) ---------------------------------------------------------------------------------


def random_xi(n: int, seed: int, dim: int = 6) -> torch.Tensor:
    xi = torch.randn(n, dim, generator=gen(seed), dtype=F64)
    xi[:, 3:6] = random_rotvecs(n, seed=seed + 100)
    return xi


def twist_matrix(xi: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
    top = hat(xi[..., 3:6])
    if sigma is not None:
        top = top + sigma[..., None, None] * torch.eye(3, dtype=xi.dtype)
    G = torch.zeros(*xi.shape[:-1], 4, 4, dtype=xi.dtype)
    G[..., :3, :3] = top
    G[..., :3, 3] = xi[..., :3]
    return G


def test_se3_exp_matches_matrix_exponential_and_tangent_order():
    xi = random_xi(30, seed=9)
    xi[:10, 3:] *= 0.03  # small angles: the series branch
    torch.testing.assert_close(se3_exp(xi), torch.linalg.matrix_exp(twist_matrix(xi)), atol=1e-12, rtol=0)
    pure_translation = torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 0.0], dtype=F64)
    torch.testing.assert_close(se3_exp(pure_translation)[:3, 3], pure_translation[:3])


@pytest.mark.parametrize("angle", [0.0, 1e-8, 1e-3, 0.05, 0.09, 0.1, 1.5, math.pi - 1e-4])
def test_se3_log_exp_round_trip(angle):
    xi = random_xi(8, seed=10)
    xi[:, 3:] = torch.nn.functional.normalize(xi[:, 3:], dim=-1) * angle
    torch.testing.assert_close(se3_log(se3_exp(xi)), xi, atol=1e-11, rtol=0)


def test_se3_gradcheck_including_identity():
    xi = random_xi(3, seed=11).requires_grad_(True)
    assert torch.autograd.gradcheck(se3_exp, (xi,))
    assert torch.autograd.gradcheck(se3_exp, (torch.zeros(1, 6, dtype=F64, requires_grad=True),))
    T = se3_exp(random_xi(3, seed=12)).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(se3_log, (T,))
    T0 = torch.eye(4, dtype=F64)[None].requires_grad_(True)
    assert torch.autograd.gradcheck(se3_log, (T0,))


def test_rt_matrix_helpers():
    R = random_rotations(4, generator=gen(13), dtype=F64)
    t = torch.randn(4, 3, generator=gen(14), dtype=F64)
    T = rt_to_matrix(R, t, scale=torch.full((4,), 2.0, dtype=F64))
    R2, t2 = matrix_to_rt(T)
    torch.testing.assert_close(R2, 2 * R)
    torch.testing.assert_close(t2, t)
    torch.testing.assert_close(T[:, 3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=F64).expand(4, 4))


def test_sim3_exp_against_independent_forms():
    xi = random_xi(20, seed=15, dim=7)
    # the 4x4 generator [[sigma I + hat(phi), rho], [0, 0]]
    torch.testing.assert_close(sim3_exp(xi), torch.linalg.matrix_exp(twist_matrix(xi, xi[:, 6])), atol=1e-11,
                               rtol=0)
    # sigma = 0 reduces to SE(3); phi = 0 gives t = (e^sigma - 1) / sigma * rho, s = e^sigma
    xi0 = xi.clone()
    xi0[:, 6] = 0
    torch.testing.assert_close(sim3_exp(xi0), se3_exp(xi0[:, :6]), atol=1e-12, rtol=0)
    xs = xi.clone()
    xs[:, 3:6] = 0
    T = sim3_exp(xs)
    sigma = xs[:, 6:]
    torch.testing.assert_close(T[:, :3, 3], (torch.exp(sigma) - 1) / sigma * xs[:, :3])
    eye = torch.eye(3, dtype=F64).expand(20, 3, 3)
    torch.testing.assert_close(T[:, :3, :3], torch.exp(sigma)[..., None] * eye)


@pytest.mark.parametrize("angle, sigma", [(0.0, 0.0), (1e-7, 1e-7), (0.5, 0.0), (0.0, -0.7), (2.0, 1.2),
                                          (math.pi - 1e-4, 0.3)])
def test_sim3_log_exp_round_trip(angle, sigma):
    xi = random_xi(6, seed=16, dim=7)
    xi[:, 3:6] = torch.nn.functional.normalize(xi[:, 3:6], dim=-1) * angle
    xi[:, 6] = sigma
    torch.testing.assert_close(sim3_log(sim3_exp(xi)), xi, atol=1e-10, rtol=0)


def test_sim3_gradcheck():
    xi = random_xi(2, seed=17, dim=7).requires_grad_(True)
    assert torch.autograd.gradcheck(sim3_exp, (xi,))
    T = sim3_exp(random_xi(2, seed=18, dim=7)).detach().requires_grad_(True)
    assert torch.autograd.gradcheck(sim3_log, (T,))


# -- Umeyama and sampling ---------------------------------------------------------------------------


def test_umeyama_recovers_random_similarity_exactly():
    src = torch.randn(3, 50, 3, generator=gen(19), dtype=F64)
    R = random_rotations(3, generator=gen(20), dtype=F64)
    s = torch.tensor([0.5, 1.0, 3.7], dtype=F64)
    t = torch.randn(3, 3, generator=gen(21), dtype=F64)
    dst = s[:, None, None] * src @ R.transpose(1, 2) + t[:, None]
    s_hat, R_hat, t_hat = umeyama(src, dst)
    torch.testing.assert_close(s_hat, s, atol=1e-10, rtol=0)
    torch.testing.assert_close(R_hat, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(t_hat, t, atol=1e-10, rtol=0)
    s_rigid, R_rigid, _ = umeyama(src, src @ R.transpose(1, 2) + t[:, None], with_scale=False)
    torch.testing.assert_close(s_rigid, torch.ones(3, dtype=F64))
    torch.testing.assert_close(R_rigid, R, atol=1e-10, rtol=0)


def test_umeyama_never_returns_a_reflection():
    src = torch.randn(40, 3, generator=gen(22), dtype=F64)
    dst = src * torch.tensor([1.0, 1.0, -1.0], dtype=F64)  # a mirror image: best orthogonal fit has det -1
    _, R, _ = umeyama(src, dst)
    assert_rotation(R, atol=1e-10)


def test_umeyama_gradcheck_and_validation():
    src = torch.randn(6, 3, generator=gen(23), dtype=F64, requires_grad=True)
    R = random_rotations(1, generator=gen(24), dtype=F64)[0]
    noise = 0.05 * torch.randn(6, 3, generator=gen(25), dtype=F64)
    dst = (2.0 * src.detach() @ R.T + 1.0 + noise).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: umeyama(a, b), (src, dst))
    with pytest.raises(ValueError, match="at least 3"):
        umeyama(src[:2], dst[:2])
    with pytest.raises(ValueError, match="equal shapes"):
        umeyama(src, dst[:5])


def test_random_rotations_are_uniform_rotations_and_reproducible():
    R = random_rotations(20000, generator=gen(26), dtype=F64)
    assert R.shape == (20000, 3, 3)
    assert_rotation(R, atol=1e-10)
    # Haar measure: E[R] = 0 and E[trace R] = 0 (any bias toward the identity would show)
    assert R.mean(0).abs().max() < 0.03
    torch.testing.assert_close(random_rotations(3, generator=gen(1)), random_rotations(3, generator=gen(1)))
    assert not torch.allclose(random_rotations(3, generator=gen(1)), random_rotations(3, generator=gen(2)))
