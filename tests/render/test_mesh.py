"""Mesh: normals (outward, area-weighted, differentiable), validation, to(), normalized(),
subdivided(), and construction checks."""

from __future__ import annotations

import math

import pytest
import torch

from scenegrad.render.mesh.mesh import Material, Mesh

from ..conftest import requires_cuda


def cube() -> Mesh:
    """Unit-half-size cube, 8 vertices, 12 faces counter-clockwise seen from outside."""
    v = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = torch.tensor([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    return Mesh(v, f)


def icosphere(subdivisions: int = 2) -> Mesh:
    """Unit icosphere built here: an icosahedron, midpoint-subdivided, projected to the sphere."""
    p = (1 + math.sqrt(5)) / 2
    v = torch.tensor([[-1, p, 0], [1, p, 0], [-1, -p, 0], [1, -p, 0], [0, -1, p], [0, 1, p], [0, -1, -p], [0, 1, -p],
                      [p, 0, -1], [p, 0, 1], [-p, 0, -1], [-p, 0, 1]], dtype=torch.float64)
    f = torch.tensor([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
                      [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
                      [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    mesh = Mesh(v / v.norm(dim=-1, keepdim=True), f)
    for _ in range(subdivisions):
        mesh = mesh.subdivided()
        mesh = Mesh(mesh.vertices / mesh.vertices.norm(dim=-1, keepdim=True), mesh.faces)
    return mesh.to(dtype=torch.float32)


def edge_counts(faces: torch.Tensor) -> torch.Tensor:
    f = faces.long()
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(1).values
    return torch.unique(edges, dim=0, return_counts=True)[1]


# ----------------------------------------------------------------------------------------------
# Normals
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [cube, icosphere])
def test_face_normals_point_outward(make):
    mesh = make()
    n = mesh.face_normals()
    centroids = mesh.vertices[mesh.faces.long()].mean(1)
    assert n.shape == (mesh.num_faces, 3)
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(mesh.num_faces))
    assert ((n * centroids).sum(-1) > 0).all()


def test_cube_face_normals_are_axes_and_areas():
    mesh = cube()
    n = mesh.face_normals()
    assert ((n.abs() == 1).sum(-1) == 1).all()  # each exactly one axis
    torch.testing.assert_close(mesh.face_areas(), torch.full((12,), 2.0))
    # Corner normals point outward, but are not the diagonal: a corner touches one or two triangles
    # of each side (area weighting, not angle weighting). Corner 0 has 2 + 2 + 2 triangles: diagonal.
    vn = mesh.vertex_normals()
    torch.testing.assert_close(vn.norm(dim=-1), torch.ones(8))
    cos = (vn * mesh.vertices / math.sqrt(3)).sum(-1)
    assert (cos > 0.9).all() and (cos < 0.999).any()
    torch.testing.assert_close(vn[0], mesh.vertices[0] / math.sqrt(3))


def test_sphere_vertex_normals_are_radial():
    mesh = icosphere(3)
    cos = (mesh.vertex_normals() * mesh.vertices).sum(-1)
    assert cos.min() > 0.999


def test_vertex_normals_are_area_weighted():
    # Vertex 0 is shared by a big face in the xy-plane (normal +z, area 8) and a small face in the
    # xz-plane (normal +y, area 0.5): the normal is (0, 0.5, 8) normalised, not the plain mean.
    v = torch.tensor([[0.0, 0, 0], [4, 0, 0], [0, 4, 0], [0, 0, 1], [1, 0, 0]])
    mesh = Mesh(v, torch.tensor([[0, 1, 2], [0, 3, 4]]))
    expected = torch.tensor([0.0, 0.5, 8.0])
    torch.testing.assert_close(mesh.vertex_normals()[0], expected / expected.norm())
    torch.testing.assert_close(mesh.vertex_normals()[2], torch.tensor([0.0, 0.0, 1.0]))


def test_unused_vertex_and_degenerate_face_get_zero_normals():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [5, 5, 5]])
    mesh = Mesh(v, torch.tensor([[0, 1, 2]]))  # collinear
    assert (mesh.face_normals() == 0).all() and (mesh.vertex_normals() == 0).all()
    assert torch.isfinite(mesh.vertex_normals()).all()


def test_vertex_normals_gradcheck():
    mesh = icosphere(0).to(dtype=torch.float64)
    v = (mesh.vertices + 0.05 * torch.randn(mesh.vertices.shape, generator=torch.Generator().manual_seed(0),
                                            dtype=torch.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: Mesh(x, mesh.faces).vertex_normals(), (v,))


def test_with_normals_replaces_normals():
    mesh = cube()
    assert mesh.normals is None
    out = mesh.with_normals()
    assert out.normals is not None and mesh.normals is None
    torch.testing.assert_close(out.normals, mesh.vertex_normals())


# ----------------------------------------------------------------------------------------------
# Bounds, normalized, subdivided
# ----------------------------------------------------------------------------------------------


def test_bounds_and_normalized():
    g = torch.Generator().manual_seed(1)
    mesh = Mesh(torch.rand(50, 3, generator=g) * torch.tensor([4.0, 1.0, 2.0]) + 10, torch.randint(0, 50, (30, 3),
                generator=g))
    lo, hi = mesh.bounds()
    torch.testing.assert_close(lo, mesh.vertices.min(0).values)
    torch.testing.assert_close(hi, mesh.vertices.max(0).values)
    out, T = mesh.normalized(scale=2.5)
    assert T.shape == (4, 4)
    torch.testing.assert_close(out.vertices.norm(dim=-1).max(), torch.tensor(2.5))
    torch.testing.assert_close(out.bounds().sum(0), torch.zeros(3), atol=1e-5, rtol=0)  # box centred
    homogeneous = torch.cat([mesh.vertices, torch.ones(50, 1)], -1)
    torch.testing.assert_close((homogeneous @ T.T)[:, :3], out.vertices)
    assert out.faces is mesh.faces
    with pytest.raises(ValueError, match="coincide"):
        Mesh(torch.ones(3, 3), torch.tensor([[0, 1, 2]])).normalized()
    with pytest.raises(ValueError, match="scale"):
        mesh.normalized(scale=0)


def test_subdivided_counts_area_and_watertightness():
    mesh = cube()
    out = mesh.subdivided()
    E = len(edge_counts(mesh.faces))
    assert (out.num_vertices, out.num_faces) == (mesh.num_vertices + E, 4 * mesh.num_faces)
    torch.testing.assert_close(out.face_areas().sum(), mesh.face_areas().sum())
    assert (edge_counts(out.faces) == 2).all(), "shared edges must share their midpoint"
    # Winding is kept: every face still points outward.
    assert ((out.face_normals() * out.vertices[out.faces.long()].mean(1)).sum(-1) > 0).all()
    # Each original face's 4 children cover it exactly (face f -> 4f .. 4f+3).
    torch.testing.assert_close(out.face_areas().reshape(-1, 4).sum(1), mesh.face_areas())


def test_subdivided_attributes_and_uvs():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    mesh = Mesh(v, torch.tensor([[0, 1, 2]]), normals=torch.tensor([[0.0, 0, 1], [0, 1, 0], [0, 0, 1]]),
                vertex_colors=torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]]),
                uvs=torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]), uv_faces=torch.tensor([[0, 1, 3]]))
    out = mesh.subdivided()
    assert out.uvs.shape == (7, 2) and out.uv_faces.shape == (4, 3)
    # Every child corner: the UV at a position equals the parent's barycentric UV map there.
    parent_uv = mesh.uvs[mesh.uv_faces[0].long()]  # [3, 2]
    pos = out.vertices[out.faces.long()]  # [4, 3, 3]: x = bary1, y = bary2 for this triangle
    bary = torch.stack([1 - pos[..., 0] - pos[..., 1], pos[..., 0], pos[..., 1]], -1)
    torch.testing.assert_close(out.uvs[out.uv_faces.long()], bary @ parent_uv)
    torch.testing.assert_close(out.vertex_colors[out.faces.long()], bary)
    torch.testing.assert_close(out.normals.norm(dim=-1), torch.ones(6))
    assert out.validate() is out


