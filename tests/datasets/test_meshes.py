"""load_mesh / save_mesh on the real meshes of ../shared/data/meshes (counts, textures, the UV
convention per format, OBJ vs glTF agreement), round trips through every format, and bad input."""

from __future__ import annotations

import functools
import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from scenegrad.datasets.meshes import load_mesh, save_mesh
from scenegrad.render.mesh.mesh import Material, Mesh

from ..conftest import SHARED_DATA

MESHES = SHARED_DATA / "meshes"

# file -> (vertices after merging UV-seam copies, faces, UVs, distinct (vertex, uv) corners, texture shape).
# The data README's vertex counts are the (vertex, uv) corners: what trimesh returns (3225 for Spot,
# whose OBJ has 2930 `v` and 3225 `vt` lines). Avocado's files repeat 43 positions (406 -> 363).
EXPECTED = {
    "spot/spot.obj": (2930, 5856, 3225, 3225, (1024, 1024, 3)),
    "cow/cow.obj": (2930, 5856, 3225, 3225, (1024, 1024, 3)),
    "cow/cow.glb": (2930, 5856, 3225, 3225, (1024, 1024, 3)),
    "bob/bob_tri.obj": (5344, 10688, 5647, 5647, (2048, 2048, 3)),
    "fuze/fuze.obj": (502, 1000, 664, 664, (1024, 1024, 3)),
    "avocado/avocado.obj": (363, 682, 406, 406, (2048, 2048, 3)),
    "avocado/avocado.gltf": (363, 682, 406, 406, (2048, 2048, 3)),
    "bunny/bunny.obj": (2503, 4968, None, None, None),
}
WITH_NORMALS = {"spot/spot.obj", "bob/bob_tri.obj", "fuze/fuze.obj", "avocado/avocado.obj", "avocado/avocado.gltf"}


@pytest.fixture(scope="module")
def data() -> Path:
    if not MESHES.is_dir():
        pytest.skip("../shared/data/meshes not found")
    return MESHES


@functools.cache
def _load(name: str) -> Mesh:
    return load_mesh(MESHES / name)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def corners(mesh: Mesh) -> int:
    """Number of distinct (vertex, uv) pairs: the vertex count of a format without a UV index set."""
    return len(torch.unique(torch.stack([mesh.faces, mesh.uv_faces], -1).reshape(-1, 2), dim=0))


