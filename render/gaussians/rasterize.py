"""``rasterize_to_pixels``: tile-binned, depth-sorted alpha compositing of projected 2D Gaussians.

Layers: :func:`rasterize_to_pixels` -> ``_RasterizeToPixelsNative`` (autograd) ->
``rasterize_to_pixels_fwd`` / ``rasterize_to_pixels_bwd`` in ``cuda/gaussians/rasterize_bindings.cpp``
-> the per-pixel math in ``cuda/gaussians/rasterize.h``. The pure-PyTorch twin is
:func:`scenegrad.render._reference.gaussian_rasterize.rasterize_to_pixels`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from scenegrad.render import backend as _backend
from scenegrad.render._reference import gaussian_rasterize as _reference

_AREA = "gaussians"


class RasterizedPixels(NamedTuple):
    """Output of :func:`rasterize_to_pixels`; unpacks as ``colors, alphas = rasterize_to_pixels(...)``."""

    colors: Tensor  # [C, H, W, D]
    alphas: Tensor  # [C, H, W, 1]


def rasterize_to_pixels(
    means2d: Tensor,
    conics: Tensor,
    colors: Tensor,
    opacities: Tensor,
    depths: Tensor,
    radii: Tensor,
    width: int,
    height: int,
    *,
    tile_size: int = 16,
    backgrounds: Tensor | None = None,
    backend: str | None = None,
) -> RasterizedPixels:
    """Composite projected Gaussians front to back into ``[C, H, W, D]`` images (3DGS / gsplat semantics).

    Pixel ``(x, y)`` has its centre at ``p = (x + 0.5, y + 0.5)`` (gsplat / COLMAP convention);
    images are ``[C, H, W, D]``, row ``y`` down, column ``x`` right.

    The image is cut into ``tile_size``-square tiles. Gaussian ``i`` touches the tiles that its box
    ``[mean_i - r_i, mean_i + r_i]`` overlaps (``r_i = radii[i]``; ``r_i <= 0`` culls it); each tile
    sorts its Gaussians by ``(depth, index)`` and every pixel of the tile composites them front to back::

        d     = mean_i - p
        sigma = 0.5 (a dx^2 + c dy^2) + b dx dy            skip i if sigma < 0
        alpha = min(0.999, opacity_i exp(-sigma))            skip i if alpha < 1/255
        if T (1 - alpha) < 1e-4: stop (i not included)
        color += alpha T c_i;   T *= 1 - alpha               (T starts at 1)

    and finally ``alpha_out = 1 - T``, ``color += T * background``.

    Args:
        means2d: ``[C, N, 2]`` image-space means in pixels.
        conics: ``[C, N, 3]`` ``(a, b, c)``, the inverse 2D covariance ``[[a, b], [b, c]]``.
        colors: ``[C, N, D]``, any ``D >= 1`` (RGB, RGB + depth, features).
        opacities: ``[C, N]`` in ``[0, 1]`` (already times any antialiasing compensation).
        depths: ``[C, N]`` view-space z, the sort key (front to back).
        radii: ``[C, N]`` int32 pixel radius of the footprint; ``0`` culls the Gaussian.
        width, height: image size in pixels.
        tile_size: tile side in pixels, 1 to 32.
        backgrounds: ``[C, D]`` colour behind the Gaussians, or ``None`` (black).
        backend: ``"auto"``, ``"native"`` or ``"reference"`` (:mod:`scenegrad.render.backend`).

    All float tensors share one dtype (float32 or float64) and one device (CPU or CUDA) and must be
    finite where ``radii > 0``.

    Returns:
        ``RasterizedPixels(colors [C, H, W, D], alphas [C, H, W, 1])``.

    Differentiable with respect to ``means2d``, ``conics``, ``colors``, ``opacities`` and
    ``backgrounds`` (``depths`` and ``radii`` only choose the order and the tiles: no gradient).
    ``means2d.grad`` is the screen-space gradient that densification heuristics use.

    Example:
        >>> import torch
        >>> from scenegrad.render.gaussians.rasterize import rasterize_to_pixels
        >>> means2d = torch.tensor([[[8.0, 8.0], [20.0, 12.0]]])    # [C=1, N=2, 2]
        >>> conics = torch.tensor([[[0.1, 0.0, 0.1], [0.05, 0.01, 0.08]]])
        >>> colors = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
        >>> opacities = torch.tensor([[0.9, 0.7]])
        >>> depths = torch.tensor([[1.0, 2.0]])
        >>> radii = torch.tensor([[10, 12]], dtype=torch.int32)
        >>> rgb, alpha = rasterize_to_pixels(means2d, conics, colors, opacities, depths, radii, 32, 24)
        >>> rgb.shape, alpha.shape
        (torch.Size([1, 24, 32, 3]), torch.Size([1, 24, 32, 1]))
        >>> round(alpha[0, 7, 7, 0].item(), 4)  # pixel centre (7.5, 7.5): 0.9 exp(-0.5 * 0.1 * 0.5)
        0.8778
    """
    _check_inputs(means2d, conics, colors, opacities, depths, radii, width, height, tile_size, backgrounds)
    which = _backend.resolve(_AREA, backend, means2d.device)
    if which not in ("native", "reference"):
        raise ValueError(f"backend {which!r} is an adapter of rasterize_gaussians only; "
                         "rasterize_to_pixels runs 'native' or 'reference'")
    if which == "native":
        out_colors, out_alphas = _RasterizeToPixelsNative.apply(
            means2d.contiguous(), conics.contiguous(), colors.contiguous(), opacities.contiguous(),
            backgrounds.contiguous() if backgrounds is not None else None, depths.contiguous(),
            radii.contiguous(), int(width), int(height), int(tile_size),
        )
    else:
        out_colors, out_alphas = _reference.rasterize_to_pixels(
            means2d, conics, colors, opacities, depths, radii, int(width), int(height), int(tile_size), backgrounds
        )
    return RasterizedPixels(out_colors, out_alphas)


def _check_inputs(means2d: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, depths: Tensor,
                  radii: Tensor, width: int, height: int, tile_size: int, backgrounds: Tensor | None) -> None:
    named = {"means2d": means2d, "conics": conics, "colors": colors, "opacities": opacities, "depths": depths,
             "radii": radii}
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if colors.dim() != 3 or colors.shape[-1] < 1:
        raise ValueError(f"colors must have shape [C, N, D] with D >= 1, got {list(colors.shape)}")
    C, N, D = colors.shape
    expected = {"means2d": (C, N, 2), "conics": (C, N, 3), "opacities": (C, N), "depths": (C, N), "radii": (C, N)}
    for name, shape in expected.items():
        if tuple(named[name].shape) != shape:
            raise ValueError(f"{name} must have shape {list(shape)} (from colors [C, N, D]), "
                             f"got {list(named[name].shape)}")
    if backgrounds is not None:
        if not isinstance(backgrounds, Tensor) or tuple(backgrounds.shape) != (C, D):
            shape = list(backgrounds.shape) if isinstance(backgrounds, Tensor) else type(backgrounds).__name__
            raise ValueError(f"backgrounds must have shape [C, D] = {[C, D]}, got {shape}")
        named["backgrounds"] = backgrounds
    dtype, device = means2d.dtype, means2d.device
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"means2d must be float32 or float64, got {dtype}")
    for name, t in named.items():
        if name != "radii" and t.dtype != dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but means2d has {dtype}; all float inputs must match")
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but means2d is on {device}; all inputs must share a device")
    if radii.dtype != torch.int32:
        raise ValueError(f"radii must be int32, got {radii.dtype}")
    for name, value in (("width", width), ("height", height), ("tile_size", tile_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if width < 0 or height < 0:
        raise ValueError(f"width and height must be >= 0, got {width} x {height}")
    if not 1 <= tile_size <= 32:
        raise ValueError(f"tile_size must be in [1, 32], got {tile_size}")
    live = radii > 0
    for name in ("means2d", "conics", "colors", "opacities", "depths"):
        if not bool(torch.isfinite(named[name][live]).all()):
            raise ValueError(f"{name} has non-finite values on Gaussians with radii > 0")
    if backgrounds is not None and not bool(torch.isfinite(backgrounds).all()):
        raise ValueError("backgrounds has non-finite values")
    if bool(((opacities[live] < 0) | (opacities[live] > 1)).any()):
        raise ValueError("opacities must lie in [0, 1]")


class _RasterizeToPixelsNative(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor,
                backgrounds: Tensor | None, depths: Tensor, radii: Tensor, width: int, height: int, tile_size: int):
        out_colors, out_alphas, tile_offsets, flatten_ids, final_T, last_ids = (
            _backend.native_module().rasterize_to_pixels_fwd(
                means2d, conics, colors, opacities, depths, radii, backgrounds, width, height, tile_size
            )
        )
        ctx.save_for_backward(means2d, conics, colors, opacities, backgrounds, tile_offsets, flatten_ids, final_T,
                              last_ids)
        ctx.dims = (width, height, tile_size)
        ctx.out_shapes = (out_colors.shape, out_alphas.shape)
        ctx.set_materialize_grads(False)  # an output the loss leaves out: read zeros, no fill (below)
        return out_colors, out_alphas

    @staticmethod
    def backward(ctx, v_colors: Tensor | None, v_alphas: Tensor | None):
        means2d, conics, colors, opacities, backgrounds, tile_offsets, flatten_ids, final_T, last_ids = (
            ctx.saved_tensors
        )
        width, height, tile_size = ctx.dims
        v_colors, v_alphas = (_backend.zeros_for_kernel(shape, means2d) if v is None else v
                              for v, shape in zip((v_colors, v_alphas), ctx.out_shapes, strict=True))
        v_means2d, v_conics, v_cols, v_opacities = _backend.native_module().rasterize_to_pixels_bwd(
            means2d, conics, colors, opacities, backgrounds, width, height, tile_size, tile_offsets, flatten_ids,
            final_T, last_ids, v_colors.contiguous(), v_alphas.contiguous(),
        )
        v_backgrounds = None
        if backgrounds is not None and ctx.needs_input_grad[4]:
            v_backgrounds = (v_colors * final_T[..., None]).sum((1, 2))
        return v_means2d, v_conics, v_cols, v_opacities, v_backgrounds, None, None, None, None, None
