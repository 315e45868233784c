"""Undistortion: distorted (``"opencv"``, ``"fisheye"``) cameras and their images -> pinhole.

The resampling maps are computed with scenegrad's own
:func:`~scenegrad.render.cameras.distort_points`, so they follow scenegrad's conventions exactly:
the new pinhole pixel centred at ``(i + 0.5, j + 0.5)`` is lifted to a ray with the new ``K``, the
ray is distorted with the source camera, and the source image is sampled there with ``cv2.remap``.
OpenCV puts pixel centres at integers, so the maps handed to ``cv2.remap`` are ``u - 0.5, v - 0.5``
(and equal ``cv2.initUndistortRectifyMap`` / ``cv2.fisheye.initUndistortRectifyMap`` for the same
cameras with ``cx, cy`` shifted by ``-0.5``).

The new intrinsics (:func:`undistort_cameras`) are chosen like ``cv2.getOptimalNewCameraMatrix``:
the undistorted outline of the source image (its border pixel centres) has an inscribed and a
circumscribed axis-aligned rectangle; ``alpha = 0`` (``"valid"``) maps the inscribed one onto the new
image (every new pixel sees source pixels, some source pixels are cropped away), ``alpha = 1``
(``"all"``) the circumscribed one (every source pixel is kept, the new image has empty corners),
values in between interpolate ``fx, fy, cx, cy`` linearly. Depth maps (camera ``z``) keep their
values: undistortion does not move the camera.

>>> import torch
>>> from scenegrad.render.cameras import Cameras
>>> cam = Cameras(300.0, 300.0, 160.0, 120.0, torch.eye(3)[None], torch.zeros(1, 3), 320, 240,
...               model="opencv", dist=torch.tensor([-0.2, 0.05, 0.0, 0.0, 0.0]))
>>> new = undistort_cameras(cam, "valid")
>>> new.model, new.width.item(), bool(new.fx < 300.0)  # barrel distortion: the valid view is wider
('pinhole', 320, True)
>>> image = torch.rand(240, 320, 3)
>>> undistort_image(image, cam, new).shape
torch.Size([240, 320, 3])
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from scenegrad.datasets.scene import Frame, Scene, read_image, to_float_image
from scenegrad.render.cameras import Cameras, distort_points, pixel_centers, undistort_points

__all__ = ["undistort_cameras", "undistort_maps", "undistort_image", "undistort_scene"]

_EDGE_SAMPLES = 64  # points per image edge when fitting the new intrinsics
_INTERPOLATION = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
                  "lanczos": cv2.INTER_LANCZOS4}


def _alpha_value(alpha: float | str) -> float:
    if isinstance(alpha, str):
        if alpha not in ("valid", "all"):
            raise ValueError(f"alpha must be 'valid', 'all' or a number in [0, 1], got {alpha!r}")
        return 0.0 if alpha == "valid" else 1.0
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return a


def _edge_points(cams: Cameras, n: int) -> tuple[Tensor, ...]:
    """Border pixel centres of each camera's image: left, right, top, bottom edges, each ``[N, n, 2]``."""
    s = torch.linspace(0.0, 1.0, n, dtype=torch.float64, device=cams.device)[None]
    w = cams.width.to(torch.float64)[:, None]
    h = cams.height.to(torch.float64)[:, None]
    u = 0.5 + s * (w - 1)  # [N, n]: pixel centres 0.5 ... W - 0.5
    v = 0.5 + s * (h - 1)

    def pts(x: Tensor, y: Tensor) -> Tensor:
        return torch.stack(torch.broadcast_tensors(x, y), dim=-1)

    return pts(0.5 + 0 * v, v), pts(w - 0.5 + 0 * v, v), pts(u, 0.5 + 0 * u), pts(u, h - 0.5 + 0 * u)


