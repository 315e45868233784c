"""Pure-PyTorch attribute interpolation, the twin of ``cuda/mesh/interpolate.*``.

``out = u a[i0] + v a[i1] + (1 - u - v) a[i2]`` at covered pixels (0 elsewhere), and for the
attributes in ``diff`` the screen-space derivatives
``d out / dX = (a[i0] - a[i2]) du/dX + (a[i1] - a[i2]) dv/dX`` (likewise for Y), interleaved as
``(dA0/dX, dA0/dY, dA1/dX, ...)``. Autograd gives every gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor


def interpolate(
    attr: Tensor, rast: Tensor, tri: Tensor, rast_db: Tensor | None, diff: list[int]
) -> tuple[Tensor, Tensor]:
    """attr [B, V, A] or [V, A], rast [B, H, W, 4], tri [T, 3] -> out [B, H, W, A], out_da [B, H, W, 2 D]."""
    B, H, W, _ = rast.shape
    ids = rast[..., 3].detach().long() - 1  # [B, H, W]
    hit = (ids >= 0)[..., None]
    vid = tri.long()[ids.clamp(min=0)]  # [B, H, W, 3]
    if attr.dim() == 2:
        corners = attr[vid]  # [B, H, W, 3, A]
    else:
        batch = torch.arange(B, device=attr.device).view(B, 1, 1, 1)
        corners = attr[batch, vid]
    a0, a1, a2 = corners.unbind(-2)
    u, v = rast[..., 0:1], rast[..., 1:2]
    zero = torch.zeros((), dtype=attr.dtype, device=attr.device)
    out = torch.where(hit, u * a0 + v * a1 + (1 - u - v) * a2, zero)
    if not diff:
        return out, out.new_zeros(B, H, W, 0)
    assert rast_db is not None
    e0 = (a0 - a2)[..., diff]
    e1 = (a1 - a2)[..., diff]
    d_x = e0 * rast_db[..., 0:1] + e1 * rast_db[..., 2:3]
    d_y = e0 * rast_db[..., 1:2] + e1 * rast_db[..., 3:4]
    out_da = torch.where(hit, torch.stack([d_x, d_y], -1).flatten(-2), zero)
    return out, out_da
