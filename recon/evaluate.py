"""Pose-accuracy metrics: Sim(3) alignment of trajectories, ATE, rotation and focal errors.

Cameras follow :mod:`scenegrad.render.cameras` (OpenCV world-to-camera). Metrics are computed in float64
and are not differentiable (they detach).

>>> import torch
>>> gt = torch.randn(10, 3, dtype=torch.float64)
>>> s, R, t = align_sim3(gt, gt * 3.0 + 1.0)
>>> round(float(s), 6), round(ate(3.0 * gt - 2.0, gt), 9)
(3.0, 0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scenegrad.render.cameras import Cameras
from scenegrad.render.rotations import so3_log

__all__ = ["align_sim3", "ate", "rotation_angles", "PoseErrors", "pose_errors"]


def align_sim3(src: Tensor, dst: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Least-squares similarity ``dst ~= s R src + t`` (Umeyama with scale) of ``[N, 3]`` point sets.

    Returns ``(s [], R [3, 3], t [3])`` in float64; ``R`` is a proper rotation. ``N >= 3``.
    """
    src, dst = src.detach().double(), dst.detach().double()
    if src.shape != dst.shape or src.dim() != 2 or src.shape[1] != 3 or src.shape[0] < 3:
        raise ValueError(f"align_sim3 needs two [N, 3] point sets with N >= 3, got {list(src.shape)}, "
                         f"{list(dst.shape)}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    U, S, Vh = torch.linalg.svd(cov)
    d = torch.ones(3, dtype=src.dtype)
    d[2] = torch.sign(torch.det(U @ Vh))
    R = U @ torch.diag(d) @ Vh
    var = (a * a).sum() / len(src)
    s = (S * d).sum() / var.clamp_min(1e-300)
    t = mu_d - s * R @ mu_s
    return s, R, t


def ate(est: Tensor, gt: Tensor) -> float:
    """Absolute trajectory error: RMSE of the ``[N, 3]`` camera centres ``est`` after their Sim(3)
    alignment to ``gt``, in ``gt``'s units."""
    s, R, t = align_sim3(est, gt)
    aligned = s * est.detach().double() @ R.T + t
    return float(((aligned - gt.double()) ** 2).sum(-1).mean().sqrt())


def rotation_angles(Ra: Tensor, Rb: Tensor) -> Tensor:
    """``[...]`` angles in degrees between rotations ``Ra`` and ``Rb`` (``[..., 3, 3]``): the norm of the
    relative rotation's :func:`~scenegrad.render.rotations.so3_log`, exact down to the smallest angles (the
    arccos of the trace cannot tell angles below ~0.02 degrees apart for float32 rotations: ``cos`` is
    then 1 to the rotations' precision)."""
    rel = Ra.detach().double() @ Rb.detach().double().transpose(-1, -2)
    return torch.rad2deg(so3_log(rel).norm(dim=-1))


@dataclass
class PoseErrors:
    """Errors of estimated cameras against ground truth.

    ate: RMSE of centres after Sim(3) alignment (ground-truth units); ate_rel: ``ate`` over the
    ground-truth trajectory length; rot_mean_deg / rot_max_deg: absolute rotation error after the
    alignment of the orientations (the rotation that best maps them onto the ground truth, found on its own:
    a straight trajectory leaves the centres' alignment free to spin about it); rel_rot_median_deg: median
    rotation error of consecutive relative rotations (no alignment
    needed); focal_rel: ``|f_est / f_gt - 1|`` of the mean ``fx`` (same image size assumed).
    """

    ate: float
    ate_rel: float
    rot_mean_deg: float
    rot_max_deg: float
    rel_rot_median_deg: float
    focal_rel: float


def pose_errors(est: Cameras, gt: Cameras) -> PoseErrors:
    """:class:`PoseErrors` of ``est`` against ``gt`` (same number of cameras, same order)."""
    if len(est) != len(gt):
        raise ValueError(f"pose_errors: {len(est)} estimated cameras but {len(gt)} ground-truth cameras")
    for name, cams in (("estimated", est), ("ground-truth", gt)):
        R = cams.R.detach().double()
        skew = float((R.transpose(-1, -2) @ R - torch.eye(3, dtype=R.dtype, device=R.device)).abs().max())
        if not skew <= 1e-4:  # the rotation errors assume rotations: a skewed matrix could read as error 0
            raise ValueError(f"pose_errors: the {name} cameras' R are not rotations (|R^T R - I| up to {skew:.2g})")
    ce, cg = est.centers.detach().double(), gt.centers.detach().double()
    s, R, t = align_sim3(ce, cg)
    aligned = s * ce @ R.T + t
    err = float(((aligned - cg) ** 2).sum(-1).mean().sqrt())
    length = float((cg[1:] - cg[:-1]).norm(dim=-1).sum())
    # orientations aligned on their own (the centres' alignment leaves the rotation about a straight
    # trajectory undetermined): the rotation A maximising sum tr(Rg_i^T Re_i A), by SVD
    Re, Rg = est.R.detach().double(), gt.R.detach().double()
    U, _, Vh = torch.linalg.svd((Re.transpose(-1, -2) @ Rg).sum(0))
    d = torch.ones(3, dtype=torch.float64)
    d[2] = torch.sign(torch.det(U @ Vh))
    A = U @ torch.diag(d) @ Vh
    rot = rotation_angles(Re @ A, Rg)
    rel_e = Re[1:] @ Re[:-1].transpose(-1, -2)
    rel_g = Rg[1:] @ Rg[:-1].transpose(-1, -2)
    rel = rotation_angles(rel_e, rel_g)
    focal = float(est.fx.double().mean() / gt.fx.double().mean() - 1)
    return PoseErrors(ate=err, ate_rel=err / max(length, 1e-12), rot_mean_deg=float(rot.mean()),
                      rot_max_deg=float(rot.max()), rel_rot_median_deg=float(rel.median()) if len(rel) else math.nan,
                      focal_rel=abs(focal))