def undistort_cameras(
    cams: Cameras, alpha: float | str = "valid", size: tuple[int, int] | None = None
) -> Cameras:
    """Pinhole cameras for undistorted images (same poses), intrinsics chosen as ``cv2.getOptimalNewCameraMatrix``.

    Args:
        cams: ``N`` cameras of any model (pinhole cameras are returned as they are).
        alpha: ``"valid"`` (= 0: no empty pixels in the new image), ``"all"`` (= 1: no source pixel
            lost), or a number in between (see the module docstring).
        size: ``(width, height)`` of the new images; default: the source sizes.

    Returns:
        ``N`` pinhole cameras with the same ``R, t``, the source dtype and device (fitted in float64,
        not differentiable). The border pixel centres of the new image map onto the chosen rectangle
        exactly as in OpenCV (``fx = (W - 1) / rect_width``).

    Raises:
        ValueError: an outline that cannot be undistorted (a fisheye wider than 180 degrees with
        ``alpha > 0``).
    """
    a = _alpha_value(alpha)
    if not cams.is_distorted:
        return cams
    c64 = cams.to(dtype=torch.float64)
    with torch.no_grad():
        left, right, top, bottom = (undistort_points(c64, e, normalized=True) for e in _edge_points(c64, _EDGE_SAMPLES))
    all_pts = torch.cat([left, right, top, bottom], dim=1)
    if not bool(torch.isfinite(all_pts).all()):
        raise ValueError("the image outline cannot be undistorted (rays beyond 90 degrees?); use a smaller alpha")
    inner = torch.stack([left[..., 0].amax(1), top[..., 1].amax(1), right[..., 0].amin(1), bottom[..., 1].amin(1)], -1)
    outer = torch.stack([all_pts[..., 0].amin(1), all_pts[..., 1].amin(1), all_pts[..., 0].amax(1),
                         all_pts[..., 1].amax(1)], -1)
    if size is None:
        new_w, new_h = c64.width, c64.height
    else:
        new_w = torch.full_like(c64.width, int(size[0]))
        new_h = torch.full_like(c64.height, int(size[1]))

    def fit(rect: Tensor) -> tuple[Tensor, ...]:
        fx = (new_w.double() - 1) / (rect[:, 2] - rect[:, 0])
        fy = (new_h.double() - 1) / (rect[:, 3] - rect[:, 1])
        return fx, fy, 0.5 - fx * rect[:, 0], 0.5 - fy * rect[:, 1]

    if bool(((inner[:, 2] <= inner[:, 0]) | (inner[:, 3] <= inner[:, 1])).any()):
        raise ValueError("the undistorted image outline has no inscribed rectangle (distortion too strong?)")
    k0, k1 = fit(inner), fit(outer)
    fx, fy, cx, cy = ((p0 * (1 - a) + p1 * a).to(cams.dtype) for p0, p1 in zip(k0, k1, strict=True))
    return Cameras(fx, fy, cx, cy, cams.R.detach(), cams.t.detach(), new_w, new_h)


