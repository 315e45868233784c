"""Batched cameras: projection, distortion, rays. **scenegrad's camera conventions live here.**

Conventions (every scenegrad module follows these; :mod:`scenegrad.render.conventions` converts
to and from other systems):

- **Extrinsics, OpenCV.** World-to-camera ``x_cam = R @ x_world + t``. Camera axes: +X right,
  +Y down, +Z forward (the viewing direction). ``viewmats`` are the 4x4 world-to-camera matrices
  ``[[R, t], [0, 1]]``; ``camtoworlds`` their inverses; the camera centre is ``-R^T t``.
- **Intrinsics** ``fx, fy, cx, cy`` in pixels, ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``
  (no skew), so ``u = fx * x / z + cx``, ``v = fy * y / z + cy`` for a pinhole camera.
- **Pixel coordinates** are continuous with the origin at the top-left *corner* of the image:
  the centre of the top-left pixel is at ``(0.5, 0.5)``, and the pixel in column ``i``, row ``j``
  has its centre at ``(u, v) = (i + 0.5, j + 0.5)`` (COLMAP's convention). An image spans
  ``[0, W] x [0, H]``, so resizing by ``s`` maps ``u -> s u`` exactly.
- **Depth** is the camera-frame ``z`` (not the distance along the ray).
- **Distortion** (``model``): ``"pinhole"`` (none), ``"opencv"`` (``dist = k1 k2 p1 p2 k3``: radial
  + tangential, exactly ``cv2.projectPoints``), ``"fisheye"`` (``dist = k1 k2 k3 k4``: equidistant,
  exactly ``cv2.fisheye.projectPoints``). Distortion acts on normalised coordinates ``(x/z, y/z)``.
- **Quaternions** are ``(w, x, y, z)``; roma and scipy use ``(x, y, z, w)``: convert at the boundary
  (see :mod:`scenegrad.render.rotations`).
- **Images** are float ``[H, W, C]`` in ``[0, 1]`` at API boundaries; a ``[C, H, W]`` layout is
  always stated explicitly.

Shapes: ``N`` cameras, ``P`` points per camera. Point arguments are ``[N, P, D]``, or ``[P, D]``
shared by every camera. Everything follows the cameras' device and dtype and is differentiable
with respect to every float parameter (intrinsics, ``R``, ``t``, ``dist``) and every point.

>>> import torch
>>> cams = Cameras(fx=100.0, fy=100.0, cx=32.0, cy=24.0, R=torch.eye(3)[None], t=torch.zeros(1, 3),
...                width=64, height=48)
>>> uv, depth = project(cams, torch.tensor([[0.1, 0.2, 2.0]]))
>>> uv, depth
(tensor([[[37., 34.]]]), tensor([[2.]]))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from .rotations import rt_to_matrix

__all__ = [
    "MODELS",
    "Cameras",
    "world_to_camera",
    "camera_to_world",
    "distort_points",
    "undistort_points",
    "project",
    "unproject",
    "pixel_centers",
    "rays_from_pixels",
    "pixel_rays",
    "resize",
    "crop",
]

MODELS = ("pinhole", "opencv", "fisheye")
_NUM_DIST = {"opencv": 5, "fisheye": 4}
_NEWTON_ITERS = 20


# ----------------------------------------------------------------------------------------------
# The camera batch
# ----------------------------------------------------------------------------------------------


def _broadcast(x: Tensor, name: str, n: int, tail: tuple[int, ...]) -> Tensor:
    """``x`` as ``[n, *tail]``, broadcast from ``tail`` or ``[1, *tail]``."""
    if tuple(x.shape) in (tail, (1, *tail)):
        return x.expand(n, *tail).contiguous()  # a copy: no aliasing between cameras
    if tuple(x.shape) != (n, *tail):
        raise ValueError(
            f"{name} must have shape {[n, *tail]} (or {list(tail)} to broadcast), got {list(x.shape)}"
        )
    return x


def _float_batch(x: Tensor | float, name: str, n: int, tail: tuple[int, ...], like: Tensor) -> Tensor:
    """``x`` as a ``[n, *tail]`` tensor with ``like``'s dtype and device (a differentiable conversion)."""
    return _broadcast(torch.as_tensor(x, dtype=like.dtype, device=like.device), name, n, tail)


