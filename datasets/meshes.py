"""Mesh files to and from :class:`scenegrad.render.mesh.mesh.Mesh`: OBJ (+ MTL + textures), PLY, glTF / GLB.

Reading goes through trimesh (triangulation, glTF buffers and scene graphs, PLY parsing); scenegrad
then fixes what trimesh leaves in other conventions:

- **UVs.** trimesh returns ``v`` bottom to top for *every* format (it flips glTF's top-down ``v`` on
  load). scenegrad's ``v`` runs top to bottom (:mod:`scenegrad.render.mesh.mesh`), so
  :func:`load_mesh` stores ``1 - v``; :func:`save_mesh` writes each format's own convention.
- **Vertices.** trimesh splits a vertex wherever its UV differs between faces (UV seams), and a
  glTF file stores such split vertices too. :func:`load_mesh` merges them again: split copies with
  bit-identical positions (and colours) become one vertex, unless their file normals differ by more
  than :data:`NORMAL_MERGE_DEGREES` (hard edges stay split, as the file meant). The UVs keep their own
  index set (``uvs`` + ``uv_faces``), so nothing is lost: Spot's OBJ (2930 ``v`` lines, 3225 ``vt``
  lines) loads as 2930 vertices and 3225 UVs where trimesh gives 3225 vertices.
- **Scene graphs.** glTF node transforms are applied (positions, and normals by the inverse
  transpose); several primitives or OBJ material groups are concatenated into one mesh.
- **Materials.** MTL values are read from the ``.mtl`` the OBJ names (exact floats; trimesh keeps
  8-bit colours), including texture names with spaces and the PBR maps Blender writes. glTF
  metallic / roughness factors absent from the file take the spec's default, 1. glTF base-colour
  factors pass through trimesh as 8-bit values.

One mesh holds one texture: a file whose parts use different texture images raises ``ValueError``
(bake them into one atlas first). Parts with different untextured materials become vertex colours.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from scenegrad.render.mesh.mesh import Material, Mesh

if TYPE_CHECKING:  # heavy imports stay out of `import scenegrad.datasets.meshes`
    import trimesh
    from PIL import Image

__all__ = ["LOAD_FORMATS", "SAVE_FORMATS", "NORMAL_MERGE_DEGREES", "load_mesh", "save_mesh"]

LOAD_FORMATS = (".obj", ".ply", ".glb", ".gltf")
SAVE_FORMATS = (".obj", ".ply", ".glb")
#: Split copies of a vertex whose file normals differ by at most this angle are merged.
NORMAL_MERGE_DEGREES = 1.0


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load_mesh(path: str | Path) -> Mesh:
    """Read a triangle mesh from ``.obj`` (+ ``.mtl`` + textures), ``.ply``, ``.glb`` or ``.gltf``.

    Returns a float32 CPU :class:`~scenegrad.render.mesh.mesh.Mesh` (see the module docstring for
    what is converted): ``vertices`` with split copies merged, ``faces`` (polygons fan-triangulated),
    ``normals`` only where the file has them (else None; see ``Mesh.with_normals``), ``vertex_colors``
    (RGB, or RGBA when some alpha is below 1), ``uvs`` / ``uv_faces`` with ``v`` top to bottom,
    ``texture`` (the base-colour / ``map_Kd`` image, ``[H, W, C]`` in ``[0, 1]``) and ``material``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown extension, unreadable file, no triangle faces, invalid values (NaN
            positions, indices out of range), or parts with different textures. Messages name the file.

    >>> import tempfile, torch
    >>> tri = Mesh(torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]), torch.tensor([[0, 1, 2]]))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = save_mesh(tri, f"{d}/tri.ply")
    ...     load_mesh(f"{d}/tri.ply")
    Mesh(V=3, F=1, torch.float32, cpu)
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such mesh file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    ext = path.suffix.lower()
    if ext not in LOAD_FORMATS:
        raise ValueError(f"{path}: unsupported mesh format {ext!r}; supported: {', '.join(LOAD_FORMATS)}")

    import trimesh

    try:
        loaded = trimesh.load(str(path), process=False)
    except Exception as e:  # trimesh raises anything from IndexError to KeyError on malformed files
        raise ValueError(f"{path}: cannot be read as {ext}: {type(e).__name__}: {e}") from e
    parts = _parts(loaded)
    if not parts:
        raise ValueError(f"{path}: no triangle faces (not a mesh file, or only points/lines)")
    records = _obj_materials(path) if ext == ".obj" else {}
    try:
        pieces = [_piece(m, T, records, path) for m, T in parts]
        mesh = _merge_pieces(pieces)
        return mesh.validate()
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


