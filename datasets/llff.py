"""LLFF scenes (``poses_bounds.npy`` + ``images/``) to and from :class:`Scene`.

``poses_bounds.npy`` holds a float ``[N, 17]`` array, one row per image, the images being the files of
``images/`` (or ``images_<factor>/``) in sorted name order. Each row is a ``3x5`` matrix flattened
row-major, then the scene depth bounds ``near, far`` seen from that camera::

    [ d_x  r_x  b_x  c_x  H ]
    [ d_y  r_y  b_y  c_y  W ]      columns: the camera's down, right and backward axes in world
    [ d_z  r_z  b_z  c_z  f ]      coordinates, its centre c, and the image height, width, focal length

The rotation is camera-to-world with LLFF's axis order "down, right, backwards" (DRB). In OpenCV
terms (+X right, +Y down, +Z forward) the camera-to-world columns are ``[right, down, -backwards] =
[col 1, col 0, -col 2]``; NeRF's loaders build OpenGL's ``[right, up, backwards] = [col 1, -col 0,
col 2]`` (``load_llff.py`` of nerf / nerf-pytorch), the same camera. One focal length serves both
axes and the principal point is the image centre.

Images in ``images_<factor>/`` are downscaled copies: the intrinsics are :func:`resize`-d from the
stored ``H, W`` to the size of the first image on disk (``fx = f * W' / W``: ``f / factor`` when
the sizes divide exactly, as nerf-pytorch uses).

>>> import tempfile
>>> from PIL import Image
>>> drb_c2w = np.array([[0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 1, 5.0]])  # at z=5 looking down -Z, +Y up
>>> row = np.concatenate([np.hstack([drb_c2w, [[48], [64], [50]]]).ravel(), [1.0, 9.0]])
>>> with tempfile.TemporaryDirectory() as d:
...     np.save(f"{d}/poses_bounds.npy", row[None])
...     Path(d, "images").mkdir()
...     Image.new("RGB", (64, 48)).save(f"{d}/images/a.png")
...     scene = load_llff(d)
>>> project(scene.cameras, torch.zeros(1, 3, dtype=torch.float64))[0]  # the origin: the image centre
tensor([[[32., 24.]]], dtype=torch.float64)
>>> scene.frames[0].metadata
{'near': 1.0, 'far': 9.0}
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from scenegrad.datasets.scene import Frame, Scene
from scenegrad.render.cameras import Cameras, project, resize

__all__ = ["load_llff", "save_llff", "LLFF_IMAGE_EXTENSIONS"]

#: Image files of an LLFF folder (case-insensitive); others (and hidden files) are ignored.
LLFF_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_DEFAULT_BOUNDS = (0.1, 100.0)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in LLFF_IMAGE_EXTENSIONS)


def _image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` as :meth:`Frame.image` returns the image (EXIF orientation applied)."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def load_llff(path: str | Path, factor: int | None = None, dtype: torch.dtype = torch.float64) -> Scene:
    """An LLFF scene folder (``poses_bounds.npy`` + ``images/``) as a :class:`Scene`.

    Args:
        path: the folder holding ``poses_bounds.npy``.
        factor: read the downscaled images of ``images_<factor>/`` (e.g. 4 or 8) instead of ``images/``;
            the cameras follow the size of those images (see the module docstring).
        dtype: float dtype of the cameras.

    Returns:
        One frame per image, sorted by file name (``Frame.name`` = the file name), pinhole cameras
        (centred principal point, ``fx = fy`` up to the resize rounding), ``Frame.metadata["near"]``
        and ``["far"]`` from the bounds. ``Scene.metadata``: ``path``, ``format = "llff"``, ``factor``.

    Raises:
        FileNotFoundError: no ``poses_bounds.npy`` or no image folder.
        ValueError: an array that is not ``[N, 17]`` finite numbers, a different number of images and
            poses, or images whose aspect ratio does not match the stored ``H, W``.
    """
    folder = Path(path)
    npy = folder / "poses_bounds.npy"
    if not npy.is_file():
        raise FileNotFoundError(f"{npy}: no such file (an LLFF scene folder holds poses_bounds.npy and images/)")
    try:
        arr = np.load(npy, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise ValueError(f"{npy}: not a readable .npy array ({e})") from None
    if arr.ndim != 2 or arr.shape[1] != 17 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{npy}: expected a [N, 17] numeric array (3x5 pose matrices and near, far), got "
                         f"{list(arr.shape)} {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{npy}: contains non-finite values")
    if factor is not None and (int(factor) != factor or factor < 1):
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    images = folder / ("images" if factor in (None, 1) else f"images_{int(factor)}")
    if not images.is_dir():
        hint = f" (downscale images/ by {factor} into it first)" if factor not in (None, 1) else ""
        raise FileNotFoundError(f"{images}: no such image folder{hint}")
    files = _image_files(images)
    if len(files) != len(arr):
        raise ValueError(f"{npy} has {len(arr)} poses but {images} has {len(files)} images "
                         f"({', '.join(LLFF_IMAGE_EXTENSIONS)}); LLFF pairs them in sorted name order")

    poses = arr[:, :15].reshape(-1, 3, 5)
    bounds = arr[:, 15:]
    frames = [Frame(name=f.name, image_path=f, metadata={"near": float(b[0]), "far": float(b[1])})
              for f, b in zip(files, bounds, strict=True)]
    if not len(arr):
        return Scene(frames=[], cameras=None, root=folder, metadata={"format": "llff", "path": npy, "factor": factor})
    h, w, f = poses[:, 0, 4], poses[:, 1, 4], poses[:, 2, 4]
    wi, hi = np.round(w).astype(np.int64), np.round(h).astype(np.int64)
    if (wi <= 0).any() or (hi <= 0).any() or (f <= 0).any():
        raise ValueError(f"{npy}: image sizes and focal lengths (column 4: H, W, f) must be > 0")
    # DRB camera-to-world -> OpenCV camera-to-world [right, down, forward] = [col 1, col 0, -col 2]
    c2w_cv = np.stack([poses[:, :, 1], poses[:, :, 0], -poses[:, :, 2]], axis=-1)
    R = torch.tensor(c2w_cv, dtype=dtype).transpose(1, 2)
    t = -(R @ torch.tensor(poses[:, :, 3:4], dtype=dtype))[..., 0]
    ft = torch.tensor(f, dtype=dtype)
    cams = Cameras(ft, ft, torch.tensor(w / 2, dtype=dtype), torch.tensor(h / 2, dtype=dtype), R, t,
                   torch.tensor(wi), torch.tensor(hi))
    size = _image_size(files[0])
    if (size[0], size[1]) != (int(wi[0]), int(hi[0])):
        sx, sy = size[0] / w[0], size[1] / h[0]
        if abs(sx - sy) * max(w[0], h[0]) > 1.5:
            raise ValueError(f"{files[0]} is {size[0]}x{size[1]} but {npy} stores {int(wi[0])}x{int(hi[0])} "
                             "images: not a scaled copy (rotated by EXIF? wrong factor?)")
        cams = resize(cams, size)
    metadata = {"format": "llff", "path": npy, "factor": factor}
    return Scene(frames=frames, cameras=cams, root=folder, metadata=metadata)


def _bounds_from_points(cams: Cameras, xyz: torch.Tensor) -> list[tuple[float, float] | None]:
    """Per camera ``(near, far)``: the 0.1 / 99.9 percentiles of the depths of the points that
    project inside its image (as LLFF's ``imgs2poses`` does with each image's COLMAP points)."""
    uv, depth = project(cams, xyz.to(cams.dtype))
    inside = (depth > 0) & (uv[..., 0] >= 0) & (uv[..., 1] >= 0)
    inside &= (uv[..., 0] <= cams.width[:, None].to(cams.dtype)) & (uv[..., 1] <= cams.height[:, None].to(cams.dtype))
    out: list[tuple[float, float] | None] = []
    for i in range(len(cams)):
        z = depth[i][inside[i]].detach().cpu().numpy()
        out.append((float(np.percentile(z, 0.1)), float(np.percentile(z, 99.9))) if len(z) else None)
    return out


def save_llff(scene: Scene, path: str | Path, copy_images: bool = True,
              default_bounds: tuple[float, float] = _DEFAULT_BOUNDS, overwrite: bool = False) -> Path:
    """Write ``poses_bounds.npy`` (and ``images/``) so that :func:`load_llff` reads the scene back.

    Args:
        scene: a scene with pinhole cameras (or zero distortion), ``fx = fy`` (within 0.1 %), whose
            frames have image files.
        path: the output folder.
        copy_images: copy each frame's ``image_path`` into ``<path>/images/`` (named ``frame.name``
            with ``/`` replaced by ``_``). Without it, the images are expected there already, with
            the same names. Rows are written in sorted file-name order, as LLFF pairs them.
        default_bounds: ``(near, far)`` for frames without better bounds. Bounds come from
            ``scene.points`` (0.1 / 99.9 percentile depth of the points inside the image), else
            ``Frame.metadata["near"] / ["far"]``, else this.
        overwrite: replace an existing ``poses_bounds.npy`` instead of raising ``FileExistsError``.

    The principal point is not stored (LLFF assumes the image centre): an off-centre one (> 0.5 px)
    is dropped with a warning. Returns the path of ``poses_bounds.npy``.

    Raises:
        ValueError: no cameras, distortion, ``fx != fy``, frames without image files, repeated file
            names, or other images in ``<path>/images/`` (they would shift LLFF's sorted pairing).
    """
    cams = scene.cameras
    if cams is None:
        raise ValueError("save_llff needs a scene with cameras (scene.cameras is None)")
    cams = cams.to("cpu", torch.float64)
    if cams.dist is not None and bool((cams.dist != 0).any()):
        raise ValueError(f"LLFF cameras have no lens distortion; got {cams.model!r} cameras with non-zero "
                         "coefficients (undistort the images first)")
    if bool(((cams.fx - cams.fy).abs() > 1e-3 * cams.fx).any()):
        raise ValueError("LLFF stores one focal length per camera; these cameras have fx != fy")
    off = torch.maximum((cams.cx - cams.width / 2).abs(), (cams.cy - cams.height / 2).abs())
    if bool((off > 0.5).any()):
        warnings.warn(f"LLFF assumes the principal point at the image centre; {int((off > 0.5).sum())} camera(s) "
                      f"are off by up to {float(off.max()):.3g} px, which is lost", stacklevel=2)
    folder = Path(path)
    npy = folder / "poses_bounds.npy"
    if npy.exists() and not overwrite:
        raise FileExistsError(f"{npy}: already exists (pass overwrite=True to replace it)")

    names = [f.name.replace("/", "_").replace("\\", "_") for f in scene.frames]
    if len(set(names)) != len(names):
        raise ValueError("frame names must give distinct image file names")
    for frame, name in zip(scene.frames, names, strict=True):
        if Path(name).suffix.lower() not in LLFF_IMAGE_EXTENSIONS:
            raise ValueError(f"frame {frame.name!r}: LLFF images must be {', '.join(LLFF_IMAGE_EXTENSIONS)} files")
        if copy_images and (frame.image_path is None or not Path(frame.image_path).is_file()):
            raise ValueError(f"frame {frame.name!r} has no image file to copy ({frame.image_path})")
    images = folder / "images"
    if images.is_dir():
        extra = sorted({p.name for p in _image_files(images)} - set(names))
        if extra:
            raise ValueError(f"{images} holds other images ({', '.join(extra[:5])}); LLFF pairs poses with the "
                             "sorted image files, so they must be exactly the scene's")

    point_bounds = _bounds_from_points(cams, scene.points.xyz) if scene.points is not None else [None] * len(cams)
    rows = []
    c2w = cams.camtoworlds.numpy()
    # The centre as R^-1 (-t) (not R^T (-t)): loading computes t = -R c, exact for any invertible R.
    c2w[:, :3, 3] = -np.linalg.solve(cams.R.numpy(), cams.t.numpy()[..., None])[..., 0]
    for i, frame in enumerate(scene.frames):
        near_far = point_bounds[i]
        if near_far is None and "near" in frame.metadata and "far" in frame.metadata:
            near_far = (float(frame.metadata["near"]), float(frame.metadata["far"]))
        near_far = near_far or default_bounds
        # OpenCV camera-to-world [right, down, forward] -> DRB [down, right, backwards]
        drb = np.stack([c2w[i, :3, 1], c2w[i, :3, 0], -c2w[i, :3, 2], c2w[i, :3, 3]], axis=-1)
        hwf = [[float(cams.height[i])], [float(cams.width[i])], [float(cams.fx[i])]]
        rows.append(np.concatenate([np.hstack([drb, hwf]).ravel(), near_far]))
    order = sorted(range(len(names)), key=lambda i: names[i])

    folder.mkdir(parents=True, exist_ok=True)
    if copy_images:
        images.mkdir(exist_ok=True)
        for frame, name in zip(scene.frames, names, strict=True):
            target = images / name
            if not (target.exists() and target.resolve() == Path(frame.image_path).resolve()):
                shutil.copyfile(frame.image_path, target)
    np.save(npy, np.array([rows[i] for i in order], dtype=np.float64).reshape(-1, 17))
    return npy
