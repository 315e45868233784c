"""Pure-PyTorch twin of :func:`scenegrad.render.gaussians.project.project_gaussians` (same math, same
outputs; autograd gives every gradient). The formulas are in that module's docstring; the native
kernels share them through ``cuda/gaussians/project.h``. Inputs are checked by the public function.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scenegrad.render.rotations import quat_to_matrix

#: Field-of-view factor of the Jacobian clamp (3DGS / gsplat).
FOV_CLAMP = 1.3


def project_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] (w, x, y, z), need not be unit
    scales: Tensor,  # [N, 3] activated (> 0)
    viewmats: Tensor,  # [C, 4, 4] world-to-camera (OpenCV)
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    eps2d: float,
    near: float,
    far: float,
    radius_clip: float,
    antialiased: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """``(radii [C, N] int32, means2d [C, N, 2], depths [C, N], conics [C, N, 3], compensations [C, N] or None)``."""
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

