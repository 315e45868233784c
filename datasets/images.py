"""Folders of photos (optionally with masks) as an unposed :class:`~scenegrad.datasets.scene.Scene`.

Conventions (those of :mod:`scenegrad.datasets.scene`):

- **Which files.** The image files directly inside the folder (no recursion), or inside its
  ``images/`` subfolder when it has one: extensions in :data:`IMAGE_EXTENSIONS`, any case; hidden
  files (``.name``, e.g. macOS ``._IMG_1.jpg``) and other files are ignored (listed in
  ``scene.metadata["ignored"]``). The format is read from the content, not the extension.
- **Order.** Natural sort of the file names (``img2`` before ``img10``; case-insensitive; see
  :func:`natural_key`).
- **Orientation.** Pixels and sizes are as *displayed*: the EXIF orientation tag is applied
  (:func:`~scenegrad.datasets.scene.read_image`). Each frame's ``metadata["size"]`` is its
  ``(width, height)`` after orientation, read from the file header without decoding the pixels
  (:func:`image_size`); photos of different sizes may be mixed.
- **Masks.** One mask per image, found by name in a masks folder: ``masks/img1.png`` or
  ``masks/img1.jpg.png`` (COLMAP's naming) for ``img1.jpg``. ``mask_polarity="keep"`` (default):
  non-zero marks the pixels to keep (the subject); ``"drop"``: non-zero marks the pixels to remove.
  ``Frame.mask()`` always returns ``True`` = keep. An RGBA mask uses its alpha channel. A mask must
  have its image's displayed size.
- **Laziness.** Pixels are read when ``Frame.image()`` / ``Frame.mask()`` is called; loading the folder
  reads only file headers (``check=True`` decodes everything up front).

>>> import shutil, tempfile
>>> from PIL import Image
>>> folder = Path(tempfile.mkdtemp())
>>> for name in ["img10.png", "img2.png"]:
...     Image.new("RGB", (6, 4)).save(folder / name)
>>> _ = (folder / "notes.txt").write_text("not an image")
>>> scene = load_image_folder(folder)
>>> [f.name for f in scene.frames], scene.frames[0].metadata["size"], scene.metadata["ignored"]
(['img2.png', 'img10.png'], (6, 4), ['notes.txt'])
>>> shutil.rmtree(folder)
"""

from __future__ import annotations

import re
import struct
import warnings
from pathlib import Path
from typing import Literal

from .scene import Frame, Scene, read_image

__all__ = ["IMAGE_EXTENSIONS", "natural_key", "image_size", "list_images", "load_image_folder"]

#: File extensions read as images (compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

_EXIF_ORIENTATION = 0x0112


