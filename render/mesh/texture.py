"""``texture``: differentiable texture lookups (nearest, bilinear, trilinear mipmapped; wrap,
clamp, zero borders; cube maps for environment lighting).

Layers: :func:`texture` (validates) -> ``_TextureNative`` (autograd) -> ``texture_mip`` /
``texture_fwd`` / ``texture_bwd`` in ``cuda/bindings.cpp`` -> the per-texel
and per-pixel math (pyramid, level of detail, lookups) in ``cuda/mesh/texture.h``. The pure-PyTorch
twin builds the pyramid (:func:`mip_pyramid`) and the level of detail (:func:`level_of_detail`) in
torch and samples with :func:`scenegrad.render._reference.texture.texture_lookup`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scenegrad.render import backend as _backend
from scenegrad.render._reference import texture as _reference

FILTER_MODES = {"nearest": _reference.NEAREST, "linear": _reference.LINEAR,
                "linear-mipmap-linear": _reference.LINEAR_MIPMAP_LINEAR}
BOUNDARY_MODES = {"wrap": _reference.WRAP, "clamp": _reference.CLAMP, "zero": _reference.ZERO}
MAX_MIP_LEVELS = 16


def mip_pyramid(tex: Tensor, max_mip_level: int | None = None) -> list[Tensor]:
    """Mip levels of ``tex [B, H, W, C]`` in pure torch: each level averages 2x2 blocks of the
    previous one (sizes halve, rounded down; a 1-texel axis stays 1; an odd last row or column is
    dropped), down to 1x1 or ``max_mip_level`` levels below the base (:func:`mip_sizes`).
    Differentiable. The native path builds the same pyramid in ``cuda/mesh/texture.h``."""
    levels = [tex]
    for _ in mip_sizes(tex.shape[1], tex.shape[2], max_mip_level)[1:]:
        levels.append(_Downsample2x.apply(levels[-1]))
    return levels


class _Downsample2x(torch.autograd.Function):
    """2x2 box filter along rows and columns of ``[B, H, W, C]`` (an axis of size 1 is kept)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        h, w = x.shape[1:3]
        ctx.shape = x.shape
        if h > 1:
            x = 0.5 * (x[:, 0 : h - 1 : 2] + x[:, 1:h:2])
        if w > 1:
            x = 0.5 * (x[:, :, 0 : w - 1 : 2] + x[:, :, 1:w:2])
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        B, h, w, C = ctx.shape
        sy, sx = (2 if h > 1 else 1), (2 if w > 1 else 1)
        h2, w2 = grad.shape[1:3]
        up = (grad / (sy * sx))[:, :, None, :, None].expand(B, h2, sy, w2, sx, C).reshape(B, h2 * sy, w2 * sx, C)
        if up.shape[1] == h and up.shape[2] == w:
            return up
        out = grad.new_zeros(ctx.shape)
        out[:, : up.shape[1], : up.shape[2]] = up
        return out