def nearest_texels(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Nearest-texel colours ``[..., C]`` at ``uv`` in scenegrad's convention (v top to bottom, wrap)."""
    H, W = texture.shape[:2]
    i = (uv[..., 0] * W).floor().long() % W
    j = (uv[..., 1] * H).floor().long() % H
    return texture[j, i]


def canonical_faces(mesh: Mesh, vertex_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Faces in the ids of ``vertex_map``, each rotated to start at its smallest id (winding kept) and
    sorted; with their corner UVs ``[F, 3, 2]`` (or None) in the same order."""
    faces = vertex_map[mesh.faces.long()]
    shift = faces.argmin(1, keepdim=True)
    order = (shift + torch.arange(3)) % 3
    faces = faces.gather(1, order)
    V = int(vertex_map.max()) + 1
    key = (faces[:, 0] * V + faces[:, 1]) * V + faces[:, 2]
    perm = key.argsort()
    uv = None
    if mesh.uvs is not None:
        uv = mesh.uvs[mesh.uv_faces.long()].gather(1, order[..., None].expand(-1, 3, 2))[perm]
    return faces[perm], uv


def match_vertices(a: Mesh, b: Mesh, atol: float) -> torch.Tensor:
    """For each vertex of ``a``, the index of the same-position vertex of ``b`` (checked to be a bijection)."""
    assert a.num_vertices == b.num_vertices
    d = torch.cdist(a.vertices.double(), b.vertices.double())
    dist, idx = d.min(1)
    assert dist.max() <= atol, f"vertices differ by up to {dist.max():.3g}"
    assert len(torch.unique(idx)) == a.num_vertices, "vertex matching is not one-to-one"
    return idx


def assert_same_mesh(a: Mesh, b: Mesh, atol: float = 1e-6, uv_atol: float = 1e-6, color_atol: float = 0.0,
                     normal_atol: float = 1e-5) -> None:
    """Same geometry, faces (up to vertex and face order), corner UVs, normals and colours."""
    idx = match_vertices(a, b, atol)
    fa, uva = canonical_faces(a, idx)
    fb, uvb = canonical_faces(b, torch.arange(b.num_vertices))
    assert torch.equal(fa, fb)
    assert (uva is None) == (uvb is None)
    if uva is not None:
        torch.testing.assert_close(uva, uvb, atol=uv_atol, rtol=0)
    assert (a.normals is None) == (b.normals is None)
    if a.normals is not None:
        torch.testing.assert_close(a.normals, b.normals[idx], atol=normal_atol, rtol=0)
    assert (a.vertex_colors is None) == (b.vertex_colors is None)
    if a.vertex_colors is not None:
        torch.testing.assert_close(a.vertex_colors, b.vertex_colors[idx], atol=color_atol, rtol=0)


def read_glb(path: Path) -> tuple[dict, bytes]:
    """The JSON and binary chunks of a GLB file, parsed here without trimesh."""
    data = path.read_bytes()
    magic, version, _ = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF" and version == 2
    json_len, _ = struct.unpack_from("<II", data, 12)
    gltf = json.loads(data[20:20 + json_len])
    bin_len, _ = struct.unpack_from("<II", data, 20 + json_len)
    return gltf, data[28 + json_len:28 + json_len + bin_len]


def gltf_accessor(gltf: dict, blob: bytes, index: int) -> np.ndarray:
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    dtype = np.dtype({5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}[acc["componentType"]])
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    offset = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    stride = view.get("byteStride", width * dtype.itemsize)  # rows may be interleaved with other attributes
    rows = np.ndarray((acc["count"], width), dtype, buffer=blob, offset=offset, strides=(stride, dtype.itemsize))
    return rows.copy()


# ----------------------------------------------------------------------------------------------
# The shared meshes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_counts_textures_uvs(data, name):
    V, F, Vt, n_corners, tex_shape = EXPECTED[name]
    mesh = _load(name)
    assert (mesh.num_vertices, mesh.num_faces) == (V, F)
    assert mesh.vertices.dtype == torch.float32 and mesh.faces.dtype == torch.int32 and mesh.faces.is_contiguous()
    assert (mesh.normals is not None) == (name in WITH_NORMALS)
    if mesh.normals is not None:
        torch.testing.assert_close(mesh.normals.norm(dim=-1), torch.ones(V), atol=1e-4, rtol=0)
    if Vt is None:
        assert mesh.uvs is None and mesh.texture is None and mesh.material is None
    else:
        assert mesh.uvs.shape == (Vt, 2) and corners(mesh) == n_corners
        assert mesh.texture.shape == tex_shape and mesh.texture.dtype == torch.float32
        assert 0 <= mesh.texture.min() and mesh.texture.max() <= 1 and mesh.texture.std() > 0.05
        # Texture coordinates stay in the image (Spot's reach 5% past the left edge and 0.07% past the top).
        assert mesh.uvs.min() > -0.06 and mesh.uvs.max() < 1.0
        assert ((mesh.uvs >= 0) & (mesh.uvs <= 1)).all(-1).float().mean() > 0.98
    mesh.validate()


def test_uv_seams_do_not_split_geometry(data):
    """Spot is a closed surface: after merging UV-seam copies every edge has exactly two faces and
    the Euler characteristic is 2 (with trimesh's split vertices it is not)."""
    mesh = _load("spot/spot.obj")
    f = mesh.faces.long()
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(1).values
    _, counts = torch.unique(edges, dim=0, return_counts=True)
    assert (counts == 2).all()
    assert mesh.num_vertices - len(counts) + mesh.num_faces == 2
    # The seams live in the UV index set instead: some vertices have two or more UVs.
    pairs = torch.unique(torch.stack([mesh.faces, mesh.uv_faces], -1).reshape(-1, 2), dim=0)
    assert len(pairs) - mesh.num_vertices == 3225 - 2930


def test_spot_material_comes_from_its_own_mtl(data):
    # spot.mtl: Ks 0 0.25 0; the unrelated metal.mtl next to it: Ks 0 0.2 1.
    m = _load("spot/spot.obj").material
    assert m.name == "initialShadingGroup"
    assert m.specular.tolist() == [0.0, 0.25, 0.0]
    torch.testing.assert_close(m.base_color, torch.ones(3))


def test_fuze_texture_name_with_space(data):
    mesh = _load("fuze/fuze.obj")
    assert (MESHES / "fuze" / "fuze uv.jpg").is_file()
    assert mesh.texture is not None and mesh.texture.shape == (1024, 1024, 3)
    assert mesh.material.name == "a-super-duper-material" and mesh.material.specular.tolist() == [1.0, 1.0, 1.0]


def test_avocado_pbr_textures_obj_and_gltf_agree(data):
    obj, gltf = _load("avocado/avocado.obj"), _load("avocado/avocado.gltf")
    for mesh in (obj, gltf):
        assert mesh.material.normal_texture.shape == (2048, 2048, 3)
        assert mesh.material.roughness_metallic_texture.shape == (2048, 2048, 3)
        # A tangent-space normal map is bluish: mean z = 2 b - 1 well above 0.
        assert mesh.material.normal_texture[..., 2].mean() > 0.7
    assert torch.equal(obj.texture, gltf.texture)
    assert torch.equal(obj.material.normal_texture, gltf.material.normal_texture)
    assert torch.equal(obj.material.roughness_metallic_texture, gltf.material.roughness_metallic_texture)
    # glTF has no factors: the spec's defaults; the OBJ's MTL has Ns 250.
    assert (gltf.material.roughness, gltf.material.metallic) == (1.0, 1.0)
    assert obj.material.shininess == 250.0
    # The glTF node's 180-degree turn about y is applied (to normals too): OBJ and glTF coincide.
    # The OBJ writes normals with 4 decimals.
    assert_same_mesh(obj, gltf, atol=2e-6, uv_atol=1e-6, normal_atol=1e-3)


def test_cow_obj_and_glb_same_geometry_uvs_and_texels(data):
    obj, glb = _load("cow/cow.obj"), _load("cow/cow.glb")
    idx = match_vertices(obj, glb, atol=1e-6)
    f_obj, uv_obj = canonical_faces(obj, idx)
    f_glb, uv_glb = canonical_faces(glb, torch.arange(glb.num_vertices))
    assert torch.equal(f_obj, f_glb)
    torch.testing.assert_close(uv_obj, uv_glb, atol=1e-6, rtol=0)
    # The same texture, sampled at each file's UVs, gives the same colours at every face corner.
    torch.testing.assert_close(obj.texture, glb.texture)
    c_obj, c_glb = nearest_texels(obj.texture, uv_obj), nearest_texels(glb.texture, uv_glb)
    assert (c_obj == c_glb).all(-1).float().mean() > 0.999


@pytest.mark.parametrize("name", ["spot/spot.obj", "cow/cow.glb", "bob/bob_tri.obj", "avocado/avocado.obj",
                                  "avocado/avocado.gltf"])
def test_uv_convention_texture_continuous_across_seams(data, name):
    """Where a vertex has two UVs (a seam), artists paint the same colour at both; that holds only
    with v read in the right direction. (Fuze's texture is not continuous across its seams.)"""
    mesh = _load(name)
    pairs = torch.unique(torch.stack([mesh.faces, mesh.uv_faces], -1).reshape(-1, 2), dim=0).long()
    vertex, uv_index = pairs.unbind(1)
    other = torch.full((mesh.num_vertices,), -1, dtype=torch.long)
    other[vertex.flip(0)] = uv_index.flip(0)  # the first UV of each vertex
    seam = uv_index != other[vertex]
    assert seam.sum() >= 40
    a, b = mesh.uvs[uv_index[seam]], mesh.uvs[other[vertex[seam]]]
    flip = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0])

    def mismatch(p, q):
        return (nearest_texels(mesh.texture, p) - nearest_texels(mesh.texture, q)).abs().mean().item()

    assert mismatch(a, b) < 0.01
    assert mismatch(a * flip[0] + flip[1], b * flip[0] + flip[1]) > 0.03  # the test can tell the difference


def test_glb_uvs_are_the_raw_gltf_texcoords(data):
    """glTF stores v top to bottom, like scenegrad: our UVs must equal the file's TEXCOORD_0 (parsed
    here without trimesh, which flips v on load; the loader flips it back: 1 - (1 - v) up to rounding)."""
    gltf, blob = read_glb(MESHES / "cow" / "cow.glb")
    prim = gltf["meshes"][0]["primitives"][0]
    texcoord = gltf_accessor(gltf, blob, prim["attributes"]["TEXCOORD_0"])
    position = gltf_accessor(gltf, blob, prim["attributes"]["POSITION"])
    tri = gltf_accessor(gltf, blob, prim["indices"]).reshape(-1, 3).astype(np.int64)
    glb = _load("cow/cow.glb")
    torch.testing.assert_close(glb.uvs[glb.uv_faces.long()], torch.from_numpy(texcoord[tri]), atol=1e-7, rtol=0)
    torch.testing.assert_close(glb.vertices[glb.faces.long()], torch.from_numpy(position[tri]), atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------


def colored_mesh(alpha: bool = False) -> Mesh:
    """A tetrahedron with float vertex colours that are exact in 8 bits."""
    v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    f = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    c = torch.tensor([[255, 0, 0, 255], [0, 255, 0, 128], [0, 0, 255, 255], [10, 20, 30, 255]]) / 255.0
    return Mesh(v, f, vertex_colors=c if alpha else c[:, :3])


@pytest.mark.parametrize("ext", [".obj", ".ply", ".glb"])
def test_round_trip_textured_spot(data, tmp_path, ext):
    spot = _load("spot/spot.obj")
    written = save_mesh(spot, tmp_path / f"spot{ext}")
    assert all(p.is_file() and p.parent == tmp_path for p in written)
    back = load_mesh(written[0])
    assert_same_mesh(spot, back, atol=1e-6)
    assert back.uvs.shape == spot.uvs.shape
    assert torch.equal(back.texture, spot.texture)  # 8-bit source: exact
    if ext != ".ply":
        assert back.material is not None


@pytest.mark.parametrize("ext", [".obj", ".ply", ".glb"])
def test_round_trip_plain_bunny(data, tmp_path, ext):
    bunny = _load("bunny/bunny.obj")
    back = load_mesh(save_mesh(bunny, tmp_path / f"bunny{ext}")[0])
    assert_same_mesh(bunny, back, atol=1e-6)
    assert back.uvs is None and back.texture is None


@pytest.mark.parametrize("ext,alpha", [(".obj", False), (".ply", False), (".ply", True), (".glb", True)])
def test_round_trip_vertex_colors(tmp_path, ext, alpha):
    mesh = colored_mesh(alpha).with_normals()
    back = load_mesh(save_mesh(mesh, tmp_path / f"tet{ext}")[0])
    # A tetrahedron's vertex normals differ by > 1 degree, so nothing merges; colours are exact in 8 bits.
    assert_same_mesh(mesh, back, atol=1e-6, color_atol=1e-6)
    assert back.vertex_colors.shape[1] == (4 if alpha else 3)


@pytest.mark.parametrize("ext", [".obj", ".ply"])
def test_round_trip_every_attribute_at_once(tmp_path, ext):
    """Normals, vertex colours, a UV seam (vertex 2 has two UVs) and a texture in one file."""
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    mesh = Mesh(v, torch.tensor([[0, 1, 2], [1, 3, 2]]), vertex_colors=torch.eye(4)[:, :3],
                uvs=torch.tensor([[0.0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]]),
                uv_faces=torch.tensor([[0, 1, 2], [1, 3, 4]]), texture=torch.rand(8, 8, 3).mul(255).round() / 255,
                material=Material(name="my material")).with_normals()
    back = load_mesh(save_mesh(mesh, tmp_path / f"quad{ext}")[0])
    assert_same_mesh(mesh, back, atol=0, uv_atol=0)
    assert back.uvs.shape == (5, 2)
    assert torch.equal(back.texture, mesh.texture)
    if ext == ".obj":
        assert back.material.name == "my_material"


@pytest.mark.parametrize("ext", [".obj", ".glb"])
def test_round_trip_pbr_material(data, tmp_path, ext):
    avocado = _load("avocado/avocado.gltf")
    crop = slice(1024, 1280)  # 256 x 256 of each real texture keeps PNG encoding fast

    def tex(x):
        return x[crop, crop].contiguous()

    material = Material(base_color=torch.tensor([0.8, 0.6, 0.4]), roughness=0.25, metallic=0.5,
                        normal_texture=tex(avocado.material.normal_texture),
                        roughness_metallic_texture=tex(avocado.material.roughness_metallic_texture))
    mesh = Mesh(avocado.vertices, avocado.faces, avocado.normals, None, avocado.uvs, avocado.uv_faces,
                tex(avocado.texture), material)
    back = load_mesh(save_mesh(mesh, tmp_path / f"avocado{ext}")[0])
    assert_same_mesh(mesh, back, atol=1e-6)
    m = back.material
    torch.testing.assert_close(m.base_color, mesh.material.base_color, atol=0.5 / 255, rtol=0)
    assert (m.roughness, m.metallic) == (0.25, 0.5)
    assert torch.equal(m.normal_texture, mesh.material.normal_texture)
    assert torch.equal(m.roughness_metallic_texture, mesh.material.roughness_metallic_texture)


def test_obj_material_values_round_trip_exactly(tmp_path):
    material = Material(base_color=torch.tensor([0.1, 0.2, 0.3, 0.5]), specular=torch.tensor([0.25, 0.5, 1.0]),
                        shininess=42.0, name="x")
    mesh = Mesh(torch.eye(3), torch.tensor([[0, 1, 2]]), material=material)
    back = load_mesh(save_mesh(mesh, tmp_path / "tri.obj")[0]).material
    torch.testing.assert_close(back.base_color, mesh.material.base_color)
    torch.testing.assert_close(back.specular, mesh.material.specular)
    assert back.shininess == 42.0


# ----------------------------------------------------------------------------------------------
# Vertex merging, multi-material files
# ----------------------------------------------------------------------------------------------

CUBE_V = "".join(f"v {x} {y} {z}\n" for x in (-1, 1) for y in (-1, 1) for z in (-1, 1))
CUBE_QUADS = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]
CUBE_NORMALS = [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)]


