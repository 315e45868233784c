"""Rotations and rigid / similarity transforms, batched and differentiable.

Conventions (see :mod:`scenegrad.render.cameras` for the project-wide statement):

- Quaternions are ``(w, x, y, z)`` (scalar first, Hamilton product). roma and scipy use
  ``(x, y, z, w)``; this module converts at the boundary, so callers never see that order.
  ``matrix_to_quat`` returns the canonical sign ``w >= 0``.
- Rotation matrices act on column vectors: ``x' = R @ x``.
- 6D rotations (Zhou et al., CVPR 2019) are the first two *columns* of ``R``, concatenated:
  ``d6 = (R[:, 0], R[:, 1])``.
- Lie tangents are ordered **translation first, rotation second**:
  SE(3) ``xi = (rho, phi)`` (6 values), Sim(3) ``xi = (rho, phi, sigma)`` (7 values) with
  ``sigma = log(scale)``. ``phi`` is a rotation vector (axis * angle, radians).
- SE(3) and Sim(3) elements are ``[..., 4, 4]`` matrices ``[[s R, t], [0, 1]]``; use
  :func:`rt_to_matrix` / :func:`matrix_to_rt` to go to and from ``(R, t)``.

Every function takes any number of leading batch dimensions, works in float32 and float64 on any
device, and is differentiable with torch autograd. The exp / log maps switch to Taylor series near
angle 0, so values and gradients stay finite at the identity; the logs go through a quaternion, so
they stay accurate up to angle pi.
"""

from __future__ import annotations

import roma
import torch
from torch import Tensor

__all__ = [
    "quat_normalize",
    "quat_conjugate",
    "quat_multiply",
    "quat_to_matrix",
    "matrix_to_quat",
    "hat",
    "so3_exp",
    "so3_log",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "rot6d_to_matrix",
    "matrix_to_rot6d",
    "rt_to_matrix",
    "matrix_to_rt",
    "se3_exp",
    "se3_log",
    "sim3_exp",
    "sim3_log",
    "umeyama",
    "random_rotations",
]

# Below this squared angle the closed-form coefficients are replaced by Taylor series (5 terms:
# truncation error < 1e-16 at the threshold, and no cancellation in the closed forms above it).
_SMALL_ANGLE2 = 1e-2


def _check_last(x: Tensor, name: str, shape: tuple[int, ...]) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape[x.dim() - len(shape):]) != shape or x.dim() < len(shape):
        raise ValueError(f"{name} must have shape [..., {', '.join(map(str, shape))}], got {list(x.shape)}")


# ----------------------------------------------------------------------------------------------
# Quaternions (w, x, y, z)
# ----------------------------------------------------------------------------------------------


def quat_normalize(q: Tensor) -> Tensor:
    """Unit quaternion ``q / |q|``. ``q``: ``[..., 4]`` (w, x, y, z) -> ``[..., 4]``."""
    _check_last(q, "q", (4,))
    return q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)


def quat_conjugate(q: Tensor) -> Tensor:
    """Conjugate ``(w, -x, -y, -z)`` (the inverse of a unit quaternion). ``[..., 4]`` -> ``[..., 4]``."""
    _check_last(q, "q", (4,))
    return torch.cat([q[..., :1], -q[..., 1:]], dim=-1)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of (w, x, y, z) quaternions, broadcast over leading dims.

    ``quat_to_matrix(quat_multiply(a, b)) == quat_to_matrix(a) @ quat_to_matrix(b)``: the result
    applies ``b`` first, then ``a``.

    >>> a = torch.tensor([0.0, 0.0, 0.0, 1.0])  # 180 deg about z
    >>> quat_multiply(a, a)  # 360 deg: -identity
    tensor([-1.,  0.,  0.,  0.])
    """
    _check_last(a, "a", (4,))
    _check_last(b, "b", (4,))
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def quat_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrix of a (w, x, y, z) quaternion. ``[..., 4]`` -> ``[..., 3, 3]``.

    ``q`` need not be unit: it is normalised first (so gradients are tangent to the sphere).

    >>> quat_to_matrix(torch.tensor([0.7071068, 0.0, 0.0, 0.7071068])).round()  # 90 deg about z
    tensor([[ 0., -1.,  0.],
            [ 1.,  0.,  0.],
            [ 0.,  0.,  1.]])
    """
    return roma.unitquat_to_rotmat(roma.quat_wxyz_to_xyzw(quat_normalize(q)))