def _int_batch(x: Tensor | int, name: str, n: int, device: torch.device) -> Tensor:
    """``x`` as a ``[n]`` int64 tensor on ``device``."""
    x = torch.as_tensor(x, device=device)
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name} must be integers (int or integer tensor), got dtype {x.dtype}")
    return _broadcast(x.long(), name, n, ())


@dataclass(eq=False)
class Cameras:
    """A batch of ``N`` cameras (conventions: see the module docstring).

    Fields (python floats / ints and ``[1]`` tensors are broadcast to ``[N]``):
        fx, fy, cx, cy: ``[N]`` intrinsics in pixels (``fx, fy > 0``).
        R: ``[N, 3, 3]`` world-to-camera rotations (orthonormality is not checked).
        t: ``[N, 3]`` world-to-camera translations.
        width, height: ``[N]`` int64 image sizes in pixels.
        model: ``"pinhole"``, ``"opencv"`` or ``"fisheye"``.
        dist: ``[N, 5]`` for ``"opencv"`` (``k1 k2 p1 p2 k3``; 4 values are padded with ``k3 = 0``),
            ``[N, 4]`` for ``"fisheye"`` (``k1 k2 k3 k4``), ``None`` for ``"pinhole"``; ``None`` with a
            distorted model means all zeros. A ``[k]`` tensor is broadcast.

    ``R`` fixes the batch size, dtype and device; the other float fields are converted to them.
    Construction raises ``ValueError`` on wrong shapes, non-finite values, non-positive focal
    lengths or image sizes (one device sync).

    >>> cams = Cameras(fx=500.0, fy=500.0, cx=320.0, cy=240.0, R=torch.eye(3).expand(2, 3, 3),
    ...                t=torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), width=640, height=480)
    >>> len(cams), cams.K.shape, cams[1].t
    (2, torch.Size([2, 3, 3]), tensor([[1., 0., 0.]]))
    """

    fx: Tensor
    fy: Tensor
    cx: Tensor
    cy: Tensor
    R: Tensor
    t: Tensor
    width: Tensor
    height: Tensor
    model: str = "pinhole"
    dist: Tensor | None = None

    def __post_init__(self) -> None:
        R = self.R
        if not isinstance(R, Tensor) or R.dim() != 3 or tuple(R.shape[1:]) != (3, 3):
            got = list(R.shape) if isinstance(R, Tensor) else type(R).__name__
            raise ValueError(f"R must be a [N, 3, 3] tensor, got {got}")
        if not R.is_floating_point():
            raise ValueError(f"R must be a floating-point tensor, got dtype {R.dtype}")
        n = R.shape[0]
        self.t = _float_batch(self.t, "t", n, (3,), R)
        self.fx = _float_batch(self.fx, "fx", n, (), R)
        self.fy = _float_batch(self.fy, "fy", n, (), R)
        self.cx = _float_batch(self.cx, "cx", n, (), R)
        self.cy = _float_batch(self.cy, "cy", n, (), R)
        self.width = _int_batch(self.width, "width", n, R.device)
        self.height = _int_batch(self.height, "height", n, R.device)
        self.dist = self._checked_dist(n)
        self._check_values()

    def _checked_dist(self, n: int) -> Tensor | None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.model == "pinhole":
            if self.dist is not None:
                raise ValueError(
                    "a 'pinhole' camera takes no distortion (dist=None); use model='opencv' or 'fisheye'"
                )
            return None
        k = _NUM_DIST[self.model]
        if self.dist is None:
            return self.R.new_zeros(n, k)
        dist = torch.as_tensor(self.dist, dtype=self.R.dtype, device=self.R.device)
        if self.model == "opencv" and dist.shape[-1:] == (4,):
            dist = torch.cat([dist, torch.zeros_like(dist[..., :1])], dim=-1)  # k3 = 0
        return _float_batch(dist, f"dist ({self.model})", n, (k,), self.R)

    def _check_values(self) -> None:
        floats = [self.fx, self.fy, self.cx, self.cy, self.R.flatten(), self.t.flatten()]
        if self.dist is not None:
            floats.append(self.dist.flatten())
        checks = torch.stack([
            torch.isfinite(torch.cat(floats).detach()).all(),
            ((self.fx > 0) & (self.fy > 0)).all(),
            ((self.width > 0) & (self.height > 0)).all(),
        ])
        finite, focal, size = checks.tolist()
        if not finite:
            raise ValueError("camera parameters (fx, fy, cx, cy, R, t, dist) must be finite")
        if not focal:
            raise ValueError("focal lengths fx and fy must be > 0")
        if not size:
            raise ValueError("image width and height must be > 0")

    # -- constructors ----------------------------------------------------------------------------

    @classmethod
    def from_K(
        cls,
        K: Tensor,
        R: Tensor,
        t: Tensor,
        width: Tensor | int,
        height: Tensor | int,
        model: str = "pinhole",
        dist: Tensor | None = None,
    ) -> Cameras:
        """Cameras from intrinsic matrices ``K [N, 3, 3]`` (or ``[3, 3]``), ``R [N, 3, 3]``, ``t [N, 3]``.

        ``K`` must have zero skew and last row ``[0, 0, 1]`` (raises ``ValueError`` otherwise).
        """
        if not isinstance(K, Tensor) or K.dim() not in (2, 3) or tuple(K.shape[-2:]) != (3, 3):
            raise ValueError(f"K must be a [N, 3, 3] or [3, 3] tensor, got {list(getattr(K, 'shape', []))}")
        K = K.to(dtype=R.dtype, device=R.device).expand(R.shape[0], 3, 3)
        fixed = torch.stack([K[:, 0, 1], K[:, 1, 0], K[:, 2, 0], K[:, 2, 1], K[:, 2, 2] - 1], dim=-1)
        if bool((fixed.detach() != 0).any()):
            raise ValueError("K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]: skew and a non-unit last row "
                             "are not supported")
        return cls(K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], R, t, width, height, model, dist)

    @classmethod
    def from_viewmats(
        cls,
        viewmats: Tensor,
        K: Tensor,
        width: Tensor | int,
        height: Tensor | int,
        model: str = "pinhole",
        dist: Tensor | None = None,
    ) -> Cameras:
        """Cameras from world-to-camera matrices ``viewmats [N, 4, 4]`` (gsplat's) and ``K [N, 3, 3]``."""
        _check_matrices(viewmats, "viewmats")
        return cls.from_K(K, viewmats[:, :3, :3], viewmats[:, :3, 3], width, height, model, dist)

    @classmethod
    def from_camtoworlds(
        cls,
        camtoworlds: Tensor,
        K: Tensor,
        width: Tensor | int,
        height: Tensor | int,
        model: str = "pinhole",
        dist: Tensor | None = None,
    ) -> Cameras:
        """Cameras from OpenCV-axes camera-to-world matrices ``camtoworlds [N, 4, 4]`` and ``K [N, 3, 3]``."""
        _check_matrices(camtoworlds, "camtoworlds")
        R = camtoworlds[:, :3, :3].transpose(1, 2)
        t = -(R @ camtoworlds[:, :3, 3:])[..., 0]
        return cls.from_K(K, R, t, width, height, model, dist)

    # -- batch handling --------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.R.shape[0]

    def __getitem__(self, idx: int | slice | Tensor | list[int]) -> Cameras:
        """Sub-batch; an integer index keeps the batch dimension (returns 1 camera)."""
        if isinstance(idx, int):
            idx = [idx]
        return Cameras(
            self.fx[idx], self.fy[idx], self.cx[idx], self.cy[idx], self.R[idx], self.t[idx],
            self.width[idx], self.height[idx], self.model, None if self.dist is None else self.dist[idx],
        )

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Cameras:
        """Copy on ``device`` with float fields in ``dtype`` (sizes stay int64)."""
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be floating point, got {dtype}")

        def f(x: Tensor) -> Tensor:
            return x.to(device=device, dtype=dtype)

        dist = None if self.dist is None else f(self.dist)
        return Cameras(
            f(self.fx), f(self.fy), f(self.cx), f(self.cy), f(self.R), f(self.t),
            self.width.to(device), self.height.to(device), self.model, dist,
        )

    @property
    def device(self) -> torch.device:
        return self.R.device

    @property
    def dtype(self) -> torch.dtype:
        return self.R.dtype

    @property
    def is_distorted(self) -> bool:
        return self.model != "pinhole"

    # -- matrices --------------------------------------------------------------------------------

    @property
    def K(self) -> Tensor:
        """``[N, 3, 3]`` intrinsic matrices."""
        o, i = torch.zeros_like(self.fx), torch.ones_like(self.fx)
        rows = [self.fx, o, self.cx, o, self.fy, self.cy, o, o, i]
        return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))

    @property
    def viewmats(self) -> Tensor:
        """``[N, 4, 4]`` world-to-camera matrices ``[[R, t], [0, 1]]``."""
        return rt_to_matrix(self.R, self.t)

    @property
    def camtoworlds(self) -> Tensor:
        """``[N, 4, 4]`` camera-to-world matrices (OpenCV axes) ``[[R^T, -R^T t], [0, 1]]``."""
        Rt = self.R.transpose(1, 2)
        return rt_to_matrix(Rt, -(Rt @ self.t[..., None])[..., 0])

    @property
    def centers(self) -> Tensor:
        """``[N, 3]`` camera centres in world coordinates, ``-R^T t``."""
        return -(self.R.transpose(1, 2) @ self.t[..., None])[..., 0]


