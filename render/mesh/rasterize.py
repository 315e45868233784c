"""``rasterize``: triangles in clip space to per-pixel barycentrics, depth and triangle ids.

Layers: :func:`rasterize` (validates, documents, dispatches) -> ``_RasterizeNative`` (autograd)
-> ``rasterize_fwd``/``rasterize_bwd`` in ``cuda/bindings.cpp`` (CPU or CUDA launcher) -> the
per-pixel math in ``cuda/mesh/rasterize.h``. The pure-PyTorch twin is
:func:`scenegrad.render._reference.rasterize.rasterize`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from scenegrad.render import backend as _backend
from scenegrad.render._reference import rasterize as _reference


class Rasterized(NamedTuple):
    """Output of :func:`rasterize`; unpacks as ``rast, rast_db = rasterize(...)``."""

    rast: Tensor  # [B, H, W, 4]: u, v, z/w, triangle id + 1 (0 = background)
    rast_db: Tensor  # [B, H, W, 4]: du/dX, du/dY, dv/dX, dv/dY in pixels (X right, Y down)


def rasterize(
    pos: Tensor,
    tri: Tensor,
    resolution: tuple[int, int],
    *,
    backend: str | None = None,
) -> Rasterized:
    """Rasterize triangles given in clip space; differentiable with respect to ``pos``.

    Args:
        pos: ``[B, V, 4]`` or ``[V, 4]`` clip-space vertex positions ``(x, y, z, w)``, float32 or
            float64, any device. Use :func:`scenegrad.render.conventions.world_to_clip` to get them
            from scenegrad (OpenCV) cameras.
        tri: ``[T, 3]`` vertex indices (int32; other integer types are converted). Both windings
            are drawn (no back-face culling).
        resolution: ``(height, width)`` in pixels.
        backend: ``"auto"`` (default; ``$SCENEGRAD_BACKEND`` overrides), ``"native"``,
            ``"reference"`` (see :mod:`scenegrad.render.backend`) or ``"nvdiffrast"`` (CUDA, float32;
            :mod:`~scenegrad.render.mesh.nvdiffrast_adapter`).

    Returns:
        ``Rasterized(rast, rast_db)``, each ``[B, H, W, 4]`` (``[H, W, 4]`` for unbatched ``pos``):

        - ``rast``: perspective-correct barycentrics ``u, v`` (weights of the triangle's first and
          second vertex; the third gets ``1 - u - v``), ``z/w`` (NDC depth, -1 at the near plane),
          and the triangle id + 1, 0 where no triangle covers the pixel.
        - ``rast_db``: ``du/dX, du/dY, dv/dX, dv/dY``, derivatives per pixel step, for texture
          mip-level selection.

    Conventions: image rows run top to bottom; pixel ``(i, j)`` (column, row) has its centre at
    NDC ``x = 2 (i + 0.5) / W - 1``, ``y = 1 - 2 (j + 0.5) / H``, so NDC ``+y`` is up and row 0 is
    at the top. nvdiffrast puts row 0 at NDC ``y = -1``: its ``rast`` for the same ``pos`` is this
    one flipped along the row axis. Triangles crossing ``w = 0`` are handled exactly (homogeneous
    rasterization, no clipping); fragments with ``z/w`` outside ``[-1, 1]`` are dropped. The
    nearest fragment wins; equal depths go to the lower triangle id. At most ``2^24 - 1``
    triangles (ids are stored exactly in float32).

    Gradients flow from ``u``, ``v``, ``z/w`` and ``rast_db`` to ``pos``; coverage itself is
    piecewise constant (use ``antialias`` to get gradients at silhouettes).

    Example:
        >>> import torch
        >>> from scenegrad.render.mesh import rasterize
        >>> pos = torch.tensor([[-0.8, -0.8, 0.0, 1.0], [0.8, -0.8, 0.0, 1.0], [0.0, 0.8, 0.0, 1.0]])
        >>> tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
        >>> rast, rast_db = rasterize(pos, tri, (32, 32))
        >>> rast.shape, int(rast[16, 16, 3])
        (torch.Size([32, 32, 4]), 1)
    """
    height, width = _check_resolution(resolution)
    unbatched = pos.dim() == 2
    if unbatched:
        pos = pos[None]
    if pos.dim() != 3 or pos.shape[-1] != 4:
        raise ValueError(f"pos must have shape [B, V, 4] or [V, 4], got {list(pos.shape)}")
    if not pos.is_floating_point() or pos.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"pos must be float32 or float64, got {pos.dtype}")
    tri = _check_tri(tri, pos.shape[1], pos.device)
    pos = pos.contiguous()

    which = _backend.resolve("mesh", backend, pos.device)
    if which == "native":
        rast, rast_db = _RasterizeNative.apply(pos, tri, height, width)
    elif which == "nvdiffrast":
        from . import nvdiffrast_adapter

        rast, rast_db = nvdiffrast_adapter.rasterize(pos, tri, height, width)
    else:
        rast, rast_db = _reference.rasterize(pos, tri, (height, width))
    if unbatched:
        rast, rast_db = rast[0], rast_db[0]
    return Rasterized(rast, rast_db)


class _RasterizeNative(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos: Tensor, tri: Tensor, height: int, width: int):
        rast, rast_db = _backend.native_module().rasterize_fwd(pos, tri, height, width)
        ctx.save_for_backward(pos, tri, rast)
        ctx.set_materialize_grads(False)
        return rast, rast_db

    @staticmethod
    def backward(ctx, grad_rast: Tensor | None, grad_db: Tensor | None):
        pos, tri, rast = ctx.saved_tensors
        if grad_rast is None and grad_db is None:
            return None, None, None, None
        if grad_rast is None:
            grad_rast = torch.zeros_like(rast)
        grad_db = grad_db.contiguous() if grad_db is not None else None
        grad_pos = _backend.native_module().rasterize_bwd(pos, tri, rast, grad_rast.contiguous(), grad_db)
        return grad_pos, None, None, None


def _check_resolution(resolution: tuple[int, int]) -> tuple[int, int]:
    if len(resolution) != 2:
        raise ValueError(f"resolution must be (height, width), got {resolution!r}")
    height, width = int(resolution[0]), int(resolution[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"resolution must be positive, got {height}x{width}")
    return height, width


def _check_tri(tri: Tensor, num_vertices: int, device: torch.device) -> Tensor:
    if tri.dim() != 2 or tri.shape[-1] != 3:
        raise ValueError(f"tri must have shape [T, 3], got {list(tri.shape)}")
    if tri.is_floating_point() or tri.is_complex():
        raise ValueError(f"tri must hold integer vertex indices, got {tri.dtype}")
    if tri.device != device:
        raise ValueError(f"tri is on {tri.device} but pos is on {device}")
    if tri.shape[0] >= 1 << 24:
        raise ValueError(f"at most 2^24 - 1 triangles, got {tri.shape[0]}")
    if tri.numel() and (int(tri.min()) < 0 or int(tri.max()) >= num_vertices):
        raise ValueError(f"tri holds vertex indices outside [0, {num_vertices})")
    return tri.to(torch.int32).contiguous()
