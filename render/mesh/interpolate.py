"""``interpolate``: vertex attributes to pixels, with the barycentrics from :func:`rasterize`.

Layers: :func:`interpolate` -> ``_InterpolateNative`` (autograd) -> ``interpolate_fwd`` /
``interpolate_bwd`` in ``cuda/bindings.cpp`` -> the per-pixel math in ``cuda/mesh/interpolate.h``.
The pure-PyTorch twin is :func:`scenegrad.render._reference.interpolate.interpolate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from scenegrad.render import backend as _backend
from scenegrad.render._reference import interpolate as _reference
from scenegrad.render.mesh.rasterize import _check_tri


class Interpolated(NamedTuple):
    """Output of :func:`interpolate`; unpacks as ``out, out_da = interpolate(...)``."""

    out: Tensor  # [B, H, W, A]
    out_da: Tensor  # [B, H, W, 2 D]: (dA/dX, dA/dY) per differentiated attribute, in pixels


def interpolate(
    attr: Tensor,
    rast: Tensor,
    tri: Tensor,
    rast_db: Tensor | None = None,
    diff_attrs: Sequence[int] | Literal["all"] | None = None,
    *,
    backend: str | None = None,
) -> Interpolated:
    """Interpolate per-vertex attributes over the pixels that :func:`rasterize` covered.

    Args:
        attr: ``[B, V, A]`` per-view attributes or ``[V, A]`` shared by every view; float32/64,
            same dtype and device as ``rast``.
        rast: ``[B, H, W, 4]`` (or ``[H, W, 4]``) from :func:`rasterize`.
        tri: ``[T, 3]`` the triangles given to :func:`rasterize`.
        rast_db: ``[B, H, W, 4]`` from :func:`rasterize`; needed only with ``diff_attrs``.
        diff_attrs: attribute indices whose screen-space derivatives to return, ``"all"``, or
            ``None`` (none; ``out_da`` is then ``[B, H, W, 0]``).
        backend: ``"auto"``, ``"native"``, ``"reference"`` (:mod:`scenegrad.render.backend`) or
            ``"nvdiffrast"`` (CUDA, float32; :mod:`~scenegrad.render.mesh.nvdiffrast_adapter`).

    Returns:
        ``Interpolated(out, out_da)``: ``out[b, y, x] = u a[i0] + v a[i1] + (1 - u - v) a[i2]`` on
        covered pixels, 0 on background; ``out_da`` holds ``(dA/dX, dA/dY)`` per requested
        attribute, interleaved, in units per pixel (X right, Y down). Unbatched ``rast`` gives
        unbatched outputs.

    Differentiable with respect to ``attr``, ``rast`` (u, v: so gradients reach vertex positions
    through :func:`rasterize`) and ``rast_db``.

    Example:
        >>> import torch
        >>> from scenegrad.render.mesh import interpolate, rasterize
        >>> pos = torch.tensor([[-1.0, -1.0, 0.0, 1.0], [1.0, -1.0, 0.0, 1.0], [-1.0, 1.0, 0.0, 1.0]])
        >>> tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
        >>> rast, rast_db = rasterize(pos, tri, (16, 16))
        >>> colors = torch.eye(3)  # red, green, blue corners
        >>> rgb, _ = interpolate(colors, rast, tri)
        >>> rgb.shape
        torch.Size([16, 16, 3])
    """
    unbatched = rast.dim() == 3
    if unbatched:
        rast = rast[None]
        rast_db = rast_db[None] if rast_db is not None else None
    if rast.dim() != 4 or rast.shape[-1] != 4:
        raise ValueError(f"rast must have shape [B, H, W, 4] or [H, W, 4], got {list(rast.shape)}")
    if attr.dim() not in (2, 3):
        raise ValueError(f"attr must have shape [B, V, A] or [V, A], got {list(attr.shape)}")
    if attr.dim() == 3 and attr.shape[0] != rast.shape[0]:
        raise ValueError(f"attr has batch {attr.shape[0]} but rast has batch {rast.shape[0]}")
    if attr.dtype != rast.dtype or attr.device != rast.device:
        raise ValueError(f"attr ({attr.dtype}, {attr.device}) and rast ({rast.dtype}, {rast.device}) must match")
    tri = _check_tri(tri, attr.shape[-2], rast.device)
    A = attr.shape[-1]
    if diff_attrs is None:
        diff: list[int] = []
    elif isinstance(diff_attrs, str):
        if diff_attrs != "all":
            raise ValueError(f"diff_attrs must be a list of indices, 'all' or None, got {diff_attrs!r}")
        diff = list(range(A))
    else:
        diff = [int(k) for k in diff_attrs]
        if any(k < 0 or k >= A for k in diff):
            raise ValueError(f"diff_attrs {diff} outside the {A} attributes")
    if diff:
        if rast_db is None:
            raise ValueError("diff_attrs needs rast_db (the second output of rasterize)")
        if rast_db.shape != rast.shape:
            raise ValueError(f"rast_db must have rast's shape {list(rast.shape)}, got {list(rast_db.shape)}")
    else:
        rast_db = None

    which = _backend.resolve("mesh", backend, rast.device)
    if which == "native":
        diff_t = torch.tensor(diff, dtype=torch.int32, device=rast.device)
        out, out_da = _InterpolateNative.apply(
            attr.contiguous(), rast.contiguous(), tri, rast_db.contiguous() if rast_db is not None else None, diff_t
        )
    elif which == "nvdiffrast":
        from . import nvdiffrast_adapter

        out, out_da = nvdiffrast_adapter.interpolate(attr, rast, tri, rast_db, diff)
    else:
        out, out_da = _reference.interpolate(attr, rast, tri, rast_db, diff)
    if unbatched:
        out, out_da = out[0], out_da[0]
    return Interpolated(out, out_da)


class _InterpolateNative(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attr: Tensor, rast: Tensor, tri: Tensor, rast_db: Tensor | None, diff: Tensor):
        out, out_da = _backend.native_module().interpolate_fwd(attr, rast, tri, rast_db, diff)
        ctx.save_for_backward(attr, rast, tri, rast_db, diff)
        ctx.set_materialize_grads(False)
        return out, out_da

    @staticmethod
    def backward(ctx, grad_out: Tensor | None, grad_out_da: Tensor | None):
        attr, rast, tri, rast_db, diff = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros(*rast.shape[:3], attr.shape[-1], dtype=attr.dtype, device=attr.device)
        if grad_out_da is not None and grad_out_da.numel() == 0:
            grad_out_da = None
        grad_attr, grad_rast, grad_db = _backend.native_module().interpolate_bwd(
            attr, rast, tri, rast_db, diff, grad_out.contiguous(),
            grad_out_da.contiguous() if grad_out_da is not None else None,
        )
        if rast_db is None or grad_out_da is None:
            grad_db = None
        return grad_attr, grad_rast, None, grad_db, None
