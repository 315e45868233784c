"""``project_gaussians``: EWA projection of 3D Gaussians to image-space means, conics, depths, radii.

The math (3DGS, Kerbl et al. 2023; gsplat's ``fully_fused_projection``), per camera and Gaussian:

1. ``Sigma = R S S^T R^T`` with ``R = quat_to_matrix(q)`` (``q`` is (w, x, y, z), normalised first)
   and ``S = diag(scales)`` (activated scales, not logs).
2. Camera space (OpenCV, :mod:`scenegrad.render.cameras`): ``t = W mean + w``, ``Sigma_c = W Sigma W^T``
   with ``viewmats = [[W, w], [0, 1]]`` (world-to-camera).
3. Perspective Jacobian at the mean, ``J = [[fx/z, 0, -fx x/z^2], [0, fy/z, -fy y/z^2]]``, where
   ``x/z`` and ``y/z`` are first clamped to ``+-1.3 tan(fov/2)``, i.e. ``lim_x = 1.3 * 0.5 * width / fx``
   and ``lim_y = 1.3 * 0.5 * height / fy`` (3DGS's and gsplat's guard against huge footprints of
   Gaussians far outside the view; recent gsplat versions use limits asymmetric about ``cx``,
   identical to these when ``cx = width / 2``). The mean itself is projected without clamping.
4. ``cov2d = J Sigma_c J^T + eps2d I`` (a low-pass filter of ``eps2d`` px^2). With ``antialiased``:
   ``compensation = sqrt(det(cov2d - eps2d I) / det(cov2d))`` (Mip-Splatting), a factor the caller
   multiplies into the opacity so that the filter does not add energy.
5. ``conics = (a, b, c)`` with ``[[a, b], [b, c]] = cov2d^-1``; ``means2d = (fx x/z + cx, fy y/z + cy)``
   (``K`` applied to the camera-space mean; pixel centres at +0.5, so a mean at ``(0.5, 0.5)`` sits
   on the centre of the top-left pixel); ``depths = z``.
6. ``radii = ceil(3 sqrt(lambda_max(cov2d)))`` (int32).

Culling: a Gaussian gets radius 0, all-zero outputs and no gradient for a camera when ``z <= near``
or ``z >= far``, ``det(cov2d) <= 0`` (only possible with ``eps2d = 0`` and degenerate scales),
``radius <= radius_clip``, or its box ``[mean2d - radius, mean2d + radius]`` misses the image
``[0, width] x [0, height]``.

Implementations (one signature, :mod:`scenegrad.render.backend` area ``"gaussians"``): the native
kernels (``cuda/gaussians/project.h``, C++ with OpenMP on CPU, CUDA on GPU; hand-written
backward) and the pure-PyTorch reference :mod:`scenegrad.render._reference.gaussian_project`
(autograd gives every gradient).

>>> import torch
>>> means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, -2.0]])  # the second one is behind the camera
>>> quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(2, 4)
>>> scales = torch.full((2, 3), 0.1)
>>> viewmats, Ks = torch.eye(4)[None], torch.tensor([[[100.0, 0.0, 32.0], [0.0, 100.0, 24.0], [0.0, 0.0, 1.0]]])
>>> radii, means2d, depths, conics, comp = project_gaussians(means, quats, scales, viewmats, Ks, 64, 48)
>>> radii, means2d[0, 0], depths
(tensor([[16,  0]], dtype=torch.int32), tensor([32., 24.]), tensor([[2., 0.]]))
"""

from __future__ import annotations

import torch
from torch import Tensor

from scenegrad.render import backend as _backend
from scenegrad.render._reference import gaussian_project as _reference

__all__ = ["project_gaussians", "check_backend"]

#: Field-of-view factor of the Jacobian clamp (3DGS / gsplat).
FOV_CLAMP = _reference.FOV_CLAMP
_AREA = "gaussians"


def check_backend(backend: str | None, area: str = "gaussians") -> str:
    """Validate a ``backend=`` argument (or ``$SCENEGRAD_BACKEND``) for the Gaussian primitives.

    Returns the requested name (``None`` when neither is set).
    """
    return _backend.validate(area, backend)