# ----------------------------------------------------------------------------------------------
# Construction, validate, to()
# ----------------------------------------------------------------------------------------------


def test_faces_become_contiguous_int32():
    f = torch.tensor([[0, 1, 2], [2, 1, 0]], dtype=torch.int64).t().contiguous().t()  # non-contiguous
    mesh = Mesh(torch.rand(3, 3), f)
    assert mesh.faces.dtype == torch.int32 and mesh.faces.is_contiguous()
    assert mesh.faces.tolist() == [[0, 1, 2], [2, 1, 0]]


@pytest.mark.parametrize("kwargs,match", [
    (dict(vertices=torch.rand(3, 2)), r"vertices must be a float tensor of shape \[\*, 3\]"),
    (dict(vertices=torch.ones(3, 3, dtype=torch.int64)), "vertices must be a float"),
    (dict(faces=torch.tensor([[0.0, 1.0, 2.0]])), "integer"),
    (dict(faces=torch.tensor([0, 1, 2])), r"\[F, 3\]"),
    (dict(normals=torch.rand(2, 3)), "normals"),
    (dict(vertex_colors=torch.rand(3, 2)), "vertex_colors"),
    (dict(uvs=torch.rand(3, 2)), "together"),
    (dict(uvs=torch.rand(3, 2), uv_faces=torch.tensor([[0, 1, 2], [0, 1, 2]])), "one row per face"),
    (dict(texture=torch.rand(4, 4)), "texture"),
    (dict(material="gold"), "Material"),
])
def test_construction_errors(kwargs, match):
    args = dict(vertices=torch.rand(3, 3), faces=torch.tensor([[0, 1, 2]])) | kwargs
    with pytest.raises(ValueError, match=match):
        Mesh(**args)