def test_hard_edges_stay_split_smooth_copies_merge(tmp_path):
    flat = CUBE_V + "".join(f"vn {x} {y} {z}\n" for x, y, z in CUBE_NORMALS)
    flat += "".join("f " + " ".join(f"{v}//{k + 1}" for v in q) + "\n" for k, q in enumerate(CUBE_QUADS))
    (tmp_path / "flat.obj").write_text(flat)
    mesh = load_mesh(tmp_path / "flat.obj")
    assert mesh.num_faces == 12 and mesh.num_vertices == 24  # each corner keeps its face's normal
    torch.testing.assert_close(mesh.normals, mesh.face_normals()[torch.arange(12).repeat_interleave(3)][
        _first_use(mesh)], atol=1e-6, rtol=0)
    smooth = CUBE_V + "".join(f"vn {x} {y} {z}\n" for x in (-1, 1) for y in (-1, 1) for z in (-1, 1))
    smooth += "".join("f " + " ".join(f"{v}//{v}" for v in q) + "\n" for q in CUBE_QUADS)
    (tmp_path / "smooth.obj").write_text(smooth)
    mesh = load_mesh(tmp_path / "smooth.obj")
    assert mesh.num_vertices == 8
    torch.testing.assert_close(mesh.normals, torch.nn.functional.normalize(mesh.vertices, dim=-1))


