"""RGB-D loaders: pose files (quaternion order, stamps, bad input), TUM association on a synthetic
sequence, depth warping against an analytic plane, and the real 7-Scenes redkitchen and slambook
sequences: depth of one frame warped into a neighbour must agree with the neighbour's own depth."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scenegrad.datasets.rgbd import (
    SEVEN_SCENES_INTRINSICS,
    SLAMBOOK_INTRINSICS,
    TUM_INTRINSICS,
    RGBDIntrinsics,
    associate,
    load_7scenes,
    load_pose_list,
    load_tum,
    read_pose_file,
    read_pose_matrix,
    warp_depth,
    write_pose_file,
)
from scenegrad.render.cameras import Cameras, pixel_rays
from scenegrad.render.rotations import random_rotations

from ..conftest import SHARED_DATA

REDKITCHEN = SHARED_DATA / "rgbd" / "redkitchen_sub10"
SLAMBOOK = SHARED_DATA / "rgbd" / "slambook_ch5" / "rgbd"


def depth_agreement(depth_a: torch.Tensor, depth_b: torch.Tensor, cam_a: Cameras, cam_b: Cameras) -> dict:
    """Warp ``depth_a`` into camera b; statistics of |warped - depth_b| where both are valid."""
    warped = warp_depth(depth_a, cam_a, cam_b)
    both = (warped > 0) & (depth_b > 0)
    diff = (warped[both] - depth_b[both].to(warped.dtype)).abs()
    return {"overlap": both.float().mean().item(), "median_m": diff.median().item(),
            "median_rel": (diff / depth_b[both]).median().item(), "depth_m": depth_b[both].median().item()}


# ----------------------------------------------------------------------------------------------
# Pose files
# ----------------------------------------------------------------------------------------------


def random_poses(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    T = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    T[:, :3, :3] = random_rotations(n, generator=g, dtype=torch.float64)
    T[:, :3, 3] = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return T


@pytest.mark.parametrize("order", ["xyzw", "wxyz"])
@pytest.mark.parametrize("with_stamps", [False, True])
def test_pose_file_round_trip(tmp_path, order, with_stamps):
    T = random_poses(6)
    stamps = [1305031102.175304 + 0.033 * i for i in range(6)] if with_stamps else None
    write_pose_file(tmp_path / "poses.txt", T, stamps, order=order)
    poses = read_pose_file(tmp_path / "poses.txt", order=order)
    torch.testing.assert_close(poses.camtoworlds, T, atol=1e-12, rtol=0)
    assert poses.lines == [1, 2, 3, 4, 5, 6]
    if with_stamps:
        torch.testing.assert_close(poses.stamps, torch.tensor(stamps, dtype=torch.float64), atol=1e-6, rtol=0)
    else:
        assert poses.stamps is None


def test_pose_file_quaternion_order(tmp_path):
    """``tx ty tz qx qy qz qw``: a 90 degree turn about +Z maps camera +X to world +Y."""
    s = math.sqrt(0.5)
    (tmp_path / "p.txt").write_text(f"# tx ty tz qx qy qz qw\n\n1 2 3 0 0 {s} {s}\n")
    T = read_pose_file(tmp_path / "p.txt").camtoworlds[0]
    torch.testing.assert_close(T[:3, 0], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(T[:3, 3], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    # the same numbers read as w x y z are another rotation (about the axis (0, s, s))
    T2 = read_pose_file(tmp_path / "p.txt", order="wxyz").camtoworlds[0]
    assert not torch.allclose(T2[:3, :3], T[:3, :3], atol=1e-3)


@pytest.mark.parametrize("text, message", [
    ("0 0 0 0 0 0 1\n0 0 0 0 0 1\n", r"p\.txt:2: expected 7 numbers"),
    ("0 0 0 0 0 0 1\n0 0 zero 0 0 0 1\n", r"p\.txt:2: expected numbers"),
    ("# only a comment\n", "no poses"),
    ("0 0 0 0 0 0 0\n", r"p\.txt:1: quaternion .* no direction"),
    ("0 0 0 0 0 0 1\n5 0 0 0 0 0 0 1\n", r"p\.txt:2: 8 numbers where earlier lines have 7"),
    ("0 0 0 0 0 0 nan\n", r"p\.txt:1: non-finite"),
])
def test_pose_file_bad_lines(tmp_path, text, message):
    (tmp_path / "p.txt").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_pose_file(tmp_path / "p.txt")


def test_pose_file_missing_and_non_unit_quaternion(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such pose file"):
        read_pose_file(tmp_path / "nope.txt")
    (tmp_path / "p.txt").write_text("0 0 0 0 0 0 1\n0 0 0 0 0 0 2\n")
    with pytest.warns(UserWarning, match=r"p\.txt:2: quaternion norm 2"):
        T = read_pose_file(tmp_path / "p.txt").camtoworlds
    torch.testing.assert_close(T[1], torch.eye(4, dtype=torch.float64))


def test_pose_matrix_checks(tmp_path):
    T = random_poses(1)[0]
    np.savetxt(tmp_path / "ok.txt", T.numpy())
    torch.testing.assert_close(read_pose_matrix(tmp_path / "ok.txt"), T, atol=1e-12, rtol=0)
    noisy = T.clone()
    noisy[:3, :3] += 3e-4  # 7-Scenes-sized deviation: accepted and re-orthonormalised
    np.savetxt(tmp_path / "noisy.txt", noisy.numpy())
    R = read_pose_matrix(tmp_path / "noisy.txt")[:3, :3]
    torch.testing.assert_close(R.T @ R, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)
    bad = T.clone()
    bad[:3, :3] *= 1.5  # a scaled rotation
    np.savetxt(tmp_path / "bad.txt", bad.numpy())
    with pytest.raises(ValueError, match=r"bad\.txt: not a rotation matrix"):
        read_pose_matrix(tmp_path / "bad.txt")
    mirror = T.clone()
    mirror[:3, 0] *= -1
    np.savetxt(tmp_path / "mirror.txt", mirror.numpy())
    with pytest.raises(ValueError, match=r"mirror\.txt: not a rotation matrix .* det = -1"):
        read_pose_matrix(tmp_path / "mirror.txt")
    (tmp_path / "short.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n")
    with pytest.raises(ValueError, match=r"short\.txt: expected a 4x4 matrix"):
        read_pose_matrix(tmp_path / "short.txt")


def test_intrinsics_pixel_convention_and_presets():
    """OpenCV / ROS calibrations put pixel centres at integers: scenegrad's cx, cy are 0.5 larger."""
    assert SEVEN_SCENES_INTRINSICS.cx == 320.5 and SEVEN_SCENES_INTRINSICS.fx == 585.0
    assert SLAMBOOK_INTRINSICS.cx == 326.0 and SLAMBOOK_INTRINSICS.fy == 519.0
    assert TUM_INTRINSICS["fr1"].dist is not None and TUM_INTRINSICS["fr3"].dist is None
    cams = TUM_INTRINSICS["fr1"].cameras(random_poses(2))
    assert cams.model == "opencv" and cams.dist.shape == (2, 5)
    half = SEVEN_SCENES_INTRINSICS.with_size(320, 240)
    assert (half.fx, half.cx, half.width) == (292.5, 160.25, 320)


