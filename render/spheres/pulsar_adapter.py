"""``backend="pytorch3d"`` for :func:`~scenegrad.render.spheres.render.render_spheres`: the same scene
rendered by PyTorch3D's Pulsar (``pytorch3d.renderer.points.pulsar``), its outputs returned as a
:class:`~scenegrad.render.spheres.render.SphereRender`. Imported only when the adapter is requested.

Cameras: Pulsar takes a camera centre, the centre of pixel (0, 0) and the steps from one pixel centre
to the next, all in world coordinates, with a sensor at ``focal_length`` in front of the centre.
They are built here from scenegrad's OpenCV cameras (world-to-camera ``R``, ``t``; intrinsics in
pixels; pixel centres at +0.5) with the sensor at half the near distance (Pulsar needs
``min_depth > focal_length``) and Pulsar's right-handed mode (``pixel_x x pixel_y`` points forward,
as OpenCV's ``x`` right and ``y`` down do). The gradients to ``R``, ``t``, ``fx``, ``fy``, ``cx``,
``cy`` flow through those vectors. The principal point is any real number (Pulsar's own integer
offsets stay 0).

Pulsar's blending is its own, close to scenegrad's but not the same (PyTorch3D's
``renderer.draw.device.h``): a hit weighs ``opacity * (1 - d / r) * exp(opacity (1 - s) / gamma)``,
linear in the ray's distance ``d`` to the centre where scenegrad uses ``h = 1 - d^2 / r^2`` (the
opacity enters both the same way); ``s`` normalises the distance *along the
ray* to the hit over ``[near, far]`` (scenegrad: the camera-frame ``z``); a sphere smaller than a
pixel still fills the pixel its centre projects to. So images agree inside silhouettes and differ
by a few per cent at their edges.

Outputs: ``features`` as Pulsar renders them (``background`` as its background colour, zeros when
None); ``alpha`` from one extra feature channel of ones over a zero background (so it has
gradients); ``depth`` the camera-frame depth of the nearest hit (Pulsar reports hit distances, not
a blended depth; no gradient; 0 where nothing is hit); ``ids`` the ``n_ids`` *nearest* hits (Pulsar
tracks those, not the strongest); ``weights`` NaN (Pulsar does not report them).

Gradients are Pulsar's, which are not the derivatives of its outputs: only the ``max(n_ids, 5)``
nearest hits of a pixel receive any, each sphere's are averaged over the pixels it was hit in
(Pulsar's ``norm_sphere_gradients``), and the camera's are scaled by each sphere's screen area
over its hits, times 1e-3. Use them to optimise as Pulsar's users do, not to check derivatives.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scenegrad.render.cameras import Cameras, pixel_rays

from .render import SphereRender

#: Pulsar's default number of tracked hits per pixel: only those receive gradients.
MIN_TRACKED = 5

_RENDERERS: dict[tuple, object] = {}


def render_spheres(positions: Tensor, radii: Tensor, features: Tensor, opacities: Tensor, cameras: Cameras, *,
                   near: float, far: float, gamma: float, background: Tensor | None, n_ids: int,
                   tolerance: float, bg_eps: float, projection: str) -> SphereRender:
    """Checked arguments of :func:`render_spheres` -> Pulsar's ``_Render`` -> a :class:`SphereRender`."""
    if projection != "perspective":
        raise ValueError("backend 'pytorch3d' renders perspective cameras only here (Pulsar's orthographic mode "
                         "puts the principal point at the image centre and has square pixels)")
    if cameras.dtype != torch.float32:
        raise ValueError(f"backend 'pytorch3d' renders float32 only (Pulsar's kernels), got {cameras.dtype}")
    if not 1e-5 <= gamma <= 1.0:
        raise ValueError(f"backend 'pytorch3d' needs 1e-5 <= gamma <= 1 (Pulsar's range), got {gamma}")
    from pytorch3d import _C
    from pytorch3d.renderer.points.pulsar.renderer import _Render

    B, N, D = len(cameras), positions.shape[0], features.shape[1]
    width, height = int(cameras.width[0]), int(cameras.height[0])
    n_track = min(max(n_ids, MIN_TRACKED), int(_C.PULSAR_MAX_GRAD_SPHERES))
    if n_ids > n_track:
        raise ValueError(f"backend 'pytorch3d' reports at most {n_track} ids per pixel, got n_ids={n_ids}")
    centre, pixel00, step_x, step_y, sensor = pulsar_camera(cameras, near)
    ones = torch.ones(N, 1, dtype=features.dtype, device=features.device)
    colours = torch.cat([features, ones], dim=1)  # the last channel blends to alpha
    bg = background if background is not None else features.new_zeros(D)
    bg = torch.cat([bg, bg.new_zeros(1)])
    renderer = _renderer(width, height, N, D + 1, n_track, bg_eps, positions.device)
    image, info = _Render.apply(
        positions.expand(B, N, 3), colours.expand(B, N, D + 1), radii.expand(B, N), centre, pixel00, step_x,
        step_y, sensor, torch.zeros(B, 2, dtype=torch.int32, device=positions.device), float(gamma), float(far),
        renderer, float(near), bg, opacities.expand(B, N), float(tolerance), _C.MAX_UINT, 0, True,
    )
    ids = _C.pulsar_sphere_ids_from_result_info_nograd(info)
    ids = ids[..., :n_ids].to(torch.int32).contiguous()
    depth = _nearest_depth(info, cameras)
    weights = torch.full(ids.shape, float("nan"), dtype=features.dtype, device=features.device)
    return SphereRender(image[..., :D], image[..., D], depth, ids, weights)


