"""Incremental SfM with every camera model (PINHOLE fx != fy, RADIAL, OPENCV distortion), shared or per-image
intrinsics, on synthetic keypoints with exact ground truth (no images: features and matches given directly)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import scenegrad.recon.sfm as sfm
from scenegrad.datasets.colmap import load_colmap, save_colmap
from scenegrad.recon.evaluate import rotation_angles
from scenegrad.recon.sfm import CAMERA_MODELS, Features, SfMOptions, _normalised, _Recon, incremental_sfm

SIZE = (800, 600)  # (W, H)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Many small tensor ops: one thread runs them steadily on a loaded machine."""


def _distort(dist, n):
    x, y = n[:, 0], n[:, 1]
    k1, k2, p1, p2, k3 = dist
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    return np.stack([x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                     y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y], 1)


def _views(fx, fy, dist, n_cams=8, n_pts=700, noise=0.3, seed=0, pp=(0.0, 0.0)):
    """``n_cams`` cameras on a 70 degree zigzag of radius 6 around a cube of points (side 3), principal point at
    the image centre plus ``pp``, ``fx, fy, dist`` per camera (``[n_cams]``, ``[n_cams]``, ``[n_cams, 5]``);
    every point inside an image is a keypoint there (noise ``noise`` px), matched across all images seeing it."""
    rng = np.random.default_rng(seed)
    azimuth = np.radians(np.linspace(-35, 35, n_cams))
    elevation = np.radians(np.where(np.arange(n_cams) % 2, 12.0, -12.0))  # rotations about one axis only would
    # leave fy / fx unobservable (planar motion is critical for self-calibration)
    R = np.stack([np.array([[1, 0, 0], [0, np.cos(e), -np.sin(e)], [0, np.sin(e), np.cos(e)]])
                  @ np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
                  for a, e in zip(azimuth, elevation, strict=True)])
    t = np.tile([0.0, 0.0, 6.0], (n_cams, 1))
    X = rng.uniform(-1.5, 1.5, (n_pts, 3))
    xy, ids = [], []
    for i in range(n_cams):
        xc = X @ R[i].T + t[i]
        uv = np.array([fx[i], fy[i]]) * _distort(dist[i], xc[:, :2] / xc[:, 2:]) + np.array(SIZE) / 2 + pp
        uv += rng.normal(0, noise, uv.shape)
        inside = ((uv > 2) & (uv < np.array(SIZE) - 2)).all(1)
        xy.append(uv[inside])
        ids.append(np.nonzero(inside)[0])
    feats = [Features(p, np.zeros((0, 128), np.float32), np.full((len(p), 3), 0.5, np.float32), np.arange(len(p)))
             for p in xy]
    matches = {}
    for i in range(n_cams):
        for j in range(i + 1, n_cams):
            common, a, b = np.intersect1d(ids[i], ids[j], return_indices=True)
            if len(common) >= 15:
                matches[(i, j)] = np.stack([a, b], 1)
    return feats, matches, R


def _run(monkeypatch, feats, matches, opt):
    """:func:`incremental_sfm` on blank images with the given features and verified matches."""
    it = iter(feats)
    monkeypatch.setattr(sfm, "extract_features", lambda *a, **k: next(it))
    monkeypatch.setattr(sfm, "_match_pairs", lambda *a, **k: matches)
    blank = [np.zeros((SIZE[1], SIZE[0], 3), np.uint8)] * len(feats)
    return incremental_sfm(blank, options=opt)


def _rotation_error(cams, R_gt) -> float:
    Re, Rg = cams.R.double(), torch.from_numpy(R_gt)
    i, j = torch.triu_indices(len(Re), len(Re), 1)
    return float(rotation_angles(Re[j] @ Re[i].transpose(-1, -2), Rg[j] @ Rg[i].transpose(-1, -2)).max())


