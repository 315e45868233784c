"""render.iso.postprocess (through Open3D): largest component, Taubin smoothing, decimation."""

from __future__ import annotations

import math

import pytest
import torch

from scenegrad.render.iso import marching_cubes

pytest.importorskip("open3d", reason="Open3D is not installed (pip install 'scenegrad[open3d]')")
from scenegrad.render.iso.postprocess import decimate, largest_component, smooth  # noqa: E402


def _sphere(n=49, r=0.6, extra=True):
    x = torch.linspace(-1, 1, n, dtype=torch.float64)
    p = torch.stack(torch.meshgrid(x, x, x, indexing="ij"), -1)
    sdf = p.norm(dim=-1) - r
    if extra:
        sdf = torch.minimum(sdf, (p - 0.85).norm(dim=-1) - 0.08)
    return marching_cubes(sdf, spacing=2 / (n - 1), origin=(-1, -1, -1))


def _area(v, f):
    f = f.long()
    return torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]).norm(dim=1).sum().item() / 2


def test_largest_component_drops_the_speck():
    iso = _sphere()
    v, f = largest_component(iso.vertices, iso.faces)
    assert v.dtype == iso.vertices.dtype and f.dtype == torch.int32
    assert v.norm(dim=1).max() < 0.62 and f.shape[0] < iso.faces.shape[0]
    assert _area(v, f) == pytest.approx(4 * math.pi * 0.36, rel=0.01)
    assert int(f.max()) == v.shape[0] - 1  # unreferenced vertices removed


def test_smoothing_reduces_noise_without_shrinking():
    iso = _sphere(extra=False)
    g = torch.Generator().manual_seed(0)
    noisy = iso.vertices + 0.01 * torch.randn(iso.vertices.shape, generator=g, dtype=torch.float64)
    v, f = smooth(noisy, iso.faces, iterations=10)
    assert torch.equal(f, iso.faces)
    r_noisy, r_smooth = noisy.norm(dim=1), v.norm(dim=1)
    assert r_smooth.std() < 0.5 * r_noisy.std()
    assert r_smooth.mean().item() == pytest.approx(0.6, rel=0.01)


def test_decimation_keeps_the_shape():
    iso = _sphere(extra=False)
    v, f = decimate(iso.vertices, iso.faces, 2000)
    assert f.shape[0] <= 2000 and v.shape[0] < iso.vertices.shape[0]
    assert _area(v, f) == pytest.approx(4 * math.pi * 0.36, rel=0.02)
    assert (v.norm(dim=1) - 0.6).abs().max() < 0.02
    with pytest.raises(ValueError, match="target_faces"):
        decimate(iso.vertices, iso.faces, 0)