def _check(x: Tensor, name: str, shape: tuple) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != len(shape) or any(s is not None and d != s for d, s in zip(x.shape, shape, strict=True)):
        want = ", ".join("?" if s is None else str(s) for s in shape)
        raise ValueError(f"{name} must have shape [{want}], got {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def project_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] (w, x, y, z), need not be unit
    scales: Tensor,  # [N, 3] activated (> 0)
    viewmats: Tensor,  # [C, 4, 4] world-to-camera (OpenCV)
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    *,
    eps2d: float = 0.3,
    near: float = 0.01,
    far: float = 1e10,
    radius_clip: float = 0.0,
    antialiased: bool = False,
    backend: str | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Project ``N`` 3D Gaussians into ``C`` pinhole cameras (EWA splatting; math in the module docstring).

    Args:
        means: ``[N, 3]`` world-space centres.
        quats: ``[N, 4]`` rotations (w, x, y, z); normalised internally (gradients are tangent).
        scales: ``[N, 3]`` standard deviations along the rotated axes (activated, e.g. ``exp`` of
            the stored log-scales).
        viewmats: ``[C, 4, 4]`` world-to-camera matrices (OpenCV axes: +Z forward, +Y down).
        Ks: ``[C, 3, 3]`` intrinsics in pixels.
        width, height: image size in pixels (the culling box).
        eps2d: screen-space low-pass filter added to the 2D covariance, px^2.
        near, far: camera-space ``z`` range kept (exclusive).
        radius_clip: Gaussians with a radius ``<=`` this (px) are culled.
        antialiased: also return Mip-Splatting's opacity ``compensations``.
        backend: ``"auto"``, ``"native"`` or ``"reference"`` (:mod:`scenegrad.render.backend`).

    Returns:
        ``(radii, means2d, depths, conics, compensations)``:
        ``radii [C, N]`` int32 (0 = culled), ``means2d [C, N, 2]`` pixels, ``depths [C, N]``
        camera ``z``, ``conics [C, N, 3]`` the upper triangle ``(a, b, c)`` of ``cov2d^-1``, and
        ``compensations [C, N]`` (``None`` unless ``antialiased``). Culled entries are zero.

    Dtype (float32 or float64) and device follow ``means``; all float inputs must share them.
    Differentiable with respect to ``means``, ``quats``, ``scales``, ``viewmats`` and ``Ks``; ``radii`` are not
    differentiable.
    """
    check_backend(backend)
    _check(means, "means", (None, 3))
    n = means.shape[0]
    _check(quats, "quats", (n, 4))
    _check(scales, "scales", (n, 3))
    _check(viewmats, "viewmats", (None, 4, 4))
    c = viewmats.shape[0]
    _check(Ks, "Ks", (c, 3, 3))
    for name, x in (("quats", quats), ("scales", scales), ("viewmats", viewmats), ("Ks", Ks)):
        if x.dtype != means.dtype or x.device != means.device:
            raise ValueError(f"{name} is {x.dtype} on {x.device}, but means is {means.dtype} on {means.device}; "
                             "all inputs must share one dtype and device")
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be > 0, got {width} x {height}")
    if eps2d < 0:
        raise ValueError(f"eps2d must be >= 0, got {eps2d}")

    args = (int(width), int(height), float(eps2d), float(near), float(far), float(radius_clip), bool(antialiased))
    which = _backend.resolve(_AREA, backend, means.device)
    if which not in ("native", "reference"):
        raise ValueError(f"backend {which!r} is an adapter of rasterize_gaussians only; "
                         "project_gaussians runs 'native' or 'reference'")
    if which == "native":
        radii, means2d, depths, conics, comps = _ProjectGaussiansNative.apply(
            means.contiguous(), quats.contiguous(), scales.contiguous(), viewmats.contiguous(), Ks.contiguous(), *args
        )
        return radii, means2d, depths, conics, comps if antialiased else None
    return _reference.project_gaussians(means, quats, scales, viewmats, Ks, *args)


class _ProjectGaussiansNative(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means: Tensor, quats: Tensor, scales: Tensor, viewmats: Tensor, Ks: Tensor, *args):
        radii, means2d, depths, conics, comps = _backend.native_module().project_gaussians_fwd(
            means, quats, scales, viewmats, Ks, *args
        )
        ctx.save_for_backward(means, quats, scales, viewmats, Ks, radii)
        ctx.args = args
        ctx.mark_non_differentiable(radii)
        return radii, means2d, depths, conics, comps

    @staticmethod
    def backward(ctx, _v_radii, v_means2d: Tensor, v_depths: Tensor, v_conics: Tensor, v_comps: Tensor):
        means, quats, scales, viewmats, Ks, radii = ctx.saved_tensors
        antialiased = ctx.args[-1]
        camera_grads = ctx.needs_input_grad[3] or ctx.needs_input_grad[4]
        v_means, v_quats, v_scales, v_viewmats, v_Ks = _backend.native_module().project_gaussians_bwd(
            means, quats, scales, viewmats, Ks, *ctx.args, radii, v_means2d.contiguous(), v_depths.contiguous(),
            v_conics.contiguous(), v_comps.contiguous() if antialiased else None, camera_grads,
        )
        return (v_means, v_quats, v_scales, v_viewmats if camera_grads else None, v_Ks if camera_grads else None,
                *([None] * len(ctx.args)))