@dataclasses.dataclass
class _Piece:
    """One trimesh geometry in world space, with trimesh's split vertices (uv per vertex, v bottom-up)."""

    positions: np.ndarray  # [n, 3] float64
    faces: np.ndarray  # [f, 3]
    normals: np.ndarray | None  # [n, 3]
    colors: np.ndarray | None  # [n, 4] float in [0, 1]
    uv: np.ndarray | None  # [n, 2] bottom-up v
    texture: Tensor | None
    material: Material | None


def _parts(loaded: object) -> list[tuple[trimesh.Trimesh, np.ndarray | None]]:
    """The triangle meshes of a trimesh load result, each with its scene transform (None = identity)."""
    import trimesh

    if isinstance(loaded, trimesh.Trimesh):
        return [(loaded, None)] if len(loaded.faces) else []
    if not isinstance(loaded, trimesh.Scene):
        return []
    out = []
    for node in loaded.graph.nodes_geometry:
        transform, name = loaded.graph[node]
        geom = loaded.geometry.get(name)
        if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
            out.append((geom, None if np.allclose(transform, np.eye(4), rtol=0, atol=0) else transform))
    return out


def _piece(m: trimesh.Trimesh, transform: np.ndarray | None, records: dict, path: Path) -> _Piece:
    import trimesh

    positions = np.asarray(m.vertices, dtype=np.float64)
    faces = np.asarray(m.faces, dtype=np.int64)
    # trimesh keeps normals read from the file in its cache; `m.vertex_normals` would compute some.
    normals = m._cache.cache.get("vertex_normals")
    normals = None if normals is None or len(normals) != len(positions) else np.asarray(normals, np.float64)
    if transform is not None:
        linear = transform[:3, :3]
        positions = positions @ linear.T + transform[:3, 3]
        if normals is not None:
            normals = normals @ np.linalg.inv(linear)
            normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-30)
        if np.linalg.det(linear) < 0:  # a mirroring transform reverses the winding
            faces = faces[:, [0, 2, 1]]

    visual = m.visual
    colors = uv = texture = material = None
    if isinstance(visual, trimesh.visual.ColorVisuals) and visual.kind == "vertex":
        colors = np.asarray(visual.vertex_colors, dtype=np.float64) / 255.0
    elif isinstance(visual, trimesh.visual.TextureVisuals):
        if visual.uv is not None and len(visual.uv) == len(positions):
            uv = np.asarray(visual.uv, dtype=np.float64)
        extra = m.vertex_attributes.get("color")  # where trimesh keeps PLY / glTF colours next to UVs
        if extra is not None and len(extra) == len(positions) and np.ndim(extra) == 2 and extra.shape[1] in (3, 4):
            extra = np.asarray(extra, dtype=np.float64) / (255.0 if np.asarray(extra).dtype == np.uint8 else 1.0)
            colors = np.concatenate([extra, np.ones((len(extra), 1))], 1) if extra.shape[1] == 3 else extra
        texture, material = _material(visual.material, records, path)
    return _Piece(positions, faces, normals, colors, uv, texture, material)


