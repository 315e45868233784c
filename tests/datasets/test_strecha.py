"""Strecha ``.camera`` files: layout, round trips, bad input, and the Herz-Jesu-P8 ground truth checked
by triangulating SIFT matches across neighbouring photos and reprojecting them."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch

from scenegrad.datasets.strecha import (
    format_strecha_camera,
    load_strecha,
    read_strecha_camera,
    write_strecha_camera,
)
from scenegrad.render.cameras import Cameras, project
from scenegrad.render.rotations import random_rotations

from ..conftest import SHARED_DATA

HERZJESU = SHARED_DATA / "posed" / "herzjesu_p8"

CAMERA_0000 = """2759.48 0 1520.69
0 2764.16 1006.81
0 0 1
0 0 0
-0.0552 0.132982 0.98958
0.998433 0.0164966 0.0534769
-0.00921322 0.990981 -0.133684
-6.71999 -14.2551 0.279539
3072 2048
"""


def test_read_camera_layout(tmp_path):
    (tmp_path / "0000.jpg.camera").write_text(CAMERA_0000)
    cam = read_strecha_camera(tmp_path / "0000.jpg.camera").camera
    assert len(cam) == 1 and cam.dtype == torch.float64 and cam.model == "pinhole"
    assert (cam.fx.item(), cam.fy.item(), cam.cx.item(), cam.cy.item()) == (2759.48, 2764.16, 1520.69, 1006.81)
    assert (cam.width.item(), cam.height.item()) == (3072, 2048)
    R_file = torch.tensor([[-0.0552, 0.132982, 0.98958], [0.998433, 0.0164966, 0.0534769],
                           [-0.00921322, 0.990981, -0.133684]], dtype=torch.float64)
    C = torch.tensor([-6.71999, -14.2551, 0.279539], dtype=torch.float64)
    torch.testing.assert_close(cam.R[0], R_file.T, atol=1e-5, rtol=0)  # lines 5-7 are camera-to-world
    torch.testing.assert_close(cam.centers[0], C)
    # x ~ K [R^T | -R^T C] X, written out
    X = C + 5.0 * R_file[:, 2] + 0.3 * R_file[:, 0]  # 5 m along the optical axis, 0.3 m to the right
    K = cam.K[0]
    x = K @ (R_file.T @ X - R_file.T @ C)
    uv, z = project(cam, X[None])
    torch.testing.assert_close(uv[0, 0], x[:2] / x[2], atol=1e-3, rtol=0)  # R is re-orthonormalised
    assert z.item() == pytest.approx(5.0)
    assert uv[0, 0, 0] > cam.cx.item()  # camera +X (right) is to the right in the image


def test_round_trip(tmp_path):
    g = torch.Generator().manual_seed(1)
    R = random_rotations(1, generator=g, dtype=torch.float64)
    cam = Cameras(1234.5, 1230.25, 640.3, 480.7, R, torch.randn(1, 3, generator=g, dtype=torch.float64), 1280, 960)
    write_strecha_camera(tmp_path / "a.png.camera", cam)
    back = read_strecha_camera(tmp_path / "a.png.camera").camera
    for name in ("fx", "fy", "cx", "cy", "R", "t"):
        torch.testing.assert_close(getattr(back, name), getattr(cam, name), atol=1e-12, rtol=0)
    assert back.width.item() == 1280 and back.height.item() == 960
    with pytest.raises(ValueError, match="pinhole"):
        format_strecha_camera(Cameras(1.0, 1.0, 0.0, 0.0, R, torch.zeros(1, 3, dtype=torch.float64), 2, 2,
                                      model="opencv"))


@pytest.mark.parametrize("edit, message", [
    (lambda lines: lines[:8], "9 non-empty lines"),
    (lambda lines: lines[:4] + ["1 0 x"] + lines[5:], r"\.camera:5: expected numbers"),
    (lambda lines: lines[:7] + ["1 2"] + lines[8:], r"\.camera:8: expected 3 finite numbers"),
    (lambda lines: lines[:4] + ["2 0 0", "0 1 0", "0 0 1"] + lines[7:], "not a rotation matrix"),
    (lambda lines: lines[:4] + ["-1 0 0", "0 1 0", "0 0 1"] + lines[7:], r"not a rotation matrix .* det = -1"),
    (lambda lines: ["2759.48 5 1520.69"] + lines[1:], "K must be"),
    (lambda lines: lines[:8] + ["3072 0"], "image size"),
])
def test_bad_camera_files(tmp_path, edit, message):
    (tmp_path / "x.camera").write_text("\n".join(edit(CAMERA_0000.splitlines())) + "\n")
    with pytest.raises(ValueError, match=message):
        read_strecha_camera(tmp_path / "x.camera")


def test_missing_and_distortion(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such Strecha camera file"):
        read_strecha_camera(tmp_path / "none.camera")
    lines = CAMERA_0000.splitlines()
    (tmp_path / "d.camera").write_text("\n".join(lines[:3] + ["0.01 0 0"] + lines[4:]) + "\n")
    with pytest.warns(UserWarning, match="non-zero distortion"):
        parsed = read_strecha_camera(tmp_path / "d.camera")
    assert parsed.distortion == (0.01, 0.0, 0.0) and parsed.camera.model == "pinhole"


def test_load_layout(tmp_path):
    """``.camera`` files named after PNGs pair with JPEG re-encodings of the same stem; natural order."""
    from PIL import Image

    (tmp_path / "gt_dense_cameras").mkdir()
    (tmp_path / "images").mkdir()
    for name in ("2", "10", "1"):
        (tmp_path / "gt_dense_cameras" / f"{name}.png.camera").write_text(CAMERA_0000)
        Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "images" / f"{name}.jpg")
    scene = load_strecha(tmp_path)
    assert [f.name for f in scene.frames] == ["1.jpg", "2.jpg", "10.jpg"]
    assert len(scene.cameras) == 3 and scene.frames[0].image().shape == (4, 6, 3)
    (tmp_path / "images" / "10.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"10\.png\.camera: no image"):
        load_strecha(tmp_path)
    assert load_strecha(tmp_path, require_images=False).frames[2].image_path is None
    with pytest.raises(FileNotFoundError, match="no .camera files"):
        load_strecha(tmp_path / "images")


# ----------------------------------------------------------------------------------------------
# Ground truth on the real Herz-Jesu-P8 photos
# ----------------------------------------------------------------------------------------------

WORK_WIDTH = 1024  # SIFT runs on images downscaled 3x (3072 -> 1024)
MAX_ERROR = 10.0  # full-resolution pixels: matches reprojecting worse than this are outliers
MIN_INLIERS = 0.5


@pytest.fixture(scope="module")
def herzjesu():
    if not HERZJESU.is_dir():
        pytest.skip(f"{HERZJESU} not found")
    return load_strecha(HERZJESU)


def sift(path, width: int):
    """Keypoints in full-resolution scenegrad pixels (centres at i + 0.5) and descriptors."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    h, w = img.shape
    small = cv2.resize(img, (width, round(h * width / w)), interpolation=cv2.INTER_AREA)
    kp, des = cv2.SIFT_create(nfeatures=4000).detectAndCompute(small, None)
    scale = np.array([w / small.shape[1], h / small.shape[0]])
    return (np.array([k.pt for k in kp]) + 0.5) * scale, des  # cv2 pixel centres are at integers