def _check_matrices(m: Tensor, name: str) -> None:
    if not isinstance(m, Tensor) or m.dim() != 3 or tuple(m.shape[1:]) != (4, 4):
        raise ValueError(f"{name} must be a [N, 4, 4] tensor, got {list(getattr(m, 'shape', []))}")


# ----------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------


def _batch(cams: Cameras, x: Tensor, name: str, d: int | None) -> Tensor:
    """``x`` as ``[N, P, d]`` (``[N, P]`` when ``d`` is None), broadcasting a shared ``[P, d]``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != cams.dtype or x.device != cams.device:
        raise ValueError(
            f"{name} is {x.dtype} on {x.device} but the cameras are {cams.dtype} on {cams.device}; "
            "convert one of them with .to()"
        )
    tail = () if d is None else (d,)
    shape = "[N, P]" if d is None else f"[N, P, {d}]"
    if x.dim() == 1 + len(tail) and tuple(x.shape[1:]) == tail:
        return x.expand(len(cams), *x.shape)
    if x.dim() != 2 + len(tail) or tuple(x.shape[2:]) != tail or x.shape[0] != len(cams):
        raise ValueError(f"{name} must have shape {shape} with N = {len(cams)} (or shared, without N), "
                         f"got {list(x.shape)}")
    return x


def _col(x: Tensor) -> Tensor:
    """``[N]`` -> ``[N, 1]`` to broadcast against ``[N, P]``."""
    return x[:, None]


# ----------------------------------------------------------------------------------------------
# Rigid transforms
# ----------------------------------------------------------------------------------------------


def world_to_camera(cams: Cameras, pts: Tensor) -> Tensor:
    """``x_cam = R @ x_world + t``. ``pts``: ``[N, P, 3]`` or ``[P, 3]`` -> ``[N, P, 3]``."""
    pts = _batch(cams, pts, "pts", 3)
    return pts @ cams.R.transpose(1, 2) + cams.t[:, None]


def camera_to_world(cams: Cameras, pts: Tensor) -> Tensor:
    """``x_world = R^T (x_cam - t)``. ``pts``: ``[N, P, 3]`` or ``[P, 3]`` camera-frame -> ``[N, P, 3]``."""
    pts = _batch(cams, pts, "pts", 3)
    return (pts - cams.t[:, None]) @ cams.R


# ----------------------------------------------------------------------------------------------
# Distortion models, on normalised coordinates [N, P, 2] with dist [N, k]
# ----------------------------------------------------------------------------------------------


def _opencv_terms(dist: Tensor, xy: Tensor) -> tuple[Tensor, ...]:
    k1, k2, p1, p2, k3 = (_col(c) for c in dist.unbind(-1))
    x, y = xy.unbind(-1)
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    return x, y, r2, radial, k1, k2, p1, p2, k3


def _distort_opencv(dist: Tensor, xy: Tensor) -> Tensor:
    x, y, r2, radial, _, _, p1, p2, _ = _opencv_terms(dist, xy)
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], dim=-1)


def _opencv_jacobian(dist: Tensor, xy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Entries ``(j00, j01 = j10, j11)`` of the 2x2 Jacobian of the OpenCV model at ``xy``."""
    x, y, r2, radial, k1, k2, p1, p2, k3 = _opencv_terms(dist, xy)
    dradial = k1 + r2 * (2 * k2 + 3 * k3 * r2)  # d radial / d r2
    j00 = radial + 2 * x * x * dradial + 2 * p1 * y + 6 * p2 * x
    j01 = 2 * x * y * dradial + 2 * p1 * x + 2 * p2 * y
    j11 = radial + 2 * y * y * dradial + 6 * p1 * y + 2 * p2 * x
    return j00, j01, j11


