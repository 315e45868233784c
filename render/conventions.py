"""Every camera-convention converter, both directions, batched torch.

scenegrad's own convention (OpenCV axes, world-to-camera ``x_cam = R @ x_world + t``, pixel
centres at ``i + 0.5``) is stated in :mod:`scenegrad.render.cameras`. This module maps it to and
from the conventions users bring:

==================  ===========================================  ==================================
system              what is stored                               functions
==================  ===========================================  ==================================
OpenGL / NeRF /     camera-to-world ``transform_matrix``;        :func:`cameras_from_opengl_c2w`,
Blender /           camera axes +X right, +Y up, looking down    :func:`cameras_to_opengl_c2w`
nerfstudio          -Z. OpenCV c2w = OpenGL c2w with columns 1
                    and 2 negated.
PyTorch3D           world-to-view in row-vector form             :func:`cameras_to_pytorch3d`,
                    ``X_view = X_world @ R + T``; view axes +X   :func:`cameras_from_pytorch3d`
                    left, +Y up, +Z into the scene; focal length
                    and principal point in NDC units.
nvdiffrast /        clip-space positions ``[x, y, z, w]``.       :func:`clip_matrix`,
OpenGL clip space                                                :func:`world_to_clip`,
                                                                 :func:`to_nvdiffrast_clip`,
                                                                 :func:`from_nvdiffrast_clip`
COLMAP              world-to-camera ``QW QX QY QZ TX TY TZ``     :func:`cameras_from_colmap`,
                    (OpenCV axes, same pixel convention as       :func:`cameras_to_colmap`,
                    scenegrad), camera models by name.           :func:`intrinsics_from_colmap`,
                                                                 :func:`intrinsics_to_colmap`
==================  ===========================================  ==================================

**Clip space and image rows.** :func:`clip_matrix` maps OpenCV camera coordinates to OpenGL clip
space with ``x_ndc = 2u/W - 1`` and ``y_ndc = 1 - 2v/H``: NDC y points *up*, and scenegrad's
rasterizer writes image row 0 (the top row, ``v`` in ``[0, 1]``) at ``y_ndc = +1``, rows running top
to bottom. nvdiffrast writes row 0 at ``y_ndc = -1`` (OpenGL's bottom-up rows), so its image of the
same clip positions is ours flipped vertically. :func:`to_nvdiffrast_clip` negates clip ``y`` so
that nvdiffrast's output rows come out in scenegrad's top-first order (no image flip needed);
:func:`from_nvdiffrast_clip` undoes it. Negating ``y`` mirrors the screen, so triangle winding
(front / back facing) reverses; this matters only where winding is used (culling).

All functions follow the input's device and dtype and are differentiable in their float inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .cameras import Cameras, world_to_camera
from .rotations import matrix_to_quat, quat_to_matrix

__all__ = [
    "cameras_from_opengl_c2w",
    "cameras_to_opengl_c2w",
    "PyTorch3DCameraParams",
    "cameras_to_pytorch3d",
    "cameras_from_pytorch3d",
    "clip_matrix",
    "world_to_clip",
    "to_nvdiffrast_clip",
    "from_nvdiffrast_clip",
    "cameras_from_colmap",
    "cameras_to_colmap",
    "Intrinsics",
    "intrinsics_from_colmap",
    "intrinsics_to_colmap",
]


def _check_batch(x: Tensor, name: str, tail: tuple[int, ...]) -> None:
    if not isinstance(x, Tensor) or x.dim() != 1 + len(tail) or tuple(x.shape[1:]) != tail:
        shape = ", ".join(["N", *map(str, tail)])
        raise ValueError(f"{name} must be a [{shape}] tensor, got {list(getattr(x, 'shape', []))}")


def _flip_yz(m: Tensor) -> Tensor:
    """Negate columns 1 and 2 of the rotation block of ``[N, 4, 4]`` matrices (OpenCV <-> OpenGL axes)."""
    sign = torch.ones(4, 4, dtype=m.dtype, device=m.device)
    sign[:3, 1:3] = -1.0
    return m * sign


# ----------------------------------------------------------------------------------------------
# OpenGL / NeRF / Blender / nerfstudio
# ----------------------------------------------------------------------------------------------


def cameras_from_opengl_c2w(
    c2w: Tensor,
    fx: Tensor | float,
    fy: Tensor | float,
    cx: Tensor | float,
    cy: Tensor | float,
    width: Tensor | int,
    height: Tensor | int,
    model: str = "pinhole",
    dist: Tensor | None = None,
) -> Cameras:
    """Cameras from OpenGL-axes camera-to-world matrices (NeRF / Blender / nerfstudio ``transform_matrix``).

    Args:
        c2w: ``[N, 4, 4]`` (or ``[N, 3, 4]``) camera-to-world, camera axes +X right, +Y up, looking
            down -Z.
        fx, fy, cx, cy: intrinsics in pixels (``fl_x, fl_y, cx, cy`` of ``transforms.json``;
            ``[N]`` or scalars). nerfstudio's principal point already uses scenegrad's pixel
            convention (image centre at ``W / 2``).
        width, height: image sizes (``[N]`` or ints). model, dist: see :class:`Cameras`.

    >>> c2w = torch.eye(4)[None]  # at the origin, looking down world -Z
    >>> cams = cameras_from_opengl_c2w(c2w, 100.0, 100.0, 50.0, 50.0, 100, 100)
    >>> cams.R.diagonal(dim1=1, dim2=2)  # OpenCV camera: +Y down, +Z forward = world -Y, -Z
    tensor([[ 1., -1., -1.]])
    """
    if not isinstance(c2w, Tensor) or c2w.dim() != 3 or tuple(c2w.shape[1:]) not in ((4, 4), (3, 4)):
        got = list(getattr(c2w, "shape", []))
        raise ValueError(f"c2w must be a [N, 4, 4] or [N, 3, 4] tensor, got {got}")
    rot = c2w[:, :3, :3] * torch.tensor([1.0, -1.0, -1.0], dtype=c2w.dtype, device=c2w.device)
    R = rot.transpose(1, 2)
    t = -(R @ c2w[:, :3, 3:])[..., 0]
    return Cameras(fx, fy, cx, cy, R, t, width, height, model, dist)


def cameras_to_opengl_c2w(cams: Cameras) -> Tensor:
    """``[N, 4, 4]`` OpenGL-axes camera-to-world matrices (inverse of :func:`cameras_from_opengl_c2w`)."""
    return _flip_yz(cams.camtoworlds)


# ----------------------------------------------------------------------------------------------
# PyTorch3D
# ----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class PyTorch3DCameraParams:
    """Arguments of PyTorch3D's ``PerspectiveCameras`` (NDC form, ``in_ndc=True``), batched.

    ``PerspectiveCameras(R=p.R, T=p.T, focal_length=p.focal_length,
    principal_point=p.principal_point, image_size=p.image_size)`` is the camera that
    ``pytorch3d.utils.cameras_from_opencv_projection`` builds.

    Fields:
        R: ``[N, 3, 3]`` row-vector world-to-view rotation (``X_view = X_world @ R + T``).
        T: ``[N, 3]``.
        focal_length: ``[N, 2]`` ``(fx, fy) / s`` with ``s = min(H, W) / 2``.
        principal_point: ``[N, 2]`` ``-((cx, cy) - (W, H) / 2) / s``.
        image_size: ``[N, 2]`` int64 ``(height, width)``.
    """

    R: Tensor
    T: Tensor
    focal_length: Tensor
    principal_point: Tensor
    image_size: Tensor


def _ndc_scale_and_center(width: Tensor, height: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    wh = torch.stack([width, height], dim=-1).to(dtype)  # [N, 2]
    return wh.min(dim=-1, keepdim=True).values / 2, wh / 2


def cameras_to_pytorch3d(cams: Cameras) -> PyTorch3DCameraParams:
    """PyTorch3D ``PerspectiveCameras`` parameters of pinhole cameras (as ``cameras_from_opencv_projection``).

    PyTorch3D's view axes are OpenCV's with x and y negated, and its matrices multiply row vectors:
    ``R_p3d = R^T`` with columns 0 and 1 negated, ``T_p3d = t`` with entries 0 and 1 negated. Its NDC
    spans ``[-1, 1]`` on the shorter image side, +X left, +Y up. Raises ``ValueError`` for distorted
    cameras (PyTorch3D has no lens distortion; undistort first).
    """
    if cams.is_distorted:
        raise ValueError(
            f"PyTorch3D cameras have no lens distortion; got model {cams.model!r} (undistort first)"
        )
    flip = torch.tensor([-1.0, -1.0, 1.0], dtype=cams.dtype, device=cams.device)
    scale, center = _ndc_scale_and_center(cams.width, cams.height, cams.dtype)
    focal = torch.stack([cams.fx, cams.fy], dim=-1) / scale
    principal = -(torch.stack([cams.cx, cams.cy], dim=-1) - center) / scale
    return PyTorch3DCameraParams(
        R=cams.R.transpose(1, 2) * flip,
        T=cams.t * flip,
        focal_length=focal,
        principal_point=principal,
        image_size=torch.stack([cams.height, cams.width], dim=-1),
    )


def cameras_from_pytorch3d(
    R: Tensor, T: Tensor, focal_length: Tensor, principal_point: Tensor, image_size: Tensor
) -> Cameras:
    """Pinhole cameras from PyTorch3D NDC ``PerspectiveCameras`` parameters.

    The inverse of :func:`cameras_to_pytorch3d`, as PyTorch3D's ``opencv_from_cameras_projection``.

    Args:
        R: ``[N, 3, 3]``, T: ``[N, 3]`` (``X_view = X_world @ R + T``).
        focal_length: ``[N, 2]`` in NDC units (a ``[N, 1]`` single focal length is broadcast).
        principal_point: ``[N, 2]`` in NDC units.
        image_size: ``[N, 2]`` integer ``(height, width)``.
    """
    _check_batch(R, "R", (3, 3))
    _check_batch(T, "T", (3,))
    if not isinstance(focal_length, Tensor) or focal_length.dim() != 2 or focal_length.shape[1] not in (1, 2):
        got = list(getattr(focal_length, "shape", []))
        raise ValueError(f"focal_length must be [N, 2] (or [N, 1]), got {got}")
    _check_batch(principal_point, "principal_point", (2,))
    _check_batch(image_size, "image_size", (2,))
    height, width = image_size.long().unbind(-1)
    scale, center = _ndc_scale_and_center(width, height, R.dtype)
    f = focal_length.expand(-1, 2) * scale
    c = -principal_point * scale + center
    flip = torch.tensor([-1.0, -1.0, 1.0], dtype=R.dtype, device=R.device)
    return Cameras(f[:, 0], f[:, 1], c[:, 0], c[:, 1], (R * flip).transpose(1, 2), T * flip, width, height)


# ----------------------------------------------------------------------------------------------
# Clip space (nvdiffrast / OpenGL)
# ----------------------------------------------------------------------------------------------


def clip_matrix(cams: Cameras, near: float, far: float) -> Tensor:
    """``[N, 4, 4]`` projection ``P`` with ``pos_clip = P @ [x_cam, 1]`` for OpenCV camera coordinates.

    After the divide by ``w_clip = z`` (camera depth): ``x_ndc = 2u/W - 1``, ``y_ndc = 1 - 2v/H`` where
    ``(u, v)`` is the pinhole pixel of the point, and ``z_ndc = -1`` at depth ``near``, ``+1`` at
    ``far``. So image row 0 is at ``y_ndc = +1`` (see the module docstring for nvdiffrast's rows)::

        [[2 fx / W,  0,        2 cx / W - 1,        0                 ],
         [0,        -2 fy / H, 1 - 2 cy / H,        0                 ],
         [0,         0,        (f + n) / (f - n),   -2 f n / (f - n)  ],
         [0,         0,        1,                   0                 ]]

    Pinhole cameras only (a matrix cannot express lens distortion): raises ``ValueError`` otherwise.

    >>> cams = Cameras(100.0, 100.0, 50.0, 50.0, torch.eye(3)[None], torch.zeros(1, 3), 100, 100)
    >>> clip_matrix(cams, 1.0, 3.0)[0]
    tensor([[ 2.,  0.,  0.,  0.],
            [ 0., -2.,  0.,  0.],
            [ 0.,  0.,  2., -3.],
            [ 0.,  0.,  1.,  0.]])
    """
    if cams.is_distorted:
        raise ValueError(
            f"clip-space projection is linear and cannot express {cams.model!r} lens distortion; "
            "undistort the images first and use pinhole cameras"
        )
    if not 0 < near < far:
        raise ValueError(f"need 0 < near < far, got near={near}, far={far}")
    w, h = cams.width.to(cams.dtype), cams.height.to(cams.dtype)
    o, i = torch.zeros_like(cams.fx), torch.ones_like(cams.fx)
    a, b = (far + near) / (far - near) * i, -2 * far * near / (far - near) * i
    rows = [
        2 * cams.fx / w, o, 2 * cams.cx / w - 1, o,
        o, -2 * cams.fy / h, 1 - 2 * cams.cy / h, o,
        o, o, a, b,
        o, o, i, o,
    ]
    return torch.stack(rows, dim=-1).unflatten(-1, (4, 4))


def world_to_clip(cams: Cameras, pts_world: Tensor, near: float, far: float) -> Tensor:
    """Clip-space positions ``[N, P, 4]`` of world points ``[N, P, 3]`` (or ``[P, 3]``); pinhole only.

    ``clip_matrix(cams, near, far) @ [R @ x + t, 1]``: the input of a rasterizer in scenegrad's row
    order (apply :func:`to_nvdiffrast_clip` before handing it to nvdiffrast).
    """
    P = clip_matrix(cams, near, far)
    x_cam = world_to_camera(cams, pts_world)
    x_h = torch.cat([x_cam, torch.ones_like(x_cam[..., :1])], dim=-1)
    return x_h @ P.transpose(1, 2)


def to_nvdiffrast_clip(pos: Tensor) -> Tensor:
    """Negate clip ``y`` of ``[..., 4]`` positions: nvdiffrast then renders rows top-first, like scenegrad."""
    if not isinstance(pos, Tensor) or pos.shape[-1:] != (4,):
        raise ValueError(f"pos must be [..., 4] clip positions, got {list(getattr(pos, 'shape', []))}")
    return pos * torch.tensor([1.0, -1.0, 1.0, 1.0], dtype=pos.dtype, device=pos.device)


def from_nvdiffrast_clip(pos: Tensor) -> Tensor:
    """Inverse of :func:`to_nvdiffrast_clip` (negates clip ``y`` back)."""
    return to_nvdiffrast_clip(pos)


# ----------------------------------------------------------------------------------------------
# COLMAP
# ----------------------------------------------------------------------------------------------


def cameras_from_colmap(
    qvec: Tensor,
    tvec: Tensor,
    fx: Tensor | float,
    fy: Tensor | float,
    cx: Tensor | float,
    cy: Tensor | float,
    width: Tensor | int,
    height: Tensor | int,
    model: str = "pinhole",
    dist: Tensor | None = None,
) -> Cameras:
    """Cameras from COLMAP image poses (``images.txt``: ``QW QX QY QZ TX TY TZ``, world-to-camera).

    Args:
        qvec: ``[N, 4]`` quaternions ``(w, x, y, z)`` (normalised here).
        tvec: ``[N, 3]`` translations.
        fx, fy, cx, cy, width, height, model, dist: intrinsics, e.g. from
            :func:`intrinsics_from_colmap`. COLMAP's pixel convention is scenegrad's: no shift.
    """
    _check_batch(qvec, "qvec", (4,))
    return Cameras(fx, fy, cx, cy, quat_to_matrix(qvec), tvec, width, height, model, dist)


def cameras_to_colmap(cams: Cameras) -> tuple[Tensor, Tensor]:
    """``(qvec [N, 4], tvec [N, 3])`` as in COLMAP ``images.txt``: ``(qw, qx, qy, qz)`` with ``qw >= 0``."""
    return matrix_to_quat(cams.R), cams.t


@dataclass(eq=False)
class Intrinsics:
    """Camera intrinsics in scenegrad's terms (see :class:`Cameras`): ``[N]`` tensors, model, dist."""

    fx: Tensor
    fy: Tensor
    cx: Tensor
    cy: Tensor
    model: str
    dist: Tensor | None


# COLMAP camera model name -> number of parameters
_COLMAP_MODELS = {
    "SIMPLE_PINHOLE": 3,
    "PINHOLE": 4,
    "SIMPLE_RADIAL": 4,
    "RADIAL": 5,
    "OPENCV": 8,
    "FULL_OPENCV": 12,
    "OPENCV_FISHEYE": 8,
    "SIMPLE_RADIAL_FISHEYE": 4,
    "RADIAL_FISHEYE": 5,
}


def intrinsics_from_colmap(model_name: str, params: Tensor) -> Intrinsics:
    """Map a COLMAP camera (``cameras.txt``: ``MODEL ... PARAMS[]``) to scenegrad intrinsics.

    Args:
        model_name: one of ``SIMPLE_PINHOLE, PINHOLE`` (-> ``"pinhole"``), ``SIMPLE_RADIAL, RADIAL,
            OPENCV, FULL_OPENCV`` (-> ``"opencv"``; FULL_OPENCV only with ``k4 = k5 = k6 = 0``, the
            rational model is not supported), ``OPENCV_FISHEYE, SIMPLE_RADIAL_FISHEYE, RADIAL_FISHEYE``
            (-> ``"fisheye"``; COLMAP's radial fisheye models are the OpenCV fisheye model with
            ``k3 = k4 = 0``).
        params: ``[N, k]`` or ``[k]`` parameters in COLMAP's order.

    Returns:
        :class:`Intrinsics` with ``[N]`` (or ``[1]``) tensors.

    >>> intrinsics_from_colmap("SIMPLE_RADIAL", torch.tensor([500.0, 320.0, 240.0, -0.1])).dist
    tensor([[-0.1000,  0.0000,  0.0000,  0.0000,  0.0000]])
    """
    if model_name not in _COLMAP_MODELS:
        supported = sorted(_COLMAP_MODELS)
        raise ValueError(f"unsupported COLMAP camera model {model_name!r}; supported: {supported}")
    p = params[None] if isinstance(params, Tensor) and params.dim() == 1 else params
    _check_batch(p, f"params ({model_name})", (_COLMAP_MODELS[model_name],))
    z = torch.zeros_like(p[:, 0])
    if model_name.startswith("SIMPLE_") or model_name in ("RADIAL", "RADIAL_FISHEYE"):
        fx = fy = p[:, 0]
        cx, cy, extra = p[:, 1], p[:, 2], p[:, 3:]
    else:
        fx, fy, cx, cy, extra = p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4:]
    k = list(extra.unbind(-1))
    if model_name in ("SIMPLE_PINHOLE", "PINHOLE"):
        return Intrinsics(fx, fy, cx, cy, "pinhole", None)
    if model_name in ("OPENCV_FISHEYE", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE"):
        return Intrinsics(fx, fy, cx, cy, "fisheye", torch.stack(k + [z] * (4 - len(k)), dim=-1))
    if model_name in ("SIMPLE_RADIAL", "RADIAL"):
        k = k + [z] * (4 - len(k))  # k1 [k2] -> k1 k2 p1 p2
    if model_name == "FULL_OPENCV":
        if bool((extra[:, 5:].detach() != 0).any()):
            raise ValueError("FULL_OPENCV with k4, k5, k6 != 0 (rational model) is not supported")
        k = k[:5]
    return Intrinsics(fx, fy, cx, cy, "opencv", torch.stack(k + [z] * (5 - len(k)), dim=-1))


def intrinsics_to_colmap(cams: Cameras) -> tuple[str, Tensor]:
    """COLMAP ``(model_name, params [N, k])`` of the cameras' intrinsics.

    ``"pinhole"`` -> ``PINHOLE``; ``"opencv"`` -> ``OPENCV`` when every ``k3 = 0``, else ``FULL_OPENCV``
    (with ``k4 = k5 = k6 = 0``); ``"fisheye"`` -> ``OPENCV_FISHEYE``.
    """
    base = [cams.fx, cams.fy, cams.cx, cams.cy]
    if cams.model == "pinhole":
        return "PINHOLE", torch.stack(base, dim=-1)
    k = list(cams.dist.unbind(-1))
    if cams.model == "fisheye":
        return "OPENCV_FISHEYE", torch.stack(base + k, dim=-1)
    if not bool((cams.dist[:, 4].detach() != 0).any()):
        return "OPENCV", torch.stack(base + k[:4], dim=-1)
    z = torch.zeros_like(cams.fx)
    return "FULL_OPENCV", torch.stack(base + k + [z, z, z], dim=-1)