# ----------------------------------------------------------------------------------------------
# Depth warping
# ----------------------------------------------------------------------------------------------


def test_warp_depth_plane():
    """A fronto-parallel plane z = 2 seen by a camera moved 0.1 along x and tilted slightly."""
    K = torch.tensor([[100.0, 0, 40.0], [0, 100.0, 30.0], [0, 0, 1]], dtype=torch.float64)
    a = Cameras.from_K(K, torch.eye(3, dtype=torch.float64)[None], torch.zeros(1, 3, dtype=torch.float64), 80, 60)
    c2w_b = torch.eye(4, dtype=torch.float64)
    angle = 0.05
    c2w_b[:3, :3] = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0],
                                  [-math.sin(angle), 0, math.cos(angle)]], dtype=torch.float64)
    c2w_b[:3, 3] = torch.tensor([0.1, 0.0, 0.0])
    b = Cameras.from_camtoworlds(c2w_b[None], K, 80, 60)
    depth_a = torch.full((60, 80), 2.0)
    warped = warp_depth(depth_a, a, b)
    assert warped.shape == (60, 80)
    hit = warped > 0
    assert hit.float().mean() > 0.8
    # exact depth of the plane z_world = 2 along each destination pixel's centre ray
    origins, dirs = pixel_rays(b)
    s = (2.0 - origins[0, ..., 2]) / dirs[0, ..., 2]
    z_true = ((origins[0] + s[..., None] * dirs[0]) @ b.R[0].T + b.t[0])[..., 2]
    # a splat lands within half a destination pixel of the centre: z varies by < 2e-3 over that
    assert (warped[hit] - z_true[hit]).abs().max() < 2e-3
    with pytest.raises(ValueError, match="source camera's size"):
        warp_depth(depth_a[:10], a, b)


