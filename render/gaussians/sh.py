"""Real spherical harmonics up to degree 3 with the constants and signs of 3D Gaussian splatting.

Layout: coefficients are ``[..., K, 3]`` with ``K = (degree + 1) ** 2`` bases (band-major, the
order of 3DGS's ``eval_sh`` and gsplat's ``spherical_harmonics``) and the 3 colour channels last.
Basis 0 is the constant band (``SH_C0``); bases 1..3 are ``-C1 y, C1 z, -C1 x``; bases 4..8 and
9..15 follow 3DGS's ``sh_utils.py`` term by term (see :func:`sh_bases`).

Colour from SH, as 3DGS and gsplat compute it: ``rgb = max(0, sum_k basis_k(d) coeff_k + 0.5)``
with ``d`` the *normalised* view direction (from the camera centre to the Gaussian). Band 0 alone
gives ``rgb = 0.5 + SH_C0 * coeff_0``, hence :func:`rgb_to_sh` / :func:`sh_to_rgb`.

Everything is differentiable (autograd) with respect to ``dirs`` and ``coeffs``, any float dtype,
any device.

>>> import torch
>>> coeffs = torch.zeros(2, num_sh_bases(3), 3)
>>> coeffs[:, 0] = rgb_to_sh(torch.tensor([0.2, 0.5, 0.9]))
>>> spherical_harmonics(3, torch.tensor([[0.0, 0.0, 1.0], [1.0, 2.0, 3.0]]), coeffs)
tensor([[0.2000, 0.5000, 0.9000],
        [0.2000, 0.5000, 0.9000]])
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SH_C0", "SH_C1", "SH_C2", "SH_C3", "MAX_SH_DEGREE", "num_sh_bases", "sh_degree_from_bases",
           "sh_bases", "spherical_harmonics", "rgb_to_sh", "sh_to_rgb"]

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)
MAX_SH_DEGREE = 3


def _check_degree(degree: int) -> int:
    if isinstance(degree, bool) or not isinstance(degree, int) or not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be an int in 0..{MAX_SH_DEGREE}, got {degree!r}")
    return degree


def num_sh_bases(degree: int) -> int:
    """Number of SH bases (coefficients per channel) up to ``degree``: ``(degree + 1) ** 2``.

    >>> [num_sh_bases(d) for d in range(4)]
    [1, 4, 9, 16]
    """
    return (_check_degree(degree) + 1) ** 2


def sh_degree_from_bases(k: int) -> int:
    """Inverse of :func:`num_sh_bases`: 1, 4, 9, 16 -> 0, 1, 2, 3; ``ValueError`` otherwise."""
    for d in range(MAX_SH_DEGREE + 1):
        if (d + 1) ** 2 == k:
            return d
    raise ValueError(f"{k} SH bases is not (degree + 1)^2 for a degree in 0..{MAX_SH_DEGREE}")


def sh_bases(degree: int, dirs: Tensor) -> Tensor:
    """The real SH basis functions at unit directions: ``dirs [..., 3]`` -> ``[..., (degree + 1) ** 2]``.

    ``dirs`` must already be normalised (:func:`spherical_harmonics` normalises for you).
    """
    _check_degree(degree)
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        out += [
            SH_C2[0] * xy,
            SH_C2[1] * yz,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * xz,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            SH_C3[0] * y * (3.0 * xx - yy),
            SH_C3[1] * xy * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy),
            SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def spherical_harmonics(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Colour of SH coefficients seen from directions: ``max(0, SH(dirs) + 0.5)``.

    Args:
        degree: SH degree to evaluate, 0..3. ``coeffs`` may hold more bases than this needs: only
            the first ``(degree + 1) ** 2`` are used (how trainers raise the degree progressively).
        dirs: ``[..., 3]`` view directions (need not be normalised; they are, with a tiny epsilon,
            so a zero direction gives the band-0 colour rather than NaN).
        coeffs: ``[..., K, 3]`` coefficients, ``K >= (degree + 1) ** 2``; leading dims broadcast
            with those of ``dirs``.

    Returns:
        ``[..., 3]`` colours, clamped below at 0 (not above), as 3DGS. Differentiable with respect
        to ``dirs`` (for ``degree >= 1``) and ``coeffs``.
    """
    k = num_sh_bases(degree)
    if dirs.shape[-1:] != (3,):
        raise ValueError(f"dirs must be [..., 3], got {list(dirs.shape)}")
    if coeffs.dim() < 2 or coeffs.shape[-1] != 3 or coeffs.shape[-2] < k:
        raise ValueError(f"coeffs must be [..., K, 3] with K >= {k} for degree {degree}, got {list(coeffs.shape)}")
    unit = torch.nn.functional.normalize(dirs, dim=-1, eps=1e-12)
    basis = sh_bases(degree, unit)  # [..., k]
    value = (basis[..., :, None] * coeffs[..., :k, :]).sum(-2)
    return torch.clamp_min(value + 0.5, 0.0)


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """Band-0 coefficient of a colour: ``(rgb - 0.5) / SH_C0``. Any shape.

    >>> rgb_to_sh(torch.tensor([0.5]))
    tensor([0.])
    """
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh: Tensor) -> Tensor:
    """Colour of a band-0 coefficient: ``0.5 + SH_C0 * sh`` (not clamped). Any shape."""
    return sh * SH_C0 + 0.5