def texture(
    tex: Tensor,
    uv: Tensor,
    uv_da: Tensor | None = None,
    *,
    filter_mode: str = "auto",
    boundary_mode: str = "wrap",
    mip_level_bias: Tensor | float | None = None,
    max_mip_level: int | None = None,
    mask: Tensor | None = None,
    backend: str | None = None,
) -> Tensor:
    """Sample a texture at per-pixel coordinates; differentiable with respect to ``tex`` (every mip
    level comes from it), ``uv`` and, for mipmapped lookups, ``uv_da`` and ``mip_level_bias``.

    Args:
        tex: ``[B, H, W, C]`` or ``[H, W, C]`` (shared by the batch) texture, rows top to bottom.
            With ``boundary_mode="cube"``: ``[B, 6, H, W, C]`` or ``[6, H, W, C]``, faces in the
            order +X, -X, +Y, -Y, +Z, -Z.
        uv: ``[B, Ho, Wo, 2]`` (or ``[Ho, Wo, 2]``) texture coordinates: ``u`` left to right and
            ``v`` top to bottom over ``[0, 1]`` (scenegrad's UV convention, glTF's; OBJ files are
            flipped by the loaders). With ``"cube"``: ``[..., 3]`` lookup directions.
        uv_da: ``[B, Ho, Wo, 4]`` screen-space derivatives ``(du/dX, du/dY, dv/dX, dv/dY)``, from
            ``interpolate(uvs, rast, tri, rast_db, diff_attrs="all")``; selects the mip level.
        filter_mode: ``"nearest"``, ``"linear"`` (bilinear), ``"linear-mipmap-linear"``
            (trilinear; needs ``uv_da``), or ``"auto"``: trilinear when ``uv_da`` is given, else
            bilinear.
        boundary_mode: ``"wrap"``, ``"clamp"``, ``"zero"`` or ``"cube"``.
        mip_level_bias: added to the level of detail (scalar or ``[B, Ho, Wo]``).
        max_mip_level: the coarsest level to build (default: down to 1x1).
        mask: ``[B, Ho, Wo]`` (or ``[Ho, Wo]``) bool, the pixels to sample; the others give 0 and
            pass no gradient. ``rast[..., 3] > 0`` (the pixels a triangle covers) gives what
            ``torch.where(rast[..., 3:] > 0, texture(...), 0.0)`` gives, without sampling the
            background and without that ``where`` (with its backward, 1–2 ms of a 512² render on
            2 CPU cores).
        backend: ``"auto"``, ``"native"``, ``"reference"`` (:mod:`scenegrad.render.backend`) or
            ``"nvdiffrast"`` (CUDA, float32; :mod:`~scenegrad.render.mesh.nvdiffrast_adapter`).

    Returns:
        ``[B, Ho, Wo, C]`` (unbatched ``uv``: ``[Ho, Wo, C]``).

    The level of detail is ``log2`` of the longer screen-space footprint axis in texels,
    ``max(|(du/dX W, dv/dX H)|, |(du/dY W, dv/dY H)|)``, plus the bias, clamped to the pyramid.
    Cube maps are sampled bilinearly on the face each direction hits (no filtering across seams,
    no mipmaps).

    Example:
        >>> import torch
        >>> from scenegrad.render.mesh import texture
        >>> checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2
        >>> tex = checker[..., None].float()                 # [8, 8, 1]
        >>> uv = torch.tensor([[[0.5 / 8, 0.5 / 8], [1.5 / 8, 0.5 / 8]]])  # two texel centres
        >>> texture(tex, uv, filter_mode="linear")[..., 0]
        tensor([[0., 1.]])
    """
    if boundary_mode == "cube":
        out = _texture_cube(tex, uv, backend=backend)
        return out if mask is None else torch.where(mask[..., None], out, 0.0)
    if boundary_mode not in BOUNDARY_MODES:
        raise ValueError(f"boundary_mode must be one of {[*BOUNDARY_MODES, 'cube']}, got {boundary_mode!r}")
    if filter_mode == "auto":
        filter_mode = "linear-mipmap-linear" if uv_da is not None else "linear"
    if filter_mode not in FILTER_MODES:
        raise ValueError(f"filter_mode must be one of {['auto', *FILTER_MODES]}, got {filter_mode!r}")
    unbatched = uv.dim() == 3
    if unbatched:
        uv = uv[None]
        uv_da = uv_da[None] if uv_da is not None else None
    if uv.dim() != 4 or uv.shape[-1] != 2:
        raise ValueError(f"uv must have shape [B, H, W, 2] or [H, W, 2], got {list(uv.shape)}")
    if tex.dim() == 3:
        tex = tex[None]
    if tex.dim() != 4 or tex.shape[0] not in (1, uv.shape[0]):
        raise ValueError(
            f"tex must have shape [B, H, W, C] (B = 1 or {uv.shape[0]}) or [H, W, C], got {list(tex.shape)}"
        )
    if tex.dtype != uv.dtype or tex.device != uv.device:
        raise ValueError(f"tex ({tex.dtype}, {tex.device}) and uv ({uv.dtype}, {uv.device}) must match")

    if mask is not None:
        if unbatched and mask.dim() == 2:
            mask = mask[None]
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(uv.shape[:3]) or mask.device != uv.device:
            raise ValueError(f"mask must be a bool tensor of shape {list(uv.shape[:3])} on {uv.device}, got "
                             f"{mask.dtype} {list(mask.shape)} on {mask.device}")

    mip = filter_mode == "linear-mipmap-linear"
    if mip and (uv_da is None or uv_da.shape != (*uv.shape[:3], 4)):
        raise ValueError(f"trilinear filtering needs uv_da of shape {[*uv.shape[:3], 4]}")
    sizes = mip_sizes(tex.shape[1], tex.shape[2], max_mip_level) if mip else [(tex.shape[1], tex.shape[2])]
    boundary, filt = BOUNDARY_MODES[boundary_mode], FILTER_MODES[filter_mode]

    which = _backend.resolve("mesh", backend, uv.device)
    if which == "nvdiffrast":
        from . import nvdiffrast_adapter

        out = nvdiffrast_adapter.texture(tex, uv, uv_da, filter_mode=filter_mode, boundary_mode=boundary_mode,
                                         mip_level_bias=mip_level_bias, max_mip_level=max_mip_level, mask=mask)
    elif which == "native":
        bias = None
        if mip and mip_level_bias is not None:
            bias = torch.as_tensor(mip_level_bias, dtype=uv.dtype, device=uv.device)
            bias = bias.expand(uv.shape[:3]).contiguous()
        out = _TextureNative.apply(tex.contiguous(), uv.contiguous(), uv_da.contiguous() if mip else None, bias,
                                   mask.contiguous() if mask is not None else None, sizes, boundary, filt)
    else:
        levels = mip_pyramid(tex, max_mip_level) if mip else [tex]
        lod = level_of_detail(uv_da, tex.shape[1], tex.shape[2], mip_level_bias) if mip else None
        buf = torch.cat([lvl.reshape(lvl.shape[0], -1, lvl.shape[-1]) for lvl in levels], 1)
        out = _reference.texture_lookup(buf, _offsets(sizes), sizes, uv, lod, boundary, filt)
        if mask is not None:
            out = torch.where(mask[..., None], out, 0.0)
    return out[0] if unbatched else out