def _material(mat: object, records: dict, path: Path) -> tuple[Tensor | None, Material | None]:
    """``(texture, Material)`` from a trimesh material, with exact MTL values where ``records`` has them."""
    from trimesh.visual.material import PBRMaterial, SimpleMaterial

    if isinstance(mat, PBRMaterial):
        rgba = np.ones(4) if mat.baseColorFactor is None else np.asarray(mat.baseColorFactor, np.float64) / 255.0
        base = torch.tensor(rgba if rgba[3] < 1 else rgba[:3], dtype=torch.float32)
        return _image(mat.baseColorTexture), Material(
            base_color=base,
            roughness=1.0 if mat.roughnessFactor is None else float(mat.roughnessFactor),
            metallic=1.0 if mat.metallicFactor is None else float(mat.metallicFactor),
            normal_texture=_image(mat.normalTexture),
            roughness_metallic_texture=_image(mat.metallicRoughnessTexture),
            name=mat.name or "",
        )
    if not isinstance(mat, SimpleMaterial):
        return None, None
    name = mat.name or ""
    texture = _image(mat.image)
    rec = records.get(name)
    if rec is None:  # PLY, or an OBJ whose MTL is missing: trimesh's colours are its defaults, not the file's
        return texture, None
    values, mtl = rec

    def floats(key: str, n: int) -> Tensor | None:
        if key not in values:
            return None
        try:
            nums = [float(x) for x in values[key].split()[:n]]
        except ValueError as e:
            raise ValueError(f"material {name!r} in {mtl.name}: bad {key} {values[key]!r}") from e
        return torch.tensor(nums * n if len(nums) == 1 else nums, dtype=torch.float32)

    base = floats("kd", 3)
    base = torch.ones(3) if base is None else base
    alpha = floats("d", 1)
    if alpha is not None and float(alpha[0]) < 1:
        base = torch.cat([base, alpha.clamp(0, 1)])
    if texture is None and "map_kd" in values:
        warnings.warn(f"{path}: texture {_map_file(values['map_kd'])[0]!r} named in {mtl.name} "
                      "was not found; the mesh is loaded without it", stacklevel=3)

    def scalar(key: str) -> float | None:
        x = floats(key, 1)
        return None if x is None else float(x[0])

    normal_tex = None
    for key in ("norm", "map_bump", "bump"):
        if key in values:
            img = _image_file(values[key], mtl, path)
            if img is not None and img.shape[-1] >= 3:  # a grey bump map is a height map, not a normal map
                normal_tex = img[..., :3]
                break
    rm_tex = None
    for key in ("map_pr", "map_pm", "map_ns", "map_refl"):
        if key in values and (key.startswith("map_p") or "-imfchan" in values[key]):
            rm_tex = _image_file(values[key], mtl, path)
            if rm_tex is not None:
                break
    return texture, Material(
        base_color=base.clamp(0, 1), specular=floats("ks", 3), shininess=scalar("ns"), roughness=scalar("pr"),
        metallic=scalar("pm"), normal_texture=normal_tex, roughness_metallic_texture=rm_tex, name=name,
    )


# -- MTL parsing (trimesh turns MTL colours into 8-bit values and drops PBR maps) --------------

_MAP_OPTIONS = {"-blendu": 1, "-blendv": 1, "-boost": 1, "-mm": 2, "-o": 3, "-s": 3, "-t": 3, "-texres": 1,
                "-clamp": 1, "-bm": 1, "-imfchan": 1, "-type": 1, "-cc": 1}


def _obj_materials(obj_path: Path) -> dict[str, tuple[dict[str, str], Path]]:
    """``{material name: ({key (lower case): rest of line}, mtl path)}`` from the ``mtllib`` files of an OBJ."""
    data = obj_path.read_bytes()
    names: list[str] = []
    for raw in re.findall(rb"^[ \t]*mtllib[ \t]+([^\r\n#]+)", data, flags=re.M):
        rest = raw.decode("utf-8", errors="replace").strip()
        # One file name with spaces, or several names separated by spaces.
        names += [rest] if (obj_path.parent / rest).is_file() else rest.split()
    records: dict[str, tuple[dict[str, str], Path]] = {}
    for name in names:
        mtl = _resolve(name, obj_path.parent)
        if mtl is None:
            warnings.warn(f"{obj_path}: material library {name!r} not found", stacklevel=4)
            continue
        current: dict[str, str] | None = None
        for line in mtl.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            key, _, rest = line.replace("\t", " ").partition(" ")
            key = key.lower()
            if key == "newmtl":
                current = {}
                records[rest.strip()] = (current, mtl)
            elif current is not None:
                current[key] = rest.strip()
    return records


