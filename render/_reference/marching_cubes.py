"""Pure-PyTorch twin of the discrete part of marching cubes (see :mod:`scenegrad.render.iso`):
which grid edges the surface crosses and how the cells' triangles connect them. Same outputs, in
the same order, as the native kernels (``cuda/iso/``).

Order: vertices by their grid edge ``(i, j, k, axis)`` lexicographically (the edge from grid point
``(i, j, k)`` one step along ``axis``); triangles by cell ``(i, j, k)``, then in table order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scenegrad.render.iso.tables import CORNER_OFFSETS, EDGE_AXIS, EDGE_CORNERS


def marching_cubes_topology(values: Tensor, level: float, tris: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """``values [X, Y, Z]`` -> ``(edges [V, 2] int64, faces [F, 3] int32)``.

    ``edges`` holds the flat indices (into ``values.flatten()``) of each vertex's two grid points,
    the lower one first; ``faces`` index the vertices. ``tris [256, M, 3]`` and ``counts [256]`` are
    :func:`scenegrad.render.iso.tables.triangle_table` as tensors on ``values``' device.
    """
    X, Y, Z = values.shape
    device = values.device
    inside = values < level
    crossed = torch.zeros(X, Y, Z, 3, dtype=torch.bool, device=device)
    crossed[:-1, :, :, 0] = inside[:-1] != inside[1:]
    crossed[:, :-1, :, 1] = inside[:, :-1] != inside[:, 1:]
    crossed[:, :, :-1, 2] = inside[:, :, :-1] != inside[:, :, 1:]
    flat = crossed.flatten()
    ids = torch.cumsum(flat, 0) - 1  # vertex id of each crossed edge (garbage elsewhere)
    crossed_at = flat.nonzero()[:, 0]
    point, axis = crossed_at // 3, crossed_at % 3
    strides = torch.tensor([Y * Z, Z, 1], device=device)
    edges = torch.stack([point, point + strides[axis]], dim=1)

    if min(X, Y, Z) < 2:
        return edges, torch.zeros(0, 3, dtype=torch.int32, device=device)
    case = torch.zeros(X - 1, Y - 1, Z - 1, dtype=torch.long, device=device)
    for c, (dx, dy, dz) in enumerate(CORNER_OFFSETS.tolist()):
        case |= inside[dx:X - 1 + dx, dy:Y - 1 + dy, dz:Z - 1 + dz].long() << c
    ntri = counts.long()[case]
    cells = (ntri > 0).nonzero()  # [A, 3], lexicographic
    cell_case = case[cells[:, 0], cells[:, 1], cells[:, 2]]
    local = tris.long()[cell_case]  # [A, M, 3] edge numbers, -1 padded
    valid = torch.arange(local.shape[1], device=device)[None, :] < ntri[cells[:, 0], cells[:, 1], cells[:, 2]][:, None]
    local = local[valid]  # [F, 3]
    cell_of = cells[:, None, :].expand(-1, valid.shape[1], -1)[valid]  # [F, 3] cell of each triangle
    offsets = torch.as_tensor(CORNER_OFFSETS[EDGE_CORNERS[:, 0]], device=device)  # [12, 3]
    edge_axis = torch.as_tensor(EDGE_AXIS, device=device)
    p = cell_of[:, None, :] + offsets[local]  # [F, 3 corners, 3] lower grid point of each edge
    flat_edge = ((p[..., 0] * Y + p[..., 1]) * Z + p[..., 2]) * 3 + edge_axis[local]
    faces = ids[flat_edge].to(torch.int32)
    return edges, faces
