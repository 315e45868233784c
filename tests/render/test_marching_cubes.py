"""marching_cubes: the derived tables, analytic sphere and torus (area, volume, Euler characteristic,
manifold and oriented), scikit-image's vertex set, native vs reference topology, gradients to the
grid values, normals, anisotropic grids, bad input; CUDA vs CPU where a GPU exists."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from scenegrad.render.iso import marching_cubes, marching_cubes_topology
from scenegrad.render.iso.tables import CORNER_OFFSETS, EDGE_CORNERS, triangle_table

from ..conftest import requires_cuda


@pytest.fixture(params=["reference", "native"])
def backend(request):
    if request.param == "native":
        request.getfixturevalue("native")
    return request.param


def grid(n: int, lo: float = -1.0, hi: float = 1.0, dtype=torch.float64, spacing=None):
    """World points [n, n, n, 3] of a cube grid (or an anisotropic one with ``spacing``), and the step."""
    if spacing is None:
        spacing = ((hi - lo) / (n - 1),) * 3
    axes = [lo + torch.arange(n, dtype=dtype) * s for s in spacing]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1), spacing


def sphere_sdf(p, r=0.6, c=(0.02, -0.03, 0.01)):
    return (p - torch.tensor(c, dtype=p.dtype)).norm(dim=-1) - r


def torus_sdf(p, R=0.55, r=0.22):
    q = torch.stack([torch.hypot(p[..., 0], p[..., 2]) - R, p[..., 1]], -1)
    return q.norm(dim=-1) - r


def mesh_stats(vertices: torch.Tensor, faces: torch.Tensor):
    V, F = vertices.double(), faces.long()
    a, b, c = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    area = torch.linalg.cross(b - a, c - a).norm(dim=1).sum().item() / 2
    volume = (a * torch.linalg.cross(b, c)).sum().item() / 6
    directed = Counter()
    for f in F.tolist():
        for m in range(3):
            directed[(f[m], f[(m + 1) % 3])] += 1
    undirected = Counter()
    for (u, v), n in directed.items():
        undirected[(min(u, v), max(u, v))] += n
    return {
        "area": area, "volume": volume, "euler": V.shape[0] - len(undirected) + F.shape[0],
        "manifold": all(n == 2 for n in undirected.values()),
        "oriented": all(n == 1 for n in directed.values()),
        "duplicates": V.shape[0] - torch.unique(V.round(decimals=9), dim=0).shape[0],
    }


def test_tables_cover_exactly_the_crossed_edges():
    tris, counts = triangle_table()
    assert tris.shape[0] == 256 and counts[0] == 0 and counts[255] == 0 and counts.max() <= 5
    for case in range(256):
        inside = [(case >> c) & 1 for c in range(8)]
        crossed = {e for e, (c0, c1) in enumerate(EDGE_CORNERS) if inside[c0] != inside[c1]}
        used = set(tris[case, : counts[case]].ravel().tolist())
        assert used == crossed, case
        assert (tris[case, counts[case]:] == -1).all()
    # a lone inside corner is cut off by one triangle whose normal points away from it
    mid = CORNER_OFFSETS[EDGE_CORNERS].mean(1)
    for corner in range(8):
        case = 1 << corner
        assert counts[case] == 1
        a, b, c = mid[tris[case, 0]]
        assert np.cross(b - a, c - a) @ (np.full(3, 0.5) - CORNER_OFFSETS[corner]) > 0
        assert counts[255 - case] == 1  # and a lone outside corner likewise
        a, b, c = mid[tris[255 - case, 0]]
        assert np.cross(b - a, c - a) @ (CORNER_OFFSETS[corner] - np.full(3, 0.5)) > 0


@pytest.mark.parametrize("n", [40, 64])
def test_sphere_area_volume_topology(backend, n):
    p, step = grid(n)
    iso = marching_cubes(sphere_sdf(p), spacing=step, origin=(-1.0, -1.0, -1.0), backend=backend)
    s = mesh_stats(iso.vertices, iso.faces)
    assert s["area"] == pytest.approx(4 * math.pi * 0.36, rel=0.01)
    assert s["volume"] == pytest.approx(4 / 3 * math.pi * 0.216, rel=0.01)  # > 0: outward winding
    assert s["euler"] == 2 and s["manifold"] and s["oriented"] and s["duplicates"] == 0
    radius = (iso.vertices - torch.tensor([0.02, -0.03, 0.01], dtype=torch.float64)).norm(dim=1)
    assert (radius - 0.6).abs().max() < 0.01


def test_torus_area_volume_topology(backend):
    p, step = grid(72)
    iso = marching_cubes(torus_sdf(p), spacing=step, origin=(-1.0, -1.0, -1.0), backend=backend)
    s = mesh_stats(iso.vertices, iso.faces)
    R, r = 0.55, 0.22
    assert s["area"] == pytest.approx(4 * math.pi**2 * R * r, rel=0.01)
    assert s["volume"] == pytest.approx(2 * math.pi**2 * R * r * r, rel=0.01)
    assert s["euler"] == 0 and s["manifold"] and s["oriented"] and s["duplicates"] == 0


def test_native_sphere_at_128(native):
    p, step = grid(128, dtype=torch.float32)
    iso = marching_cubes(sphere_sdf(p), spacing=step, origin=(-1.0, -1.0, -1.0), backend="native")
    s = mesh_stats(iso.vertices, iso.faces)
    assert s["area"] == pytest.approx(4 * math.pi * 0.36, rel=0.003)
    assert s["volume"] == pytest.approx(4 / 3 * math.pi * 0.216, rel=0.003)
    assert s["euler"] == 2 and s["manifold"] and s["oriented"]


def test_vertex_set_matches_scikit_image(backend):
    skimage_measure = pytest.importorskip("skimage.measure", reason="scikit-image is not installed")
    p, step = grid(48)
    values = torus_sdf(p) + 0.05 * torch.sin(7 * p[..., 0])  # not a true SDF: a generic field
    iso = marching_cubes(values, spacing=step, backend=backend)
    verts, _, _, _ = skimage_measure.marching_cubes(values.numpy(), 0.0, spacing=step)
    ours = np.unique(np.round(iso.vertices.numpy(), 7), axis=0)
    theirs = np.unique(np.round(verts.astype(np.float64), 7), axis=0)  # skimage repeats some vertices
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < 1e-5


@pytest.mark.parametrize("shape,dtype,level", [
    ((9, 11, 13), torch.float64, 0.0), ((16, 16, 16), torch.float32, 0.3), ((2, 2, 2), torch.float32, 0.0),
    ((1, 5, 5), torch.float64, 0.0), ((5, 1, 7), torch.float32, 0.0), ((0, 3, 3), torch.float32, 0.0),
])
def test_native_matches_reference(native, shape, dtype, level):
    g = torch.Generator().manual_seed(sum(shape))
    values = torch.randn(shape, generator=g, dtype=dtype)  # noise: every case, ambiguous faces included
    if values.numel():
        values.view(-1)[::7] = level  # values exactly at the level count as outside
    e_ref, f_ref = marching_cubes_topology(values, level, backend="reference")
    e_nat, f_nat = marching_cubes_topology(values, level, backend="native")
    assert torch.equal(e_ref, e_nat) and torch.equal(f_ref, f_nat)
    assert f_nat.dtype == torch.int32 and e_nat.dtype == torch.int64


def test_noise_is_closed_and_manifold_inside(native):
    # A random field whose border is outside: the surface cannot leave the grid, so it is closed.
    g = torch.Generator().manual_seed(0)
    values = torch.randn(14, 14, 14, generator=g, dtype=torch.float64)
    values[[0, -1]] = values[:, [0, -1]] = values[:, :, [0, -1]] = 1.0
    iso = marching_cubes(values, backend="native")
    s = mesh_stats(iso.vertices, iso.faces)
    assert s["manifold"] and s["oriented"] and iso.faces.shape[0] > 500


def test_gradients_to_grid_values():
    # The vertex positions are gathered from the grid in torch for every backend (the kernels only
    # choose the edges, checked above), so the reference covers the gradient.
    backend = "reference"
    p, step = grid(10)
    values = sphere_sdf(p, r=0.55)
    assert (values.abs() > 1e-3).all()  # topology stays put under the finite-difference step
    x = values.clone().requires_grad_()

    def fn(v):
        return marching_cubes(v, spacing=step, backend=backend).vertices

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-7, atol=1e-6)


def test_normals_and_anisotropic_spacing(backend):
    spacing = (0.03, 0.045, 0.025)
    axes = [torch.arange(-1.0, 1.0 + 1e-9, s, dtype=torch.float64) for s in spacing]
    pts = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    iso = marching_cubes(sphere_sdf(pts), spacing=spacing, origin=(-1.0, -1.0, -1.0), normals=True, backend=backend)
    s = mesh_stats(iso.vertices, iso.faces)
    assert s["area"] == pytest.approx(4 * math.pi * 0.36, rel=0.01) and s["euler"] == 2
    radial = iso.vertices - torch.tensor([0.02, -0.03, 0.01], dtype=torch.float64)
    radial = radial / radial.norm(dim=1, keepdim=True)
    assert (iso.normals * radial).sum(1).min() > 0.98  # outward, towards increasing values
    torch.testing.assert_close(iso.normals.norm(dim=1), torch.ones(len(iso.normals), dtype=torch.float64))
    mesh = iso.to_mesh()
    assert mesh.faces.shape == iso.faces.shape


def test_empty_and_bad_input(backend):
    iso = marching_cubes(torch.ones(4, 4, 4), backend=backend)
    assert iso.vertices.shape == (0, 3) and iso.faces.shape == (0, 3)
    with pytest.raises(ValueError, match="non-finite"):
        marching_cubes(torch.tensor(float("nan")).expand(3, 3, 3).clone(), backend=backend)
    with pytest.raises(ValueError, match=r"\[X, Y, Z\]"):
        marching_cubes(torch.zeros(3, 3), backend=backend)
    with pytest.raises(ValueError, match="spacing"):
        marching_cubes(torch.zeros(3, 3, 3), spacing=(1.0, 0.0, 1.0), backend=backend)


@requires_cuda
def test_cuda_matches_cpu(native):
    g = torch.Generator().manual_seed(3)
    for shape in ((9, 11, 13), (32, 32, 32), (1, 4, 4)):
        values = torch.randn(shape, generator=g)
        e_cpu, f_cpu = marching_cubes_topology(values, 0.1, backend="native")
        e_gpu, f_gpu = marching_cubes_topology(values.cuda(), 0.1, backend="native")
        assert torch.equal(e_gpu.cpu(), e_cpu) and torch.equal(f_gpu.cpu(), f_cpu)
