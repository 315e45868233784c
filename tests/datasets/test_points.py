"""load_points / save_points: round trips in every format, the real garden cloud through PLY, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scenegrad.datasets.points import load_points, save_points
from scenegrad.datasets.scene import Points

from ..conftest import SHARED_DATA


def cloud(n=50, colours=True):
    g = torch.Generator().manual_seed(0)
    xyz = torch.randn(n, 3, generator=g, dtype=torch.float64) * 10
    rgb = torch.randint(0, 256, (n, 3), generator=g).double() / 255 if colours else None
    return Points(xyz=xyz, rgb=rgb)


@pytest.mark.parametrize("suffix", [".ply", ".xyz", ".txt", ".npz"])
@pytest.mark.parametrize("colours", [True, False])
def test_round_trip_is_exact(tmp_path, suffix, colours):
    pts = cloud(colours=colours)
    back = load_points(save_points(pts, tmp_path / f"c{suffix}"))
    assert torch.equal(back.xyz, pts.xyz)
    if colours:
        assert torch.allclose(back.rgb, pts.rgb, atol=1e-12)
    else:
        assert back.rgb is None


def test_real_garden_cloud_through_ply(tmp_path):
    path = SHARED_DATA / "points" / "garden" / "test_garden.npz"
    if not path.exists():
        pytest.skip(f"needs {path} (../shared/data)")
    data = np.load(path)
    pts = Points(xyz=torch.tensor(data["means3d"], dtype=torch.float64),
                 rgb=torch.tensor(data["colors"], dtype=torch.float64) / 255)
    back = load_points(save_points(pts, tmp_path / "garden.ply"))
    assert len(back) == 138_766
    assert torch.equal(back.xyz, pts.xyz) and torch.allclose(back.rgb, pts.rgb, atol=1e-12)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ply"):
        load_points(tmp_path / "nope.ply")
    bad = tmp_path / "bad.ply"
    bad.write_text("this is not a ply file\n")
    with pytest.raises(ValueError, match="bad.ply"):
        load_points(bad)
    cols = tmp_path / "four.xyz"
    cols.write_text("1 2 3 4\n")
    with pytest.raises(ValueError, match="four.xyz.*columns"):
        load_points(cols)
    nan = tmp_path / "nan.xyz"
    nan.write_text("nan 1 2\n")
    with pytest.raises(ValueError, match="no finite points"):
        load_points(nan)
    save_points(cloud(), tmp_path / "c.ply")
    with pytest.raises(FileExistsError, match="c.ply"):
        save_points(cloud(), tmp_path / "c.ply")


def test_open3d_reads_our_ply(tmp_path):
    o3d = pytest.importorskip("open3d", reason="open3d not installed (pip install scenegrad[open3d])")
    pts = cloud()
    pcd = o3d.io.read_point_cloud(str(save_points(pts, tmp_path / "c.ply")))
    assert np.array_equal(np.asarray(pcd.points), pts.xyz.numpy())
    assert np.allclose(np.asarray(pcd.colors), pts.rgb.numpy(), atol=1e-9)