def pulsar_camera(cameras: Cameras, near: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Pulsar's camera of each of ``B`` pinhole cameras, differentiable in ``R``, ``t`` and the intrinsics.

    Returns ``(centre [B, 3], pixel00 [B, 3], step_x [B, 3], step_y [B, 3], sensor [B])``: the camera
    centre ``-R^T t``, the world position of pixel (0, 0)'s centre on a sensor ``sensor = near / 2``
    in front of it, and the world steps to the next pixel centre along the image's ``x`` and ``y``.
    """
    centre = cameras.centers
    axis_x, axis_y, axis_z = cameras.R[:, 0], cameras.R[:, 1], cameras.R[:, 2]  # camera axes in world coordinates
    sensor = torch.full_like(cameras.fx, 0.5 * near)
    px, py = sensor / cameras.fx, sensor / cameras.fy  # world size of a pixel on the sensor
    step_x, step_y = px[:, None] * axis_x, py[:, None] * axis_y
    pixel00 = (centre + sensor[:, None] * axis_z + ((0.5 - cameras.cx) * px)[:, None] * axis_x
               + ((0.5 - cameras.cy) * py)[:, None] * axis_y)
    return centre, pixel00, step_x, step_y, sensor


def _nearest_depth(info: Tensor, cameras: Cameras) -> Tensor:
    """Camera-frame depth ``[B, H, W]`` of the nearest hit from Pulsar's forward info (channel 4 is the
    distance along the ray to it, -1 where nothing is hit)."""
    distance = info[..., 4].detach()
    with torch.no_grad():
        _, directions = pixel_rays(cameras)  # unit, world frame
        cos_z = (directions * cameras.R[:, None, None, 2]).sum(-1)  # their camera-frame z
    return torch.where(distance > 0, distance * cos_z, torch.zeros_like(distance))


def _renderer(width: int, height: int, n: int, channels: int, n_track: int, bg_eps: float, device: torch.device):
    """A Pulsar renderer for at least ``n`` spheres, kept for later calls (it holds the buffers)."""
    from pytorch3d import _C

    key = (width, height, channels, n_track, bg_eps, str(device))
    held = _RENDERERS.get(key)
    if held is None or held[0] < n:
        if len(_RENDERERS) >= 4:
            _RENDERERS.clear()
        renderer = _C.PulsarRenderer(width, height, n, False, True, bg_eps, channels, n_track)
        renderer.device_tracker = torch.zeros(1, device=device)
        held = _RENDERERS[key] = (n, renderer)
    return held[1]
