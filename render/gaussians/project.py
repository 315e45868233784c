"""``project_gaussians``: EWA projection of 3D Gaussians to image-space means, conics, depths, radii.

The math (3DGS, Kerbl et al. 2023; gsplat's ``fully_fused_projection``), per camera and Gaussian:

1. ``Sigma = R S S^T R^T`` with ``R = quat_to_matrix(q)`` (``q`` is (w, x, y, z), normalised first)
   and ``S = diag(scales)`` (activated scales, not logs).
2. Camera space (OpenCV, :mod:`scenegrad.render.cameras`): ``t = W mean + w``, ``Sigma_c = W Sigma W^T``
   with ``viewmats = [[W, w], [0, 1]]`` (world-to-camera).
3. Perspective Jacobian at the mean, ``J = [[fx/z, 0, -fx x/z^2], [0, fy/z, -fy y/z^2]]``, where
   ``x/z`` and ``y/z`` are first clamped to ``+-1.3 tan(fov/2)``, i.e. ``lim_x = 1.3 * 0.5 * width / fx``
   and ``lim_y = 1.3 * 0.5 * height / fy`` (3DGS's and gsplat's guard against huge footprints of
   Gaussians far outside the view; recent gsplat versions use limits asymmetric about ``cx``,
   identical to these when ``cx = width / 2``). The mean itself is projected without clamping.
4. ``cov2d = J Sigma_c J^T + eps2d I`` (a low-pass filter of ``eps2d`` px^2). With ``antialiased``:
   ``compensation = sqrt(det(cov2d - eps2d I) / det(cov2d))`` (Mip-Splatting), a factor the caller
   multiplies into the opacity so that the filter does not add energy.
5. ``conics = (a, b, c)`` with ``[[a, b], [b, c]] = cov2d^-1``; ``means2d = (fx x/z + cx, fy y/z + cy)``
   (``K`` applied to the camera-space mean; pixel centres at +0.5, so a mean at ``(0.5, 0.5)`` sits
   on the centre of the top-left pixel); ``depths = z``.
6. ``radii = ceil(3 sqrt(lambda_max(cov2d)))`` (int32).

Culling: a Gaussian gets radius 0, all-zero outputs and no gradient for a camera when ``z <= near``
or ``z >= far``, ``det(cov2d) <= 0`` (only possible with ``eps2d = 0`` and degenerate scales),
``radius <= radius_clip``, or its box ``[mean2d - radius, mean2d + radius]`` misses the image
``[0, width] x [0, height]``.

Implementations: this pure-PyTorch code is the reference and, for now, the only implementation
(autograd gives every gradient). ``backend`` is validated like every scenegrad primitive
(:mod:`scenegrad.render.backend`), but ``"native"`` and ``"auto"`` run this code too, with no
warning, until the native kernel lands (``cuda/gaussians/project_*``).

>>> import torch
>>> means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, -2.0]])  # the second one is behind the camera
>>> quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(2, 4)
>>> scales = torch.full((2, 3), 0.1)
>>> viewmats, Ks = torch.eye(4)[None], torch.tensor([[[100.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]]])
>>> radii, means2d, depths, conics, comp = project_gaussians(means, quats, scales, viewmats, Ks, 64, 48)
>>> radii, means2d[0, 0], depths
(tensor([[16,  0]], dtype=torch.int32), tensor([32., 24.]), tensor([[2., 0.]]))
"""

from __future__ import annotations

import torch
from torch import Tensor

from scenegrad.render import backend as _backend
from scenegrad.render.rotations import quat_to_matrix

__all__ = ["project_gaussians", "check_backend"]

#: Field-of-view factor of the Jacobian clamp (3DGS / gsplat).
FOV_CLAMP = 1.3


def check_backend(backend: str | None, area: str = "gaussians") -> str:
    """Validate a ``backend=`` argument (or ``$SCENEGRAD_BACKEND``) for the Gaussian primitives.

    Returns the requested name. Every valid name currently runs the pure-PyTorch code: there is no
    native Gaussian kernel yet, so ``"native"`` falls back silently (see the module docstring).
    """
    return _backend.validate(area, backend)