def test_material_construction_errors():
    with pytest.raises(ValueError, match="base_color"):
        Material(base_color=torch.ones(2))
    with pytest.raises(ValueError, match="specular"):
        Material(specular=torch.ones(4))
    assert Material().base_color.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("kwargs,match", [
    (dict(faces=torch.tensor([[0, 1, 3]])), r"faces hold indices outside \[0, 3\)"),
    (dict(faces=torch.tensor([[0, -1, 2]])), "faces hold indices outside"),
    (dict(vertices=torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, float("nan"), 0]])), "vertices have NaN"),
    (dict(vertices=torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, float("inf"), 0]])), "vertices have NaN or infinite"),
    (dict(faces=torch.zeros(0, 3, dtype=torch.int32)), "empty"),
    (dict(vertices=torch.zeros(0, 3), faces=torch.zeros(0, 3, dtype=torch.int32)), "empty"),
    (dict(normals=torch.full((3, 3), float("nan"))), "normals have NaN"),
    (dict(vertex_colors=torch.full((3, 3), 1.5)), r"vertex_colors must be finite and in \[0, 1\]"),
    (dict(uvs=torch.rand(2, 2), uv_faces=torch.tensor([[0, 1, 2]])), r"uv_faces hold indices outside \[0, 2\)"),
    (dict(uvs=torch.tensor([[0.0, 0], [1, 0], [float("nan"), 0]]), uv_faces=torch.tensor([[0, 1, 2]])), "uvs have NaN"),
    (dict(texture=torch.rand(4, 4, 3)), "texture needs uvs"),
    (dict(texture=torch.full((4, 4, 3), 2.0), uvs=torch.rand(3, 2), uv_faces=torch.tensor([[0, 1, 2]])),
     r"texture values must lie in \[0, 1\]"),
    (dict(material=Material(base_color=torch.tensor([2.0, 0, 0]))), "base_color"),
    (dict(material=Material(normal_texture=torch.rand(4, 4, 3))), "texture needs uvs"),
])
def test_validate_errors(kwargs, match):
    args = dict(vertices=torch.rand(3, 3), faces=torch.tensor([[0, 1, 2]])) | kwargs
    mesh = Mesh(**args)
    with pytest.raises(ValueError, match=match):
        mesh.validate()


def test_validate_lists_every_problem_and_passes_good_meshes():
    mesh = Mesh(torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, float("nan"), 0]]), torch.tensor([[0, 1, 5]]))
    with pytest.raises(ValueError, match="vertices have NaN.*; faces hold indices"):
        mesh.validate()
    good = icosphere(1)
    assert good.validate() is good


def test_to_dtype_and_device():
    mesh = Mesh(torch.rand(3, 3), torch.tensor([[0, 1, 2]]), normals=torch.rand(3, 3), vertex_colors=torch.rand(3, 4),
                uvs=torch.rand(3, 2), uv_faces=torch.tensor([[0, 1, 2]]), texture=torch.rand(2, 2, 3),
                material=Material(specular=torch.rand(3), normal_texture=torch.rand(2, 2, 3)))
    out = mesh.to(dtype=torch.float64)
    for t in (out.vertices, out.normals, out.vertex_colors, out.uvs, out.texture, out.material.base_color,
              out.material.specular, out.material.normal_texture):
        assert t.dtype == torch.float64
    assert out.faces.dtype == torch.int32 and out.uv_faces.dtype == torch.int32
    torch.testing.assert_close(out.vertices, mesh.vertices.double())
    assert mesh.vertices.dtype == torch.float32, "to() must not modify the original"
    assert out.dtype == torch.float64 and out.device == torch.device("cpu")
    with pytest.raises(ValueError, match="floating point"):
        mesh.to(dtype=torch.int32)
    assert "V=3" in repr(mesh) and "texture=2x2x3" in repr(mesh)


def test_mixed_devices_rejected():
    with pytest.raises(ValueError, match="meta"):
        Mesh(torch.rand(3, 3), torch.tensor([[0, 1, 2]], device="meta"))


@requires_cuda
def test_to_cuda_and_back():
    mesh = icosphere(1).with_normals()
    gpu = mesh.to("cuda")
    assert gpu.vertices.is_cuda and gpu.faces.is_cuda and gpu.faces.dtype == torch.int32
    torch.testing.assert_close(gpu.vertex_normals().cpu(), mesh.vertex_normals(), atol=1e-6, rtol=0)
    gpu.validate()
    torch.testing.assert_close(gpu.to("cpu").vertices, mesh.vertices)
