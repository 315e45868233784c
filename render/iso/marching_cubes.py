"""``marching_cubes``: the iso-surface of a dense grid of values, differentiable in the values.

Grid: ``values[i, j, k]`` is the field at ``origin + (i, j, k) * spacing`` (world units, as
scikit-image's ``marching_cubes`` with ``spacing``; ``origin`` shifts it). A corner is *inside* when
its value is below ``level``; the surface has one vertex on every grid edge whose ends are on
different sides (shared by all the cells around that edge, so no duplicates), at the linear
interpolation ``t = (level - v0) / (v1 - v0)`` from the lower end. Cells are triangulated with the
face-consistent tables of :mod:`scenegrad.render.iso.tables`, so the mesh is closed wherever the
surface does not leave the grid, 2-manifold, and wound counter-clockwise around the normal that
points towards increasing values (outward for a signed distance field, negative inside).

Layers: the discrete part (which edges are crossed, how cells connect them) runs in the native
kernels (``cuda/iso/marching_cubes.h``, C++ with OpenMP, CUDA) or the pure-PyTorch reference
(:mod:`scenegrad.render._reference.marching_cubes`), chosen by ``backend``
(:mod:`scenegrad.render.backend`, area ``"iso"``); the vertex positions are then gathered from
``values`` in torch, which makes them differentiable: ``d vertex / d v0 = (level - v1) / (v1 - v0)^2``
and ``d vertex / d v1 = -(level - v0) / (v1 - v0)^2`` along the edge, times the spacing.

>>> import torch
>>> x = torch.linspace(-1, 1, 17)
>>> sdf = torch.stack(torch.meshgrid(x, x, x, indexing="ij"), -1).norm(dim=-1) - 0.7
>>> iso = marching_cubes(sdf, spacing=2 / 16, origin=(-1.0, -1.0, -1.0))
>>> iso.vertices.norm(dim=1).sub(0.7).abs().max() < 0.01, iso.faces.dtype
(tensor(True), torch.int32)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from scenegrad.render import backend as _backend
from scenegrad.render._reference import marching_cubes as _reference
from scenegrad.render.iso.tables import triangle_table

__all__ = ["IsoSurface", "marching_cubes", "marching_cubes_topology"]

_AREA = "iso"


@dataclass(eq=False)
class IsoSurface:
    """A triangle mesh extracted from a grid.

    Fields:
        vertices: ``[V, 3]`` world positions (differentiable in the grid values).
        faces: ``[F, 3]`` int32, counter-clockwise around the normal towards increasing values.
        normals: ``[V, 3]`` unit field gradients at the vertices (towards increasing values), or
            ``None`` unless requested.
        edges: ``[V, 2]`` int64 flat grid indices of the two grid points each vertex lies between.
    """

    vertices: Tensor
    faces: Tensor
    normals: Tensor | None
    edges: Tensor

    def to_mesh(self):
        """As a :class:`scenegrad.render.mesh.Mesh` (vertex normals included when present)."""
        from scenegrad.render.mesh import Mesh

        return Mesh(vertices=self.vertices, faces=self.faces, normals=self.normals)


def _tables(device: torch.device) -> tuple[Tensor, Tensor]:
    tris, counts = triangle_table()
    return torch.as_tensor(tris, device=device), torch.as_tensor(counts, device=device)


def _vec3(x: float | Sequence[float] | Tensor, name: str) -> tuple[float, float, float]:
    values = [float(x)] * 3 if isinstance(x, (int, float)) else [float(v) for v in x]
    if len(values) != 3 or not all(map(lambda v: v == v and abs(v) != float("inf"), values)):
        raise ValueError(f"{name} must be a finite number or 3 finite numbers, got {x!r}")
    return values[0], values[1], values[2]


class _EdgeFraction(torch.autograd.Function):
    """``t = (level - v0) / (v1 - v0)`` per vertex; the backward adds both ends' gradients into one
    dense grid with ``index_add_`` (autograd's gather backward would build one grid per end)."""

    @staticmethod
    def forward(ctx, values: Tensor, edges: Tensor, level: float) -> Tensor:
        flat = values.reshape(-1)
        v0, v1 = flat[edges[:, 0]], flat[edges[:, 1]]
        ctx.save_for_backward(v0, v1, edges)
        ctx.level, ctx.shape = level, values.shape
        return (level - v0) / (v1 - v0)

    @staticmethod
    def backward(ctx, g: Tensor):
        v0, v1, edges = ctx.saved_tensors
        inv = 1.0 / (v1 - v0)
        dt_dv0 = (ctx.level - v1) * inv * inv
        dt_dv1 = (v0 - ctx.level) * inv * inv
        grad = g.new_zeros(ctx.shape.numel())
        grad.index_add_(0, edges[:, 0], g * dt_dv0).index_add_(0, edges[:, 1], g * dt_dv1)
        return grad.view(ctx.shape), None, None


def marching_cubes_topology(values: Tensor, level: float = 0.0, *, backend: str | None = None) -> tuple[Tensor, Tensor]:
    """The discrete part of :func:`marching_cubes`: ``(edges [V, 2] int64, faces [F, 3] int32)``
    (see :class:`IsoSurface`) of a ``[X, Y, Z]`` float tensor; no gradient. Raises ``ValueError``
    when ``values`` has NaN or inf entries."""
    which = _backend.resolve(_AREA, backend, values.device)
    tris, counts = _tables(values.device)
    values = values.detach().contiguous()
    if which == "native":  # the kernel counts non-finite values while it reads the grid
        edges, faces, bad = _backend.native_module().marching_cubes_fwd(values, float(level), tris, counts)
        bad = int(bad)
    else:
        bad = int((~torch.isfinite(values)).sum())
        if not bad:
            edges, faces = _reference.marching_cubes_topology(values, float(level), tris, counts)
    if bad:
        raise ValueError(f"values has {bad} non-finite entries (NaN or inf); marching cubes needs a finite field")
    return edges, faces


def marching_cubes(
    values: Tensor,  # [X, Y, Z]
    level: float = 0.0,
    *,
    spacing: float | Sequence[float] = 1.0,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    normals: bool = False,
    backend: str | None = None,
) -> IsoSurface:
    """Extract the ``level`` iso-surface of a grid of values (conventions: see the module docstring).

    Args:
        values: ``[X, Y, Z]`` float32/float64 field samples, finite, on CPU or CUDA.
        level: the iso value.
        spacing: grid step along ``(i, j, k)`` in world units (one number or three).
        origin: world position of ``values[0, 0, 0]``.
        normals: also return unit normals from the field's gradient (central differences, one-sided
            at the border, interpolated along each vertex's edge), pointing towards increasing values.
        backend: ``"auto"``, ``"native"`` or ``"reference"`` for the discrete part.

    Returns:
        An :class:`IsoSurface`; empty (``V = F = 0``) when the level is not crossed.

    Raises:
        ValueError: for a tensor that is not a 3D float grid, or has non-finite values.
    """
    if not isinstance(values, Tensor) or values.dim() != 3 or not values.is_floating_point():
        got = list(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"values must be a [X, Y, Z] floating-point tensor, got {got}")
    level = float(level)
    step = torch.tensor(_vec3(spacing, "spacing"), dtype=values.dtype, device=values.device)
    if bool((step <= 0).any()):
        raise ValueError(f"spacing must be > 0, got {spacing!r}")
    start = torch.tensor(_vec3(origin, "origin"), dtype=values.dtype, device=values.device)

    edges, faces = marching_cubes_topology(values, level, backend=backend)
    t = _EdgeFraction.apply(values, edges, level)  # in [0, 1]: the ends lie on different sides of level
    X, Y, Z = values.shape
    strides = torch.tensor([Y * Z, Z, 1], device=values.device)
    ijk = (edges[:, :1] // strides) % torch.tensor([X, Y, Z], device=values.device)  # [V, 3] lower grid point
    axis = (edges[:, 1] - edges[:, 0] == strides[1]).long() + 2 * (edges[:, 1] - edges[:, 0] == 1).long()
    along = torch.nn.functional.one_hot(axis, 3).to(values.dtype)
    vertices = start + (ijk.to(values.dtype) + t[:, None] * along) * step

    vertex_normals = None
    if normals:
        with torch.no_grad():
            grads = torch.stack(torch.gradient(values, spacing=[float(s) for s in step]), dim=-1).reshape(-1, 3)
            n = torch.lerp(grads[edges[:, 0]], grads[edges[:, 1]], t.detach()[:, None])
            vertex_normals = n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return IsoSurface(vertices=vertices, faces=faces, normals=vertex_normals, edges=edges)