def _solve_sym2(j: tuple[Tensor, Tensor, Tensor], rhs: Tensor) -> Tensor:
    """``J^-1 rhs`` for symmetric 2x2 ``J = [[j00, j01], [j01, j11]]`` and ``rhs [..., 2]``."""
    j00, j01, j11 = j
    r0, r1 = rhs.unbind(-1)
    det = j00 * j11 - j01 * j01
    return torch.stack([(j11 * r0 - j01 * r1) / det, (j00 * r1 - j01 * r0) / det], dim=-1)


def _undistort_opencv(dist: Tensor, xyd: Tensor) -> Tensor:
    # Newton without autograd, then one differentiable step with the converged (detached) Jacobian:
    # its value is the converged solution and its gradient the exact implicit-function gradient.
    with torch.no_grad():
        d, target, xy = dist.detach(), xyd.detach(), xyd.detach().clone()
        eps = 4 * torch.finfo(xy.dtype).eps
        for _ in range(_NEWTON_ITERS):
            new = xy - _solve_sym2(_opencv_jacobian(d, xy), _distort_opencv(d, xy) - target)
            new = torch.where(torch.isfinite(new), new, xy)
            # converged (to the last bits: Newton's steps shrink quadratically): the remaining ones change nothing
            done = bool(((new - xy).abs() <= eps * (1 + xy.abs())).all())
            xy = new
            if done:
                break
    jacobian = _opencv_jacobian(dist.detach(), xy)
    return xy - _solve_sym2(jacobian, _distort_opencv(dist, xy) - xyd)