# ----------------------------------------------------------------------------------------------
# Synthetic TUM and pose-list layouts
# ----------------------------------------------------------------------------------------------


def write_png16(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint16)).save(path)


def write_rgb(path: Path, h: int = 12, w: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(path)


def test_load_tum_association(tmp_path):
    t0 = 1305031102.0
    rgb_t = [t0 + 0.0333 * i for i in range(5)]
    depth_t = [t + 0.004 for t in rgb_t[:4]]  # the last colour frame has no depth
    gt_t = [t0 - 0.01 + 0.01 * i for i in range(14)]  # poses at 100 Hz until ~t0 + 0.12: frame 4 has none
    for t in rgb_t:
        write_rgb(tmp_path / "rgb" / f"{t:.6f}.png")
    for t in depth_t:
        write_png16(tmp_path / "depth" / f"{t:.6f}.png", np.full((12, 16), 10000))
    (tmp_path / "rgb.txt").write_text("# color images\n# timestamp filename\n" +
                                      "".join(f"{t:.6f} rgb/{t:.6f}.png\n" for t in rgb_t))
    (tmp_path / "depth.txt").write_text("# depth\n" + "".join(f"{t:.6f} depth/{t:.6f}.png\n" for t in depth_t))
    T = random_poses(len(gt_t), seed=3)
    write_pose_file(tmp_path / "groundtruth.txt", T, gt_t)
    intr = RGBDIntrinsics(20.0, 20.0, 8.0, 6.0, 16, 12)
    scene = load_tum(tmp_path, intrinsics=intr)
    assert [f.name for f in scene.frames] == [f"rgb/{t:.6f}.png" for t in rgb_t[:4]]
    assert scene.metadata["dropped"] == 1
    assert [round(f.timestamp, 4) for f in scene.frames] == [0.0, 0.0333, 0.0666, 0.0999]
    # nearest pose: rgb_t[i] = t0 + 0.0333 i  ->  gt index round((0.0333 i + 0.01) / 0.01)
    expected = [round((0.0333 * i + 0.01) / 0.01) for i in range(4)]
    torch.testing.assert_close(scene.cameras.camtoworlds, T[expected], atol=1e-9, rtol=0)
    assert scene.frames[2].depth().shape == (12, 16)
    torch.testing.assert_close(scene.frames[2].depth(), torch.full((12, 16), 2.0))
    # a named preset: fr1 is distorted
    assert load_tum(tmp_path, intrinsics="fr1").cameras.model == "opencv"
    with pytest.raises(ValueError, match="one of"):
        load_tum(tmp_path, intrinsics="fr9")
    (tmp_path / "groundtruth.txt").unlink()
    with pytest.raises(FileNotFoundError, match="groundtruth.txt"):
        load_tum(tmp_path, intrinsics=intr)


def test_associate_is_greedy_and_unique():
    a = np.array([0.0, 0.01, 0.5])
    b = np.array([0.012, 0.3])
    assert associate(a, b) == [(1, 0)]  # 0.0 would also be within 0.02 of 0.012, but 0.01 is closer
    assert associate(a, b, max_difference=0.3) == [(1, 0), (2, 1)]


def test_load_pose_list_synthetic(tmp_path):
    T = random_poses(3)
    write_pose_file(tmp_path / "pose.txt", T)
    for i in (1, 2, 10):  # natural order: 1, 2, 10
        write_rgb(tmp_path / "color" / f"{i}.png")
        write_png16(tmp_path / "depth" / f"{i}.png", np.full((12, 16), 1500 * i))
    intr = RGBDIntrinsics(20.0, 20.0, 8.0, 6.0, 16, 12)
    scene = load_pose_list(tmp_path, intr, depth_glob="depth/*.png")
    assert [f.name for f in scene.frames] == ["color/1.png", "color/2.png", "color/10.png"]
    torch.testing.assert_close(scene.frames[2].depth(), torch.full((12, 16), 15.0))
    torch.testing.assert_close(scene.cameras.camtoworlds, T, atol=1e-12, rtol=0)
    (tmp_path / "depth" / "2.png").unlink()
    with pytest.raises(ValueError, match=r"3 images .* 2 depth maps .* 3 poses"):
        load_pose_list(tmp_path, intr, depth_glob="depth/*.png")
    with pytest.raises(FileNotFoundError, match="no such pose file"):
        load_pose_list(tmp_path, intr, pose_file="missing.txt")


def test_load_7scenes_synthetic(tmp_path):
    T = random_poses(2)
    for i in range(2):
        stem = f"frame-{i:06d}"
        write_rgb(tmp_path / f"{stem}.color.png", 48, 64)
        depth = np.full((48, 64), 1234)
        depth[0, :3] = [0, 65535, 1]  # both sentinels are invalid
        write_png16(tmp_path / f"{stem}.depth.png", depth)
        np.savetxt(tmp_path / f"{stem}.pose.txt", T[i].numpy())
    scene = load_7scenes(tmp_path)
    assert scene.metadata["camera"] == "depth"
    cams = scene.cameras
    # no camera-intrinsics.txt: the 7-Scenes default, scaled to the 64 x 48 images
    assert (cams.width[0].item(), cams.height[0].item()) == (64, 48)
    assert cams.fx[0].item() == pytest.approx(58.5) and cams.cx[0].item() == pytest.approx(32.05)
    d = scene.frames[1].depth()
    assert d[0, :3].tolist() == pytest.approx([0.0, 0.0, 0.001]) and d[5, 5].item() == pytest.approx(1.234)
    torch.testing.assert_close(cams.camtoworlds, T, atol=1e-12, rtol=0)
    (tmp_path / "frame-000001.depth.png").unlink()
    with pytest.raises(ValueError, match="frame-000001 has a pose but no frame-000001.depth.png"):
        load_7scenes(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such 7-Scenes folder"):
        load_7scenes(tmp_path / "frame-000000.color.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no frame-XXXXXX.pose.txt"):
        load_7scenes(empty)


# ----------------------------------------------------------------------------------------------
# Real data
# ----------------------------------------------------------------------------------------------


# Kinect v1 depth noise grows as ~1.4e-3 z^2 m and its quantisation step as ~2.9e-3 z^2 m (Khoshelham &
# Elberink 2012): about 0.3 - 0.6 % of the depth at 1.5 - 2.5 m, 0.9 - 1.2 % at 3 - 4 m. The poses are
# reconstructions (KinectFusion for 7-Scenes, a SLAM run for slambook), not laser ground truth.
REDKITCHEN_MAX_REL = 0.01  # median |dz| / z between neighbours
REDKITCHEN_MAX_ABS = 0.02  # metres
SLAMBOOK_MAX_REL = 0.03  # 3 - 4 m depth, 0.3 - 0.6 m baselines between the 5 frames


@pytest.fixture(scope="module")
def redkitchen():
    if not REDKITCHEN.is_dir():
        pytest.skip(f"{REDKITCHEN} not found")
    return load_7scenes(REDKITCHEN)


@pytest.fixture(scope="module")
def slambook():
    if not SLAMBOOK.is_dir():
        pytest.skip(f"{SLAMBOOK} not found")
    return load_pose_list(SLAMBOOK, SLAMBOOK_INTRINSICS)


def test_redkitchen_loads(redkitchen):
    assert len(redkitchen) == 100
    assert redkitchen.frames[0].name == "frame-000000" and redkitchen.frames[-1].name == "frame-000990"
    cams = redkitchen.cameras
    assert cams.fx[0].item() == 585.0 and cams.cx[0].item() == 320.5  # from camera-intrinsics.txt
    assert redkitchen.frames[3].image().shape == (480, 640, 3)
    depth = redkitchen.frames[3].depth()
    assert depth.shape == (480, 640) and 0.3 < depth[depth > 0].median() < 5.0
    first = torch.from_numpy(np.loadtxt(REDKITCHEN / "frame-000000.pose.txt"))
    torch.testing.assert_close(cams.camtoworlds[0], first, atol=1e-3, rtol=0)  # up to re-orthonormalisation
    torch.testing.assert_close(cams.centers[0], first[:3, 3])


@pytest.mark.parametrize("a", [0, 30, 61, 98])
def test_redkitchen_depth_warp(redkitchen, a):
    """Frame a's depth, lifted with its camera and projected into the next file (10 original frames later)."""
    b = a + 1
    cams, frames = redkitchen.cameras, redkitchen.frames
    s = depth_agreement(frames[a].depth(), frames[b].depth(), cams[a], cams[b])
    print(f"\nredkitchen {frames[a].name} -> {frames[b].name}: overlap {s['overlap']:.2f}, depth {s['depth_m']:.2f} m,"
          f" median |dz| {1000 * s['median_m']:.1f} mm ({100 * s['median_rel']:.2f} %)")
    assert s["overlap"] > 0.5
    assert s["median_rel"] < REDKITCHEN_MAX_REL and s["median_m"] < REDKITCHEN_MAX_ABS
    # the check can fail: frame b's camera taken as the inverse of its pose is far off
    wrong = Cameras.from_camtoworlds(cams[b].viewmats, cams.K[b:b + 1], 640, 480)
    bad = depth_agreement(frames[a].depth(), frames[b].depth(), cams[a], wrong)
    assert bad["overlap"] < 0.05 or bad["median_rel"] > 5 * REDKITCHEN_MAX_REL


def test_slambook_loads(slambook):
    assert [f.name for f in slambook.frames] == [f"color/{i}.png" for i in range(1, 6)]
    assert slambook.cameras.fx[0].item() == 518.0 and slambook.cameras.cy[0].item() == 254.0
    torch.testing.assert_close(slambook.cameras.centers[0],
                               torch.tensor([-0.228993, 0.00645704, 0.0287837], dtype=torch.float64))
    depth = slambook.frames[0].depth()
    assert depth.shape == (480, 640) and 1.0 < depth[depth > 0].median() < 6.0


def test_slambook_depth_warp(slambook):
    cams, frames = slambook.cameras, slambook.frames
    rels = []
    for a in range(4):
        s = depth_agreement(frames[a].depth(), frames[a + 1].depth(), cams[a], cams[a + 1])
        print(f"\nslambook {a + 1} -> {a + 2}: overlap {s['overlap']:.2f}, depth {s['depth_m']:.2f} m, "
              f"median |dz| {100 * s['median_m']:.1f} cm ({100 * s['median_rel']:.2f} %)")
        assert s["overlap"] > 0.2
        rels.append(s["median_rel"])
    assert max(rels) < SLAMBOOK_MAX_REL
    # the quaternion read as w x y z (the wrong order) breaks the agreement
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrong = read_pose_file(SLAMBOOK / "pose.txt", order="wxyz").camtoworlds
    wcams = Cameras.from_camtoworlds(wrong, cams.K, 640, 480)
    bad = depth_agreement(frames[3].depth(), frames[4].depth(), wcams[3], wcams[4])
    assert bad["median_rel"] > 5 * rels[3]