def natural_key(name: str) -> tuple:
    """Sort key ordering digit runs by value and the rest case-insensitively: ``img2 < img10 < IMG11``.

    >>> sorted(["img10.jpg", "img2.jpg", "Img1.jpg"], key=natural_key)
    ['Img1.jpg', 'img2.jpg', 'img10.jpg']
    """
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), name


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of an image as displayed (EXIF orientation applied), from its header only.

    Matches the shape :func:`~scenegrad.datasets.scene.read_image` returns. A PNG whose metadata
    follows its pixel data (rare) is decoded to find its orientation, as Pillow does.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable image (the message names the file).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            width, height = im.size
            if im.format == "PNG" and not _png_metadata_after_pixels(path):
                exif = Image.Image.getexif(im)  # the base method: reads the header's chunks without decoding
            else:
                exif = im.getexif()
            orientation = exif.get(_EXIF_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _png_metadata_after_pixels(path: Path) -> bool:
    """Whether a PNG has EXIF / text chunks after its image data (walks the chunk headers only)."""
    with open(path, "rb") as f:
        f.seek(8)
        seen_pixels = False
        while True:
            head = f.read(8)
            if len(head) < 8:
                return False
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IDAT":
                seen_pixels = True
            elif kind == b"IEND":
                return False
            elif seen_pixels and kind in (b"eXIf", b"iTXt", b"tEXt", b"zTXt"):
                return True
            f.seek(length + 4, 1)


def list_images(folder: str | Path) -> tuple[list[Path], list[str]]:
    """The image files directly in ``folder`` in natural order, and the names of everything else
    (other files, subfolders with a trailing ``/``; hidden entries are left out of both)."""
    folder = Path(folder)
    images, others = [], []
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
            images.append(entry)
        else:
            others.append(entry.name + ("/" if entry.is_dir() else ""))
    return sorted(images, key=lambda p: natural_key(p.name)), sorted(others, key=natural_key)


def load_image_folder(path: str | Path, *, masks: Literal["auto"] | str | Path | None = "auto",
                      mask_polarity: Literal["keep", "drop"] = "keep", check: bool = False) -> Scene:
    """Load a folder of photos as a :class:`Scene` without cameras (conventions: module docstring).

    Args:
        path: the folder of images, or a folder with an ``images/`` subfolder (used when present).
        masks: ``"auto"``: use a ``masks/`` folder inside the image folder, else beside it, if there is
            one (and some file in it is named after an image); a folder path: masks from there;
            ``None``: no masks.
        mask_polarity: ``"keep"``: non-zero mask pixels are kept (the subject); ``"drop"``: non-zero
            mask pixels mark what to remove. Either way ``Frame.mask()`` gives ``True`` = keep.
        check: decode every image and mask now (slow) so a corrupt file fails here, not when used.

    Returns:
        ``Scene(frames, cameras=None, root=path)``, one ``Frame`` per image: ``name`` the file name,
        ``image_path``, ``mask_path`` / ``mask_invert``, ``metadata={"size": (width, height)}``;
        ``scene.metadata``: ``image_dir``, ``mask_dir`` (or None), ``ignored`` (names of non-image files).

    Raises:
        FileNotFoundError: ``path`` (or an explicit ``masks`` folder) does not exist.
        ValueError: not a folder, empty, no images (what is there is listed), an image whose header cannot
            be read, a mask whose size differs from its image's, or (``check=True``) a file whose pixels
            cannot be decoded. Messages name the file. A corrupt image found later raises ``ValueError``
            from ``Frame.image()``, naming the file.

    Images without a mask in the masks folder give a ``UserWarning`` (their ``Frame.mask()`` is ``None``).
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such folder")
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder (load_image_folder needs a folder of images)")
    if mask_polarity not in ("keep", "drop"):
        raise ValueError(f"mask_polarity must be 'keep' or 'drop', got {mask_polarity!r}")
    image_dir = root / "images" if (root / "images").is_dir() else root
    files, others = list_images(image_dir)
    if not files:
        if not others:
            raise ValueError(f"{image_dir}: empty folder, no images")
        shown = ", ".join(others[:10]) + (f", ... ({len(others)} in all)" if len(others) > 10 else "")
        raise ValueError(f"{image_dir}: no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}); found: {shown}")

    mask_dir = _mask_folder(image_dir, masks)
    mask_files = _match_masks(files, mask_dir) if mask_dir is not None else {}
    if mask_dir is not None and not mask_files and masks == "auto":
        warnings.warn(f"{mask_dir}: no file there is named after an image; not used as masks", stacklevel=2)
        mask_dir = None
    if mask_dir is not None:
        missing = [f.name for f in files if f not in mask_files]
        if len(missing) == len(files):
            raise ValueError(f"{mask_dir}: no mask matches any image (expected e.g. {files[0].stem}.png or "
                             f"{files[0].name}.png)")
        if missing:
            warnings.warn(f"{mask_dir}: no mask for {len(missing)} of {len(files)} images "
                          f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); they keep every pixel",
                          stacklevel=2)

    frames = []
    for file in files:
        size = image_size(file)
        mask = mask_files.get(file)
        if mask is not None and image_size(mask) != size:
            ms = image_size(mask)
            raise ValueError(f"{mask}: mask is {ms[0]}x{ms[1]} but its image {file} is {size[0]}x{size[1]} as "
                             "displayed (after EXIF orientation)")
        if check:
            for f in (file, mask):
                if f is not None:
                    read_image(f)
        frames.append(Frame(name=file.name, image_path=file, mask_path=mask, mask_invert=mask_polarity == "drop",
                            metadata={"size": size}))
    return Scene(frames=frames, cameras=None, root=root,
                 metadata={"image_dir": image_dir, "mask_dir": mask_dir, "ignored": others})


def _mask_folder(image_dir: Path, masks: str | Path | None) -> Path | None:
    if masks is None:
        return None
    if isinstance(masks, str) and masks == "auto":
        for candidate in (image_dir / "masks", image_dir.parent / "masks"):  # inside, then beside
            if candidate.is_dir():
                return candidate
        return None
    folder = Path(masks)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such masks folder")
    if not folder.is_dir():
        raise ValueError(f"{folder}: masks must be a folder")
    return folder


def _match_masks(files: list[Path], mask_dir: Path) -> dict[Path, Path]:
    """Each image's mask: ``<name>.png`` (COLMAP), else ``<stem>.png``, else ``<stem>.<any image ext>``."""
    by_name: dict[str, Path] = {}
    by_stem: dict[str, list[Path]] = {}
    for entry in mask_dir.iterdir():
        if entry.name.startswith(".") or not entry.is_file() or entry.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        by_name[entry.name.casefold()] = entry
        by_stem.setdefault(entry.stem.casefold(), []).append(entry)
    found = {}
    for file in files:
        mask = by_name.get((file.name + ".png").casefold()) or by_name.get((file.stem + ".png").casefold())
        if mask is None and file.stem.casefold() in by_stem:
            mask = sorted(by_stem[file.stem.casefold()], key=lambda p: natural_key(p.name))[0]
        if mask is not None:
            found[file] = mask
    return found
