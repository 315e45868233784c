"""Pure-PyTorch texture lookups, the twin of ``cuda/mesh/texture.*`` (see ``texture.h``).

A texture is a mip pyramid flattened into ``buf [Bt, texels, C]`` with per-level ``offsets`` and
``sizes (h, w)``; ``u`` runs left to right, ``v`` top to bottom, texel centres at ``(i + 0.5) / n``.
"""

from __future__ import annotations

import torch
from torch import Tensor

WRAP, CLAMP, ZERO = 0, 1, 2
NEAREST, LINEAR, LINEAR_MIPMAP_LINEAR = 0, 1, 2


def _wrap(i: Tensor, n: int, boundary: int) -> Tensor:
    """Texel index under the boundary mode, -1 for "zero" outside the texture."""
    if boundary == WRAP:
        return torch.remainder(i, n)
    if boundary == CLAMP:
        return i.clamp(0, n - 1)
    return torch.where((i < 0) | (i >= n), torch.full_like(i, -1), i)


def _gather(buf: Tensor, batch: Tensor, idx: Tensor) -> Tensor:
    """buf [Bt, N, C] at texel idx [B, P] (-1 reads zero) of batch entries batch [B, 1] -> [B, P, C]."""
    values = buf[batch, idx.clamp(min=0)]
    return torch.where((idx >= 0)[..., None], values, torch.zeros((), dtype=buf.dtype, device=buf.device))


def _bilinear(buf, batch, u, v, offset: int, h: int, w: int, boundary: int) -> Tensor:
    x = u * w - 0.5
    y = v * h - 0.5
    x0f, y0f = torch.floor(x).detach(), torch.floor(y).detach()
    ax, ay = x - x0f, y - y0f
    x0, y0 = x0f.long(), y0f.long()
    out = 0
    for j, wy in ((0, 1 - ay), (1, ay)):
        yy = _wrap(y0 + j, h, boundary)
        for i, wx in ((0, 1 - ax), (1, ax)):
            xx = _wrap(x0 + i, w, boundary)
            idx = torch.where((xx >= 0) & (yy >= 0), offset + yy * w + xx, torch.full_like(xx, -1))
            out = out + (wx * wy)[..., None] * _gather(buf, batch, idx)
    return out


def texture_lookup(
    buf: Tensor, offsets: list[int], sizes: list[tuple[int, int]], uv: Tensor, lod: Tensor | None,
    boundary: int, filter_mode: int,
) -> Tensor:
    """buf [Bt, N, C], uv [B, H, W, 2], lod [B, H, W] -> [B, H, W, C]."""
    B, H, W, _ = uv.shape
    C = buf.shape[-1]
    batch = (torch.arange(B, device=uv.device) if buf.shape[0] > 1 else torch.zeros(B, dtype=torch.long,
                                                                                      device=uv.device))[:, None]
    u, v = uv[..., 0].reshape(B, -1), uv[..., 1].reshape(B, -1)
    if filter_mode == NEAREST:
        h, w = sizes[0]
        xx = _wrap(torch.floor(u * w).long(), w, boundary)
        yy = _wrap(torch.floor(v * h).long(), h, boundary)
        idx = torch.where((xx >= 0) & (yy >= 0), offsets[0] + yy * w + xx, torch.full_like(xx, -1))
        return _gather(buf, batch, idx).reshape(B, H, W, C)
    if filter_mode == LINEAR:
        h, w = sizes[0]
        return _bilinear(buf, batch, u, v, offsets[0], h, w, boundary).reshape(B, H, W, C)
    assert lod is not None
    levels = len(offsets)
    lod = lod.reshape(B, -1).clamp(min=0)
    lod = torch.where(lod >= levels - 1, torch.full_like(lod, levels - 1), lod)
    l0 = torch.floor(lod).detach().long().clamp(max=levels - 1)
    t = lod - l0.to(lod.dtype)
    out = 0
    for level in range(levels):
        h, w = sizes[level]
        weight = torch.where(l0 == level, 1 - t, torch.zeros_like(t)) + torch.where(l0 + 1 == level, t,
                                                                                   torch.zeros_like(t))
        out = out + weight[..., None] * _bilinear(buf, batch, u, v, offsets[level], h, w, boundary)
    return out.reshape(B, H, W, C)
