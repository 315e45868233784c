"""``render_spheres``: Pulsar-style differentiable rendering of spheres.

Layers: :func:`render_spheres` (validation, world -> camera frame in PyTorch) -> ``_SphereRenderNative``
(autograd) -> ``sphere_render_fwd`` / ``sphere_render_bwd`` in ``cuda/spheres/sphere_bindings.cpp`` ->
the per-pixel math in ``cuda/spheres/spheres.h``. The pure-PyTorch twin is
:func:`scenegrad.render._reference.spheres.render_spheres`, whose docstring states the formulas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scenegrad.render import backend as _backend
from scenegrad.render._reference import spheres as _reference
from scenegrad.render.cameras import Cameras, world_to_camera

__all__ = ["SphereRender", "render_spheres", "BG_EPS", "MAX_FEATURES", "TOLERANCE", "PROJECTIONS"]

_AREA = "spheres"
BG_EPS = 1e-4  #: background exponent: the background weighs exp(BG_EPS / gamma)
MAX_FEATURES = 32
TOLERANCE = 1e-2  #: default early-stop tolerance (as Pulsar's default percent_allowed_difference)
PROJECTIONS = {"perspective": 0, "orthographic": 1}  #: the kernels' codes (cuda/spheres/spheres.h)


@dataclass(eq=False)
class SphereRender:
    """Output of :func:`render_spheres` (``B`` cameras, images ``[B, H, W, ...]``).

    Fields:
        features: ``[B, H, W, D]`` blended features, background included.
        alpha: ``[B, H, W]`` the spheres' share of the blending weight, ``sum_i w_i / W``.
        depth: ``[B, H, W]`` weighted mean camera-frame depth of the hits (front intersections),
            ``sum_i w_i z_i / sum_i w_i``; 0 where no sphere is hit.
        ids: ``[B, H, W, K]`` int32 indices of the ``K = n_ids`` spheres with the largest weights,
            strongest first; ``-1`` past the number of hits (no gradient).
        weights: ``[B, H, W, K]`` their normalised weights ``w_i / W`` (no gradient).
    """

    features: Tensor
    alpha: Tensor
    depth: Tensor
    ids: Tensor
    weights: Tensor


def render_spheres(
    positions: Tensor,
    radii: Tensor,
    features: Tensor,
    cameras: Cameras,
    *,
    near: float,
    far: float,
    opacities: Tensor | None = None,
    gamma: float = 1e-2,
    background: Tensor | None = None,
    n_ids: int = 4,
    tile_size: int = 16,
    tolerance: float = TOLERANCE,
    projection: str = "perspective",
    backend: str | None = None,
) -> SphereRender:
    """Render spheres with Pulsar's blending: every pixel mixes the spheres its ray hits.

    For pixel centre ``(x + 0.5, y + 0.5)`` and sphere ``i`` (centre ``c_i`` in the camera frame,
    radius ``r_i``), with ``h_i = 1 - dist(ray, c_i)^2 / r_i^2`` (1 at the centre, 0 on the
    silhouette) and ``z_i`` the camera-frame depth of the ray's front intersection::

        w_i  = opacity_i * h_i * exp(opacity_i (1 - (z_i - near) / (far - near)) / gamma)
                                                         if h_i > 0, near <= z_i <= far
        w_bg = exp(BG_EPS / gamma),   W = sum_i w_i + w_bg
        features = (sum_i w_i f_i + w_bg background) / W,   alpha = sum_i w_i / W
        depth    = sum_i w_i z_i / sum_i w_i

    Small ``gamma`` (down to about 1e-5) makes the nearest hit dominate (hard occlusion); large
    (about 1) blends all hits almost equally. The normalisation makes the result independent of the
    order of the spheres. As in Pulsar, the opacity scales the exponent as well as the weight: a
    sphere fading out also falls behind the others and, at opacity 0, behind the background (with
    the opacity as a factor alone, a sphere would need about ``exp(-1 / gamma)`` to let the
    background show). Exact formulas and numerics:
    :mod:`scenegrad.render._reference.spheres`.
    The native kernels sort each tile's spheres by the largest exponent a hit can have
    (``opacity (1 - (max(Z - r, near) - near) / (far - near)) / gamma``, camera frame) and stop a
    pixel at the first sphere whose largest possible weight (``h = 1`` at that exponent)
    is below ``tolerance`` times the pixel's running total weight ``W``, as Pulsar does with its
    ``percent_allowed_difference`` (default 0.01): each skipped sphere would have changed the result
    by less than that share (their sum is typically one to three times ``tolerance`` in dense
    scenes) and gets no gradient. ``tolerance=0`` blends every hit (as the reference always does).

    Args:
        positions: ``[N, 3]`` world-space centres.
        radii: ``[N]`` world-space radii, ``> 0``.
        features: ``[N, D]``, ``1 <= D <= 32`` (RGB or any feature vector).
        cameras: ``B`` cameras sharing one image size; ``model="pinhole"`` only (undistorted).
        near, far: the depth range ``0 < near < far``; hits outside it are ignored and depths are
            normalised over it (the occlusion sharpness depends on ``(far - near) * gamma``).
        opacities: ``[N]`` in ``[0, 1]``, or ``None`` (all 1).
        gamma: blending sharpness, ``> 0``.
        background: ``[D]`` or ``None`` (zeros).
        n_ids: how many strongest contributors to report per pixel (``>= 0``).
        tile_size: tile side of the native kernels' binning, 1 to 32.
        tolerance: the native kernels' early stop, in ``[0, 1)`` (see above; the reference ignores it).
        projection: ``"perspective"`` (rays from the camera centre through the pixels) or
            ``"orthographic"``: every ray runs along the camera's ``+z`` from the point
            ``((x + 0.5 - cx) / fx, (y + 0.5 - cy) / fy, 0)`` of the camera frame, so ``fx``, ``fy``
            are pixels per unit length and ``(cx, cy)`` is where the camera's ``z`` axis meets the
            image; depths are still camera-frame ``z`` (``near`` may then be any value below the
            scene, 0 < near).
        backend: ``"auto"``, ``"native"`` or ``"reference"`` (:mod:`scenegrad.render.backend`), or
            ``"pytorch3d"``: PyTorch3D's Pulsar renders the same scene where it is installed, with its
            own blending and outputs (float32, ``1e-5 <= gamma <= 1``;
            :mod:`~scenegrad.render.spheres.pulsar_adapter` says what differs).

    All float inputs share the cameras' dtype (float32 or float64) and device.

    Returns:
        A :class:`SphereRender`. ``features``, ``alpha`` and ``depth`` are differentiable with
        respect to ``positions``, ``radii``, ``features``, ``opacities``, ``background`` and the
        cameras' ``R``, ``t``, ``fx``, ``fy``, ``cx``, ``cy``. The depth gradient grows like
        ``1 / sqrt(h)`` towards a silhouette (the intersection depth has infinite slope there).

    Example:
        >>> import torch
        >>> from scenegrad.render.cameras import Cameras
        >>> cams = Cameras(50.0, 50.0, 16.0, 16.0, torch.eye(3)[None], torch.zeros(1, 3), 32, 32)
        >>> out = render_spheres(torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([0.5]),
        ...                      torch.tensor([[1.0, 0.5, 0.0]]), cams, near=0.1, far=10.0)
        >>> out.features.shape, out.ids.shape
        (torch.Size([1, 32, 32, 3]), torch.Size([1, 32, 32, 4]))
        >>> round(out.depth[0, 15, 15].item(), 2), out.ids[0, 15, 15, 0].item(), out.alpha[0, 0, 0].item()
        (2.5, 0, 0.0)
    """
    if opacities is None:
        opacities = torch.ones_like(radii) if isinstance(radii, Tensor) else radii
    _check_inputs(positions, radii, features, cameras, opacities, background, near, far, gamma, n_ids, tile_size,
                  tolerance)
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {list(PROJECTIONS)}, got {projection!r}")
    which = _backend.resolve(_AREA, backend, positions.device)
    if which == "pytorch3d":  # Pulsar itself
        from . import pulsar_adapter

        return pulsar_adapter.render_spheres(
            positions, radii, features, opacities, cameras, near=float(near), far=float(far), gamma=float(gamma),
            background=background, n_ids=int(n_ids), tolerance=float(tolerance), bg_eps=BG_EPS,
            projection=projection,
        )
    centers = world_to_camera(cameras, positions)  # [B, N, 3], differentiable w.r.t. R, t, positions
    intrinsics = torch.stack([cameras.fx, cameras.fy, cameras.cx, cameras.cy], dim=-1)
    width, height = int(cameras.width[0]), int(cameras.height[0])
    scalars = (float(near), float(far), float(gamma), BG_EPS)
    if which == "native":
        cut = -math.log(tolerance) if tolerance > 0 else 1e30  # a pixel stops 'cut' below log W
        feats, alpha, depth, ids, weights = _SphereRenderNative.apply(
            centers.contiguous(), radii.contiguous(), features.contiguous(), opacities.contiguous(),
            intrinsics.contiguous(), background.contiguous() if background is not None else None,
            width, height, *scalars, cut, int(n_ids), int(tile_size), PROJECTIONS[projection],
        )
    elif which == "reference":
        feats, alpha, depth, ids, weights = _reference.render_spheres(
            centers, radii, features, opacities, intrinsics, width, height, *scalars[:3], background, BG_EPS,
            int(n_ids), orthographic=projection == "orthographic",
        )
    else:  # pragma: no cover - resolve() returns one of the names above
        raise ValueError(f"backend {which!r} is not available for render_spheres")
    return SphereRender(feats, alpha, depth, ids, weights)


def _check_inputs(positions: Tensor, radii: Tensor, features: Tensor, cameras: Cameras, opacities: Tensor,
                  background: Tensor | None, near: float, far: float, gamma: float, n_ids: int,
                  tile_size: int, tolerance: float) -> None:
    if not isinstance(cameras, Cameras):
        raise ValueError(f"cameras must be scenegrad Cameras, got {type(cameras).__name__}")
    if cameras.model != "pinhole":
        raise ValueError(f"render_spheres supports pinhole cameras only, got model={cameras.model!r}; "
                         "undistort the images first")
    if len(cameras) == 0:
        raise ValueError("render_spheres needs at least one camera")
    if bool((cameras.width != cameras.width[0]).any() or (cameras.height != cameras.height[0]).any()):
        raise ValueError("all cameras must share one image size; split the batch by size")
    named = {"positions": positions, "radii": radii, "features": features, "opacities": opacities}
    if background is not None:
        named["background"] = background
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != cameras.dtype or t.device != cameras.device:
            raise ValueError(f"{name} is {t.dtype} on {t.device} but the cameras are {cameras.dtype} on "
                             f"{cameras.device}; convert one of them with .to()")
    if cameras.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"inputs must be float32 or float64, got {cameras.dtype}")
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {list(positions.shape)}")
    N = positions.shape[0]
    if features.dim() != 2 or features.shape[0] != N or not 1 <= features.shape[1] <= MAX_FEATURES:
        raise ValueError(f"features must have shape [N, D] with N = {N} and 1 <= D <= {MAX_FEATURES}, "
                         f"got {list(features.shape)}")
    for name in ("radii", "opacities"):
        if tuple(named[name].shape) != (N,):
            raise ValueError(f"{name} must have shape [{N}], got {list(named[name].shape)}")
    if background is not None and tuple(background.shape) != (features.shape[1],):
        raise ValueError(f"background must have shape [{features.shape[1]}], got {list(background.shape)}")
    for name, t in named.items():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} has non-finite values")
    if bool((radii <= 0).any()):
        raise ValueError("radii must be > 0")
    if bool(((opacities < 0) | (opacities > 1)).any()):
        raise ValueError("opacities must lie in [0, 1]")
    if not 0 < near < far or not all(map(_finite, (near, far))):
        raise ValueError(f"need 0 < near < far (finite), got near={near}, far={far}")
    if not gamma > 0 or not _finite(gamma):
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if isinstance(n_ids, bool) or not isinstance(n_ids, int) or n_ids < 0:
        raise ValueError(f"n_ids must be an int >= 0, got {n_ids!r}")
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or not 1 <= tile_size <= 32:
        raise ValueError(f"tile_size must be an int in [1, 32], got {tile_size!r}")
    if not isinstance(tolerance, int | float) or not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be a number in [0, 1), got {tolerance!r}")


def _finite(x: float) -> bool:
    return float(x) - float(x) == 0.0


class _SphereRenderNative(torch.autograd.Function):
    @staticmethod
    def forward(ctx, centers: Tensor, radii: Tensor, features: Tensor, opacities: Tensor, intrinsics: Tensor,
                background: Tensor | None, width: int, height: int, near: float, far: float, gamma: float,
                bg_eps: float, cut: float, n_ids: int, tile_size: int, projection: int):
        feats, alpha, depth, ids, weights, tile_offsets, flatten_ids, pix_state, last = (
            _backend.native_module().sphere_render_fwd(
                centers, radii, features, opacities, intrinsics, background, width, height, near, far, gamma,
                bg_eps, cut, n_ids, tile_size, projection,
            )
        )
        ctx.save_for_backward(centers, radii, features, opacities, intrinsics, background, tile_offsets,
                              flatten_ids, feats, alpha, depth, pix_state, last)
        ctx.dims = (width, height, near, far, gamma, bg_eps, tile_size, projection)  # the backward replays the stops
        ctx.mark_non_differentiable(ids, weights)
        # Outputs the loss does not use come to backward as None: autograd would otherwise fill zero
        # tensors for them on every step (ids and weights alone are 8 MiB at 512^2 with n_ids = 4).
        ctx.set_materialize_grads(False)
        return feats, alpha, depth, ids, weights

    @staticmethod
    def backward(ctx, v_feats: Tensor | None, v_alpha: Tensor | None, v_depth: Tensor | None, _v_ids, _v_weights):
        (centers, radii, features, opacities, intrinsics, background, tile_offsets, flatten_ids, feats, alpha,
         depth, pix_state, last) = ctx.saved_tensors
        width, height, near, far, gamma, bg_eps, tile_size, projection = ctx.dims
        v_feats, v_alpha, v_depth = (_backend.zeros_for_kernel(x.shape, x) if v is None else v.contiguous()
                                     for v, x in ((v_feats, feats), (v_alpha, alpha), (v_depth, depth)))
        v_centers, v_radii, v_features, v_opacities, v_intrinsics = _backend.native_module().sphere_render_bwd(
            centers, radii, features, opacities, intrinsics, width, height, near, far, gamma, bg_eps, tile_size,
            tile_offsets, flatten_ids, feats, alpha, depth, pix_state, last, v_feats, v_alpha, v_depth, projection,
        )
        v_background = None
        if background is not None and ctx.needs_input_grad[5]:
            v_background = (v_feats * (1 - alpha)[..., None]).sum((0, 1, 2))  # w_bg / W = 1 - alpha
        return (v_centers, v_radii, v_features, v_opacities, v_intrinsics, v_background,
                None, None, None, None, None, None, None, None, None, None)
