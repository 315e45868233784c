"""Strecha et al. (CVPR 2008) multi-view benchmark cameras: ``.camera`` files with laser-registered
ground truth (fountain-P11, Herz-Jesu-P8, castle-P19, ...).

A ``.camera`` file (``0000.jpg.camera`` for the image ``0000.jpg``) has nine lines:

====  ================================================================================
1-3   ``K``, 3x3 intrinsics in pixels
4     three radial distortion coefficients, ``0 0 0`` in every published set (the
      images are distributed undistorted); their model is not documented
5-7   ``R``, 3x3 **camera-to-world** rotation (its columns are the camera axes in world)
8     ``C``, the camera centre in world coordinates (metres)
9     ``w h``, the image size in pixels
====  ================================================================================

and projects ``x ~ K [R^T | -R^T C] X``: scenegrad's world-to-camera ``R_w2c = R^T``,
``t = -R^T C`` (OpenCV axes; checked numerically by triangulating SIFT matches, see
``tests/datasets/test_strecha.py``). ``K`` is taken in scenegrad's pixel convention as stored
(``cx, cy`` unchanged): the SIFT reprojection test cannot tell a half-pixel shift apart.

Non-zero distortion values are kept in ``Frame.metadata["strecha_distortion"]`` with a warning
and the camera stays a pinhole (no model to apply them with).

>>> import torch
>>> from scenegrad.render.cameras import Cameras
>>> cam = Cameras.from_camtoworlds(torch.eye(4, dtype=torch.float64)[None],
...     torch.tensor([[2759.48, 0, 1520.69], [0, 2764.16, 1006.81], [0, 0, 1]], dtype=torch.float64), 3072, 2048)
>>> print(format_strecha_camera(cam).splitlines()[3:5])
['0 0 0', '1 0 0']
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scenegrad.datasets.scene import Frame, Scene
from scenegrad.render.cameras import Cameras

__all__ = ["StrechaCamera", "read_strecha_camera", "format_strecha_camera", "write_strecha_camera",
           "load_strecha"]

_ROTATION_TOLERANCE = 1e-3  # max |R^T R - I|: Strecha's rotations are printed to ~6 digits
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".JPG", ".PNG", ".tif", ".tiff")


@dataclass(eq=False)
class StrechaCamera:
    """One parsed ``.camera`` file: ``camera`` (1 pinhole :class:`Cameras`, float64) and the raw
    ``distortion`` line (3 floats)."""

    camera: Cameras
    distortion: tuple[float, float, float]


def read_strecha_camera(path: str | Path) -> StrechaCamera:
    """Parse a Strecha ``.camera`` file (layout in the module docstring).

    Returns:
        :class:`StrechaCamera` with one float64 pinhole camera (world-to-camera ``R = R_file^T``,
        ``t = -R_file^T C``) and the distortion values.

    Raises:
        FileNotFoundError: no such file. ValueError (naming the file and line): wrong line count or
        number count, non-numeric values, a ``K`` with skew or a bad last row, ``R`` not a rotation,
        a non-positive image size.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such Strecha camera file")
    lines = [(n, s) for n, s in enumerate(path.read_text().splitlines(), start=1) if s.strip()]
    if len(lines) != 9:
        raise ValueError(f"{path}: a Strecha .camera file has 9 non-empty lines (K, distortion, R, C, 'w h'), "
                         f"got {len(lines)}")
    expected = [3, 3, 3, 3, 3, 3, 3, 3, 2]
    rows = []
    for (lineno, text), count in zip(lines, expected, strict=True):
        try:
            values = [float(v) for v in text.split()]
        except ValueError:
            raise ValueError(f"{path}:{lineno}: expected numbers, got {text.strip()!r}") from None
        if len(values) != count or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{path}:{lineno}: expected {count} finite numbers, got {text.strip()!r}")
        rows.append(values)
    K = np.array(rows[0:3])
    dist = (rows[3][0], rows[3][1], rows[3][2])
    R_c2w = np.array(rows[4:7])
    C = np.array(rows[7])
    w, h = rows[8]
    if K[0, 1] != 0 or K[1, 0] != 0 or K[2, 0] != 0 or K[2, 1] != 0 or K[2, 2] != 1:
        raise ValueError(f"{path}: K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {K.tolist()}")
    err = float(np.abs(R_c2w.T @ R_c2w - np.eye(3)).max())
    if err > _ROTATION_TOLERANCE or np.linalg.det(R_c2w) <= 0:
        raise ValueError(f"{path}: lines 5-7 are not a rotation matrix (max |R^T R - I| = {err:.3g}, "
                         f"det = {np.linalg.det(R_c2w):.3g})")
    if w != int(w) or h != int(h) or w <= 0 or h <= 0:
        raise ValueError(f"{path}: line 9 must be the image size 'w h' in pixels, got {w} {h}")
    u, _, vt = np.linalg.svd(R_c2w)
    c2w = np.eye(4)
    c2w[:3, :3] = u @ vt
    c2w[:3, 3] = C
    if any(dist):
        warnings.warn(f"{path}: non-zero distortion {list(dist)} ignored (Strecha's model is undocumented; "
                      "the camera is loaded as a pinhole)", stacklevel=2)
    camera = Cameras.from_camtoworlds(torch.from_numpy(c2w)[None], torch.from_numpy(K), int(w), int(h))
    return StrechaCamera(camera, dist)