def _fisheye_theta_d(dist: Tensor, theta: Tensor) -> Tensor:
    k1, k2, k3, k4 = (_col(c) for c in dist.unbind(-1))
    t2 = theta * theta
    return theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))


def _fisheye_dtheta_d(dist: Tensor, theta: Tensor) -> Tensor:
    k1, k2, k3, k4 = (_col(c) for c in dist.unbind(-1))
    t2 = theta * theta
    return 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))


def _safe_norm(xy: Tensor) -> tuple[Tensor, Tensor]:
    """(|xy| with 1 where tiny, tiny mask): finite values and gradients at the optical axis."""
    r2 = (xy * xy).sum(-1)
    tiny = r2 < 1e-16  # cv2 uses the same 1e-8 radius threshold
    return torch.where(tiny, torch.ones_like(r2), r2).sqrt(), tiny


def _distort_fisheye(dist: Tensor, xy: Tensor) -> Tensor:
    r, tiny = _safe_norm(xy)
    scale = _fisheye_theta_d(dist, torch.atan(r)) / r
    return xy * torch.where(tiny, torch.ones_like(r), scale)[..., None]


def _undistort_fisheye(dist: Tensor, xyd: Tensor) -> Tensor:
    rd, tiny = _safe_norm(xyd)  # rd = theta_d
    with torch.no_grad():
        d, target, theta = dist.detach(), rd.detach(), rd.detach().clone()
        for _ in range(_NEWTON_ITERS):
            theta = theta - (_fisheye_theta_d(d, theta) - target) / _fisheye_dtheta_d(d, theta)
    slope = _fisheye_dtheta_d(dist.detach(), theta)
    theta = theta - (_fisheye_theta_d(dist, theta) - rd) / slope  # implicit-gradient step, see opencv
    scale = torch.tan(theta) / rd
    return xyd * torch.where(tiny, torch.ones_like(rd), scale)[..., None]