def undistort_maps(cam: Cameras, new_cam: Cameras) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps from one distorted camera to one pinhole camera.

    Args:
        cam: 1 source camera (any model).
        new_cam: 1 pinhole camera with the same centre; a different rotation is applied (a pure
            rotation resampling, like ``R`` in ``cv2.initUndistortRectifyMap``).

    Returns:
        ``map_x, map_y``: float32 ``[H', W']`` source coordinates **in OpenCV's pixel convention**
        (``u - 0.5``) for every new pixel; ``-1`` where the ray points behind the source camera.
    """
    if len(cam) != 1 or len(new_cam) != 1:
        raise ValueError(f"undistort_maps takes one camera each, got {len(cam)} and {len(new_cam)}")
    if new_cam.is_distorted:
        raise ValueError(f"the new camera must be a pinhole, got model {new_cam.model!r}")
    src, dst = cam.to(dtype=torch.float64), new_cam.to(dtype=torch.float64, device=cam.device)
    scale = float(src.centers.norm()) + float(dst.centers.norm()) + 1.0
    if float((src.centers - dst.centers).norm()) > 1e-9 * scale:
        raise ValueError("undistort_maps needs cameras with the same centre (only a rotation can be resampled)")
    w, h = int(dst.width[0]), int(dst.height[0])
    with torch.no_grad():
        uv = pixel_centers(w, h, torch.float64, src.device).reshape(-1, 2)
        rays = torch.cat([(uv - torch.stack([dst.cx, dst.cy], -1)) / torch.stack([dst.fx, dst.fy], -1),
                          torch.ones_like(uv[:, :1])], dim=-1)
        rays = rays @ (src.R[0] @ dst.R[0].T).T  # new camera frame -> source camera frame
        z = rays[:, 2]
        front = z > 1e-12
        xy = rays[:, :2] / torch.where(front, z, torch.ones_like(z))[:, None]
        src_uv = distort_points(src, xy, normalized=True)[0] - 0.5
        src_uv = torch.where(front[:, None] & torch.isfinite(src_uv), src_uv, torch.full_like(src_uv, -1.0))
    maps = src_uv.reshape(h, w, 2).cpu().numpy().astype(np.float32)
    return np.ascontiguousarray(maps[..., 0]), np.ascontiguousarray(maps[..., 1])


def _remap(array: np.ndarray, maps: tuple[np.ndarray, np.ndarray], interpolation: str, fill: float) -> np.ndarray:
    """``cv2.remap`` for any dtype and channel count (``[H, W]`` or ``[H, W, C]``), same dtype out."""
    if interpolation not in _INTERPOLATION:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATION)}, got {interpolation!r}")
    dtype = array.dtype
    work = array
    if dtype == np.bool_:
        work = array.astype(np.uint8)
    elif dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        work = array.astype(np.float64)
    flag = _INTERPOLATION[interpolation]

    def run(a: np.ndarray) -> np.ndarray:
        out = cv2.remap(np.ascontiguousarray(a), maps[0], maps[1], flag, borderMode=cv2.BORDER_CONSTANT,
                        borderValue=fill)
        return out.reshape(*out.shape[:2], *a.shape[2:])

    if work.ndim == 3 and work.shape[2] > 4:
        out = np.concatenate([run(work[..., c:c + 4]) for c in range(0, work.shape[2], 4)], axis=2)
    else:
        out = run(work)
    if dtype == np.bool_:
        return out != 0
    return out.astype(dtype, copy=False)


def undistort_image(
    image: np.ndarray | Tensor,
    cam: Cameras,
    new_cam: Cameras,
    interpolation: str = "linear",
    fill: float = 0.0,
    maps: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray | Tensor:
    """Resample an image of ``cam`` (distorted) as seen by ``new_cam`` (pinhole).

    Args:
        image: ``[H, W]`` or ``[H, W, C]`` array or tensor of any dtype (``H, W`` = ``cam``'s size).
        cam, new_cam: one camera each (see :func:`undistort_maps`).
        interpolation: ``"linear"`` (images), ``"nearest"`` (depth, masks, labels), ``"cubic"``, ``"lanczos"``.
        fill: the value of new pixels that see no source pixel.
        maps: precomputed :func:`undistort_maps` (for many images of one camera).

    Returns:
        ``[H', W'(, C)]`` of the input's type and dtype (a tensor comes back on its device). Not
        differentiable.
    """
    is_tensor = isinstance(image, Tensor)
    array = image.detach().cpu().numpy() if is_tensor else np.asarray(image)
    h, w = int(cam.height[0]), int(cam.width[0])
    if array.ndim not in (2, 3) or array.shape[:2] != (h, w):
        raise ValueError(f"image must be [H, W] or [H, W, C] with H, W = {h}, {w} (the camera's size), "
                         f"got {list(array.shape)}")
    out = _remap(array, maps if maps is not None else undistort_maps(cam, new_cam), interpolation, fill)
    return torch.from_numpy(out).to(image.device) if is_tensor else out


# ----------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------


class _Resampler:
    """Maps of one (source, new) camera pair, computed on first use and kept."""

    def __init__(self, cam: Cameras, new_cam: Cameras) -> None:
        self.cam, self.new_cam = cam, new_cam

    @functools.cached_property
    def maps(self) -> tuple[np.ndarray, np.ndarray]:
        return undistort_maps(self.cam, self.new_cam)

    @functools.cached_property
    def valid(self) -> np.ndarray:
        """``[H', W']`` bool: the new pixel samples inside the source image (pixel centres, OpenCV coords)."""
        mx, my = self.maps
        w, h = int(self.cam.width[0]), int(self.cam.height[0])
        return (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)


def _as_array(x: np.ndarray | Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _source_image(frame: Frame) -> np.ndarray:
    if frame.image_fn is not None:
        return _as_array(frame.image_fn())
    if frame.image_path is None:
        raise ValueError(f"frame {frame.name!r} has no image")
    return read_image(frame.image_path)


def _undistorted_image(frame: Frame, resampler: _Resampler) -> np.ndarray:
    return undistort_image(_source_image(frame), resampler.cam, resampler.new_cam, "linear", maps=resampler.maps)


def _undistorted_depth(frame: Frame, resampler: _Resampler) -> np.ndarray:
    depth = frame.depth().cpu().numpy().astype(np.float32)
    return undistort_image(depth, resampler.cam, resampler.new_cam, "nearest", maps=resampler.maps)


def _undistorted_mask(frame: Frame, resampler: _Resampler) -> np.ndarray:
    mask = frame.mask()
    keep = resampler.valid
    if mask is not None:
        keep = keep & undistort_image(mask.cpu().numpy(), resampler.cam, resampler.new_cam, "nearest",
                                      maps=resampler.maps)
    return keep


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return (to_float_image(image).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _write(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def undistort_scene(scene: Scene, alpha: float | str = "valid", out_dir: str | Path | None = None) -> Scene:
    """The scene seen by pinhole cameras (:func:`undistort_cameras`): frames undistorted on demand.

    Images are resampled bilinearly, depth maps (``Frame.depth()``, kept in the scene's units) and
    masks with nearest-neighbour. Frames get a mask (``True`` = keep) wherever the source had one or
    ``alpha > 0`` (new pixels outside the source image are dropped).

    Args:
        scene: a scene with cameras. Pinhole cameras pass through unchanged (a shallow copy).
        alpha: see :func:`undistort_cameras`.
        out_dir: ``None``: frames read and undistort their source on every call (``image_fn``,
            ``depth_fn``, ``mask_fn``). A folder: every frame is undistorted now and written there
            (``images/<name>.png`` as 8-bit PNG, ``depth/<name>.tiff`` float32 in scene units,
            ``masks/<name>.png`` 255 = keep), and the frames point at those files.

    Returns:
        A :class:`Scene` with the same frame names, timestamps and metadata (plus
        ``metadata["undistorted_from"]``, the source image path) and pinhole cameras.
    """
    if scene.cameras is None:
        raise ValueError("undistort_scene needs a scene with cameras")
    a = _alpha_value(alpha)
    cams = scene.cameras
    if not cams.is_distorted:
        return Scene(list(scene.frames), cams, scene.points, scene.root, dict(scene.metadata))
    new_cams = undistort_cameras(cams, a)
    cache: dict[tuple, _Resampler] = {}
    frames = []
    for i, frame in enumerate(scene.frames):
        cam, new = cams[i], new_cams[i]
        key = tuple(torch.cat([cam.K.flatten(), cam.dist.flatten(), new.K.flatten()]).tolist()) + (
            int(cam.width[0]), int(cam.height[0]), int(new.width[0]), int(new.height[0]))
        resampler = cache.setdefault(key, _Resampler(cam, new))
        has_depth = frame.depth_fn is not None or frame.depth_path is not None
        has_mask = frame.mask_fn is not None or frame.mask_path is not None or a > 0
        meta = {**frame.metadata, "undistorted_from": frame.image_path}
        new_frame = Frame(name=frame.name, timestamp=frame.timestamp, metadata=meta)
        if out_dir is None:
            new_frame.image_fn = functools.partial(_undistorted_image, frame, resampler)
            if has_depth:
                new_frame.depth_fn = functools.partial(_undistorted_depth, frame, resampler)
            if has_mask:
                new_frame.mask_fn = functools.partial(_undistorted_mask, frame, resampler)
        else:
            root = Path(out_dir)
            stem = Path(frame.name).with_suffix("")
            new_frame.image_path = _write(root / "images" / f"{stem}.png",
                                          _to_uint8(_undistorted_image(frame, resampler)))
            if has_depth:
                new_frame.depth_path = _write(root / "depth" / f"{stem}.tiff", _undistorted_depth(frame, resampler))
            if has_mask:
                new_frame.mask_path = _write(root / "masks" / f"{stem}.png",
                                             _undistorted_mask(frame, resampler).astype(np.uint8) * 255)
        frames.append(new_frame)
    meta = {**scene.metadata, "undistorted": {"alpha": a}}
    root = Path(out_dir) if out_dir is not None else scene.root
    return Scene(frames, new_cams, scene.points, root, meta)

