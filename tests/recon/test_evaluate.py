"""Pose error metrics."""

from __future__ import annotations

import pytest
import torch

from scenegrad.datasets.synthetic import camera_path
from scenegrad.recon.evaluate import pose_errors


def test_skewed_rotations_are_refused():
    # The rotation errors come from arccos of a clamped trace: a matrix that is not a rotation (a skewed
    # result of composing float32 rotations, say) could read as error 0, so it is refused by name.
    gt = camera_path("arc", 6, width=64, height=48, radius=1.0, elevation=0.2, span_deg=30.0).to(dtype=torch.float64)
    assert pose_errors(gt, gt).rel_rot_median_deg < 1e-5
    skewed = type(gt)(fx=gt.fx, fy=gt.fy, cx=gt.cx, cy=gt.cy, R=gt.R * 1.001, t=gt.t, width=gt.width,
                      height=gt.height)
    with pytest.raises(ValueError, match="estimated cameras' R are not rotations"):
        pose_errors(skewed, gt)
    with pytest.raises(ValueError, match="ground-truth cameras' R are not rotations"):
        pose_errors(gt, skewed)