def _distort(cams: Cameras, xy: Tensor) -> Tensor:
    if cams.model == "opencv":
        return _distort_opencv(cams.dist, xy)
    if cams.model == "fisheye":
        return _distort_fisheye(cams.dist, xy)
    return xy


def _undistort(cams: Cameras, xyd: Tensor) -> Tensor:
    if cams.model == "opencv":
        return _undistort_opencv(cams.dist, xyd)
    if cams.model == "fisheye":
        return _undistort_fisheye(cams.dist, xyd)
    return xyd


def _to_pixels(cams: Cameras, xy: Tensor) -> Tensor:
    x, y = xy.unbind(-1)
    return torch.stack([_col(cams.fx) * x + _col(cams.cx), _col(cams.fy) * y + _col(cams.cy)], dim=-1)


def _to_normalized(cams: Cameras, uv: Tensor) -> Tensor:
    u, v = uv.unbind(-1)
    return torch.stack([(u - _col(cams.cx)) / _col(cams.fx), (v - _col(cams.cy)) / _col(cams.fy)], dim=-1)


def distort_points(cams: Cameras, xy: Tensor, normalized: bool = False) -> Tensor:
    """Apply the lens distortion: ideal (undistorted) points -> observed pixels.

    Args:
        cams: ``N`` cameras.
        xy: ``[N, P, 2]`` or ``[P, 2]`` undistorted points: ideal pinhole pixels ``K (x/z, y/z)``, or
            normalised coordinates ``(x/z, y/z)`` if ``normalized``.
        normalized: the unit of ``xy`` (the output is always in pixels).

    Returns:
        ``[N, P, 2]`` distorted pixel coordinates. Identity for pinhole cameras.
    """
    xy = _batch(cams, xy, "xy", 2)
    if not normalized:
        xy = _to_normalized(cams, xy)
    return _to_pixels(cams, _distort(cams, xy))


def undistort_points(cams: Cameras, uv: Tensor, normalized: bool = False) -> Tensor:
    """Remove the lens distortion: observed pixels -> ideal points (inverse of :func:`distort_points`).

    Solves ``distort(x) = uv`` by Newton's method (20 iterations, converged far below 1e-6 px for
    realistic lenses; like ``cv2.undistortPoints`` / ``cv2.fisheye.undistortPoints``). Gradients are
    the exact implicit-function gradients w.r.t. ``uv`` and every camera parameter. For fisheye
    cameras only rays in front of the camera (angle below 90 degrees) are representable.

    Args:
        cams: ``N`` cameras.
        uv: ``[N, P, 2]`` or ``[P, 2]`` observed (distorted) pixel coordinates.
        normalized: return normalised coordinates ``(x/z, y/z)`` (like cv2 without ``P``) instead of
            ideal pinhole pixels (like cv2 with ``P = K``).

    Returns:
        ``[N, P, 2]`` undistorted points.

    >>> cams = Cameras(100.0, 100.0, 50.0, 50.0, torch.eye(3)[None], torch.zeros(1, 3), 100, 100,
    ...                model="opencv", dist=torch.tensor([-0.2, 0.05, 0.001, 0.0]))
    >>> uv = torch.tensor([[10.0, 80.0]])
    >>> torch.allclose(distort_points(cams, undistort_points(cams, uv)), uv, atol=1e-4)
    True
    """
    uv = _batch(cams, uv, "uv", 2)
    xy = _undistort(cams, _to_normalized(cams, uv))
    return xy if normalized else _to_pixels(cams, xy)


# ----------------------------------------------------------------------------------------------
# Projection
# ----------------------------------------------------------------------------------------------


