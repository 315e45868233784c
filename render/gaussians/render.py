"""``rasterize_gaussians``: render 3D Gaussians (3DGS / gsplat style) to colour, alpha and depth images.

Pipeline, all in PyTorch except the compositing primitive:

1. :func:`~scenegrad.render.gaussians.project.project_gaussians` (EWA projection, culling);
2. colours: given per Gaussian (``[N, D]``, or per camera ``[C, N, D]``), or spherical harmonics
   (``[N, K, 3]`` with ``sh_degree``) evaluated along the normalised direction from each camera
   centre ``-R^T t`` to each mean (:func:`~scenegrad.render.gaussians.sh.spherical_harmonics`: the
   3DGS colour ``max(0, SH + 0.5)``; only the first ``(sh_degree + 1) ** 2`` bases are used);
3. depth modes append the camera-space depth ``z`` as one more channel;
4. ``rasterize_mode="antialiased"`` multiplies opacities by Mip-Splatting's compensation;
5. :func:`~scenegrad.render.gaussians.rasterize.rasterize_to_pixels` composites front to back.

Render modes: ``"RGB"`` colours only; ``"D"`` accumulated depth ``sum_i w_i z_i``; ``"ED"`` expected
depth (accumulated depth / alpha, alpha clamped at 1e-10); ``"RGB+D"`` and ``"RGB+ED"`` both.
``backgrounds`` apply to the colour channels only (the depth channel composites over 0).

Densification: ``GaussianRender.means2d`` is the projected-means tensor that took part in the
render, with ``retain_grad()`` called when it requires grad, so after ``loss.backward()`` a trainer
reads ``render.means2d.grad`` (``[C, N, 2]``, pixels) for 3DGS's view-space gradient statistics.

>>> import torch
>>> means = torch.tensor([[0.0, 0.0, 3.0]])
>>> quats, scales = torch.tensor([[1.0, 0.0, 0.0, 0.0]]), torch.full((1, 3), 0.2)
>>> out = rasterize_gaussians(means, quats, scales, torch.tensor([0.9]), torch.tensor([[1.0, 0.5, 0.0]]),
...                           torch.eye(4)[None], torch.tensor([[[50.0, 0, 16], [0, 50.0, 16], [0, 0, 1]]]),
...                           32, 32, render_mode="RGB+ED", backend="reference")
>>> out.colors.shape, out.alphas.shape, out.depths.shape
(torch.Size([1, 32, 32, 3]), torch.Size([1, 32, 32, 1]), torch.Size([1, 32, 32, 1]))
>>> out.depths[0, 16, 16], out.radii
(tensor([3.]), tensor([[11]], dtype=torch.int32))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from scenegrad.render import backend as _backend

from .project import check_backend, project_gaussians
from .rasterize import rasterize_to_pixels as _rasterize_to_pixels  # looked up per call: tests may replace it
from .sh import num_sh_bases, spherical_harmonics

__all__ = ["GaussianRender", "rasterize_gaussians", "RENDER_MODES", "RASTERIZE_MODES"]

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")


@dataclass(eq=False)
class GaussianRender:
    """Output of :func:`rasterize_gaussians` (``C`` cameras, ``N`` Gaussians, images ``[C, H, W, ...]``).

    Fields:
        colors: ``[C, H, W, D]`` composited colours (``D = 3`` with SH), background included;
            ``None`` in the depth-only modes ``"D"`` and ``"ED"``.
        alphas: ``[C, H, W, 1]`` accumulated opacity ``1 - T_final``.
        depths: ``[C, H, W, 1]`` accumulated (``"D"`` modes) or expected (``"ED"`` modes) depth,
            ``None`` in ``"RGB"`` mode.
        radii: ``[C, N]`` int32 screen radii in pixels, 0 where culled.
        means2d: ``[C, N, 2]`` projected means (pixels); ``.grad`` is filled by backward when it
            requires grad (see the module docstring).
        view_depths: ``[C, N]`` camera-space depth of each mean (0 where culled).
        visible: ``[C, N]`` bool, ``radii > 0``.
    """

    colors: Tensor | None
    alphas: Tensor
    depths: Tensor | None
    radii: Tensor
    means2d: Tensor
    view_depths: Tensor
    visible: Tensor


def _camera_centres(viewmats: Tensor) -> Tensor:
    """``[C, 4, 4]`` world-to-camera -> ``[C, 3]`` centres ``-R^T t`` (differentiable)."""
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    return -(R.transpose(-1, -2) @ t[..., None])[..., 0]


def rasterize_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] (w, x, y, z)
    scales: Tensor,  # [N, 3] activated
    opacities: Tensor,  # [N] activated, in [0, 1]
    colors: Tensor,  # [N, D], [C, N, D], or SH coefficients [N, K, 3] with sh_degree
    viewmats: Tensor,  # [C, 4, 4] world-to-camera (OpenCV)
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    sh_degree: int | None = None,
    backgrounds: Tensor | None = None,  # [C, D]
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    eps2d: float = 0.3,
    tile_size: int = 16,
    backend: str | None = None,
) -> GaussianRender:
    """Render ``N`` Gaussians into ``C`` cameras (pipeline and modes: see the module docstring).

    Args:
        means, quats, scales: as :func:`~scenegrad.render.gaussians.project.project_gaussians`
            (activated scales; quaternions (w, x, y, z), normalised internally).
        opacities: ``[N]`` activated opacities in ``[0, 1]`` (``sigmoid`` of stored logits).
        colors: ``[N, D]`` or ``[C, N, D]`` values when ``sh_degree`` is ``None``; otherwise SH
            coefficients ``[N, K, 3]`` with ``K >= (sh_degree + 1) ** 2``.
        viewmats, Ks: ``[C, 4, 4]`` world-to-camera (OpenCV) and ``[C, 3, 3]`` intrinsics (pixels).
        width, height: image size in pixels.
        near_plane, far_plane: camera ``z`` range kept.
        sh_degree: SH degree to evaluate (0..3), or ``None`` for plain colours.
        backgrounds: ``[C, D]`` colour behind the Gaussians (``D`` colour channels, not counting
            depth); not allowed in the depth-only modes.
        render_mode: ``"RGB"``, ``"D"``, ``"ED"``, ``"RGB+D"`` or ``"RGB+ED"``.
        rasterize_mode: ``"classic"`` (3DGS) or ``"antialiased"`` (Mip-Splatting's 2D filter
            compensation multiplied into the opacities).
        eps2d: screen-space filter (px^2) added to every 2D covariance.
        tile_size: rasterizer tile size in pixels.
        backend: ``"auto"``, ``"native"`` or ``"reference"``, passed to both primitives, or
            ``"gsplat"``: the whole render by gsplat's ``rasterization`` where gsplat is installed
            (CUDA tensors only; :mod:`~scenegrad.render.gaussians.gsplat_adapter`).

    Returns:
        A :class:`GaussianRender`. Differentiable (autograd) with respect to ``means``, ``quats``,
        ``scales``, ``opacities``, ``colors`` (values or SH), ``viewmats``, ``Ks`` and ``backgrounds``.
    """
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"rasterize_mode must be one of {RASTERIZE_MODES}, got {rasterize_mode!r}")
    check_backend(backend)
    n, c = means.shape[0], viewmats.shape[0]
    if not isinstance(opacities, Tensor) or tuple(opacities.shape) != (n,):
        raise ValueError(f"opacities must have shape [{n}], got {list(getattr(opacities, 'shape', []))}")
    if not isinstance(tile_size, int) or tile_size <= 0:
        raise ValueError(f"tile_size must be a positive int, got {tile_size!r}")

    if _backend.resolve("gaussians", backend, means.device) == "gsplat":
        from . import gsplat_adapter

        return gsplat_adapter.rasterize_gaussians(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near_plane,
            far_plane=far_plane, sh_degree=sh_degree, backgrounds=backgrounds, render_mode=render_mode,
            rasterize_mode=rasterize_mode, eps2d=eps2d, tile_size=tile_size,
        )
    radii, means2d, view_depths, conics, compensations = project_gaussians(
        means, quats, scales, viewmats, Ks, width, height, eps2d=eps2d, near=near_plane, far=far_plane,
        antialiased=rasterize_mode == "antialiased", backend=backend,
    )
    if means2d.requires_grad:
        means2d.retain_grad()

    # Colours per camera and Gaussian: [C, N, D].
    if sh_degree is not None:
        k = num_sh_bases(sh_degree)
        if colors.dim() != 3 or colors.shape[0] != n or colors.shape[2] != 3 or colors.shape[1] < k:
            raise ValueError(f"with sh_degree={sh_degree}, colors must be SH coefficients [{n}, K >= {k}, 3], "
                             f"got {list(colors.shape)}")
        dirs = means[None, :, :] - _camera_centres(viewmats)[:, None, :]  # [C, N, 3]
        cols = spherical_harmonics(sh_degree, dirs, colors[None, :, :k, :])  # [C, N, 3]
    elif colors.dim() == 2 and colors.shape[0] == n:
        cols = colors[None].expand(c, -1, -1)
    elif colors.dim() == 3 and colors.shape[:2] == (c, n):
        cols = colors
    else:
        raise ValueError(f"colors must be [{n}, D] or [{c}, {n}, D] (or SH [{n}, K, 3] with sh_degree), "
                         f"got {list(colors.shape)}")
    num_colors = cols.shape[-1]

    with_rgb = render_mode.startswith("RGB")
    with_depth = render_mode != "RGB"
    bgs = None
    if backgrounds is not None:
        if not with_rgb:
            raise ValueError(f"backgrounds apply to colour channels; render_mode {render_mode!r} has none")
        if tuple(backgrounds.shape) != (c, num_colors):
            raise ValueError(f"backgrounds must have shape [{c}, {num_colors}], got {list(backgrounds.shape)}")
        bgs = backgrounds
    if with_rgb and with_depth:
        channels = torch.cat([cols, view_depths[..., None].to(cols.dtype)], dim=-1)
        if bgs is not None:
            bgs = torch.cat([bgs, bgs.new_zeros(c, 1)], dim=-1)
    elif with_depth:
        channels = view_depths[..., None]
    else:
        channels = cols

    opac = opacities[None].expand(c, -1)
    if compensations is not None:
        opac = opac * compensations
    image, alphas = _rasterize_to_pixels(
        means2d, conics, channels.contiguous(), opac.contiguous(), view_depths, radii, width, height,
        tile_size=tile_size, backgrounds=bgs, backend=backend,
    )

    out_colors = image[..., :num_colors] if with_rgb else None
    depths = None
    if with_depth:
        depths = image[..., -1:]
        if render_mode.endswith("ED"):
            depths = depths / alphas.clamp_min(1e-10)
    return GaussianRender(colors=out_colors, alphas=alphas, depths=depths, radii=radii, means2d=means2d,
                          view_depths=view_depths, visible=radii > 0)
