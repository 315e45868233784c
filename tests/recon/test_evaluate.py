"""Pose error metrics."""

from __future__ import annotations

import pytest
import torch

from scenegrad.datasets.synthetic import camera_path
from scenegrad.recon.evaluate import pose_errors, rotation_angles


def test_skewed_rotations_are_refused():
    # The rotation errors assume rotations: a matrix that is not one (a skewed result of composing float32
    # rotations, say) could read as error 0 (it did with the arccos of a clamped trace), so it is refused by name.
    gt = camera_path("arc", 6, width=64, height=48, radius=1.0, elevation=0.2, span_deg=30.0).to(dtype=torch.float64)
    assert pose_errors(gt, gt).rel_rot_median_deg < 1e-5
    skewed = type(gt)(fx=gt.fx, fy=gt.fy, cx=gt.cx, cy=gt.cy, R=gt.R * 1.001, t=gt.t, width=gt.width,
                      height=gt.height)
    with pytest.raises(ValueError, match="estimated cameras' R are not rotations"):
        pose_errors(skewed, gt)
    with pytest.raises(ValueError, match="ground-truth cameras' R are not rotations"):
        pose_errors(gt, skewed)


def test_small_rotation_angles_are_resolved():
    # arccos of the trace reads every angle below ~0.02 degrees between float32 rotations as 0; the
    # antisymmetric part resolves them (the apple video's FlowMap and COLMAP cameras differ by less).
    from scenegrad.render.rotations import so3_exp

    axis = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    start = so3_exp(torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64))
    for degrees in (1e-3, 0.01, 1.0, 90.0, 179.9):
        turned = so3_exp((axis / axis.norm() * torch.deg2rad(torch.tensor(degrees, dtype=torch.float64)))[None]) @ start
        assert abs(float(rotation_angles(turned, start)) - degrees) < 1e-9
        assert abs(float(rotation_angles(turned.float(), start.float())) - degrees) < 1e-3 * degrees + 1e-5