def _map_file(args: str) -> tuple[str, dict[str, list[str]]]:
    """``(file name, options)`` of an MTL ``map_*`` statement (options such as ``-imfchan g`` come first)."""
    tokens = args.split()
    options: dict[str, list[str]] = {}
    i = 0
    while i < len(tokens) and tokens[i].lower() in _MAP_OPTIONS:
        opt, n = tokens[i].lower(), _MAP_OPTIONS[tokens[i].lower()]
        j = i + 1
        while j < len(tokens) and j <= i + n and (n == 1 or _is_number(tokens[j])):
            j += 1
        options[opt] = tokens[i + 1:j]
        i = j
    return " ".join(tokens[i:]), options


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _resolve(name: str, folder: Path) -> Path | None:
    name = name.strip().strip('"').replace("\\", "/")
    for candidate in (folder / name, folder / Path(name).name):
        if candidate.is_file():
            return candidate
    return None


def _image_file(args: str, mtl: Path, path: Path) -> Tensor | None:
    from PIL import Image

    name, _ = _map_file(args)
    found = _resolve(name, mtl.parent)
    if found is None:
        warnings.warn(f"{path}: texture {name!r} named in {mtl.name} was not found; ignored", stacklevel=4)
        return None
    with Image.open(found) as img:
        return _image(img)