def format_strecha_camera(camera: Cameras, distortion: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> str:
    """The text of a ``.camera`` file for one pinhole camera (inverse of :func:`read_strecha_camera`)."""
    if len(camera) != 1:
        raise ValueError(f"a .camera file holds one camera, got {len(camera)}")
    if camera.is_distorted:
        raise ValueError(f"a Strecha .camera file holds a pinhole camera, got model {camera.model!r}; "
                         "undistort first (scenegrad.datasets.undistort)")
    K = camera.K[0].detach().double().cpu()
    c2w = camera.camtoworlds[0].detach().double().cpu()

    def row(values: Tensor | list[float]) -> str:
        return " ".join(f"{float(v):.17g}" for v in values)

    lines = [row(K[i]) for i in range(3)] + [row(list(distortion))]
    lines += [row(c2w[i, :3]) for i in range(3)] + [row(c2w[:3, 3])]
    lines.append(f"{int(camera.width[0])} {int(camera.height[0])}")
    return "\n".join(lines) + "\n"


def write_strecha_camera(path: str | Path, camera: Cameras,
                         distortion: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
    """Write one pinhole camera as a Strecha ``.camera`` file."""
    Path(path).write_text(format_strecha_camera(camera, distortion))


def _find_camera_dir(root: Path) -> Path:
    for candidate in (root / "gt_dense_cameras", root / "cameras", root):
        if candidate.is_dir() and any(candidate.glob("*.camera")):
            return candidate
    raise FileNotFoundError(f"{root}: no .camera files (looked in gt_dense_cameras/, cameras/ and the folder)")


def _find_image(image_dirs: list[Path], name: str) -> Path | None:
    """The image ``name`` (``0000.jpg``), or one with the same stem and another extension (the
    original sets ship ``0000.png.camera`` with PNG images; re-encoded copies keep the camera name)."""
    stem = Path(name).stem
    for d in image_dirs:
        if (d / name).is_file():
            return d / name
    for d in image_dirs:
        for ext in _IMAGE_EXTS:
            if (d / f"{stem}{ext}").is_file():
                return d / f"{stem}{ext}"
    return None


def _natural_key(p: Path) -> list:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]


def load_strecha(root: str | Path, require_images: bool = True) -> Scene:
    """A Strecha dataset folder: ``.camera`` files in ``gt_dense_cameras/`` (or ``cameras/``, or the folder
    itself) and images in ``images/`` (or the folder itself), paired by name (``0000.jpg.camera`` ->
    ``0000.jpg``, falling back to the same stem with another extension).

    Args:
        root: the dataset folder.
        require_images: raise when a camera has no image (else such frames have no ``image_path``).

    Returns:
        A :class:`Scene` with float64 pinhole cameras (in natural file order), frames named after the
        images (``0000.jpg``), ``metadata["camera_path"]`` per frame.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such Strecha dataset folder")
    cam_dir = _find_camera_dir(root)
    image_dirs = [d for d in (root / "images", root, cam_dir) if d.is_dir()]
    frames, cams = [], []
    for cam_path in sorted(cam_dir.glob("*.camera"), key=_natural_key):
        parsed = read_strecha_camera(cam_path)
        image_name = cam_path.name[: -len(".camera")]
        image = _find_image(image_dirs, image_name)
        if image is None and require_images:
            raise FileNotFoundError(f"{cam_path}: no image {image_name!r} (or same stem) in "
                                    f"{', '.join(str(d) for d in image_dirs)}")
        meta = {"camera_path": cam_path}
        if any(parsed.distortion):
            meta["strecha_distortion"] = parsed.distortion
        frames.append(Frame(name=image.name if image is not None else image_name, image_path=image, metadata=meta))
        cams.append(parsed.camera)
    cameras = Cameras(
        torch.cat([c.fx for c in cams]), torch.cat([c.fy for c in cams]), torch.cat([c.cx for c in cams]),
        torch.cat([c.cy for c in cams]), torch.cat([c.R for c in cams]), torch.cat([c.t for c in cams]),
        torch.cat([c.width for c in cams]), torch.cat([c.height for c in cams]),
    )
    return Scene(frames, cameras, root=root, metadata={"format": "strecha"})