def ratio_matches(des1, des2, ratio: float = 0.8) -> dict[int, int]:
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(des1, des2, k=2)
    return {m[0].queryIdx: m[0].trainIdx for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance}


def triangulate(cams: Cameras, uv: torch.Tensor) -> torch.Tensor:
    """Linear (DLT) triangulation of tracks ``uv [V, P, 2]`` seen by ``V`` pinhole cameras -> ``[P, 3]``,
    in normalised camera coordinates for conditioning."""
    xy = (uv - torch.stack([cams.cx, cams.cy], -1)[:, None]) / torch.stack([cams.fx, cams.fy], -1)[:, None]
    Rt = torch.cat([cams.R, cams.t[..., None]], dim=-1)  # [V, 3, 4]
    rows = torch.cat([xy[..., :1] * Rt[:, None, 2] - Rt[:, None, 0],
                      xy[..., 1:] * Rt[:, None, 2] - Rt[:, None, 1]], dim=0)  # [2V, P, 4]
    X = torch.linalg.svd(rows.permute(1, 0, 2)).Vh[:, -1]
    return X[:, :3] / X[:, 3:]


def reprojection(cams: Cameras, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reprojection errors ``[V, P]`` (pixels) of the triangulated tracks, and inliers ``[P]``: in front of
    every camera and reprojecting within ``MAX_ERROR`` in every view."""
    X = triangulate(cams, uv)
    proj, z = project(cams, X)
    err = (proj - uv).norm(dim=-1)
    return err, (z > 0).all(0) & (err < MAX_ERROR).all(0)


def tracks(herzjesu, views: list[int]) -> torch.Tensor:
    """Chains of ratio-test matches through consecutive views -> ``[V, P, 2]`` full-resolution pixels."""
    feats = [sift(herzjesu.frames[v].image_path, WORK_WIDTH) for v in views]
    chains = {i: [i] for i in range(len(feats[0][0]))}
    for k in range(len(views) - 1):
        m = ratio_matches(feats[k][1], feats[k + 1][1])
        chains = {s: c + [m[c[-1]]] for s, c in chains.items() if c[-1] in m}
    idx = np.array(list(chains.values())).T  # [V, P]
    return torch.from_numpy(np.stack([feats[v][0][idx[v]] for v in range(len(views))]))


@pytest.mark.parametrize("views", [[0, 1, 2], [5, 6, 7]])
def test_herzjesu_ground_truth_reprojection(herzjesu, views):
    """SIFT tracks over three neighbouring photos, triangulated with the ground-truth cameras, reproject
    to within a fraction of a pixel: the .camera convention (R camera-to-world, C centre) is right."""
    start = time.perf_counter()
    uv = tracks(herzjesu, views)
    cams = herzjesu.cameras[views]
    err, inlier = reprojection(cams, uv)
    median = err[:, inlier].median().item()  # over every observation of every inlier track
    worst_view = err[:, inlier].amax(0).median().item()
    print(f"\nHerz-Jesu {views}: {uv.shape[1]} tracks, {inlier.float().mean().item():.1%} inliers, median "
          f"reprojection error {median:.3f} px (full-resolution 3072 x 2048 pixels; median over tracks of the worst "
          f"view {worst_view:.3f} px), {time.perf_counter() - start:.1f} s")
    assert uv.shape[1] > 200
    assert inlier.float().mean() > MIN_INLIERS
    assert median < 1.0
    # the same test fails for the wrong convention: lines 5-7 taken as world-to-camera
    wrong = Cameras.from_K(cams.K, cams.R.transpose(1, 2), -(cams.R.transpose(1, 2) @ cams.centers[..., None])[..., 0],
                           cams.width, cams.height)
    err_w, inlier_w = reprojection(wrong, uv)
    print(f"  lines 5-7 read as world-to-camera: {inlier_w.float().mean().item():.1%} inliers")
    assert inlier_w.float().mean() < MIN_INLIERS or err_w[:, inlier_w].median() > 1.0