def _first_use(mesh: Mesh) -> torch.Tensor:
    """For each vertex, the index of its first corner in ``faces.reshape(-1)``."""
    flat = mesh.faces.reshape(-1).long()
    first = torch.full((mesh.num_vertices,), flat.numel(), dtype=torch.long)
    return first.scatter_reduce(0, flat, torch.arange(flat.numel()), reduce="amin")


def test_untextured_materials_become_vertex_colors(tmp_path):
    (tmp_path / "two.mtl").write_text("newmtl red\nKd 1 0 0\nnewmtl blue\nKd 0 0 1\n")
    (tmp_path / "two.obj").write_text(
        "mtllib two.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nusemtl red\nf 1 2 3\nusemtl blue\nf 2 4 3\n")
    mesh = load_mesh(tmp_path / "two.obj")
    assert mesh.material is None and mesh.num_faces == 2
    # The shared edge's vertices split by colour: 6 vertices, red ones on the red face.
    assert mesh.num_vertices == 6
    colors = mesh.vertex_colors[mesh.faces.long()]  # [F, 3, 3]
    assert sorted(tuple(c[0].tolist()) for c in colors) == [(0.0, 0.0, 1.0), (1.0, 0.0, 0.0)]
    assert (colors == colors[:, :1]).all()


def test_two_textures_raise(tmp_path):
    from PIL import Image

    for name, color in (("a.png", (255, 0, 0)), ("b.png", (0, 0, 255))):
        Image.new("RGB", (4, 4), color).save(tmp_path / name)
    (tmp_path / "two.mtl").write_text("newmtl a\nmap_Kd a.png\nnewmtl b\nmap_Kd b.png\n")
    (tmp_path / "two.obj").write_text(
        "mtllib two.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nvt 1 1\n"
        "usemtl a\nf 1/1 2/2 3/3\nusemtl b\nf 2/2 4/4 3/3\n")
    with pytest.raises(ValueError, match=r"two\.obj.*different texture"):
        load_mesh(tmp_path / "two.obj")


