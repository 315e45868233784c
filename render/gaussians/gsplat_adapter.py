"""``backend="gsplat"`` for :func:`~scenegrad.render.gaussians.render.rasterize_gaussians`: the same call
run by gsplat's ``rasterization`` (CUDA only), its outputs returned as a :class:`GaussianRender`.

Conventions agree (OpenCV world-to-camera ``viewmats``, ``Ks`` in pixels, pixel centres at +0.5,
(w, x, y, z) quaternions, 3DGS's SH colour ``max(0, SH + 0.5)``), so only shapes are translated:
gsplat >= 1.5 returns per-axis radii ``[C, N, 2]`` (reduced here to the larger one, as scenegrad's
``[C, N]``), appends the depth channel to ``render_colors`` in the ``+D`` modes, and returns the
depth-only modes in ``render_colors``. Imported only when the adapter is requested.
"""

from __future__ import annotations

from torch import Tensor

from .render import GaussianRender


def rasterize_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                        viewmats: Tensor, Ks: Tensor, width: int, height: int, *, near_plane: float,
                        far_plane: float, sh_degree: int | None, backgrounds: Tensor | None, render_mode: str,
                        rasterize_mode: str, eps2d: float, tile_size: int) -> GaussianRender:
    """Checked arguments of :func:`rasterize_gaussians` -> gsplat's ``rasterization`` -> a :class:`GaussianRender`."""
    if means.device.type != "cuda":
        raise RuntimeError(f"backend 'gsplat' needs CUDA tensors (gsplat has no CPU path), got {means.device}; "
                           "use backend='native' on CPU")
    import gsplat

    image, alphas, meta = gsplat.rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height),
        near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree, packed=False,
        tile_size=tile_size, backgrounds=backgrounds, render_mode=render_mode, rasterize_mode=rasterize_mode,
    )
    return to_render(image, alphas, meta, render_mode)


def to_render(image: Tensor, alphas: Tensor, meta: dict, render_mode: str) -> GaussianRender:
    """gsplat's ``(render_colors, render_alphas, meta)`` as a :class:`GaussianRender`."""
    radii = meta["radii"]
    if radii.dim() == 3:  # gsplat >= 1.5: per-axis radii
        radii = radii.max(dim=-1).values
    radii = radii.int()
    means2d = meta["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()
    with_rgb, with_depth = render_mode.startswith("RGB"), render_mode != "RGB"
    colors_out = image[..., :-1] if with_rgb and with_depth else (image if with_rgb else None)
    depths = image[..., -1:] if with_depth else None
    view_depths = meta["depths"] * (radii > 0)
    return GaussianRender(colors=colors_out, alphas=alphas, depths=depths, radii=radii, means2d=means2d,
                          view_depths=view_depths, visible=radii > 0)
