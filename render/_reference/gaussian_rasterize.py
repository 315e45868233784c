"""Pure-PyTorch tile rasterization of projected Gaussians, the twin of ``cuda/gaussians/rasterize.*``.

For each camera and each ``tile_size``-square tile: gather the Gaussians whose box
``[mean - radius, mean + radius]`` overlaps the tile, sort them by ``(depth, index)``, and
composite them front to back at every pixel centre ``p = (x + 0.5, y + 0.5)`` of the tile::

    d     = mean - p
    sigma = 0.5 (a dx^2 + c dy^2) + b dx dy              (skip if sigma < 0)
    alpha = min(0.999, opacity exp(-sigma))               (skip if alpha < 1/255)
    T_i   = prod_{j < i, included} (1 - alpha_j)          (stop before the first i with T_i (1 - alpha_i) < 1e-4)
    color = sum_i alpha_i T_i c_i + T_final background,   alpha_out = 1 - T_final

The per-pixel loop is written here with a running product (``cumprod``) over the tile's sorted
Gaussians: skipped Gaussians contribute a factor 1, and since the product only decreases, "the
loop has not stopped yet" is exactly "the product up to and including this Gaussian is >= 1e-4".
Autograd gives every gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

ALPHA_MAX = 0.999
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4


def tile_bounds(means2d: Tensor, radii: Tensor, tile_size: int, tiles_x: int, tiles_y: int) -> Tensor:
    """[..., 2] means, [...] radii -> [..., 4] int64 (x0, x1, y0, y1): the touched tiles are x0 <= tx < x1."""
    r = radii.to(means2d.dtype)
    lo = torch.floor((means2d - r[..., None]) / tile_size)
    hi = torch.ceil((means2d + r[..., None]) / tile_size)
    x0 = lo[..., 0].clamp(0, tiles_x).long()
    x1 = hi[..., 0].clamp(0, tiles_x).long()
    y0 = lo[..., 1].clamp(0, tiles_y).long()
    y1 = hi[..., 1].clamp(0, tiles_y).long()
    culled = radii <= 0
    x1 = torch.where(culled, x0, x1)
    return torch.stack([x0, x1, y0, y1], -1)


def composite_tile(means2d: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, pixels: Tensor
                   ) -> tuple[Tensor, Tensor]:
    """Front-to-back compositing of n depth-sorted Gaussians at P pixel centres.

    means2d [n, 2], conics [n, 3], colors [n, D], opacities [n], pixels [P, 2] -> (color [P, D], T_final [P]).
    """
    d = means2d[None, :, :] - pixels[:, None, :]  # [P, n, 2]
    dx, dy = d[..., 0], d[..., 1]
    a, b, c = conics[:, 0], conics[:, 1], conics[:, 2]
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp(opacities * torch.exp(-sigma), max=ALPHA_MAX)
    valid = (sigma >= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(valid, alpha, torch.zeros_like(alpha))
    running = torch.cumprod(1 - alpha, dim=1)  # T after each Gaussian, [P, n]
    included = valid & (running >= T_MIN)
    ones = torch.ones_like(running[:, :1])
    before = torch.cat([ones, running[:, :-1]], 1)  # T before each Gaussian
    weights = torch.where(included, alpha * before, torch.zeros_like(alpha))
    color = weights @ colors
    # Included Gaussians form a prefix of the valid ones; T_final is the product over them.
    factors = torch.where(included, 1 - alpha, torch.ones_like(alpha))
    return color, factors.prod(1)


def rasterize_to_pixels(means2d: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, depths: Tensor,
                        radii: Tensor, width: int, height: int, tile_size: int = 16,
                        backgrounds: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Same contract as :func:`scenegrad.render.gaussians.rasterize_to_pixels` (inputs already checked).

    means2d [C, N, 2], conics [C, N, 3], colors [C, N, D], opacities [C, N], depths [C, N], radii [C, N]
    -> (colors [C, H, W, D], alphas [C, H, W, 1]).
    """
    C, N, D = colors.shape
    dtype, device = means2d.dtype, means2d.device
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    out_color = torch.zeros(C, height, width, D, dtype=dtype, device=device)
    out_T = torch.ones(C, height, width, dtype=dtype, device=device)
    bounds = tile_bounds(means2d.detach(), radii, tile_size, tiles_x, tiles_y)  # [C, N, 4]
    index = torch.arange(N, device=device)
    for cam in range(C):
        # Sort once per camera by (depth, index): a stable sort of the depths keeps index order on ties.
        order = torch.sort(depths[cam].detach(), stable=True).indices
        x0, x1, y0, y1 = bounds[cam, order].unbind(-1)
        for ty in range(tiles_y):
            for tx in range(tiles_x):
                hit = (x0 <= tx) & (tx < x1) & (y0 <= ty) & (ty < y1)
                ids = index[order][hit]
                if ids.numel() == 0:
                    continue
                ys = torch.arange(ty * tile_size, min(height, (ty + 1) * tile_size), device=device)
                xs = torch.arange(tx * tile_size, min(width, (tx + 1) * tile_size), device=device)
                gy, gx = torch.meshgrid(ys, xs, indexing="ij")
                pixels = torch.stack([gx, gy], -1).reshape(-1, 2).to(dtype) + 0.5
                color, T = composite_tile(means2d[cam, ids], conics[cam, ids], colors[cam, ids],
                                          opacities[cam, ids], pixels)
                out_color[cam, ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] = color.reshape(len(ys), len(xs), D)
                out_T[cam, ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1] = T.reshape(len(ys), len(xs))
    if backgrounds is not None:
        out_color = out_color + out_T[..., None] * backgrounds[:, None, None, :]
    return out_color, (1 - out_T)[..., None]
