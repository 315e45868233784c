"""Pure-PyTorch triangle rasterizer, the twin of ``cuda/mesh/rasterize.*``.

The math (homogeneous rasterization, see ``cuda/mesh/rasterize.h``): for a triangle with clip-space
vertices (x_i, y_i, z_i, w_i), ``M = [[x0 x1 x2], [y0 y1 y2], [w0 w1 w2]]``, ``A = M^-1``; at a pixel
centre with NDC ``p = (px, py, 1)``, ``alpha = A p``; covered when every ``alpha_i >= 0``, their sum
``S > 0`` and ``-1 <= z/w <= 1`` with ``z/w = (alpha . z) / (alpha . w)``; barycentrics ``(u, v) = alpha[:2] / S``.
The nearest fragment wins, ties going to the lower triangle id.

Coverage is decided without gradient; the winners' outputs are recomputed with differentiable
torch ops, so autograd gives the gradient to ``pos`` (through u, v, z/w and rast_db).
"""

from __future__ import annotations

import torch
from torch import Tensor

_CHUNK_ELEMENTS = 1 << 24  # triangles x pixels evaluated at once


def pixel_ndc(height: int, width: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """NDC of pixel centres: px [W] (left to right), py [H] (top to bottom, +1 at the top)."""
    ix = torch.arange(width, device=device, dtype=dtype)
    iy = torch.arange(height, device=device, dtype=dtype)
    px = 2 * (ix + 0.5) / width - 1
    py = 1 - 2 * (iy + 0.5) / height
    return px, py


def tri_inverse(v: Tensor) -> tuple[Tensor, Tensor]:
    """``A = M^-1`` by the adjugate, same operation order as the kernel. v [..., 3, 4] -> A [..., 3, 3], det [...]."""
    m00, m01, m02 = v[..., 0, 0], v[..., 1, 0], v[..., 2, 0]
    m10, m11, m12 = v[..., 0, 1], v[..., 1, 1], v[..., 2, 1]
    m20, m21, m22 = v[..., 0, 3], v[..., 1, 3], v[..., 2, 3]
    c00 = m11 * m22 - m12 * m21
    c01 = m12 * m20 - m10 * m22
    c02 = m10 * m21 - m11 * m20
    det = m00 * c00 + m01 * c01 + m02 * c02
    inv = 1 / torch.where(det == 0, torch.ones_like(det), det)
    rows = [
        c00 * inv,
        (m02 * m21 - m01 * m22) * inv,
        (m01 * m12 - m02 * m11) * inv,
        c01 * inv,
        (m00 * m22 - m02 * m20) * inv,
        (m02 * m10 - m00 * m12) * inv,
        c02 * inv,
        (m01 * m20 - m00 * m21) * inv,
        (m00 * m11 - m01 * m10) * inv,
    ]
    return torch.stack(rows, -1).unflatten(-1, (3, 3)), det


def _alpha(A: Tensor, px: Tensor, py: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    a0 = A[..., 0, 0] * px + A[..., 0, 1] * py + A[..., 0, 2]
    a1 = A[..., 1, 0] * px + A[..., 1, 1] * py + A[..., 1, 2]
    a2 = A[..., 2, 0] * px + A[..., 2, 1] * py + A[..., 2, 2]
    return a0, a1, a2


@torch.no_grad()
def _nearest_triangle(pos: Tensor, tri: Tensor, height: int, width: int) -> Tensor:
    """Index of the visible triangle per pixel, -1 where none. pos [B, V, 4] -> [B, H*W] int64."""
    B = pos.shape[0]
    T = tri.shape[0]
    px, py = pixel_ndc(height, width, pos.device, pos.dtype)
    px = px.repeat(height)  # [H*W]
    py = py.repeat_interleave(width)
    best_z = torch.full((B, height * width), float("inf"), device=pos.device, dtype=pos.dtype)
    best_id = torch.full((B, height * width), -1, device=pos.device, dtype=torch.long)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, B * height * width))
    for start in range(0, T, chunk):
        ids = torch.arange(start, min(T, start + chunk), device=pos.device)
        v = pos[:, tri[ids].long()]  # [B, Tc, 3, 4]
        A, det = tri_inverse(v)
        ok = (det != 0) & torch.isfinite(det) & (v[..., 3] > 0).any(-1)  # [B, Tc]
        A = A[..., None, :, :]  # [B, Tc, 1, 3, 3]
        a0, a1, a2 = _alpha(A, px, py)  # [B, Tc, HW]
        z, w = v[..., 2], v[..., 3]
        zw = (a0 * z[..., 0:1] + a1 * z[..., 1:2] + a2 * z[..., 2:3]) / (
            a0 * w[..., 0:1] + a1 * w[..., 1:2] + a2 * w[..., 2:3]
        )
        covered = (a0 >= 0) & (a1 >= 0) & (a2 >= 0) & (a0 + a1 + a2 > 0) & (zw >= -1) & (zw <= 1)
        covered &= ok[..., None]
        zw = torch.where(covered, zw, torch.full_like(zw, float("inf")))
        chunk_z, chunk_arg = zw.min(dim=1)  # first minimum: lowest id on ties
        better = chunk_z < best_z
        best_z = torch.where(better, chunk_z, best_z)
        best_id = torch.where(better, ids[chunk_arg], best_id)
    return best_id