def test_missing_texture_warns_and_loads_geometry(tmp_path):
    (tmp_path / "m.mtl").write_text("newmtl m\nKd 0.5 0.5 0.5\nmap_Kd gone.png\n")
    (tmp_path / "m.obj").write_text("mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\n"
                                    "usemtl m\nf 1/1 2/2 3/3\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mesh = load_mesh(tmp_path / "m.obj")
    assert any("gone.png" in str(w.message) for w in caught)
    assert mesh.texture is None and mesh.num_faces == 1
    torch.testing.assert_close(mesh.material.base_color, torch.full((3,), 0.5))


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,content,match", [
    ("garbage.obj", "hello world\nthis is not a mesh\n", "no triangle faces"),
    ("points.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no triangle faces"),
    ("nan.obj", "v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n", "NaN"),
    ("index.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n", "cannot be read"),
    ("junk.ply", "junk\n", "cannot be read"),
    ("junk.glb", "junk\n", "cannot be read"),
    ("mesh.stl", "solid x\nendsolid x\n", "unsupported mesh format '.stl'"),
])
def test_bad_files_raise_naming_the_file(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=match) as info:
        load_mesh(tmp_path / name)
    assert name in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.obj"):
        load_mesh(tmp_path / "nothere.obj")
    with pytest.raises(ValueError, match="not a file"):
        load_mesh(tmp_path)