def matrix_to_quat(R: Tensor) -> Tensor:
    """(w, x, y, z) unit quaternion of a rotation matrix, canonical sign ``w >= 0``.

    ``R``: ``[..., 3, 3]`` -> ``[..., 4]``. Uses Markley's variant of Shepperd's method (roma), which
    is accurate for every angle and tolerates slightly non-orthonormal input.
    """
    _check_last(R, "R", (3, 3))
    q = roma.quat_xyzw_to_wxyz(roma.rotmat_to_unitquat(R))
    sign = torch.where(q[..., :1] < 0, -1.0, 1.0).to(q.dtype)
    return q * sign


# ----------------------------------------------------------------------------------------------
# SO(3)
# ----------------------------------------------------------------------------------------------


def hat(v: Tensor) -> Tensor:
    """Skew-symmetric matrix ``[v]_x`` with ``hat(v) @ u == cross(v, u)``. ``[..., 3]`` -> ``[..., 3, 3]``."""
    _check_last(v, "v", (3,))
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).unflatten(-1, (3, 3))


def _series(theta2: Tensor, coeffs: tuple[float, ...]) -> Tensor:
    out = torch.full_like(theta2, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * theta2 + c
    return out


def _angle(theta2: Tensor) -> tuple[Tensor, Tensor]:
    """(small mask, angle) where the angle is computed from a safe value in the small branch."""
    small = theta2 < _SMALL_ANGLE2
    theta = torch.where(small, torch.ones_like(theta2), theta2).sqrt()
    return small, theta


def _coef_a(theta2: Tensor) -> Tensor:
    """sin(theta) / theta."""
    small, th = _angle(theta2)
    series = _series(theta2, (1.0, -1 / 6, 1 / 120, -1 / 5040, 1 / 362880))
    return torch.where(small, series, torch.sin(th) / th)


def _coef_b(theta2: Tensor) -> Tensor:
    """(1 - cos(theta)) / theta^2, written as 2 sin^2(theta / 2) / theta^2 (no cancellation)."""
    small, th = _angle(theta2)
    series = _series(theta2, (0.5, -1 / 24, 1 / 720, -1 / 40320, 1 / 3628800))
    return torch.where(small, series, 2 * torch.sin(th / 2) ** 2 / th**2)


def _coef_c(theta2: Tensor) -> Tensor:
    """(theta - sin(theta)) / theta^3."""
    small, th = _angle(theta2)
    series = _series(theta2, (1 / 6, -1 / 120, 1 / 5040, -1 / 362880, 1 / 39916800))
    return torch.where(small, series, (th - torch.sin(th)) / th**3)


def _coef_d(theta2: Tensor) -> Tensor:
    """(1 - A / (2 B)) / theta^2 = 1 / theta^2 - cot(theta / 2) / (2 theta): the K^2 term of V^-1."""
    small, th = _angle(theta2)
    series = _series(theta2, (1 / 12, 1 / 720, 1 / 30240, 1 / 1209600, 1 / 47900160))
    return torch.where(small, series, 1 / th**2 - torch.cos(th / 2) / (2 * th * torch.sin(th / 2)))


def _eye(ref: Tensor, n: int = 3) -> Tensor:
    return torch.eye(n, dtype=ref.dtype, device=ref.device)


def so3_exp(phi: Tensor) -> Tensor:
    """Rotation matrix of a rotation vector (Rodrigues). ``phi``: ``[..., 3]`` -> ``[..., 3, 3]``.

    ``R = I + sin(t)/t K + (1 - cos t)/t^2 K^2`` with ``K = hat(phi)``, ``t = |phi|``; Taylor
    coefficients near 0 keep the gradient exact at ``phi = 0``.

    >>> so3_exp(torch.tensor([0.0, 0.0, torch.pi / 2])).round()
    tensor([[ 0., -1.,  0.],
            [ 1.,  0.,  0.],
            [ 0.,  0.,  1.]])
    """
    _check_last(phi, "phi", (3,))
    theta2 = (phi * phi).sum(-1)[..., None, None]
    K = hat(phi)
    return _eye(phi) + _coef_a(theta2) * K + _coef_b(theta2) * (K @ K)


def so3_log(R: Tensor) -> Tensor:
    """Rotation vector (axis * angle, angle in [0, pi]) of a rotation matrix.

    ``R``: ``[..., 3, 3]`` -> ``[..., 3]``. Computed from the canonical quaternion ``(w, v)``,
    ``w >= 0``, as ``2 atan2(|v|, w) / |v| * v``, with a series in ``|v|^2`` near the identity: finite
    gradients at the identity and accurate up to pi (at exactly pi the sign of the axis is arbitrary).
    """
    q = matrix_to_quat(R)
    w, v = q[..., :1], q[..., 1:]
    n2 = (v * v).sum(-1, keepdim=True)
    small = n2 < 1e-3
    n = torch.where(small, torch.ones_like(n2), n2).sqrt()
    w_safe = torch.where(small, w, torch.ones_like(w))  # w >= 0.9995 in the small branch
    u = n2 / w_safe**2
    series = 2 / w_safe * _series(u, (1.0, -1 / 3, 1 / 5, -1 / 7, 1 / 9, -1 / 11))  # 2 atan(n/w) / n
    factor = torch.where(small, series, 2 * torch.atan2(n, w) / n)
    return factor * v


# The rotation vector is the axis-angle representation: same maps, names users search for.
axis_angle_to_matrix = so3_exp
matrix_to_axis_angle = so3_log


# ----------------------------------------------------------------------------------------------
# 6D
# ----------------------------------------------------------------------------------------------


def rot6d_to_matrix(d6: Tensor) -> Tensor:
    """Rotation from the 6D representation by Gram-Schmidt. ``[..., 6]`` -> ``[..., 3, 3]``.

    ``d6 = (a1, a2)`` holds two 3-vectors; ``R[:, 0] = a1 / |a1|``, ``R[:, 1]`` is ``a2`` made
    orthogonal to it and normalised, ``R[:, 2] = R[:, 0] x R[:, 1]``.
    """
    _check_last(d6, "d6", (6,))
    return roma.special_gramschmidt(d6.unflatten(-1, (2, 3)).transpose(-1, -2))


def matrix_to_rot6d(R: Tensor) -> Tensor:
    """First two columns of ``R``, concatenated: ``[..., 3, 3]`` -> ``[..., 6]``."""
    _check_last(R, "R", (3, 3))
    return R[..., :, :2].transpose(-1, -2).flatten(-2)


# ----------------------------------------------------------------------------------------------
# SE(3) and Sim(3)
# ----------------------------------------------------------------------------------------------


def rt_to_matrix(R: Tensor, t: Tensor, scale: Tensor | None = None) -> Tensor:
    """``[[s R, t], [0, 0, 0, 1]]`` from ``R [..., 3, 3]``, ``t [..., 3]``, optional ``scale [...]``.

    Returns ``[..., 4, 4]``; batch dims broadcast.
    """
    _check_last(R, "R", (3, 3))
    _check_last(t, "t", (3,))
    if scale is not None:
        R = scale[..., None, None] * R
    batch = torch.broadcast_shapes(R.shape[:-2], t.shape[:-1])
    top = torch.cat([R.expand(*batch, 3, 3), t.expand(*batch, 3)[..., None]], dim=-1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], dim=-2)