def rasterize(pos: Tensor, tri: Tensor, resolution: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Reference rasterizer. pos [B, V, 4], tri [T, 3] int -> rast [B, H, W, 4], rast_db [B, H, W, 4]."""
    height, width = resolution
    B = pos.shape[0]
    tri = tri.long()
    if tri.shape[0] == 0:
        zeros = pos.new_zeros(B, height, width, 4)
        return zeros, zeros.clone()
    best = _nearest_triangle(pos.detach(), tri, height, width)  # [B, HW]
    hit = best >= 0
    px, py = pixel_ndc(height, width, pos.device, pos.dtype)
    px = px.repeat(height).expand(B, -1)
    py = py.repeat_interleave(width).expand(B, -1)

    # Recompute the winners' outputs differentiably.
    safe = best.clamp(min=0)
    vid = tri[safe]  # [B, HW, 3]
    v = torch.gather(pos, 1, vid.reshape(B, -1, 1).expand(-1, -1, 4)).reshape(B, -1, 3, 4)
    A, _ = tri_inverse(v)  # [B, HW, 3, 3]
    a0, a1, a2 = _alpha(A, px, py)
    S = a0 + a1 + a2
    S = torch.where(hit, S, torch.ones_like(S))
    u, w = a0 / S, a1 / S
    aw = a0 * v[..., 0, 3] + a1 * v[..., 1, 3] + a2 * v[..., 2, 3]
    aw = torch.where(hit, aw, torch.ones_like(aw))
    zw = (a0 * v[..., 0, 2] + a1 * v[..., 1, 2] + a2 * v[..., 2, 2]) / aw
    sx, sy = 2.0 / width, -2.0 / height
    cx = A[..., 0, 0] + A[..., 1, 0] + A[..., 2, 0]
    cy = A[..., 0, 1] + A[..., 1, 1] + A[..., 2, 1]
    db = torch.stack(
        [
            (A[..., 0, 0] - u * cx) / S * sx,
            (A[..., 0, 1] - u * cy) / S * sy,
            (A[..., 1, 0] - w * cx) / S * sx,
            (A[..., 1, 1] - w * cy) / S * sy,
        ],
        -1,
    )
    rast = torch.stack([u, w, zw, (best + 1).to(pos.dtype)], -1)
    zero = torch.zeros((), device=pos.device, dtype=pos.dtype)
    rast = torch.where(hit[..., None], rast, zero)
    db = torch.where(hit[..., None], db, zero)
    return rast.reshape(B, height, width, 4), db.reshape(B, height, width, 4)