def _check(x: Tensor, name: str, shape: tuple) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != len(shape) or any(s is not None and d != s for d, s in zip(x.shape, shape, strict=True)):
        want = ", ".join("?" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} must have shape [{want}], got {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def project_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] (w, x, y, z), need not be unit
    scales: Tensor,  # [N, 3] activated (> 0)
    viewmats: Tensor,  # [C, 4, 4] world-to-camera (OpenCV)
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    eps2d: float = 0.3,
    near: float = 0.01,
    far: float = 1e10,
    radius_clip: float = 0.0,
    antialiased: bool = False,
    backend: str | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Project ``N`` 3D Gaussians into ``C`` pinhole cameras (EWA splatting; math in the module docstring).

    Args:
        means: ``[N, 3]`` world-space centres.
        quats: ``[N, 4]`` rotations (w, x, y, z); normalised internally (gradients are tangent).
        scales: ``[N, 3]`` standard deviations along the rotated axes (activated, e.g. ``exp`` of
            the stored log-scales).
        viewmats: ``[C, 4, 4]`` world-to-camera matrices (OpenCV axes: +Z forward, +Y down).
        Ks: ``[C, 3, 3]`` intrinsics in pixels.
        width, height: image size in pixels (the culling box).
        eps2d: screen-space low-pass filter added to the 2D covariance, px^2.
        near, far: camera-space ``z`` range kept (exclusive).
        radius_clip: Gaussians with a radius ``<=`` this (px) are culled.
        antialiased: also return Mip-Splatting's opacity ``compensations``.
        backend: ``"auto"``, ``"native"`` or ``"reference"`` (all run this PyTorch code for now).

    Returns:
        ``(radii, means2d, depths, conics, compensations)``:
        ``radii [C, N]`` int32 (0 = culled), ``means2d [C, N, 2]`` pixels, ``depths [C, N]``
        camera ``z``, ``conics [C, N, 3]`` the upper triangle ``(a, b, c)`` of ``cov2d^-1``, and
        ``compensations [C, N]`` (``None`` unless ``antialiased``). Culled entries are zero.

    Dtype and device follow ``means``; all float inputs must share them. Differentiable (autograd)
    with respect to ``means``, ``quats``, ``scales``, ``viewmats`` and ``Ks``; ``radii`` are not
    differentiable.
    """
    check_backend(backend)
    _check(means, "means", (None, 3))
    n = means.shape[0]
    _check(quats, "quats", (n, 4))
    _check(scales, "scales", (n, 3))
    _check(viewmats, "viewmats", (None, 4, 4))
    c = viewmats.shape[0]
    _check(Ks, "Ks", (c, 3, 3))
    for name, x in (("quats", quats), ("scales", scales), ("viewmats", viewmats), ("Ks", Ks)):
        if x.dtype != means.dtype or x.device != means.device:
            raise ValueError(f"{name} is {x.dtype} on {x.device}, but means is {means.dtype} on {means.device}; "
                             "all inputs must share one dtype and device")
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be > 0, got {width} x {height}")
    if eps2d < 0:
        raise ValueError(f"eps2d must be >= 0, got {eps2d}")

    # 3D covariance, world then camera frame.
    M = quat_to_matrix(quats) * scales[:, None, :]  # [N, 3, 3] = R S
    cov3d = M @ M.transpose(-1, -2)  # [N, 3, 3]
    W, w = viewmats[:, :3, :3], viewmats[:, :3, 3]
    p_cam = torch.einsum("cij,nj->cni", W, means) + w[:, None, :]  # [C, N, 3]
    cov_cam = torch.einsum("cij,njk,clk->cnil", W, cov3d, W)  # [C, N, 3, 3]

    x, y, z = p_cam.unbind(-1)
    in_depth = (z > near) & (z < far)
    z_safe = torch.where(in_depth, z, torch.ones_like(z))  # culled: harmless values, no NaN gradients
    x_safe = torch.where(in_depth, x, torch.zeros_like(x))
    y_safe = torch.where(in_depth, y, torch.zeros_like(y))

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    lim_x = FOV_CLAMP * 0.5 * width / fx
    lim_y = FOV_CLAMP * 0.5 * height / fy
    u = torch.maximum(torch.minimum(x_safe / z_safe, lim_x), -lim_x)  # clamped x/z
    v = torch.maximum(torch.minimum(y_safe / z_safe, lim_y), -lim_y)
    zero = torch.zeros_like(z_safe)
    J = torch.stack([fx / z_safe, zero, -fx * u / z_safe, zero, fy / z_safe, -fy * v / z_safe], dim=-1)
    J = J.unflatten(-1, (2, 3))  # [C, N, 2, 3]
    cov2d = J @ cov_cam @ J.transpose(-1, -2)  # [C, N, 2, 2], before the filter

    s00, s01, s11 = cov2d[..., 0, 0], 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1]
    det_orig = s00 * s11 - s01 * s01
    a00, a11 = s00 + eps2d, s11 + eps2d
    det = a00 * a11 - s01 * s01

    # Radius from the largest eigenvalue of the filtered covariance (not differentiable).
    with torch.no_grad():
        half_trace = 0.5 * (a00 + a11)
        lam = half_trace + torch.sqrt(torch.clamp_min(half_trace * half_trace - det, 0.0))
        radius = torch.ceil(3.0 * torch.sqrt(torch.clamp_min(lam, 0.0)))

    uv1 = torch.stack([x_safe / z_safe, y_safe / z_safe, torch.ones_like(z_safe)], dim=-1)  # [C, N, 3]
    means2d = torch.einsum("cij,cnj->cni", Ks[:, :2, :], uv1)  # [C, N, 2]

    with torch.no_grad():
        valid = in_depth & (det > 0) & torch.isfinite(radius) & (radius > radius_clip)
        m = means2d.detach()
        valid &= (m[..., 0] + radius > 0) & (m[..., 0] - radius < width)
        valid &= (m[..., 1] + radius > 0) & (m[..., 1] - radius < height)
    radii = torch.where(valid, radius, torch.zeros_like(radius)).to(torch.int32)

    det_safe = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([a11 / det_safe, -s01 / det_safe, a00 / det_safe], dim=-1)
    vmask = valid[..., None]
    conics = torch.where(vmask, conics, torch.zeros_like(conics))
    means2d = torch.where(vmask, means2d, torch.zeros_like(means2d))
    depths = torch.where(valid, z, torch.zeros_like(z))

    compensations = None
    if antialiased:
        ratio = det_orig / det_safe
        ok = valid & (ratio > 0)
        ratio_safe = torch.where(ok, ratio, torch.ones_like(ratio))
        compensations = torch.where(ok, torch.sqrt(ratio_safe), torch.zeros_like(ratio))
    return radii, means2d, depths, conics, compensations