def mip_sizes(height: int, width: int, max_mip_level: int | None = None) -> list[tuple[int, int]]:
    """``(h, w)`` of every level :func:`mip_pyramid` builds for a ``height x width`` texture."""
    sizes = [(height, width)]
    limit = MAX_MIP_LEVELS - 1 if max_mip_level is None else min(max_mip_level, MAX_MIP_LEVELS - 1)
    while len(sizes) <= limit and sizes[-1] != (1, 1):
        h, w = sizes[-1]
        sizes.append((max(h // 2, 1), max(w // 2, 1)))
    return sizes


def _offsets(sizes: list[tuple[int, int]]) -> list[int]:
    offsets = [0]
    for h, w in sizes[:-1]:
        offsets.append(offsets[-1] + h * w)
    return offsets


class _TextureNative(torch.autograd.Function):
    """Mip pyramid, level of detail and lookups in the native kernels; the backward scatters texel
    gradients into every level and folds them down into the texture in one pass."""

    @staticmethod
    def forward(ctx, tex: Tensor, uv: Tensor, uv_da: Tensor | None, bias: Tensor | None, mask: Tensor | None,
                sizes: list[tuple[int, int]], boundary: int, filter_mode: int):
        native = _backend.native_module()
        offsets_t = torch.tensor(_offsets(sizes), dtype=torch.int64)
        sizes_t = torch.tensor(sizes, dtype=torch.int32)
        # Level 0 is tex itself; mip levels 1 and up go to one flattened buffer.
        if len(sizes) > 1:
            coarse = native.texture_mip(tex, offsets_t, sizes_t)
        else:
            coarse = tex.new_empty(tex.shape[0], 0, tex.shape[-1])
        out = native.texture_fwd(tex, coarse, offsets_t, sizes_t, uv, uv_da, bias, mask, boundary, filter_mode)
        ctx.save_for_backward(tex, coarse, uv, uv_da, bias, mask)
        ctx.layout = (offsets_t, sizes_t, tex.shape)
        ctx.modes = (boundary, filter_mode)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        tex, coarse, uv, uv_da, bias, mask = ctx.saved_tensors
        offsets_t, sizes_t, tex_shape = ctx.layout
        native = _backend.native_module()
        grad_tex, grad_uv, grad_uv_da, grad_lod = native.texture_bwd(
            tex, coarse, offsets_t, sizes_t, uv, uv_da, bias, mask, *ctx.modes, grad_out.contiguous()
        )
        grad_tex = grad_tex.view(tex_shape)
        if ctx.modes[1] == _reference.NEAREST:
            grad_uv = None  # piecewise constant in uv
        return grad_tex, grad_uv, grad_uv_da, grad_lod if bias is not None else None, None, None, None, None


def level_of_detail(uv_da: Tensor, height: int, width: int, bias: Tensor | float | None = None) -> Tensor:
    """Mip level of detail ``[B, H, W]`` from ``uv_da [B, H, W, 4]`` for a ``height x width`` texture."""
    dx = torch.stack([uv_da[..., 0] * width, uv_da[..., 2] * height], -1)
    dy = torch.stack([uv_da[..., 1] * width, uv_da[..., 3] * height], -1)
    rho2 = torch.maximum(dx.square().sum(-1), dy.square().sum(-1))
    lod = 0.5 * torch.log2(rho2.clamp(min=1e-20))
    if bias is not None:
        lod = lod + bias
    return lod


# Cube map faces +X, -X, +Y, -Y, +Z, -Z: (major axis, its sign, axis and sign of u, axis and sign of v):
# OpenGL's table (s, t) = (u, v), with t = 0 at row 0 of each face image, directions in the map's frame.
_CUBE_FACES = [
    (0, 1.0, 2, -1.0, 1, -1.0),
    (0, -1.0, 2, 1.0, 1, -1.0),
    (1, 1.0, 0, 1.0, 2, 1.0),
    (1, -1.0, 0, 1.0, 2, -1.0),
    (2, 1.0, 0, 1.0, 1, -1.0),
    (2, -1.0, 0, -1.0, 1, -1.0),
]


def _texture_cube(tex: Tensor, dirs: Tensor, *, backend: str | None) -> Tensor:
    if tex.dim() == 4:
        tex = tex[None]
    if tex.dim() != 5 or tex.shape[1] != 6:
        raise ValueError(f"a cube map must have shape [B, 6, H, W, C] or [6, H, W, C], got {list(tex.shape)}")
    if dirs.shape[-1] != 3:
        raise ValueError(f"cube map lookups take directions [..., 3], got {list(dirs.shape)}")
    unbatched = dirs.dim() == 3
    if unbatched:
        dirs = dirs[None]
    absd = dirs.abs()
    major = absd.argmax(-1)
    sign = torch.gather(dirs, -1, major[..., None])[..., 0] >= 0
    face = 2 * major + (~sign).long()
    out = None
    for f, (axis, s, ua, us, va, vs) in enumerate(_CUBE_FACES):
        ma = (dirs[..., axis] * s).clamp(min=1e-12)
        u = 0.5 * (us * dirs[..., ua] / ma + 1)
        v = 0.5 * (vs * dirs[..., va] / ma + 1)
        sample = texture(tex[:, f], torch.stack([u, v], -1), filter_mode="linear", boundary_mode="clamp",
                         backend=backend)
        out = sample if out is None else out
        out = torch.where((face == f)[..., None], sample, out)
    assert out is not None
    return out[0] if unbatched else out


__all__ = ["texture", "mip_pyramid", "mip_sizes", "level_of_detail", "FILTER_MODES", "BOUNDARY_MODES", "MAX_MIP_LEVELS"]