def project(cams: Cameras, pts_world: Tensor) -> tuple[Tensor, Tensor]:
    """Project world points to (distorted) pixels.

    Args:
        cams: ``N`` cameras of any model.
        pts_world: ``[N, P, 3]`` or ``[P, 3]`` world points.

    Returns:
        ``uv [N, P, 2]`` pixel coordinates (pixel centres at ``i + 0.5``) and ``depth [N, P]``
        (camera-frame ``z``). ``uv`` is meaningless where ``depth <= 0`` (inf at 0): mask those.
        Differentiable w.r.t. points and every camera parameter; matches ``cv2.projectPoints``
        (``"opencv"``) and ``cv2.fisheye.projectPoints`` (``"fisheye"``).

    >>> cams = Cameras(100.0, 100.0, 50.0, 50.0, torch.eye(3)[None], torch.zeros(1, 3), 100, 100)
    >>> project(cams, torch.tensor([[0.0, 0.0, 3.0], [1.0, -1.0, 2.0]]))[0]
    tensor([[[ 50.,  50.],
             [100.,   0.]]])
    """
    x_cam = world_to_camera(cams, pts_world)
    depth = x_cam[..., 2]
    xy = x_cam[..., :2] / depth[..., None]
    return _to_pixels(cams, _distort(cams, xy)), depth


def unproject(cams: Cameras, uv: Tensor, depth: Tensor) -> Tensor:
    """Lift pixels with depth back to world points (inverse of :func:`project`).

    Args:
        cams: ``N`` cameras of any model (distortion is removed with :func:`undistort_points`).
        uv: ``[N, P, 2]`` or ``[P, 2]`` observed pixel coordinates.
        depth: ``[N, P]`` or ``[P]`` camera-frame ``z`` (not ray length).

    Returns:
        ``[N, P, 3]`` world points, differentiable w.r.t. ``uv``, ``depth`` and camera parameters.

    >>> cams = Cameras(100.0, 100.0, 50.0, 50.0, torch.eye(3)[None], torch.zeros(1, 3), 100, 100)
    >>> unproject(cams, torch.tensor([[100.0, 0.0]]), torch.tensor([2.0]))
    tensor([[[ 1., -1.,  2.]]])
    """
    depth = _batch(cams, depth, "depth", None)
    uv = _batch(cams, uv, "uv", 2)
    if depth.shape != uv.shape[:-1]:
        raise ValueError(f"depth must be [N, P] matching uv {list(uv.shape)}, got {list(depth.shape)}")
    xy = _undistort(cams, _to_normalized(cams, uv))
    x_cam = torch.cat([xy * depth[..., None], depth[..., None]], dim=-1)
    return camera_to_world(cams, x_cam)


# ----------------------------------------------------------------------------------------------
# Rays
# ----------------------------------------------------------------------------------------------