def _image(img: Image.Image | None) -> Tensor | None:
    """A PIL image as a float32 ``[H, W, C]`` tensor in ``[0, 1]`` (rows top to bottom), or None."""
    if img is None:
        return None
    if img.mode not in ("L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "F"):
        img = img.convert("RGBA" if "transparency" in img.info or "A" in img.getbands() else "RGB")
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype.kind in "iu":  # 16-bit images
        arr = arr.astype(np.float32) / 65535.0
    else:
        arr = np.clip(arr.astype(np.float32), 0, 1)
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(np.ascontiguousarray(arr))


# -- merging trimesh's split vertices ----------------------------------------------------------


def _first_unique(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``keys`` made unique, in order of first appearance: ``(first index [U], inverse [n])``."""
    keys = np.ascontiguousarray(keys + 0.0)  # -0.0 and 0.0 compare equal
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.reshape(-1)]


def _weld(positions: np.ndarray, normals: np.ndarray | None, colors: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """Merge split vertices: ``(kept [U], new index per split vertex [n])``, kept in order of first use."""
    key = positions if colors is None else np.concatenate([positions, colors], axis=1)
    first, group = _first_unique(key)
    if normals is None:
        leader_of = first[group]
    else:
        cos_tol = math.cos(math.radians(NORMAL_MERGE_DEGREES))
        unit = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-30)
        leader_of = np.full(len(positions), -1)
        remaining = np.arange(len(positions))
        while remaining.size:  # each round: the first remaining copy of a group takes the copies near its normal
            g = group[remaining]
            lead = np.full(group.max() + 1, -1)
            lead[g[::-1]] = remaining[::-1]  # the smallest remaining index of each group wins
            cand = lead[g]
            close = ((unit[remaining] * unit[cand]).sum(1) >= cos_tol) | (cand == remaining)
            leader_of[remaining[close]] = cand[close]
            remaining = remaining[~close]
    kept, inverse = np.unique(leader_of, return_inverse=True)  # leaders in index order = first use
    return kept, inverse.reshape(-1)


def _merge_pieces(pieces: list[_Piece]) -> Mesh:
    textures = []
    for p in pieces:
        if p.texture is not None and not any(t.shape == p.texture.shape and torch.equal(t, p.texture)
                                             for t in textures):
            textures.append(p.texture)
    if len(textures) > 1:
        raise ValueError(f"{len(textures)} parts use different texture images; a scenegrad Mesh holds one "
                         "texture (bake them into one atlas first)")
    if textures and any(p.uv is None for p in pieces):
        raise ValueError("some parts are textured and others have no UVs")
    materials = [p.material for p in pieces]
    material = materials[0]
    colors = [p.colors for p in pieces]
    if any(not _same_material(m, material) for m in materials[1:]):
        if textures:
            raise ValueError("parts use different materials with one texture; not representable as one Mesh")
        # Different untextured materials: their base colours become vertex colours.
        for i, (p, m) in enumerate(zip(pieces, materials, strict=True)):
            base = np.ones(4)
            if m is not None:
                base[: len(m.base_color)] = m.base_color.numpy()
            colors[i] = base[None].repeat(len(p.positions), 0) * (1.0 if p.colors is None else p.colors)
        material = None
    if any(c is not None for c in colors):
        colors = [np.ones((len(p.positions), 4)) if c is None else c for p, c in zip(pieces, colors, strict=True)]

    offsets = np.cumsum([0] + [len(p.positions) for p in pieces])
    positions = np.concatenate([p.positions for p in pieces])
    faces = np.concatenate([p.faces + o for p, o in zip(pieces, offsets, strict=False)])
    normals = None
    if all(p.normals is not None for p in pieces):
        normals = np.concatenate([p.normals for p in pieces])
    color = None if colors[0] is None else np.concatenate(colors)
    uv = np.concatenate([p.uv for p in pieces]) if all(p.uv is not None for p in pieces) else None

    kept, new_index = _weld(positions, normals, color)
    if color is not None and np.all(color[:, 3] >= 1):
        color = color[:, :3]
    uvs = uv_faces = None
    if uv is not None:
        uv_first, uv_index = _first_unique(uv)
        uvs = torch.tensor(uv[uv_first] * [1.0, -1.0] + [0.0, 1.0], dtype=torch.float32)  # v -> 1 - v
        uv_faces = torch.from_numpy(uv_index[faces].astype(np.int32))

    def t(x: np.ndarray | None) -> Tensor | None:
        return None if x is None else torch.tensor(x[kept], dtype=torch.float32)

    if normals is not None:
        normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-30)
    return Mesh(
        vertices=t(positions), faces=torch.from_numpy(new_index[faces].astype(np.int32)), normals=t(normals),
        vertex_colors=t(color), uvs=uvs, uv_faces=uv_faces, texture=textures[0] if textures else None,
        material=material,
    )


def _same_material(a: Material | None, b: Material | None) -> bool:
    if a is None or b is None:
        return a is b
    for f in dataclasses.fields(Material):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, Tensor) or isinstance(y, Tensor):
            if not (isinstance(x, Tensor) and isinstance(y, Tensor) and x.shape == y.shape and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------


def save_mesh(mesh: Mesh, path: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write ``mesh`` as ``.obj`` (+ ``.mtl`` + PNG textures), ``.ply`` or ``.glb``; return the files written.

    - ``.obj``: positions, UVs (their own index set, ``v`` flipped to OBJ's bottom-up), normals, RGB vertex
      colours (``v x y z r g b``); a material or texture adds ``<stem>.mtl`` and ``<stem>_texture.png``
      (``_normal.png``, ``_roughness_metallic.png``) beside it.
    - ``.ply`` (binary): positions, normals, vertex colours (8-bit RGBA); UVs as per-vertex ``s t``
      (vertices split at UV seams) with the texture in ``<stem>_texture.png`` (``comment TextureFile``).
    - ``.glb``: one glTF primitive, vertices split at UV seams; texture, normal and roughness-metallic
      maps embedded as PNG; PBR factors; or 8-bit vertex colours (``COLOR_0``) for an untextured mesh.

    Textures and colours are quantised to 8 bits. The mesh is validated first (``ValueError``).

    Raises:
        FileExistsError: a file to be written exists and ``overwrite`` is False (nothing is written).
        FileNotFoundError: the target folder does not exist.
        ValueError: unknown extension, an invalid mesh, or data the format cannot hold (RGBA vertex
            colours in OBJ, vertex colours together with a texture in GLB).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in SAVE_FORMATS:
        raise ValueError(f"{path}: cannot save mesh format {ext!r}; supported: {', '.join(SAVE_FORMATS)}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: folder {path.parent} does not exist")
    mesh = mesh.to("cpu", torch.float32).validate()
    side = _side_files(mesh, path)
    targets = [path, *side.values()]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"refusing to overwrite {', '.join(existing)} (pass overwrite=True)")
    if ext == ".obj":
        _save_obj(mesh, path, side)
    elif ext == ".ply":
        _save_ply(mesh, path, side)
    else:
        _save_glb(mesh, path)
    return targets


def _side_files(mesh: Mesh, path: Path) -> dict[str, Path]:
    ext, stem = path.suffix.lower(), path.stem
    files: dict[str, Path] = {}
    if ext == ".obj" and (mesh.material is not None or mesh.texture is not None):
        files["mtl"] = path.with_name(stem + ".mtl")
    if ext in (".obj", ".ply") and mesh.texture is not None:
        files["texture"] = path.with_name(stem + "_texture.png")
    if ext == ".obj" and mesh.material is not None:
        if mesh.material.normal_texture is not None:
            files["normal"] = path.with_name(stem + "_normal.png")
        if mesh.material.roughness_metallic_texture is not None:
            files["roughness_metallic"] = path.with_name(stem + "_roughness_metallic.png")
    return files


def _pil(tex: Tensor) -> Image.Image:
    from PIL import Image

    arr = (tex.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr, mode={1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[
        arr.shape[-1]])


def _rows(fmt: str, x: np.ndarray) -> str:
    import io

    buf = io.StringIO()
    np.savetxt(buf, x, fmt=fmt)
    return buf.getvalue()


def _save_obj(mesh: Mesh, path: Path, side: dict[str, Path]) -> None:
    parts = ["# written by scenegrad\n"]
    if "mtl" in side:
        parts.append(f"mtllib {side['mtl'].name}\n")
    v = mesh.vertices.double().numpy()
    if mesh.vertex_colors is not None:
        c = mesh.vertex_colors
        if c.shape[1] == 4 and bool((c[:, 3] < 1).any()):
            raise ValueError(f"{path}: OBJ cannot store vertex alpha; save as .ply or .glb")
        parts.append(_rows("v %.9g %.9g %.9g %.6g %.6g %.6g", np.concatenate([v, c[:, :3].double().numpy()], 1)))
    else:
        parts.append(_rows("v %.9g %.9g %.9g", v))
    idx = [mesh.faces.long().numpy() + 1]
    if mesh.uvs is not None:
        uv = mesh.uvs.double().numpy() * [1.0, -1.0] + [0.0, 1.0]  # OBJ's v runs bottom to top
        parts.append(_rows("vt %.9g %.9g", uv))
        idx.append(mesh.uv_faces.long().numpy() + 1)
    if mesh.normals is not None:
        parts.append(_rows("vn %.9g %.9g %.9g", mesh.normals.double().numpy()))
    if "mtl" in side:
        parts.append(f"usemtl {_material_name(mesh)}\n")
    if mesh.uvs is not None and mesh.normals is not None:
        corner = "%d/%d/%d"
        table = np.stack([idx[0], idx[1], idx[0]], -1)
    elif mesh.uvs is not None:
        corner, table = "%d/%d", np.stack(idx, -1)
    elif mesh.normals is not None:
        corner, table = "%d//%d", np.stack([idx[0], idx[0]], -1)
    else:
        corner, table = "%d", idx[0][..., None]
    parts.append(_rows("f " + " ".join([corner] * 3), table.reshape(len(table), -1)))
    if "mtl" in side:
        side["mtl"].write_text(_mtl_text(mesh, side))
        for key, tex in (("texture", mesh.texture),
                         ("normal", mesh.material and mesh.material.normal_texture),
                         ("roughness_metallic", mesh.material and mesh.material.roughness_metallic_texture)):
            if key in side:
                _pil(tex).save(side[key])
    path.write_text("".join(parts))


def _material_name(mesh: Mesh) -> str:
    name = "" if mesh.material is None else re.sub(r"\s+", "_", mesh.material.name.strip())
    return name or "material_0"


def _mtl_text(mesh: Mesh, side: dict[str, Path]) -> str:
    m = mesh.material or Material()
    c = m.base_color.tolist()
    lines = ["# written by scenegrad", f"newmtl {_material_name(mesh)}", "Kd {:.6g} {:.6g} {:.6g}".format(*c[:3])]
    if len(c) == 4:
        lines.append(f"d {c[3]:.6g}")
    if m.specular is not None:
        lines.append("Ks {:.6g} {:.6g} {:.6g}".format(*m.specular.tolist()))
    if m.shininess is not None:
        lines.append(f"Ns {m.shininess:.6g}")
    if m.roughness is not None:
        lines.append(f"Pr {m.roughness:.6g}")
    if m.metallic is not None:
        lines.append(f"Pm {m.metallic:.6g}")
    if "texture" in side:
        lines.append(f"map_Kd {side['texture'].name}")
    if "normal" in side:
        lines.append(f"norm {side['normal'].name}")
    if "roughness_metallic" in side:
        name = side["roughness_metallic"].name
        lines += [f"map_Pr -imfchan g {name}", f"map_Pm -imfchan b {name}"]
    return "\n".join(lines) + "\n"


def _split_corners(mesh: Mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-vertex UVs for formats without a UV index set: ``(vertex of each new vertex, faces, uv or None)``."""
    faces = mesh.faces.long().numpy()
    if mesh.uvs is None:
        return np.arange(mesh.num_vertices), faces, None
    uv_faces = mesh.uv_faces.long().numpy()
    pairs = np.stack([faces.reshape(-1), uv_faces.reshape(-1)], -1)
    first, inverse = _first_unique(pairs.astype(np.float64))
    corners = pairs[first]
    uv = mesh.uvs.double().numpy()[corners[:, 1]] * [1.0, -1.0] + [0.0, 1.0]  # trimesh wants v bottom-up
    return corners[:, 0], inverse.reshape(-1, 3), uv


def _trimesh(mesh: Mesh) -> tuple[trimesh.Trimesh, np.ndarray | None]:
    import trimesh

    src, faces, uv = _split_corners(mesh)
    kwargs = {}
    if mesh.normals is not None:
        kwargs["vertex_normals"] = mesh.normals.double().numpy()[src]
    if mesh.vertex_colors is not None:
        c = mesh.vertex_colors.double().numpy()[src]
        c = np.concatenate([c, np.ones((len(c), 1))], 1) if c.shape[1] == 3 else c
        kwargs["vertex_colors"] = np.round(c * 255).astype(np.uint8)
    out = trimesh.Trimesh(mesh.vertices.double().numpy()[src], faces, process=False, validate=False, **kwargs)
    return out, uv


def _save_ply(mesh: Mesh, path: Path, side: dict[str, Path]) -> None:
    import trimesh

    tm, uv = _trimesh(mesh)
    if uv is not None:
        colors = tm.visual.vertex_colors if mesh.vertex_colors is not None else None
        tm.visual = trimesh.visual.TextureVisuals(uv=uv)
        if colors is not None:  # keep the colours next to the UVs
            tm.vertex_attributes.update(red=colors[:, 0], green=colors[:, 1], blue=colors[:, 2], alpha=colors[:, 3])
    data = trimesh.exchange.ply.export_ply(tm, encoding="binary", vertex_normal=mesh.normals is not None,
                                           include_attributes=uv is not None)
    if "texture" in side:
        _pil(mesh.texture).save(side["texture"])
        head, sep, rest = data.partition(b"\n")
        second, sep2, rest = rest.partition(b"\n")  # after "format ...": MeshLab's TextureFile comment
        data = head + sep + second + sep2 + f"comment TextureFile {side['texture'].name}\n".encode() + rest
    path.write_bytes(data)


def _save_glb(mesh: Mesh, path: Path) -> None:
    import trimesh
    from trimesh.visual.material import PBRMaterial

    if mesh.vertex_colors is not None and (mesh.texture is not None or mesh.material is not None):
        raise ValueError(f"{path}: this GLB writer stores either vertex colours or a texture/material, not both")
    tm, uv = _trimesh(mesh)
    if mesh.texture is not None or mesh.material is not None or uv is not None:
        m = mesh.material or Material()
        rgba = m.base_color.tolist() + [1.0] * (4 - len(m.base_color))

        def img(x: Tensor | None) -> Image.Image | None:
            return None if x is None else _pil(x)

        material = PBRMaterial(
            name=_material_name(mesh), baseColorFactor=rgba, baseColorTexture=img(mesh.texture),
            roughnessFactor=m.roughness, metallicFactor=m.metallic, normalTexture=img(m.normal_texture),
            metallicRoughnessTexture=img(m.roughness_metallic_texture),
        )
        tm.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    data = trimesh.exchange.gltf.export_glb(trimesh.Scene(tm), include_normals=mesh.normals is not None)
    path.write_bytes(data)
