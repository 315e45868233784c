"""COLMAP sparse models: exact text / binary round trips for every camera model, bad input named by
file and line / byte, the typed Scene conversion, and agreement with pycolmap (when installed) on
the files, the poses and the camera projections."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from scenegrad.datasets.colmap import (
    CAMERA_MODELS,
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    ColmapPoint3D,
    load_colmap,
    read_model,
    save_colmap,
    write_model,
)
from scenegrad.datasets.scene import Points, Scene
from scenegrad.datasets.synthetic import orbit_cameras
from scenegrad.render.cameras import project
from scenegrad.render.rotations import matrix_to_quat, quat_to_matrix

try:
    import pycolmap
except ImportError:  # pragma: no cover - depends on the environment
    pycolmap = None

needs_pycolmap = pytest.mark.skipif(pycolmap is None, reason="pycolmap is not installed (pip install pycolmap)")
FILES = ("cameras", "images", "points3D")
# Awkward doubles that a careless text writer would not round-trip.
TRICKY = np.array([0.1, 1 / 3, -0.0, 1e-300, 5e-324, 1.7976931348623157e308, 123456789.12345679, 2.0**-30])


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def random_params(rng: np.random.Generator, model: str, width: int, height: int) -> np.ndarray:
    """Plausible parameters: focal lengths ~ width, principal point near the centre, small distortion."""
    names = CAMERA_MODELS[model][1]
    out = []
    for n in names:
        if n in ("f", "fx", "fy"):
            out.append(rng.uniform(0.6, 1.4) * width)
        elif n == "cx":
            out.append(width / 2 + rng.normal(0, 3))
        elif n == "cy":
            out.append(height / 2 + rng.normal(0, 3))
        elif n in ("w", "h"):
            out.append(float(width if n == "w" else height))
        elif n == "beta":
            out.append(rng.uniform(0.8, 1.2))
        else:
            out.append(rng.normal(0, 0.02))
    return np.array(out)


def random_unit_quats(rng: np.random.Generator, n: int) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q * np.where(q[:, :1] < 0, -1, 1)


def random_model(rng: np.random.Generator, models=tuple(CAMERA_MODELS), n_images: int = 6, n_points: int = 30,
                 names: list[str] | None = None, tricky: bool = True) -> ColmapModel:
    """A consistent random model: one camera per model (ids 3, 5, 7, ...), images with 2D points of
    which some observe 3D points, points whose tracks are exactly those observations."""
    cameras = {}
    for k, model in enumerate(models):
        cid = 3 + 2 * k
        w, h = int(rng.integers(50, 4000)), int(rng.integers(50, 3000))
        cameras[cid] = ColmapCamera(cid, model, w, h, random_params(rng, model, w, h))
    point_ids = [int(i) for i in rng.choice(10**6, size=n_points, replace=False) + 1]
    tracks: dict[int, list[tuple[int, int]]] = {p: [] for p in point_ids}
    images = {}
    qs = random_unit_quats(rng, n_images)
    for i in range(n_images):
        iid = 100 - 7 * i  # ids not in file order
        k = 0 if i == 1 else int(rng.integers(1, 40))  # image 1 has no 2D points
        xys = rng.uniform(0, 1000, size=(k, 2))
        ids = np.where(rng.random(k) < 0.6, rng.choice(point_ids, size=k), -1).astype(np.int64)
        for idx, pid in enumerate(ids.tolist()):
            if pid != -1:
                tracks[pid].append((iid, idx))
        name = names[i] if names else f"dir{i % 2}/img_{rng.integers(10**6):06d}.jpg"
        cid = list(cameras)[i % len(cameras)]
        images[iid] = ColmapImage(iid, qs[i], rng.normal(0, 3, 3), cid, name, xys, ids)
    if tricky:  # exact-float traps in every kind of field
        first = next(iter(images.values()))
        first.tvec = TRICKY[:3]
        if len(first.xys):
            first.xys[0] = TRICKY[3:5]
        next(iter(cameras.values())).params[0] = 1234.5678901234567
    points = {}
    for pid in point_ids:
        track = np.array(tracks[pid], dtype=np.int64).reshape(-1, 2)
        rgb = rng.integers(0, 256, 3).astype(np.uint8)
        points[pid] = ColmapPoint3D(pid, rng.normal(0, 5, 3), rgb, float(rng.uniform(0, 2)), track[:, 0], track[:, 1])
    if tricky and points:
        p = next(iter(points.values()))
        p.xyz, p.error = TRICKY[5:8], -1.0
    return ColmapModel(cameras, images, points)


def file_bytes(folder: Path, fmt: str) -> dict[str, bytes]:
    return {name: (folder / f"{name}.{fmt}").read_bytes() for name in FILES}


def write_text_model(folder: Path, cameras: str, images: str = "", points: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cameras.txt").write_text(cameras)
    (folder / "images.txt").write_text(images)
    (folder / "points3D.txt").write_text(points)
    return folder


# ----------------------------------------------------------------------------------------------
# Raw model: exact round trips
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trips_are_exact_for_every_camera_model(tmp_path, seed):
    rng = np.random.default_rng(seed)
    model = random_model(rng)
    write_model(model, tmp_path / "bin", "bin")
    write_model(model, tmp_path / "txt", "txt")
    from_bin, from_txt = read_model(tmp_path / "bin"), read_model(tmp_path / "txt")
    assert from_bin == model and from_txt == model
    for back in (from_bin, from_txt):  # file order is kept
        assert list(back.cameras) == list(model.cameras)
        assert list(back.images) == list(model.images)
        assert list(back.points3d) == list(model.points3d)
    # bin -> txt -> bin and txt -> bin -> txt are byte-identical
    write_model(from_txt, tmp_path / "bin2", "bin")
    write_model(read_model(tmp_path / "bin2"), tmp_path / "txt2", "txt")
    assert file_bytes(tmp_path / "bin2", "bin") == file_bytes(tmp_path / "bin", "bin")
    assert file_bytes(tmp_path / "txt2", "txt") == file_bytes(tmp_path / "txt", "txt")


def test_text_files_hold_colmap_lines(tmp_path):
    cam = ColmapCamera(1, "PINHOLE", 640, 480, np.array([500.0, 501.0, 320.0, 240.0]))
    img = ColmapImage(2, np.array([1.0, 0, 0, 0]), np.array([0.1, 0, 2]), 1, "a b.jpg",
                      np.array([[1.5, 2.0], [3.0, 4.0]]), np.array([-1, 9]))
    pt = ColmapPoint3D(9, np.array([0.0, 1.0, 2.0]), np.array([1, 2, 3], np.uint8), 0.25, [2], [1])
    write_model(ColmapModel({1: cam}, {2: img}, {9: pt}), tmp_path, "txt")
    cams = (tmp_path / "cameras.txt").read_text().splitlines()
    images = (tmp_path / "images.txt").read_text().splitlines()
    points = (tmp_path / "points3D.txt").read_text().splitlines()
    assert cams[-1] == "1 PINHOLE 640 480 500.0 501.0 320.0 240.0"
    assert images[-2:] == ["2 1.0 0.0 0.0 0.0 0.1 0.0 2.0 1 a b.jpg", "1.5 2.0 -1 3.0 4.0 9"]
    assert "mean observations per image: 1.0" in images[3]
    assert points[-1] == "9 0.0 1.0 2.0 1 2 3 0.25 2 1"
    assert read_model(tmp_path).images[2].name == "a b.jpg"  # a name with a space survives our text reader


def test_binary_layout_matches_colmap_record_sizes(tmp_path):
    cam = ColmapCamera(1, "OPENCV", 10, 20, np.arange(8.0))
    img = ColmapImage(1, [1, 0, 0, 0], [0, 0, 0], 1, "abc", np.zeros((5, 2)), -np.ones(5))
    pt = ColmapPoint3D(1, [0, 0, 0], [0, 0, 0], 0.0, [1, 1], [0, 1])
    write_model(ColmapModel({1: cam}, {1: img}, {1: pt}), tmp_path)
    sizes = {name: (tmp_path / f"{name}.bin").stat().st_size for name in FILES}
    assert sizes == {"cameras": 8 + 24 + 8 * 8, "images": 8 + 64 + 4 + 8 + 5 * 24, "points3D": 8 + 43 + 8 + 2 * 8}
    raw = np.frombuffer((tmp_path / "images.bin").read_bytes()[-8:], "<u8")
    assert raw[0] == 2**64 - 1  # "no 3D point" is COLMAP's uint64 max


def test_format_detection_missing_points_and_rig_files(tmp_path):
    rng = np.random.default_rng(5)
    model = random_model(rng, models=("PINHOLE",))
    write_model(model, tmp_path, "txt")
    other = random_model(np.random.default_rng(6), models=("OPENCV",))
    write_model(other, tmp_path, "bin")
    assert read_model(tmp_path) == other  # binary wins, as in COLMAP
    assert read_model(tmp_path, format="txt") == model
    # rigs / frames (COLMAP 3.12+) are ignored, even when unreadable
    (tmp_path / "rigs.bin").write_bytes(b"\x07garbage")
    (tmp_path / "frames.txt").write_text("not a frame\n")
    assert read_model(tmp_path) == other
    (tmp_path / "points3D.bin").unlink()
    assert read_model(tmp_path).points3d == {}


def test_write_removes_stale_rig_and_frame_files(tmp_path):
    model = random_model(np.random.default_rng(3), models=("PINHOLE",))
    (tmp_path / "rigs.bin").write_bytes(b"old")
    (tmp_path / "frames.bin").write_bytes(b"old")
    (tmp_path / "frames.txt").write_text("other format: kept")
    with pytest.warns(UserWarning, match="removed rigs.bin, frames.bin"):
        write_model(model, tmp_path, "bin")
    assert not (tmp_path / "rigs.bin").exists() and not (tmp_path / "frames.bin").exists()
    assert (tmp_path / "frames.txt").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_model(model, tmp_path, "bin")  # nothing stale: silent


def test_large_model_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    n_img, k, n_pts = 60, 3000, 20000
    cameras = {1: ColmapCamera(1, "SIMPLE_RADIAL", 1000, 800, [900.0, 500, 400, 0.01])}
    pids = np.arange(1, n_pts + 1)
    images = {i: ColmapImage(i, random_unit_quats(rng, 1)[0], rng.normal(size=3), 1, f"{i:05d}.png",
                             rng.uniform(0, 900, (k, 2)), rng.choice(pids, k)) for i in range(1, n_img + 1)}
    points = {int(p): ColmapPoint3D(int(p), rng.normal(size=3), [1, 2, 3], 0.5, rng.integers(1, n_img + 1, 4),
                                    rng.integers(0, k, 4)) for p in pids}
    model = ColmapModel(cameras, images, points)
    for fmt in ("bin", "txt"):
        write_model(model, tmp_path / fmt, fmt)
        assert read_model(tmp_path / fmt) == model


# ----------------------------------------------------------------------------------------------
# Raw model: bad input
# ----------------------------------------------------------------------------------------------

CAM_HEAD = "# Camera list\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
GOOD_CAM = CAM_HEAD + "1 PINHOLE 640 480 500 500 320 240\n"
GOOD_IMG = "# images\n1 1 0 0 0 0 0 0 1 a.jpg\n10 20 -1 30 40 1\n"


@pytest.mark.parametrize("cameras, images, points, file, message", [
    (CAM_HEAD + "1 PINHOLE 640 480 500 500 320\n", "", "", "cameras.txt:3", "PINHOLE takes 4 parameters"),
    (CAM_HEAD + "\n1 OPENCV 640 480 1 2 3 4 5\n", "", "", "cameras.txt:4", "OPENCV takes 8 parameters"),
    (CAM_HEAD + "1 WEIRD 640 480 1 2 3\n", "", "", "cameras.txt:3", "unknown camera model 'WEIRD'"),
    (CAM_HEAD + "1 PINHOLE 640 480 500 x5 320 240\n", "", "", "cameras.txt:3", "got 'x5'"),
    (CAM_HEAD + "1 PINHOLE 640.5 480 500 500 320 240\n", "", "", "cameras.txt:3", "WIDTH must be an integer"),
    (CAM_HEAD + "1 PINHOLE\n", "", "", "cameras.txt:3", "expected 'CAMERA_ID MODEL"),
    (GOOD_CAM + "1 PINHOLE 64 48 5 5 3 2\n", "", "", "cameras.txt:4", "camera id 1 appears twice"),
    (GOOD_CAM, "# c\n1 1 0 0 0 0 0 0 2 a.jpg\n\n", "", "images.txt:2", "camera id 2, which is not in"),
    (GOOD_CAM, "1 1 0 0 0 0 0 0 1\n\n", "", "images.txt:1", "expected 'IMAGE_ID QW"),
    (GOOD_CAM, "1 1 0 0 0 zero 0 0 1 a.jpg\n\n", "", "images.txt:1", "got 'zero'"),
    (GOOD_CAM, "1 1 0 0 0 0 0 0 1 a.jpg\n1 2 3 4\n", "", "images.txt:2", "(X, Y, POINT3D_ID) triples"),
    (GOOD_CAM, "1 1 0 0 0 0 0 0 1 a.jpg\n1 2 3.5\n", "", "images.txt:2", "POINT3D_ID must be an integer"),
    (GOOD_CAM, GOOD_IMG + "1 1 0 0 0 0 0 0 1 b.jpg\n\n", "", "images.txt:4", "image id 1 appears twice"),
    (GOOD_CAM, GOOD_IMG, "# p\n1 0 0 0 1 2 3 0.5 1 1 7 0\n", "points3D.txt:2", "image id 7, which is not in"),
    (GOOD_CAM, GOOD_IMG, "1 0 0 0 1 2 3 0.5 1\n", "points3D.txt:1", "(IMAGE_ID, POINT2D_IDX) pairs"),
    (GOOD_CAM, GOOD_IMG, "1 0 0 0 1 2 300 0.5\n", "points3D.txt:1", "R G B must be in 0..255"),
    (GOOD_CAM, GOOD_IMG, "1 0 0 0 1 2 3 0.5\n1 0 0 0 1 2 3 0.5\n", "points3D.txt:2", "point id 1 appears twice"),
])
def test_malformed_text_names_file_and_line(tmp_path, cameras, images, points, file, message):
    write_text_model(tmp_path, cameras, images, points)
    with pytest.raises(ValueError) as info:
        read_model(tmp_path)
    assert f"{tmp_path / file}" in str(info.value)
    assert message in str(info.value)


def test_text_written_by_colmap_parses(tmp_path):
    # COLMAP's own spelling: %.17g floats, an empty POINTS2D line, CRLF endings from a Windows copy.
    write_text_model(
        tmp_path,
        CAM_HEAD + "1 SIMPLE_RADIAL 1024 768 1280 512 384 0.050000000000000003\r\n",
        "1 0.87097546981206897 0.41574904652355699 -0.26182906886058122 0 2.2204460492503131e-16 0 5 1 x.png\r\n"
        "\r\n2 1 0 0 0 0 0 0 1 y.png\r\n487.33161996673624 170.59098624356588 6\r\n",
        "6 0.18376460398610364 0.68139500740926162 0.70847118092379935 0 0 0 0 2 0\r\n",
    )
    model = read_model(tmp_path)
    assert model.cameras[1].params[3] == 0.05
    assert model.images[1].qvec[1] == 0.41574904652355699 and len(model.images[1].xys) == 0
    assert model.images[2].point3d_ids.tolist() == [6]
    assert model.points3d[6].image_ids.tolist() == [2]


@pytest.mark.parametrize("name", FILES)
def test_truncated_binary_names_file_and_offset(tmp_path, name):
    model = random_model(np.random.default_rng(11), models=("OPENCV", "PINHOLE"))
    write_model(model, tmp_path)
    path = tmp_path / f"{name}.bin"
    data = path.read_bytes()
    for cut in sorted({4, 12, len(data) // 3, len(data) // 2, len(data) - 1}):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated file") as info:
            read_model(tmp_path)
        assert str(path) in str(info.value)
    path.write_bytes(data + b"\0\0")
    with pytest.raises(ValueError, match="2 unexpected bytes after the last record"):
        read_model(tmp_path)


def test_bad_binary_records(tmp_path):
    write_model(ColmapModel({1: ColmapCamera(1, "PINHOLE", 4, 4, [1.0, 1, 2, 2])}, {}, {}), tmp_path)
    data = bytearray((tmp_path / "cameras.bin").read_bytes())
    data[12:16] = (99).to_bytes(4, "little")  # the model id
    (tmp_path / "cameras.bin").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="unknown camera model id 99"):
        read_model(tmp_path)
    img = ColmapImage(1, [1, 0, 0, 0], [0, 0, 0], 5, "a.jpg")
    cam = ColmapCamera(1, "PINHOLE", 4, 4, [1.0, 1, 2, 2])
    write_model(ColmapModel({1: cam}, {}, {}), tmp_path)
    write_model(ColmapModel({5: ColmapCamera(5, "PINHOLE", 4, 4, [1.0, 1, 2, 2])}, {1: img}, {}), tmp_path / "x")
    shutil.copy(tmp_path / "x" / "images.bin", tmp_path / "images.bin")
    with pytest.raises(ValueError, match=r"images\.bin: image 1 \('a\.jpg'\) refers to camera id 5"):
        read_model(tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such COLMAP model folder"):
        read_model(tmp_path / "nope")
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    write_model(ColmapModel(), tmp_path / "sparse" / "0", "txt")
    with pytest.raises(FileNotFoundError, match=r"missing cameras\.bin.*there is a model in .*sparse/0"):
        read_model(tmp_path)
    (tmp_path / "sparse" / "0" / "cameras.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"cameras\.txt: missing"):
        read_model(tmp_path / "sparse" / "0", format="txt")


def test_write_model_rejects_inconsistent_models(tmp_path):
    cam = ColmapCamera(1, "OPENCV", 4, 4, [1.0, 1, 2, 2])
    with pytest.raises(ValueError, match="OPENCV takes 8 parameters, got 4"):
        write_model(ColmapModel({1: cam}), tmp_path)
    img = ColmapImage(1, [1, 0, 0, 0], [0, 0, 0], 2, "a.jpg")
    with pytest.raises(ValueError, match="refers to camera id 2"):
        write_model(ColmapModel({1: ColmapCamera(1, "PINHOLE", 4, 4, [1.0, 1, 2, 2])}, {1: img}), tmp_path)
    with pytest.raises(ValueError, match="xys but"):
        ColmapImage(1, [1, 0, 0, 0], [0, 0, 0], 1, "a", np.zeros((2, 2)), [1])
    assert not (tmp_path / "cameras.bin").exists()  # nothing written


# ----------------------------------------------------------------------------------------------
# The typed Scene
# ----------------------------------------------------------------------------------------------


def project_layout(tmp_path: Path, model: ColmapModel, fmt: str = "bin") -> Path:
    """A standard COLMAP project: ``images/<name>`` files and ``sparse/0``."""
    sparse = tmp_path / "proj" / "sparse" / "0"
    write_model(model, sparse, fmt)
    for im in model.images.values():
        (tmp_path / "proj" / "images" / im.name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "proj" / "images" / im.name).write_bytes(b"")
    return sparse


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_load_colmap_frames_cameras_points(tmp_path, fmt):
    rng = np.random.default_rng(21)
    model = random_model(rng, models=("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV",
                                      "FULL_OPENCV"), tricky=False)
    model.cameras[13].params[9:] = 0.0  # FULL_OPENCV without the rational terms
    sparse = project_layout(tmp_path, model, fmt)
    scene = load_colmap(sparse)
    order = sorted(model.images.values(), key=lambda im: im.name)
    assert [f.name for f in scene.frames] == [im.name for im in order]
    assert scene.cameras.model == "opencv" and scene.cameras.dtype == torch.float64
    for i, (frame, im) in enumerate(zip(scene.frames, order, strict=True)):
        assert frame.image_path == tmp_path / "proj" / "images" / im.name
        assert frame.metadata["colmap_image_id"] == im.id and frame.metadata["colmap_camera_id"] == im.camera_id
        cam, p = model.cameras[im.camera_id], model.cameras[im.camera_id].params
        c = scene.cameras[i]
        assert (c.width.item(), c.height.item()) == (cam.width, cam.height)
        torch.testing.assert_close(c.R[0], quat_to_matrix(torch.tensor(im.qvec)), rtol=0, atol=1e-15)
        assert c.t[0].tolist() == im.tvec.tolist()
        single = cam.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")
        fx, fy, cx, cy = (p[0], p[0], p[1], p[2]) if single else tuple(p[:4])
        assert [c.fx.item(), c.fy.item(), c.cx.item(), c.cy.item()] == [fx, fy, cx, cy]
        extra = list(p[3:]) if single else list(p[4:])  # after the focal lengths and principal point
        k1k2p1p2k3 = {"SIMPLE_PINHOLE": [], "PINHOLE": [], "SIMPLE_RADIAL": extra, "RADIAL": extra,
                      "OPENCV": extra, "FULL_OPENCV": extra[:5]}[cam.model]
        assert c.dist[0].tolist() == [float(v) for v in k1k2p1p2k3] + [0.0] * (5 - len(k1k2p1p2k3))
    pts = list(model.points3d.values())
    assert scene.points.ids.tolist() == [p.id for p in pts]
    assert scene.points.xyz.numpy().tolist() == [p.xyz.tolist() for p in pts]
    rgb = torch.tensor(np.stack([p.rgb for p in pts]))
    assert torch.equal(torch.round(scene.points.rgb * 255).to(torch.uint8), rgb)
    assert scene.points.error.tolist() == [p.error for p in pts]
    assert scene.root == sparse


def test_load_colmap_model_kinds_and_unsupported_models(tmp_path):
    rng = np.random.default_rng(2)
    pinhole = load_colmap(project_layout(tmp_path / "a", random_model(rng, ("SIMPLE_PINHOLE", "PINHOLE"))))
    assert pinhole.cameras.model == "pinhole" and pinhole.cameras.dist is None
    fish = random_model(rng, ("OPENCV_FISHEYE", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE", "SIMPLE_FISHEYE", "FISHEYE"))
    scene = load_colmap(project_layout(tmp_path / "b", fish))
    assert scene.cameras.model == "fisheye" and scene.cameras.dist.shape[1] == 4
    for model_name in ("FOV", "THIN_PRISM_FISHEYE", "RAD_TAN_THIN_PRISM_FISHEYE", "EUCM", "DIVISION"):
        sparse = project_layout(tmp_path / model_name, random_model(rng, (model_name, "PINHOLE")), "txt")
        with pytest.raises(ValueError, match=f"cameras.txt: camera 3 uses the COLMAP camera model {model_name}, "
                                             ".*colmap image_undistorter"):
            load_colmap(sparse)
        assert read_model(sparse).cameras[3].model == model_name  # the raw reader handles it
    rational = random_model(rng, ("FULL_OPENCV",))
    rational.cameras[3].params[9] = 0.01
    with pytest.raises(ValueError, match=r"FULL_OPENCV with k4 k5 k6 = \[0.01, .*rational.*image_undistorter"):
        load_colmap(project_layout(tmp_path / "rational", rational))
    with pytest.raises(ValueError, match="mix fisheye and non-fisheye.*OPENCV, OPENCV_FISHEYE"):
        load_colmap(project_layout(tmp_path / "mix", random_model(rng, ("OPENCV", "OPENCV_FISHEYE"))))
    unused = random_model(rng, ("PINHOLE",))
    unused.cameras[99] = ColmapCamera(99, "FOV", 10, 10, [5.0, 5, 5, 5, 0.1])  # no image uses it: fine
    assert len(load_colmap(project_layout(tmp_path / "unused", unused))) == len(unused.images)


def test_load_colmap_images_dir(tmp_path):
    model = random_model(np.random.default_rng(4), ("PINHOLE",), names=[f"{i}.jpg" for i in range(6)])
    # old layout: project/sparse holds the model directly
    write_model(model, tmp_path / "p" / "sparse")
    (tmp_path / "p" / "images").mkdir()
    (tmp_path / "p" / "images" / "0.jpg").write_bytes(b"")
    assert load_colmap(tmp_path / "p" / "sparse").frames[0].image_path == tmp_path / "p" / "images" / "0.jpg"
    assert load_colmap(tmp_path / "p" / "sparse", images_dir=tmp_path / "x").frames[1].image_path == \
        tmp_path / "x" / "1.jpg"
    write_model(model, tmp_path / "q" / "sparse" / "0")
    with pytest.warns(UserWarning, match="no image folder found"):
        scene = load_colmap(tmp_path / "q" / "sparse" / "0")
    assert scene.frames[0].image_path == tmp_path / "q" / "images" / "0.jpg"


@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_save_colmap_round_trip_keeps_poses_points_and_tracks(tmp_path, fmt):
    model = random_model(np.random.default_rng(8), ("PINHOLE", "OPENCV"), n_images=8, n_points=50, tricky=False)
    scene = load_colmap(project_layout(tmp_path, model))
    written = save_colmap(scene, tmp_path / "out", fmt)
    assert read_model(tmp_path / "out") == written
    again = load_colmap(tmp_path / "out", images_dir=tmp_path / "proj" / "images")
    for name in ("fx", "fy", "cx", "cy", "R", "t", "dist", "width", "height"):
        torch.testing.assert_close(getattr(again.cameras, name), getattr(scene.cameras, name), rtol=0, atol=1e-15)
    assert [f.name for f in again.frames] == [f.name for f in scene.frames]
    for name in ("xyz", "rgb", "error", "ids"):
        assert torch.equal(getattr(again.points, name), getattr(scene.points, name))
    # same image ids; tracks are the same observations (rebuilt sorted by image id, then index)
    assert written.images.keys() == model.images.keys()
    for pid, p in model.points3d.items():
        assert sorted(zip(p.image_ids.tolist(), p.point2d_idxs.tolist(), strict=True)) == \
            list(zip(written.points3d[pid].image_ids.tolist(), written.points3d[pid].point2d_idxs.tolist(),
                     strict=True))
    for iid, im in model.images.items():
        assert np.array_equal(written.images[iid].xys, im.xys)
        assert np.array_equal(written.images[iid].point3d_ids, im.point3d_ids)


def synthetic_scene(n: int = 6, with_points: bool = True) -> Scene:
    from scenegrad.datasets.scene import Frame

    cams = orbit_cameras(n, radius=4.0, width=64, height=48, focal=50.0)
    cams = cams.to(dtype=torch.float64)
    cams.R = quat_to_matrix(matrix_to_quat(cams.R))  # orthonormal to float64 precision, as a quaternion stores it
    cams.fx[3:] = 60.0  # two intrinsics groups
    frames = [Frame(name=f"view_{i:02d}.png") for i in range(n)]
    points = None
    if with_points:
        g = torch.Generator().manual_seed(0)
        points = Points(xyz=torch.randn(20, 3, generator=g, dtype=torch.float64),
                        rgb=torch.rand(20, 3, generator=g, dtype=torch.float64))
    return Scene(frames=frames, cameras=cams, points=points)


def test_save_colmap_of_a_synthetic_scene_shares_cameras(tmp_path):
    scene = synthetic_scene()
    model = save_colmap(scene, tmp_path, "txt")
    assert list(model.cameras) == [1, 2] and {c.model for c in model.cameras.values()} == {"PINHOLE"}
    assert [im.camera_id for im in model.images.values()] == [1, 1, 1, 2, 2, 2]
    assert list(model.images) == [1, 2, 3, 4, 5, 6] and list(model.points3d) == list(range(1, 21))
    assert all(p.error == -1.0 and len(p.image_ids) == 0 for p in model.points3d.values())
    back = load_colmap(tmp_path, images_dir=tmp_path)
    torch.testing.assert_close(back.cameras.viewmats, scene.cameras.viewmats, rtol=0, atol=1e-15)
    torch.testing.assert_close(back.cameras.K, scene.cameras.K, rtol=0, atol=0)
    assert torch.equal(back.points.rgb, torch.round(scene.points.rgb * 255) / 255)
    with pytest.raises(ValueError, match="needs a scene with cameras"):
        save_colmap(Scene(frames=scene.frames), tmp_path / "none")


# ----------------------------------------------------------------------------------------------
# pycolmap agreement
# ----------------------------------------------------------------------------------------------


@needs_pycolmap
def test_camera_model_table_matches_pycolmap():
    ours = {name: (mid, len(names)) for name, (mid, names) in CAMERA_MODELS.items()}
    theirs = {}
    for name, mid in pycolmap.CameraModelId.__members__.items():
        if name != "INVALID":
            theirs[name] = (int(mid), len(pycolmap.Camera(model=mid, width=64, height=48).params_info.split(",")))
    assert {name: ours.get(name) for name in theirs} == theirs  # pycolmap 4.2 knows exactly these 18
    assert len(theirs) < len(ours) or ours == theirs


def cam_from_world(image):
    """The pose of a pycolmap image: a method in pycolmap 4, a property before."""
    pose = image.cam_from_world
    return pose() if callable(pose) else pose


def compare_with_pycolmap(ours: ColmapModel, rec) -> None:
    assert rec.num_cameras() == len(ours.cameras) and rec.num_images() == len(ours.images)
    assert rec.num_points3D() == len(ours.points3d)
    for cid, cam in ours.cameras.items():
        c = rec.camera(cid)
        assert (c.model.name, c.width, c.height) == (cam.model, cam.width, cam.height)
        assert np.array_equal(np.asarray(c.params), cam.params)
    for iid, im in ours.images.items():
        p = rec.image(iid)
        assert (p.name, p.camera_id) == (im.name, im.camera_id)
        pose = cam_from_world(p)
        R = quat_to_matrix(torch.tensor(im.qvec)).numpy()
        np.testing.assert_allclose(pose.rotation.matrix(), R, rtol=0, atol=1e-12)
        np.testing.assert_allclose(pose.translation, im.tvec, rtol=0, atol=1e-12)
        xy = np.array([q.xy for q in p.points2D]).reshape(-1, 2)
        ids = np.array([q.point3D_id for q in p.points2D], dtype=np.uint64).astype(np.int64)
        assert np.array_equal(xy, im.xys) and np.array_equal(ids, im.point3d_ids)
    for pid, pt in ours.points3d.items():
        q = rec.point3D(pid)
        assert np.array_equal(q.xyz, pt.xyz) and np.array_equal(q.color, pt.rgb) and q.error == pt.error
        track = [(e.image_id, e.point2D_idx) for e in q.track.elements]
        assert track == list(zip(pt.image_ids.tolist(), pt.point2d_idxs.tolist(), strict=True))


@needs_pycolmap
@pytest.mark.parametrize("fmt", ["bin", "txt"])
def test_pycolmap_reads_what_we_write(tmp_path, fmt):
    model = random_model(np.random.default_rng(31), tricky=False,
                         names=[f"cam{i % 2}/frame_{i:03d}.jpg" for i in range(6)])
    write_model(model, tmp_path, fmt)
    compare_with_pycolmap(model, pycolmap.Reconstruction(str(tmp_path)))


@needs_pycolmap
def test_pycolmap_reads_save_colmap_poses(tmp_path):
    scene = synthetic_scene()
    save_colmap(scene, tmp_path)
    rec = pycolmap.Reconstruction(str(tmp_path))
    by_name = {im.name: im for im in rec.images.values()}
    for i, frame in enumerate(scene.frames):
        pose = cam_from_world(by_name[frame.name])
        np.testing.assert_allclose(pose.rotation.matrix(), scene.cameras.R[i].numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(pose.translation, scene.cameras.t[i].numpy(), rtol=0, atol=1e-12)
        cam = by_name[frame.name].camera
        assert (cam.focal_length_x, cam.principal_point_x) == (scene.cameras.fx[i].item(), scene.cameras.cx[i].item())
    xyz = np.stack([rec.point3D(pid).xyz for pid in range(1, 21)])
    assert np.array_equal(xyz, scene.points.xyz.numpy())


@needs_pycolmap
def test_we_read_what_pycolmap_writes_including_rigs(tmp_path):
    options = pycolmap.SyntheticDatasetOptions()
    options.num_rigs, options.num_cameras_per_rig, options.num_frames_per_rig = 2, 2, 3
    options.num_points3D = 60
    pycolmap.set_random_seed(0)
    rec = pycolmap.synthesize_dataset(options)
    (tmp_path / "bin").mkdir()
    (tmp_path / "txt").mkdir()
    rec.write_binary(str(tmp_path / "bin"))
    rec.write_text(str(tmp_path / "txt"))
    assert (tmp_path / "bin" / "rigs.bin").exists() and (tmp_path / "txt" / "frames.txt").exists()
    from_bin, from_txt = read_model(tmp_path / "bin"), read_model(tmp_path / "txt")
    assert from_bin == from_txt  # COLMAP's %.17g text parses to the same doubles
    compare_with_pycolmap(from_bin, rec)
    write_model(from_bin, tmp_path / "ours")
    assert file_bytes(tmp_path / "ours", "bin") == file_bytes(tmp_path / "bin", "bin")  # byte-identical to COLMAP


@needs_pycolmap
def test_write_model_over_a_colmap4_model_is_what_pycolmap_reads(tmp_path):
    options = pycolmap.SyntheticDatasetOptions()
    options.num_frames_per_rig = 3
    pycolmap.set_random_seed(1)
    pycolmap.synthesize_dataset(options).write_binary(str(tmp_path))
    model = read_model(tmp_path)
    for im in model.images.values():
        im.tvec = im.tvec + 1.0
    with pytest.warns(UserWarning, match="removed rigs.bin, frames.bin"):
        write_model(model, tmp_path)  # stale frames.bin would override the new poses in pycolmap 4
    compare_with_pycolmap(model, pycolmap.Reconstruction(str(tmp_path)))


@needs_pycolmap
def test_scene_cameras_project_like_pycolmap(tmp_path):
    """Every model load_colmap accepts projects exactly as COLMAP's own camera model does."""
    rng = np.random.default_rng(41)
    models = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV",
              "OPENCV_FISHEYE", "SIMPLE_RADIAL_FISHEYE", "RADIAL_FISHEYE", "SIMPLE_FISHEYE", "FISHEYE")
    for name in models:
        model = random_model(rng, (name,), n_images=3, tricky=False)
        cam = model.cameras[3]
        if name == "FULL_OPENCV":
            cam.params[9:] = 0.0
        cam.params[4:] *= 3  # noticeable distortion
        scene = load_colmap(project_layout(tmp_path / name, model))
        pc = pycolmap.Camera(model=name, width=cam.width, height=cam.height, params=cam.params)
        pts_cam = np.concatenate([rng.uniform(-0.6, 0.6, (50, 2)), np.ones((50, 1))], 1) * rng.uniform(1, 5, (50, 1))
        expected = pc.img_from_cam(pts_cam)
        c0 = scene.cameras[0]
        world = (torch.tensor(pts_cam) - c0.t) @ c0.R[0]  # camera -> world with frame 0's pose
        uv, _ = project(c0, world)
        np.testing.assert_allclose(uv[0].numpy(), expected, rtol=0, atol=1e-9, err_msg=name)