def pixel_centers(
    width: int, height: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """``[H, W, 2]`` pixel-centre coordinates: ``out[j, i] = (i + 0.5, j + 0.5)`` (column ``i``, row ``j``).

    >>> pixel_centers(3, 2)[1, 2]
    tensor([2.5000, 1.5000])
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be > 0, got {width} x {height}")
    u = torch.arange(width, dtype=dtype, device=device) + 0.5
    v = torch.arange(height, dtype=dtype, device=device) + 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1)


def rays_from_pixels(cams: Cameras, uv: Tensor) -> tuple[Tensor, Tensor]:
    """World-frame rays through (distorted) pixels.

    Args:
        cams: ``N`` cameras of any model.
        uv: ``[N, P, 2]`` or ``[P, 2]`` pixel coordinates.

    Returns:
        ``origins [N, P, 3]`` (camera centres) and unit ``directions [N, P, 3]``; the point
        ``origin + s * direction`` (``s > 0``) projects to ``uv``.
    """
    xy = _undistort(cams, _to_normalized(cams, _batch(cams, uv, "uv", 2)))
    d_cam = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1)
    directions = torch.nn.functional.normalize(d_cam @ cams.R, dim=-1)  # R^T d per row
    return cams.centers[:, None].expand_as(directions), directions


def pixel_rays(cams: Cameras) -> tuple[Tensor, Tensor]:
    """Rays through every pixel centre ``(i + 0.5, j + 0.5)``.

    All cameras must share one image size (raises ``ValueError`` otherwise).

    Returns:
        ``origins [N, H, W, 3]`` and unit ``directions [N, H, W, 3]`` in world coordinates;
        ``[:, j, i]`` is the ray of column ``i``, row ``j``.

    >>> cams = Cameras(2.0, 2.0, 2.0, 1.0, torch.eye(3)[None], torch.zeros(1, 3), 4, 2)
    >>> pixel_rays(cams)[1].shape
    torch.Size([1, 2, 4, 3])
    """
    if len(cams) == 0:
        raise ValueError("pixel_rays needs at least one camera")
    w, h = int(cams.width[0]), int(cams.height[0])
    if bool((cams.width != w).any() or (cams.height != h).any()):
        raise ValueError("pixel_rays needs all cameras to share one image size; got widths "
                         f"{cams.width.tolist()} and heights {cams.height.tolist()}; split the batch by size")
    grid = pixel_centers(w, h, cams.dtype, cams.device).reshape(1, h * w, 2).expand(len(cams), h * w, 2)
    origins, directions = rays_from_pixels(cams, grid)
    return origins.reshape(len(cams), h, w, 3), directions.reshape(len(cams), h, w, 3)


# ----------------------------------------------------------------------------------------------
# Image-space edits
# ----------------------------------------------------------------------------------------------


def resize(cams: Cameras, size: float | tuple[int, int]) -> Cameras:
    """Cameras for resized images.

    Args:
        cams: ``N`` cameras.
        size: a scale factor (new sizes are ``round(scale * W)``, ``round(scale * H)``) or
            ``(new_width, new_height)`` for every camera.

    Returns:
        Cameras with ``fx, cx`` scaled by ``sx = new_W / W`` and ``fy, cy`` by ``sy = new_H / H``. With
        the pixel-centre-at-0.5 convention this is exact: image point ``u`` maps to ``sx * u``.
        Distortion coefficients (on normalised coordinates) are unchanged.

    >>> cams = Cameras(100.0, 100.0, 50.0, 40.0, torch.eye(3)[None], torch.zeros(1, 3), 100, 80)
    >>> small = resize(cams, 0.5)
    >>> small.width.item(), small.cx.item(), small.fy.item()
    (50, 25.0, 50.0)
    """
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"size must be (new_width, new_height) > 0, got {size}")
        new_w = torch.full_like(cams.width, int(size[0]))
        new_h = torch.full_like(cams.height, int(size[1]))
    else:
        if not float(size) > 0:
            raise ValueError(f"scale must be > 0, got {size}")
        new_w = torch.round(cams.width.double() * float(size)).long().clamp(min=1)
        new_h = torch.round(cams.height.double() * float(size)).long().clamp(min=1)
    sx = new_w.to(cams.dtype) / cams.width.to(cams.dtype)
    sy = new_h.to(cams.dtype) / cams.height.to(cams.dtype)
    return dataclasses.replace(
        cams, fx=cams.fx * sx, fy=cams.fy * sy, cx=cams.cx * sx, cy=cams.cy * sy, width=new_w, height=new_h
    )


def crop(
    cams: Cameras, left: int | Tensor, top: int | Tensor, width: int | Tensor, height: int | Tensor
) -> Cameras:
    """Cameras for the crop ``[left, left + width) x [top, top + height)`` of each image.

    ``left, top, width, height``: ints or ``[N]`` integer tensors (pixels). The principal point
    shifts by ``(-left, -top)``; the crop may extend past the image (padding).

    >>> cams = Cameras(100.0, 100.0, 50.0, 40.0, torch.eye(3)[None], torch.zeros(1, 3), 100, 80)
    >>> c = crop(cams, 10, 20, 60, 40)
    >>> c.cx.item(), c.cy.item(), c.width.item()
    (40.0, 20.0, 60)
    """
    n = len(cams)
    left = _int_batch(left, "left", n, cams.device)
    top = _int_batch(top, "top", n, cams.device)
    return dataclasses.replace(
        cams, cx=cams.cx - left.to(cams.dtype), cy=cams.cy - top.to(cams.dtype), width=width, height=height
    )