def matrix_to_rt(T: Tensor) -> tuple[Tensor, Tensor]:
    """``(T[..., :3, :3], T[..., :3, 3])`` of a ``[..., 4, 4]`` (or ``[..., 3, 4]``) transform."""
    if not isinstance(T, Tensor) or T.dim() < 2 or T.shape[-2:] not in ((4, 4), (3, 4)):
        raise ValueError(f"T must have shape [..., 4, 4] or [..., 3, 4], got {list(getattr(T, 'shape', []))}")
    return T[..., :3, :3], T[..., :3, 3]


def se3_exp(xi: Tensor) -> Tensor:
    """Exponential map of SE(3). ``xi = (rho, phi)``: ``[..., 6]`` -> ``[..., 4, 4]``.

    ``rho`` (first 3) is the translational part, ``phi`` (last 3) the rotation vector:
    ``R = so3_exp(phi)``, ``t = V(phi) @ rho`` with ``V = I + B K + C K^2`` (left Jacobian of SO(3)).
    Equals ``torch.linalg.matrix_exp`` of the 4x4 twist ``[[hat(phi), rho], [0, 0]]``.

    >>> T = se3_exp(torch.tensor([1.0, 2.0, 3.0, 0.0, 0.0, 0.0]))
    >>> T[:3, 3]
    tensor([1., 2., 3.])
    """
    _check_last(xi, "xi", (6,))
    rho, phi = xi[..., :3], xi[..., 3:]
    theta2 = (phi * phi).sum(-1)[..., None, None]
    K = hat(phi)
    K2 = K @ K
    eye = _eye(xi)
    R = eye + _coef_a(theta2) * K + _coef_b(theta2) * K2
    V = eye + _coef_b(theta2) * K + _coef_c(theta2) * K2
    return rt_to_matrix(R, (V @ rho[..., None])[..., 0])


def se3_log(T: Tensor) -> Tensor:
    """Logarithm of SE(3): ``[..., 4, 4]`` -> ``xi = (rho, phi)`` ``[..., 6]``, inverse of :func:`se3_exp`."""
    R, t = matrix_to_rt(T)
    phi = so3_log(R)
    theta2 = (phi * phi).sum(-1)[..., None, None]
    K = hat(phi)
    V_inv = _eye(T) - 0.5 * K + _coef_d(theta2) * (K @ K)
    rho = (V_inv @ t[..., None])[..., 0]
    return torch.cat([rho, phi], dim=-1)


