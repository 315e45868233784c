"""Pure-PyTorch silhouette antialiasing, the twin of ``cuda/mesh/antialias.*`` (see
``cuda/mesh/antialias.h`` for the method). Vectorised over the pixel pairs whose triangle ids
differ; the blends are scattered with ``index_add`` and autograd gives every gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 0.0625  # tolerate 1/16 pixel of inaccuracy, as the kernel does


def antialias_topology(tri: Tensor) -> Tensor:
    """Opposite vertex across each edge: tri [T, 3] -> [T, 3] int32, -1 where no neighbour.

    Edge ``k`` of a triangle joins its vertices ``k + 1`` and ``k + 2`` (mod 3), so the entry ``k``
    is the vertex, of a triangle sharing that edge, that is not on the edge. Edges shared by more
    than two triangles pair each triangle with the next one in a cycle; degenerate triangles (a
    repeated vertex) neither have nor are neighbours.
    """
    t = tri.long()
    T = t.shape[0]
    if T == 0:
        return torch.zeros(0, 3, dtype=torch.int32, device=tri.device)
    a, b = t[:, [1, 2, 0]], t[:, [2, 0, 1]]
    lo, hi = torch.minimum(a, b).reshape(-1), torch.maximum(a, b).reshape(-1)
    n = int(t.max()) + 1
    # Degenerate triangles (a repeated vertex) take part in no adjacency: give their edges unique keys.
    degenerate = ((t[:, 0] == t[:, 1]) | (t[:, 1] == t[:, 2]) | (t[:, 2] == t[:, 0])).repeat_interleave(3)
    key = torch.where(degenerate, -1 - torch.arange(3 * T, device=tri.device), lo * n + hi)
    order = torch.argsort(key, stable=True)
    sk = key[order]
    idx = torch.arange(3 * T, device=tri.device)
    new_group = torch.ones_like(sk, dtype=torch.bool)
    new_group[1:] = sk[1:] != sk[:-1]
    start = torch.cummax(torch.where(new_group, idx, torch.zeros_like(idx)), 0).values
    group = torch.cumsum(new_group.long(), 0) - 1
    sizes = torch.bincount(group)
    end = start + sizes[group]
    partner = torch.where(idx + 1 < end, idx + 1, start)
    opposite_sorted = t.reshape(-1)[order[partner]]
    opposite_sorted = torch.where((sizes[group] > 1) & (lo[order] != hi[order]), opposite_sorted, -1)
    out = torch.empty(3 * T, dtype=torch.long, device=tri.device)
    out[order] = opposite_sorted
    return out.reshape(T, 3).to(torch.int32)


def _same_sign(a: Tensor, b: Tensor) -> Tensor:
    return (a < 0) == (b < 0)


def _pixel_coords(p: Tensor, rx: Tensor, ry: Tensor, xh: float, yh: float) -> tuple[Tensor, Tensor]:
    """Pixel-space (X right, Y down) of clip-space points p [N, 3, 4], relative to pixel centres (rx, ry) [N]."""
    w = torch.where(p[..., 3] > 0, p[..., 3], torch.ones_like(p[..., 3]))
    X = p[..., 0] / w * xh + xh - (rx[:, None] + 0.5)
    Y = yh - p[..., 1] / w * yh - (ry[:, None] + 0.5)
    return X, Y


def antialias(color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor, opposite: Tensor) -> Tensor:
    """color [B, H, W, C], rast [B, H, W, 4], pos [B, V, 4] or [V, 4], tri, opposite [T, 3] -> [B, H, W, C]."""
    B, H, W, C = color.shape
    flat = color.reshape(-1, C)
    out = flat.clone()
    ids = rast[..., 3].detach().long().reshape(-1) - 1
    depth = rast[..., 2].detach().reshape(-1)
    tri, opposite = tri.long(), opposite.long()
    xh, yh = 0.5 * W, 0.5 * H
    batched = pos.dim() == 3
    for d in (0, 1):
        b, y, x = torch.meshgrid(
            torch.arange(B, device=color.device),
            torch.arange(H - d, device=color.device),
            torch.arange(W - 1 + d, device=color.device),
            indexing="ij",
        )
        b, y, x = b.reshape(-1), y.reshape(-1), x.reshape(-1)
        p0 = (b * H + y) * W + x
        p1 = p0 + (W if d else 1)
        id0, id1 = ids[p0], ids[p1]
        keep = id0 != id1
        b, y, x, p0, p1, id0, id1 = (v[keep] for v in (b, y, x, p0, p1, id0, id1))
        t = torch.where(id0 >= 0, id0, id1)
        t = torch.where((id0 >= 0) & (id1 >= 0) & ~(depth[p0] < depth[p1]), id1, t)
        ref1 = t == id1
        ds = torch.where(ref1, -1.0, 1.0).to(color.dtype)
        rx = x + (ref1 & (d == 0)).long()
        ry = y + (ref1 & (d == 1)).long()

        vi, oi = tri[t], opposite[t]  # [N, 3]
        if batched:
            pv = pos[b[:, None], vi]
            po = pos[b[:, None], oi.clamp(min=0)]
        else:
            pv, po = pos[vi], pos[oi.clamp(min=0)]
        po = torch.where((oi < 0)[..., None], pv, po)  # no neighbour: the edge is a silhouette
        valid = (pv[..., 3] > 0).all(-1) & (po[..., 3] > 0).all(-1)

        X, Y = _pixel_coords(pv, rx, ry, xh, yh)
        OX, OY = _pixel_coords(po, rx, ry, xh, yh)
        bb = (X[:, 1] - X[:, 0]) * (Y[:, 2] - Y[:, 0]) - (X[:, 2] - X[:, 0]) * (Y[:, 1] - Y[:, 0])
        k1, k2 = [1, 2, 0], [2, 0, 1]
        a = (X[:, k1] - OX) * (Y[:, k2] - OY) - (X[:, k2] - OX) * (Y[:, k1] - OY)  # [N, 3]
        silhouette = _same_sign(a, bb[:, None])
        valid &= silhouette.any(-1)
        if d == 1:
            X, Y = Y, X
        dx = X[:, k2] - X[:, k1]
        dy = Y[:, k2] - Y[:, k1]
        crosses = ~_same_sign(Y[:, k1], Y[:, k2])
        dy_safe = torch.where(crosses, dy, torch.ones_like(dy))
        r = torch.where(crosses, ds[:, None] * (X[:, k1] * dy - Y[:, k1] * dx) / dy_safe, torch.full_like(dy, -1e30))
        di = torch.where(r[:, 1] > r[:, 0], 1, 0)
        di = torch.where(r[:, 2] > r.gather(1, di[:, None])[:, 0], 2, di)
        pick = di[:, None]
        dc = r.gather(1, pick)[:, 0]
        valid &= crosses.gather(1, pick)[:, 0] & silhouette.gather(1, pick)[:, 0]
        valid &= dy.gather(1, pick)[:, 0].abs() >= dx.gather(1, pick)[:, 0].abs()
        valid &= (dc > -_EPS) & (dc < 1 + _EPS)
        alpha = ds * (0.5 - dc.clamp(0.0, 1.0))
        target = torch.where(alpha > 0, p0, p1)
        delta = alpha[:, None] * (flat[p1] - flat[p0])
        out = out.index_add(0, target[valid], delta[valid])
    return out.reshape(B, H, W, C)