def test_pinhole_recovers_separate_focal_lengths(monkeypatch, tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    n = 8
    feats, matches, R = _views(np.full(n, 600.0), np.full(n, 630.0), np.zeros((n, 5)))
    res = _run(monkeypatch, feats, matches, SfMOptions(camera_model="PINHOLE"))
    cams = res.scene.cameras
    assert res.registered == list(range(n)) and cams.model == "pinhole"
    assert _rotation_error(cams, R) < 0.1  # measured: 0.033 deg
    # one shared camera, fx != fy recovered (measured: 0.002 %, 0.11 %), principal point held at the centre
    assert torch.allclose(cams.fx, cams.fx[:1].expand(n)) and torch.allclose(cams.fy, cams.fy[:1].expand(n))
    assert abs(float(cams.fx[0]) / 600 - 1) < 0.01 and abs(float(cams.fy[0]) / 630 - 1) < 0.01
    # the principal point ("auto") is tried in the final solve; it is at the centre, so no significant gain: kept
    assert float(cams.cx[0]) == 400.0 and float(cams.cy[0]) == 300.0
    # a SIMPLE_PINHOLE fit of the same keypoints cannot match fy != fx: it fits worse
    simple = _run(monkeypatch, feats, matches, SfMOptions(camera_model="SIMPLE_PINHOLE"))
    assert torch.equal(simple.scene.cameras.fx, simple.scene.cameras.fy)
    assert float(simple.scene.points.error.mean()) > 1.15 * float(res.scene.points.error.mean())  # measured 1.29
    # the COLMAP model: PINHOLE, one camera, read back by pycolmap
    save_colmap(res.scene, tmp_path)
    rec = pycolmap.Reconstruction(str(tmp_path))
    assert rec.num_reg_images() == n and len(rec.cameras) == 1
    cam = next(iter(rec.cameras.values()))
    assert cam.model.name == "PINHOLE"
    np.testing.assert_allclose(cam.params, [float(cams.fx[0]), float(cams.fy[0]), 400.0, 300.0])
    assert rec.num_points3D() == len(res.scene.points)


def test_opencv_recovers_distortion_and_writes_an_opencv_model(monkeypatch, tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    n = 8
    truth = np.array([-0.08, 0.03, 0.001, -0.0008, 0.0])
    feats, matches, R = _views(np.full(n, 600.0), np.full(n, 612.0), np.tile(truth, (n, 1)), seed=1)
    res = _run(monkeypatch, feats, matches, SfMOptions(camera_model="OPENCV"))
    cams = res.scene.cameras
    assert res.registered == list(range(n)) and cams.model == "opencv"
    assert _rotation_error(cams, R) < 0.1  # measured: 0.033 deg
    assert abs(float(cams.fx[0]) / 600 - 1) < 0.01 and abs(float(cams.fy[0]) / 612 - 1) < 0.01
    assert float(cams.dist[0, 4]) == 0.0  # k3 is not part of OPENCV
    # the fitted distortion displaces the image like the truth (k1 and k2 trade off: compare the displacement)
    # over a grid of normalised points spanning the image up to 10 % from its borders
    g = np.stack(np.meshgrid(np.linspace(-0.55, 0.55, 9), np.linspace(-0.4, 0.4, 7)), -1).reshape(-1, 2)
    fitted = _distort(cams.dist[0].numpy(), g) * np.array([600.0, 612.0])
    assert np.abs(fitted - _distort(truth, g) * np.array([600.0, 612.0])).max() < 1.0  # pixels; measured 0.76
    assert abs(float(cams.dist[0, 0]) - truth[0]) < 0.01
    rms = float(res.scene.points.error.mean())
    assert rms < 0.5  # the noise is 0.3 px
    # undistortion inverts the model (the geometric steps see ideal points)
    rec = _Recon({}, {}, cams.fx.numpy().copy(), cams.fy.numpy().copy(), cams.dist.numpy().copy(),
                 np.tile(np.array(SIZE) / 2.0, (n, 1)), np.zeros(n, np.int64), np.zeros((0, 3)), np.zeros(0, bool))
    pix = feats[0].xy[:50]
    nrm = _normalised(rec, 0, pix)
    back = _distort(cams.dist[0].numpy(), nrm) * np.array([float(cams.fx[0]), float(cams.fy[0])]) + np.array(SIZE) / 2
    np.testing.assert_allclose(back, pix, atol=1e-8)
    # the COLMAP model: OPENCV (fx, fy, cx, cy, k1, k2, p1, p2), read back by pycolmap
    save_colmap(res.scene, tmp_path)
    model = pycolmap.Reconstruction(str(tmp_path))
    cam = next(iter(model.cameras.values()))
    assert cam.model.name == "OPENCV" and len(model.cameras) == 1
    np.testing.assert_allclose(cam.params, [float(cams.fx[0]), float(cams.fy[0]), 400.0, 300.0,
                                            *cams.dist[0, :4].tolist()])
    back = load_colmap(tmp_path, images_dir=tmp_path)
    torch.testing.assert_close(back.cameras.dist, cams.dist)


def test_an_offset_principal_point_is_refined_when_significant(monkeypatch):
    """A principal point 1 % off the centre biases the poses; "auto" refines it in the final solve (the fit
    improves far beyond the information criterion), False holds it at the centre."""
    n = 8
    truth = np.array([400.0 + 8.0, 300.0 - 6.0])
    feats, matches, R = _views(np.full(n, 600.0), np.full(n, 600.0), np.zeros((n, 5)), seed=3, pp=truth - (400, 300))
    held = _run(monkeypatch, feats, matches, SfMOptions(refine_principal_point=False))
    feats2 = [Features(f.xy.copy(), f.desc, f.rgb, f.loc) for f in feats]
    auto = _run(monkeypatch, feats2, matches, SfMOptions())  # SIMPLE_RADIAL, refine_principal_point="auto"
    assert held.registered == auto.registered == list(range(n))
    assert float(held.scene.cameras.cx[0]) == 400.0
    c = auto.scene.cameras
    np.testing.assert_allclose([float(c.cx[0]), float(c.cy[0])], truth, atol=1.0)
    err_held, err_auto = _rotation_error(held.scene.cameras, R), _rotation_error(c, R)
    assert err_auto < 0.15 and err_auto < 0.2 * err_held, (err_auto, err_held)  # measured: 0.10 and 0.91 deg
    assert abs(float(c.fx[0]) / 600 - 1) < 0.01


@pytest.mark.parametrize("model", ["PINHOLE", "RADIAL", "OPENCV"])
def test_per_image_intrinsics(monkeypatch, model):
    """Two lenses (images 0, 2, 4, 6 and 1, 3, 5, 7), each image calibrated alone."""
    n = 8
    fx = np.where(np.arange(n) % 2, 560.0, 640.0)
    fy = fx * (1.04 if model != "RADIAL" else 1.0)
    dist = np.zeros((n, 5))
    if model != "PINHOLE":
        dist[:, 0] = np.where(np.arange(n) % 2, -0.06, 0.04)
        dist[:, 1] = 0.02
    feats, matches, R = _views(fx, fy, dist, n_cams=n, n_pts=600, seed=2)
    res = _run(monkeypatch, feats, matches, SfMOptions(camera_model=model, intrinsics="per_image"))
    cams = res.scene.cameras
    assert res.registered == list(range(n))
    assert _rotation_error(cams, R) < 0.1
    # every image its own intrinsics: within ~1 % of its lens (measured: at most 0.28 %, OPENCV 0.66 %; rotations
    # 0.027-0.059 deg)
    assert np.abs(cams.fx.numpy() / fx - 1).max() < 0.015 and np.abs(cams.fy.numpy() / fy - 1).max() < 0.015
    if model == "RADIAL":
        assert torch.equal(cams.fx, cams.fy) and bool((cams.dist[:, 2:] == 0).all())


def test_unknown_camera_model_is_rejected():
    with pytest.raises(ValueError, match="camera_model"):
        incremental_sfm([np.zeros((8, 8, 3), np.uint8)] * 2, options=SfMOptions(camera_model="FISHEYE"))
    assert set(CAMERA_MODELS) == {"SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV"}