def _sim3_left_jacobian(phi: Tensor, sigma: Tensor) -> Tensor:
    """``W = int_0^1 exp(s (sigma I + hat(phi))) ds`` [..., 3, 3], via Van Loan's block exponential.

    ``exp([[A, I], [0, 0]]) = [[exp(A), int_0^1 exp(sA) ds], [0, I]]``; matrix_exp is accurate and
    differentiable in every regime (sigma and/or angle near 0), which closed forms are not.
    """
    A = sigma[..., None, None] * _eye(phi) + hat(phi)
    top = torch.cat([A, _eye(phi).expand_as(A)], dim=-1)
    block = torch.cat([top, torch.zeros_like(top)], dim=-2)
    return torch.linalg.matrix_exp(block)[..., :3, 3:]


def sim3_exp(xi: Tensor) -> Tensor:
    """Exponential map of Sim(3). ``xi = (rho, phi, sigma)``: ``[..., 7]`` -> ``[..., 4, 4]``.

    Returns ``[[s R, t], [0, 1]]`` with ``s = exp(sigma)``, ``R = so3_exp(phi)`` and
    ``t = W(phi, sigma) @ rho``; equals ``matrix_exp`` of ``[[sigma I + hat(phi), rho], [0, 0]]``.
    """
    _check_last(xi, "xi", (7,))
    rho, phi, sigma = xi[..., :3], xi[..., 3:6], xi[..., 6]
    W = _sim3_left_jacobian(phi, sigma)
    return rt_to_matrix(so3_exp(phi), (W @ rho[..., None])[..., 0], scale=torch.exp(sigma))


def sim3_log(T: Tensor) -> Tensor:
    """Logarithm of Sim(3): ``[..., 4, 4]`` ``[[s R, t], [0, 1]]`` -> ``(rho, phi, log s)`` ``[..., 7]``.

    The scale is ``det(s R)^(1/3)``; ``T`` must be a proper similarity (``s > 0``, ``det R = +1``),
    otherwise the result is NaN.
    """
    sR, t = matrix_to_rt(T)
    sigma = torch.log(torch.linalg.det(sR)) / 3
    phi = so3_log(sR / torch.exp(sigma)[..., None, None])
    W = _sim3_left_jacobian(phi, sigma)
    rho = torch.linalg.solve(W, t[..., None])[..., 0]
    return torch.cat([rho, phi, sigma[..., None]], dim=-1)


# ----------------------------------------------------------------------------------------------
# Alignment and sampling
# ----------------------------------------------------------------------------------------------


def umeyama(src: Tensor, dst: Tensor, with_scale: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Least-squares similarity ``dst ~= s R src + t`` (Umeyama 1991), batched.

    Args:
        src: ``[..., N, 3]`` points, N >= 3 and not all collinear.
        dst: ``[..., N, 3]`` corresponding points.
        with_scale: estimate ``s``; if False, ``s = 1`` (rigid, Kabsch).

    Returns:
        ``(s [...], R [..., 3, 3], t [..., 3])``; ``R`` is a proper rotation (``det R = +1``) even when
        the best orthogonal fit would be a reflection. Differentiable w.r.t. ``src`` and ``dst``.

    >>> src = torch.randn(10, 3, dtype=torch.float64)
    >>> s, R, t = umeyama(src, 2.0 * src + 1.0)
    >>> round(float(s), 6), torch.allclose(R, torch.eye(3, dtype=torch.float64)), t.round(decimals=6).tolist()
    (2.0, True, [1.0, 1.0, 1.0])
    """
    _check_last(src, "src", (3,))
    _check_last(dst, "dst", (3,))
    if src.shape != dst.shape or src.dim() < 2:
        raise ValueError(f"src and dst must both be [..., N, 3] with equal shapes, got {list(src.shape)} "
                         f"and {list(dst.shape)}")
    if src.shape[-2] < 3:
        raise ValueError(f"umeyama needs at least 3 point pairs, got {src.shape[-2]}")
    if with_scale:
        R, t, s = roma.rigid_points_registration(src, dst, compute_scaling=True)
    else:
        R, t = roma.rigid_points_registration(src, dst)
        s = torch.ones(src.shape[:-2], dtype=src.dtype, device=src.device)
    return s, R, t


def random_rotations(
    n: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` rotation matrices ``[n, 3, 3]`` drawn uniformly (Haar measure) on SO(3).

    >>> random_rotations(4, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([4, 3, 3])
    """
    return roma.random_rotmat(n, dtype=dtype, device=device, generator=generator)
