"""Pure-PyTorch Pulsar-style sphere rendering, the twin of ``cuda/spheres/``.

Everything happens in the camera frame (OpenCV axes). With ``u = (x + 0.5 - cx) / fx`` and
``v = (y + 0.5 - cy) / fy``, pixel ``(x, y)`` looks along the ray ``o + s * d``: perspective cameras
have ``o = 0`` and ``d = (u, v, 1)``; orthographic ones ``o = (u, v, 0)`` (``fx``, ``fy`` in pixels
per unit length) and ``d = (0, 0, 1)``. Either way the parameter ``s`` is the camera-frame depth of
the point ``o + s * d``. For a sphere with centre ``c`` and radius ``r``, with ``c' = c - o``::

    k     = (d.c') / |d|^2;  dist2 = |c' - k d|^2    squared distance from the ray to the centre
    h     = 1 - dist2 / r^2                          1 at the centre, 0 on the silhouette
    z     = k - sqrt(r^2 h / |d|^2)                 depth of the front intersection
    hit   = h > 0  and  near <= z <= far
    e     = opacity * (1 - (z - near) / (far - near)) / gamma
                                                     (in [0, 1 / gamma]; near spheres weigh more;
                                                      as in Pulsar, the opacity scales the exponent
                                                      too, so a fading sphere also falls back)
    w     = opacity * h * exp(e)                     (h is the soft edge: the weight falls to 0
                                                      at the silhouette, so gradients reach the
                                                      position and the radius)
    w_bg  = exp(bg_eps / gamma)

and per pixel, over its hits::

    W        = sum_i w_i + w_bg
    features = (sum_i w_i f_i + w_bg background) / W
    alpha    = sum_i w_i / W
    depth    = sum_i w_i z_i / sum_i w_i             (0 where nothing is hit)

All weights are computed relative to the pixel's largest exponent (``max(e_i, bg_eps / gamma)``,
without gradient: it cancels in every ratio), so small ``gamma`` neither overflows nor
underflows. The ``n_ids`` strongest contributors (largest ``w_i``) of each pixel are returned with
their normalised weights ``w_i / W`` (ids ``-1`` and weight 0 where there are fewer hits).

Pixels are processed in chunks of bounded ``[B, P, N]`` size; with gradients on, each chunk is
checkpointed (recomputed in backward) so memory stays bounded. Autograd gives every gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

CHUNK_ELEMENTS = 1 << 22  # B * P * N elements per pixel chunk


def _pixel_chunk(
    u: Tensor, v: Tensor, centers: Tensor, radii: Tensor, features: Tensor, opacities: Tensor,
    background: Tensor, near: float, far: float, gamma: float, bg_eps: float, orthographic: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Pixels' normalised coordinates ``u, v [B, P]`` -> weights ``w [B, P, N]`` (shifted),
    ``W [B, P]``, ``features [B, P, D]``, ``alpha [B, P]``, ``depth [B, P]``."""
    X, Y, Z = (centers[..., k][:, None, :] for k in range(3))  # [B, 1, N]
    u, v = u[..., None], v[..., None]  # [B, P, 1]
    if orthographic:  # origin (u, v, 0), direction (0, 0, 1)
        X, Y = X - u, Y - v
        a, b = torch.zeros_like(u), torch.zeros_like(v)
    else:  # origin 0, direction (u, v, 1)
        a, b = u, v
    r2 = (radii * radii)[None, None, :]
    dd = a * a + b * b + 1
    k = (a * X + b * Y + Z) / dd  # the ray's closest point to the centre is k (a, b, 1)
    dist2 = (X - k * a).square() + (Y - k * b).square() + (Z - k).square()
    h = 1 - dist2 / r2
    inside = h > 0
    q = torch.where(inside, r2 * h / dd, torch.ones_like(h))
    z = k - q.sqrt()
    hit = inside & (z >= near) & (z <= far)
    e = opacities[None, None, :] * (1 - (z - near) / (far - near)) / gamma
    floor = torch.full_like(e[..., 0], bg_eps / gamma)
    with torch.no_grad():
        m = torch.maximum(torch.where(hit, e, torch.full_like(e, -torch.inf)).amax(-1), floor)  # [B, P]
    e = torch.where(hit, e, m[..., None])
    w = torch.where(hit, opacities[None, None, :] * h * torch.exp(e - m[..., None]), torch.zeros_like(e))
    w_bg = torch.exp(floor - m)
    sw = w.sum(-1)
    W = sw + w_bg
    feats = (w @ features + w_bg[..., None] * background) / W[..., None]
    alpha = sw / W
    zs = torch.where(hit, z, torch.zeros_like(z))
    depth = torch.where(sw > 0, (w * zs).sum(-1) / torch.where(sw > 0, sw, torch.ones_like(sw)), torch.zeros_like(sw))
    return w, W, feats, alpha, depth


