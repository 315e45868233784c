"""``backend="nvdiffrast"`` for the four mesh primitives: the same calls run by nvdiffrast's CUDA
rasterizer and kernels (``nvdiffrast.torch``), their outputs in scenegrad's conventions. Imported
only when the adapter is requested; CUDA tensors and float32 only (nvdiffrast's limits).

Conventions: nvdiffrast writes image row 0 at NDC ``y = -1``, scenegrad at ``y = +1``. Clip ``y`` is
negated on the way in (:func:`~scenegrad.render.conventions.to_nvdiffrast_clip`), so nvdiffrast's
rows come out top-first and its ``rast``, ``rast_db`` (derivatives per pixel step, ``Y`` down) and
antialiased images are scenegrad's. Barycentrics, ``z/w`` and triangle ids + 1 mean the same in
both; so do attribute derivatives, texture coordinates (``v`` down the texture's rows) and the
boundary and filter modes. Cube maps: scenegrad picks each direction's face and nvdiffrast samples
it as a 2D texture. ``mask`` is applied after the lookup (``torch.where``); ``antialias`` builds
nvdiffrast's own topology hash on each call (``topology`` is not used).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from scenegrad.render.conventions import to_nvdiffrast_clip

_CONTEXTS: dict[str, object] = {}


def _nvdiffrast():
    import nvdiffrast.torch as dr

    return dr


def _check(name: str, x: Tensor) -> None:
    if x.device.type != "cuda":
        raise RuntimeError(f"backend 'nvdiffrast' needs CUDA tensors (nvdiffrast has no CPU path), got {name} on "
                           f"{x.device}; use backend='native' on CPU")
    if x.dtype != torch.float32:
        raise ValueError(f"backend 'nvdiffrast' takes float32 only, got {name} as {x.dtype}")


def _context(device: torch.device):
    """One ``RasterizeCudaContext`` per device, kept (creating one allocates its buffers)."""
    key = str(device)
    if key not in _CONTEXTS:
        _CONTEXTS[key] = _nvdiffrast().RasterizeCudaContext(device=device)
    return _CONTEXTS[key]


def rasterize(pos: Tensor, tri: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """``[B, V, 4]`` clip positions (scenegrad's) -> ``(rast, rast_db)``, each ``[B, H, W, 4]``."""
    _check("pos", pos)
    dr = _nvdiffrast()
    rast, rast_db = dr.rasterize(_context(pos.device), to_nvdiffrast_clip(pos).contiguous(), tri, (height, width),
                                 grad_db=True)
    return rast, rast_db


def interpolate(attr: Tensor, rast: Tensor, tri: Tensor, rast_db: Tensor | None,
                diff: Sequence[int] | Literal["all"] | None) -> tuple[Tensor, Tensor]:
    """``dr.interpolate``; ``out_da`` is ``[B, H, W, 0]`` without derivatives, as scenegrad's."""
    _check("attr", attr)
    dr = _nvdiffrast()
    if not diff:
        out, _ = dr.interpolate(attr.contiguous(), rast.contiguous(), tri)
        return out, out.new_zeros((*out.shape[:3], 0))
    out, out_da = dr.interpolate(attr.contiguous(), rast.contiguous(), tri, rast_db=rast_db.contiguous(),
                                 diff_attrs=list(diff))
    return out, out_da


def texture(tex: Tensor, uv: Tensor, uv_da: Tensor | None, *, filter_mode: str, boundary_mode: str,
            mip_level_bias: Tensor | float | None, max_mip_level: int | None, mask: Tensor | None) -> Tensor:
    """``dr.texture`` on ``[B, H, W, C]`` textures (batched ``uv``); ``mask`` zeroes the pixels left out."""
    _check("uv", uv)
    dr = _nvdiffrast()
    bias = None
    if mip_level_bias is not None:
        bias = torch.as_tensor(mip_level_bias, dtype=uv.dtype, device=uv.device).expand(uv.shape[:3]).contiguous()
    mip = filter_mode == "linear-mipmap-linear"
    out = dr.texture(tex.contiguous(), uv.contiguous(), uv_da.contiguous() if mip else None, mip_level_bias=bias,
                     filter_mode=filter_mode, boundary_mode=boundary_mode,
                     max_mip_level=max_mip_level if mip else None)
    return out if mask is None else torch.where(mask[..., None], out, 0.0)


def antialias(color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor) -> Tensor:
    """``dr.antialias`` with scenegrad's clip positions (negated ``y``, as in :func:`rasterize`)."""
    _check("color", color)
    dr = _nvdiffrast()
    return dr.antialias(color.contiguous(), rast.contiguous(), to_nvdiffrast_clip(pos).contiguous(), tri)
