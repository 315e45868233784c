"""load_image_folder / image_size on synthetic folders (natural order, EXIF orientation, mixed sizes,
masks of both polarities, corrupt files) and on the real photos of ../shared/data/unposed."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scenegrad.datasets.images import image_size, list_images, load_image_folder, natural_key
from scenegrad.datasets.scene import read_image

from ..conftest import SHARED_DATA

UNPOSED = SHARED_DATA / "unposed"


def save(path: Path, width: int, height: int, value: int = 128, **kwargs) -> Path:
    """A flat RGB image with a bright top-left quadrant (to see orientation)."""
    a = np.full((height, width, 3), value, np.uint8)
    a[: height // 2, : width // 2] = 250
    Image.fromarray(a).save(path, **kwargs)
    return path


def exif(orientation: int) -> Image.Exif:
    e = Image.Exif()
    e[0x0112] = orientation
    return e


def test_natural_order_extensions_and_hidden_files(tmp_path):
    names = ["img10.JPG", "img2.png", "img1.jpeg", "IMG11.Tif", "img3.webp", "img4.BMP", ".hidden.png", "._img5.jpg"]
    for name in names:
        save(tmp_path / name, 8, 6)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    scene = load_image_folder(tmp_path)
    assert [f.name for f in scene.frames] == ["img1.jpeg", "img2.png", "img3.webp", "img4.BMP", "img10.JPG",
                                              "IMG11.Tif"]
    assert scene.metadata["ignored"] == ["notes.txt", "sub/"]
    assert scene.cameras is None and scene.root == tmp_path and scene.metadata["mask_dir"] is None
    for f in scene.frames:
        assert f.image_path == tmp_path / f.name and f.mask() is None
        assert f.image().shape == (6, 8, 3) and f.metadata["size"] == (8, 6)
    assert sorted(["a10b2", "a2b10", "a2b9", "A1"], key=natural_key) == ["A1", "a2b9", "a2b10", "a10b2"]
    assert [p.name for p in list_images(tmp_path)[0]][:2] == ["img1.jpeg", "img2.png"]


@pytest.mark.parametrize(("orientation", "turns"), [(6, -1), (8, 1), (3, 2), (1, 0)])
def test_exif_orientation_applied_to_sizes_and_pixels(tmp_path, orientation, turns):
    stored = save(tmp_path / "photo.jpg", 60, 40, quality=95, exif=exif(orientation))
    assert Image.open(stored).size == (60, 40)  # stored landscape
    expected = np.rot90(np.asarray(Image.open(stored)), k=turns)  # displayed
    assert image_size(stored) == (expected.shape[1], expected.shape[0])
    scene = load_image_folder(tmp_path)
    frame = scene.frames[0]
    assert frame.metadata["size"] == image_size(stored)
    image = (frame.image() * 255).round().to(torch.uint8).numpy()
    assert image.shape == expected.shape
    np.testing.assert_array_equal(image, expected)


def _move_chunk_after_pixels(png: bytes, kind: bytes) -> bytes:
    """Rewrite a PNG with chunk ``kind`` moved from before the image data to just before IEND."""
    chunks, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        chunks.append(png[pos:pos + 12 + length])
        pos += 12 + length
    moved = [c for c in chunks if c[4:8] == kind]
    rest = [c for c in chunks if c[4:8] != kind]
    assert moved, f"no {kind} chunk"
    return png[:8] + b"".join(rest[:-1] + moved + rest[-1:])


def test_png_exif_orientation_before_and_after_pixels(tmp_path):
    early = save(tmp_path / "early.png", 30, 20, exif=exif(6))
    assert image_size(early) == (20, 30) == read_image(early).shape[1::-1]
    late = tmp_path / "late.png"
    late.write_bytes(_move_chunk_after_pixels(early.read_bytes(), b"eXIf"))
    idat, exif_at = late.read_bytes().index(b"IDAT"), late.read_bytes().index(b"eXIf")
    assert exif_at > idat
    assert image_size(late) == (20, 30) == read_image(late).shape[1::-1]
    # A file named .png that is a JPEG (as in the real kitchen set) is read by its content.
    jpeg_named_png = save(tmp_path / "jpeg.png", 30, 20, format="JPEG", exif=exif(8))
    assert image_size(jpeg_named_png) == (20, 30) == read_image(jpeg_named_png).shape[1::-1]


def test_mixed_sizes(tmp_path):
    save(tmp_path / "a.png", 40, 30)
    save(tmp_path / "b.jpg", 17, 33)
    save(tmp_path / "c.jpg", 50, 20, exif=exif(6))
    scene = load_image_folder(tmp_path)
    sizes = [f.metadata["size"] for f in scene.frames]
    assert sizes == [(40, 30), (17, 33), (20, 50)]
    assert scene.image_sizes() == sizes  # what the decoded pixels say


def _mask(path: Path, width: int, height: int, rgba: bool = False) -> Path:
    """Left half non-zero."""
    m = np.zeros((height, width), np.uint8)
    m[:, : width // 2] = 255
    if rgba:
        Image.fromarray(np.dstack([np.zeros((height, width, 3), np.uint8), m])).save(path)
    else:
        Image.fromarray(m).save(path)
    return path


@pytest.mark.parametrize("polarity", ["keep", "drop"])
def test_masks_beside_images_both_polarities(tmp_path, polarity):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for name in ["img1.jpg", "img2.jpg", "img3.jpg"]:
        save(tmp_path / "images" / name, 20, 10)
    _mask(tmp_path / "masks" / "img1.png", 20, 10)  # by stem
    _mask(tmp_path / "masks" / "img2.jpg.png", 20, 10, rgba=True)  # COLMAP's name; RGBA: alpha is the mask
    with pytest.warns(UserWarning, match=r"no mask for 1 of 3 images \(img3.jpg\)"):
        scene = load_image_folder(tmp_path, mask_polarity=polarity)
    assert scene.metadata["image_dir"] == tmp_path / "images"
    assert scene.metadata["mask_dir"] == tmp_path / "masks"
    assert [f.mask_path.name if f.mask_path else None for f in scene.frames] == ["img1.png", "img2.jpg.png", None]
    for frame in scene.frames[:2]:
        mask = frame.mask()
        assert mask.shape == (10, 20) and mask.dtype == torch.bool
        left = polarity == "keep"  # the mask files mark the left half
        assert bool(mask[:, :10].all()) is left and bool(mask[:, 10:].any()) is not left
    assert scene.frames[2].mask() is None
    assert load_image_folder(tmp_path, masks=None).frames[0].mask_path is None


def test_masks_inside_or_explicit_and_size_check(tmp_path):
    save(tmp_path / "a.jpg", 20, 10)
    save(tmp_path / "b.jpg", 20, 10, exif=exif(6))  # displayed 10 x 20
    (tmp_path / "masks").mkdir()
    _mask(tmp_path / "masks" / "a.png", 20, 10)
    _mask(tmp_path / "masks" / "b.png", 10, 20)
    scene = load_image_folder(tmp_path)
    assert scene.metadata["mask_dir"] == tmp_path / "masks"
    assert [f.mask().shape for f in scene.frames] == [(10, 20), (20, 10)]
    elsewhere = tmp_path.parent / f"{tmp_path.name}_masks"
    elsewhere.mkdir()
    _mask(elsewhere / "a.jpg.png", 20, 10)
    _mask(elsewhere / "b.jpg.png", 20, 10)  # made for the stored (unrotated) pixels
    with pytest.raises(ValueError, match=r"b.jpg.png: mask is 20x10 but its image .*b.jpg is 10x20"):
        load_image_folder(tmp_path, masks=elsewhere)
    with pytest.raises(FileNotFoundError, match="no such masks folder"):
        load_image_folder(tmp_path, masks=tmp_path / "nope")
    unrelated = tmp_path.parent / f"{tmp_path.name}_other"
    unrelated.mkdir()
    save(unrelated / "zzz.png", 4, 4)
    with pytest.raises(ValueError, match="no mask matches any image"):
        load_image_folder(tmp_path, masks=unrelated)


def test_corrupt_images(tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "a.jpg", quality=90)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(data[: len(data) // 2])  # header intact, pixels cut off
    scene = load_image_folder(tmp_path)  # only headers are read
    assert scene.frames[1].metadata["size"] == (320, 240)
    with pytest.raises(ValueError, match=r"b.jpg: not a readable image"):
        scene.frames[1].image()
    with pytest.raises(ValueError, match=r"b.jpg: not a readable image"):
        load_image_folder(tmp_path, check=True)
    (tmp_path / "b.jpg").write_text("not an image at all")  # no header: fails at load
    with pytest.raises(ValueError, match=r"b.jpg: not a readable image"):
        load_image_folder(tmp_path)


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope: no such folder"):
        load_image_folder(tmp_path / "nope")
    save(tmp_path / "a.png", 4, 4)
    with pytest.raises(ValueError, match="a.png: not a folder"):
        load_image_folder(tmp_path / "a.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty: empty folder"):
        load_image_folder(empty)
    (empty / ".DS_Store").write_text("")
    with pytest.raises(ValueError, match="empty: empty folder"):
        load_image_folder(empty)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hi")
    (other / "video.mp4").write_bytes(b"\0")
    (other / "raw").mkdir()
    with pytest.raises(ValueError, match=r"other: no images \(jpg, .*\); found: notes.txt, raw/, video.mp4"):
        load_image_folder(other)
    with pytest.raises(ValueError, match="mask_polarity"):
        load_image_folder(tmp_path, mask_polarity="white")
    with pytest.raises(FileNotFoundError):
        image_size(tmp_path / "missing.png")


# ----------------------------------------------------------------------------------------------
# Real photos
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unposed() -> Path:
    if not UNPOSED.is_dir():
        pytest.skip(f"{UNPOSED} not found (the shared real-data folder is absent)")
    return UNPOSED


def test_sacre_coeur(unposed):
    folder = unposed / "sacre_coeur" / "mapping"
    scene = load_image_folder(folder)
    assert len(scene) == 10
    names = [f.name for f in scene.frames]
    assert names == sorted(names, key=natural_key) and all(n.endswith(".jpg") for n in names)
    sizes = [f.metadata["size"] for f in scene.frames]
    assert len(set(sizes)) > 5  # mixed sizes
    assert any(w > h for w, h in sizes) and any(h > w for w, h in sizes)  # and orientations
    for frame, (w, h) in zip(scene.frames, sizes, strict=True):
        assert tuple(frame.image().shape) == (h, w, 3)
    # The landmark's root holds only the subfolder: the error says what is there.
    with pytest.raises(ValueError, match=r"no images .*found: mapping/"):
        load_image_folder(unposed / "sacre_coeur")


def test_kitchen(unposed):
    scene = load_image_folder(unposed / "kitchen")  # uses its images/ subfolder; its .png files are JPEGs
    assert len(scene) == 25 and scene.metadata["image_dir"].name == "images"
    assert {f.metadata["size"] for f in scene.frames} == {(1558, 1039)}
    assert tuple(scene.frames[0].image().shape) == (1039, 1558, 3)
