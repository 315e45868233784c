"""``antialias``: analytic antialiasing of silhouettes, which gives gradients to vertex positions
where visibility changes (plain rasterization cannot).

Layers: :func:`antialias` -> ``_AntialiasNative`` (autograd) -> ``antialias_fwd`` /
``antialias_bwd`` in ``cuda/bindings.cpp`` -> the per-pair math in ``cuda/mesh/antialias.h``.
The pure-PyTorch twin is :func:`scenegrad.render._reference.antialias.antialias`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scenegrad.render import backend as _backend
from scenegrad.render._reference import antialias as _reference
from scenegrad.render.mesh.rasterize import _check_tri

antialias_topology = _reference.antialias_topology


def antialias(
    color: Tensor,
    rast: Tensor,
    pos: Tensor,
    tri: Tensor,
    *,
    topology: Tensor | None = None,
    backend: str | None = None,
) -> Tensor:
    """Blend colours across silhouette edges, with gradients to ``color`` and ``pos``.

    Args:
        color: ``[B, H, W, C]`` (or ``[H, W, C]``) shaded image, float32/64, e.g. from
            :func:`interpolate` or a texture lookup.
        rast: ``[B, H, W, 4]`` (or ``[H, W, 4]``) the :func:`rasterize` output for ``pos``, ``tri``.
        pos: ``[B, V, 4]`` or ``[V, 4]`` the clip-space positions given to :func:`rasterize`.
        tri: ``[T, 3]`` the triangles given to :func:`rasterize`.
        topology: ``[T, 3]`` int32 from :func:`antialias_topology`; computed on every call when
            omitted, so pass it when the same mesh is drawn many times.
        backend: ``"auto"``, ``"native"``, ``"reference"`` (:mod:`scenegrad.render.backend`) or
            ``"nvdiffrast"`` (CUDA, float32; :mod:`~scenegrad.render.mesh.nvdiffrast_adapter`).

    Returns:
        ``[B, H, W, C]`` (unbatched in, unbatched out): ``color`` where each pair of neighbouring
        pixels separated by a silhouette edge is blended by how far the true edge lies from the
        pixel boundary (Laine et al. 2020). Differentiable with respect to ``color`` and ``pos``.

    An edge is a silhouette when the triangle across it faces the other way on screen or when
    there is none, which ``topology`` says; triangles with a vertex behind the camera (w <= 0)
    are not antialiased.

    Example:
        >>> import torch
        >>> from scenegrad.render.mesh import antialias, interpolate, rasterize
        >>> pos = torch.tensor([[-0.7, -0.6, 0.0, 1.0], [0.8, -0.5, 0.0, 1.0], [0.1, 0.7, 0.0, 1.0]])
        >>> tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
        >>> rast, _ = rasterize(pos, tri, (32, 32))
        >>> white, _ = interpolate(torch.ones(3, 1), rast, tri)
        >>> image = antialias(white, rast, pos, tri)
        >>> bool(((image > 0) & (image < 1)).any())  # soft edges
        True
    """
    unbatched = color.dim() == 3
    if unbatched:
        color, rast = color[None], rast[None]
    if color.dim() != 4 or rast.dim() != 4 or rast.shape[-1] != 4 or rast.shape[:3] != color.shape[:3]:
        raise ValueError(
            f"color [B, H, W, C] and rast [B, H, W, 4] must match, got {list(color.shape)} and {list(rast.shape)}"
        )
    if pos.dim() not in (2, 3) or pos.shape[-1] != 4 or (pos.dim() == 3 and pos.shape[0] != color.shape[0]):
        raise ValueError(f"pos must have shape [B, V, 4] (B = {color.shape[0]}) or [V, 4], got {list(pos.shape)}")
    if not (color.dtype == rast.dtype == pos.dtype) or not (color.device == rast.device == pos.device):
        raise ValueError("color, rast and pos must have the same dtype and device")
    tri = _check_tri(tri, pos.shape[-2], color.device)
    if topology is None:
        topology = antialias_topology(tri)
    elif topology.shape != tri.shape:
        raise ValueError(f"topology must have tri's shape {list(tri.shape)}, got {list(topology.shape)}")
    topology = topology.to(device=color.device, dtype=torch.int32).contiguous()

    which = _backend.resolve("mesh", backend, color.device)
    if which == "native":
        out = _AntialiasNative.apply(color.contiguous(), rast.contiguous(), pos.contiguous(), tri, topology)
    elif which == "nvdiffrast":
        from . import nvdiffrast_adapter

        out = nvdiffrast_adapter.antialias(color, rast, pos, tri)
    else:
        out = _reference.antialias(color, rast, pos, tri, topology)
    return out[0] if unbatched else out


class _AntialiasNative(torch.autograd.Function):
    @staticmethod
    def forward(ctx, color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor, opposite: Tensor):
        out = _backend.native_module().antialias_fwd(color, rast, pos, tri, opposite)
        ctx.save_for_backward(color, rast, pos, tri, opposite)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        color, rast, pos, tri, opposite = ctx.saved_tensors
        grad_color, grad_pos = _backend.native_module().antialias_bwd(
            color, rast, pos, tri, opposite, grad_out.contiguous()
        )
        return grad_color, None, grad_pos, None, None