def test_save_never_overwrites_unless_asked(tmp_path):
    mesh = colored_mesh()
    target = tmp_path / "tet.ply"
    save_mesh(mesh, target)
    before = target.read_bytes()
    with pytest.raises(FileExistsError, match="tet.ply"):
        save_mesh(mesh.with_normals(), target)
    assert target.read_bytes() == before
    save_mesh(mesh.with_normals(), target, overwrite=True)
    assert target.read_bytes() != before


def test_save_refuses_when_a_side_file_exists(tmp_path):
    textured = Mesh(torch.eye(3), torch.tensor([[0, 1, 2]]), uvs=torch.rand(3, 2), uv_faces=torch.tensor([[0, 1, 2]]),
                    texture=torch.rand(4, 4, 3))
    (tmp_path / "tri_texture.png").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="tri_texture.png"):
        save_mesh(textured, tmp_path / "tri.obj")
    assert not (tmp_path / "tri.obj").exists() and not (tmp_path / "tri.mtl").exists()
    assert (tmp_path / "tri_texture.png").read_bytes() == b"precious"


def test_save_errors(tmp_path):
    mesh = colored_mesh()
    with pytest.raises(ValueError, match="cannot save mesh format '.stl'"):
        save_mesh(mesh, tmp_path / "x.stl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_mesh(mesh, tmp_path / "missing" / "x.ply")
    with pytest.raises(ValueError, match="outside"):
        save_mesh(Mesh(torch.eye(3), torch.tensor([[0, 1, 3]])), tmp_path / "bad.ply")
    with pytest.raises(ValueError, match="alpha"):
        save_mesh(colored_mesh(alpha=True), tmp_path / "rgba.obj")
    assert not any(tmp_path.iterdir()), "a failed save left files behind"