def render_spheres(
    centers: Tensor, radii: Tensor, features: Tensor, opacities: Tensor, intrinsics: Tensor,
    width: int, height: int, near: float, far: float, gamma: float, background: Tensor | None,
    bg_eps: float, n_ids: int, orthographic: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Camera-frame spheres -> images (the formulas in the module docstring).

    Args:
        centers: ``[B, N, 3]`` sphere centres in each camera's frame.
        radii: ``[N]`` (> 0), features ``[N, D]``, opacities ``[N]``.
        intrinsics: ``[B, 4]`` ``(fx, fy, cx, cy)``.
        background: ``[D]`` or ``None`` (zeros).
        orthographic: orthographic cameras (see the module docstring) instead of perspective ones.

    Returns:
        ``features [B, H, W, D]``, ``alpha [B, H, W]``, ``depth [B, H, W]``, ``ids [B, H, W, K]``
        int32, ``weights [B, H, W, K]`` (``K = n_ids``).
    """
    B, N, _ = centers.shape
    D = features.shape[1]
    if background is None:
        background = features.new_zeros(D)
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=centers.dtype, device=centers.device) + 0.5,
        torch.arange(width, dtype=centers.dtype, device=centers.device) + 0.5,
        indexing="ij",
    )
    xs, ys = xs.reshape(-1), ys.reshape(-1)
    fx, fy, cx, cy = (intrinsics[:, k : k + 1] for k in range(4))
    P = xs.numel()
    step = max(1, CHUNK_ELEMENTS // max(1, B * N))
    grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (centers, radii, features, opacities, intrinsics, background)
    )
    outs: list[list[Tensor]] = [[], [], [], [], []]
    for p0 in range(0, P, step):
        u = (xs[None, p0 : p0 + step] - cx) / fx
        v = (ys[None, p0 : p0 + step] - cy) / fy
        args = (u, v, centers, radii, features, opacities, background, near, far, gamma, bg_eps, orthographic)
        if grad:  # recomputed in backward: only the chunk's outputs stay in memory
            w, W, feats, alpha, depth = checkpoint(_pixel_chunk, *args, use_reentrant=False)
        else:
            w, W, feats, alpha, depth = _pixel_chunk(*args)
        k = min(n_ids, N)
        with torch.no_grad():
            top_w, top_i = (w.topk(k, dim=-1) if k > 0 else (w[..., :0], w[..., :0].long()))
            top_i = torch.where(top_w > 0, top_i, torch.full_like(top_i, -1)).to(torch.int32)
            top_w = top_w / W[..., None]
            pad = n_ids - k
            if pad:
                top_i = torch.cat([top_i, top_i.new_full((*top_i.shape[:-1], pad), -1)], -1)
                top_w = torch.cat([top_w, top_w.new_zeros((*top_w.shape[:-1], pad))], -1)
        for out, value in zip(outs, (feats, alpha, depth, top_i, top_w), strict=True):
            out.append(value)
    feats, alpha, depth, ids, weights = (torch.cat(o, dim=1) for o in outs)
    return (
        feats.reshape(B, height, width, D), alpha.reshape(B, height, width), depth.reshape(B, height, width),
        ids.reshape(B, height, width, n_ids), weights.reshape(B, height, width, n_ids),
    )
