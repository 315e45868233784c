"""The one scene description every loader returns and every writer takes.

A :class:`Scene` is a list of :class:`Frame` (images loaded lazily, on demand), their
:class:`~scenegrad.render.cameras.Cameras` when known (``None`` for an unposed video), and an
optional sparse point cloud :class:`Points`. Conventions are scenegrad's
(:mod:`scenegrad.render.cameras`): OpenCV world-to-camera extrinsics, intrinsics in pixels of the
frame's image as stored on disk (after EXIF / rotation-metadata orientation is applied), images
float ``[H, W, C]`` in ``[0, 1]``, depth in the scene's units along camera +Z (``0`` = invalid),
masks ``[H, W]`` bool with ``True`` = keep (the pixel belongs to the subject / is valid).

Loaders read pixels only when :meth:`Frame.image` is called, so a scene of thousands of photos
costs only their paths until used. Decoded video frames carry their pixels in memory (already
selected and resized: see :mod:`scenegrad.datasets.video`).

>>> import numpy as np
>>> frame = Frame(name="a", image_fn=lambda: np.zeros((4, 6, 3), np.uint8))
>>> frame.image().shape, frame.image().dtype
(torch.Size([4, 6, 3]), torch.float32)
>>> Scene(frames=[frame]).image_sizes()
[(6, 4)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from scenegrad.render.cameras import Cameras

__all__ = ["Frame", "Points", "Scene", "to_float_image", "read_image"]


def to_float_image(array: np.ndarray | Tensor) -> Tensor:
    """``[H, W]`` or ``[H, W, C]`` uint8 / uint16 / float array -> float32 ``[H, W, C]`` in ``[0, 1]``."""
    a = torch.as_tensor(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array
    if a.dim() == 2:
        a = a[..., None]
    if a.dtype == torch.uint8:
        return a.float() / 255.0
    if a.dtype in (torch.uint16, torch.int32) or (isinstance(array, np.ndarray) and array.dtype == np.uint16):
        return a.float() / 65535.0
    return a.float()


def read_image(path: str | Path) -> np.ndarray:
    """Pixels of an image file as stored, with its EXIF orientation applied (``[H, W]`` or
    ``[H, W, C]``, the file's dtype). Raises ``ValueError`` naming the file when it cannot be decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif im.mode == "I;16B":
                im = im.convert("I;16")
            return np.array(im)  # a writable copy (torch.as_tensor warns on read-only arrays)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e


@dataclass
class Frame:
    """One view: where its pixels come from, and what else is known about it.

    Fields:
        name: a stable identifier, unique in the scene (the image file name relative to the image
            folder for photos, ``frame_000123`` for video frames).
        image_path: the image file, when there is one.
        image_fn: a callable returning the pixels (overrides ``image_path``): for in-memory frames.
        timestamp: seconds from the start of the video, when known.
        depth_path / depth_fn: a depth map (``[H, W]`` float metres / scene units, 0 = invalid).
        depth_scale: stored depth values are multiplied by this (e.g. ``1/1000`` for uint16 mm).
        mask_path / mask_fn: a mask; ``mask_invert`` says the file marks what to *drop* (non-zero =
            drop), otherwise non-zero = keep.
        metadata: anything else the source had (e.g. COLMAP image id, original file name).
    """

    name: str
    image_path: Path | None = None
    image_fn: Callable[[], np.ndarray | Tensor] | None = None
    timestamp: float | None = None
    depth_path: Path | None = None
    depth_fn: Callable[[], np.ndarray | Tensor] | None = None
    depth_scale: float = 1.0
    mask_path: Path | None = None
    mask_fn: Callable[[], np.ndarray | Tensor] | None = None
    mask_invert: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    def image(self) -> Tensor:
        """Float32 ``[H, W, C]`` in ``[0, 1]`` (C = 3, or 4 for images with alpha, 1 for grey)."""
        if self.image_fn is not None:
            return to_float_image(self.image_fn())
        if self.image_path is None:
            raise ValueError(f"frame {self.name!r} has no image")
        return to_float_image(read_image(self.image_path))

    def depth(self) -> Tensor | None:
        """Float32 ``[H, W]`` depth along +Z in scene units (``0`` = invalid), or ``None``."""
        if self.depth_fn is not None:
            raw = self.depth_fn()
        elif self.depth_path is not None:
            raw = read_image(self.depth_path)
        else:
            return None
        d = torch.as_tensor(np.asarray(raw, dtype=np.float32) if isinstance(raw, np.ndarray) else raw).float()
        if d.dim() == 3:
            d = d[..., 0]
        d = d * self.depth_scale
        return torch.where(torch.isfinite(d) & (d > 0), d, torch.zeros_like(d))

    def mask(self) -> Tensor | None:
        """Bool ``[H, W]``, ``True`` = keep, or ``None``."""
        if self.mask_fn is not None:
            raw = self.mask_fn()
        elif self.mask_path is not None:
            raw = read_image(self.mask_path)
        else:
            return None
        m = torch.as_tensor(np.asarray(raw)) if isinstance(raw, np.ndarray) else raw
        if m.dim() == 3:
            m = m[..., :3].amax(-1) if m.shape[-1] != 4 else m[..., 3]  # RGBA: alpha is the mask
        keep = m != 0
        return ~keep if self.mask_invert else keep


@dataclass
class Points:
    """A sparse point cloud: ``xyz [P, 3]`` world positions, ``rgb [P, 3]`` float colours in
    ``[0, 1]`` (or ``None``), ``error [P]`` mean reprojection error in pixels (or ``None``),
    ``ids [P]`` int64 identifiers from the source (e.g. COLMAP point3D ids), or ``None``."""

    xyz: Tensor
    rgb: Tensor | None = None
    error: Tensor | None = None
    ids: Tensor | None = None

    def __post_init__(self) -> None:
        if self.xyz.dim() != 2 or self.xyz.shape[-1] != 3:
            raise ValueError(f"Points.xyz must be [P, 3], got {list(self.xyz.shape)}")
        for name in ("rgb", "error", "ids"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != self.xyz.shape[0]:
                raise ValueError(f"Points.{name} has {value.shape[0]} rows for {self.xyz.shape[0]} points")

    def __len__(self) -> int:
        return self.xyz.shape[0]


@dataclass
class Scene:
    """Frames, their cameras (``len(cameras) == len(frames)``, frame ``i`` seen by camera ``i``,
    or ``None`` when unknown) and optional sparse points. ``root`` is the folder it came from."""

    frames: list[Frame]
    cameras: Cameras | None = None
    points: Points | None = None
    root: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cameras is not None and len(self.cameras) != len(self.frames):
            raise ValueError(f"a scene needs one camera per frame: {len(self.cameras)} cameras, "
                             f"{len(self.frames)} frames")
        names = [f.name for f in self.frames]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"frame names must be unique; repeated: {dup[:5]}")

    def __len__(self) -> int:
        return len(self.frames)

    def image_sizes(self) -> list[tuple[int, int]]:
        """``(width, height)`` of every frame: from the cameras when known, else from
        ``frame.metadata["size"]`` (set by the loaders), else by loading the image."""
        if self.cameras is not None:
            return list(zip(self.cameras.width.tolist(), self.cameras.height.tolist(), strict=True))
        sizes = []
        for f in self.frames:
            if "size" in f.metadata:
                sizes.append(tuple(f.metadata["size"]))
                continue
            img = f.image()
            sizes.append((img.shape[1], img.shape[0]))
        return sizes

    def subset(self, indices: list[int] | Tensor) -> Scene:
        """The scene restricted to ``frames[indices]`` (cameras likewise; points kept)."""
        idx = [int(i) for i in indices]
        cams = self.cameras[torch.tensor(idx, dtype=torch.long)] if self.cameras is not None else None
        return Scene([self.frames[i] for i in idx], cams, self.points, self.root, dict(self.metadata))
