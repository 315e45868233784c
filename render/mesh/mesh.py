"""``Mesh``: a triangle mesh as a plain dataclass of tensors, and its ``Material``.

**Texture coordinates (scenegrad's one UV convention).** ``u`` runs left to right across the
texture image and ``v`` runs top to bottom, as in glTF: ``(u, v) = (0, 0)`` is the top-left corner
of texel row 0 (the first row of the ``[H, W, C]`` image) and ``(1, 1)`` the bottom-right corner,
so the texel in column ``i``, row ``j`` spans ``[i / W, (i + 1) / W] x [j / H, (j + 1) / H]``.
OBJ and PLY files store ``v`` bottom to top (OpenGL's convention); their loaders convert
``v -> 1 - v`` (:mod:`scenegrad.datasets.meshes`).

**UVs have their own index set**, like OBJ's ``f v/vt``: ``uvs [Vt, 2]`` indexed by
``uv_faces [F, 3]``, face ``f``'s corner ``k`` sits at position ``vertices[faces[f, k]]`` with
texture coordinate ``uvs[uv_faces[f, k]]``. A UV seam therefore does not split the geometry:
vertex normals, adjacency and silhouette topology see one connected surface. Interpolate UVs with
``interpolate(mesh.uvs, rast, mesh.uv_faces)`` after ``rasterize(pos, mesh.faces, ...)``.

**Winding.** Faces are counter-clockwise around their outward normal (right-hand rule):
``n = (v1 - v0) x (v2 - v0)``.

Shapes: ``V`` vertices, ``F`` faces, ``Vt`` texture coordinates, ``C`` channels. Float fields
share one dtype and device (use :meth:`Mesh.to`); index fields are int32. Construction checks
shapes and dtypes only (no device sync); :meth:`Mesh.validate` checks values.

>>> import torch
>>> mesh = Mesh(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), torch.tensor([[0, 1, 2]]))
>>> mesh.num_vertices, mesh.num_faces, mesh.faces.dtype
(3, 1, torch.int32)
>>> mesh.face_normals()
tensor([[0., 0., 1.]])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Material", "Mesh"]

_NORMALIZE_EPS = 1e-20  # zero-length normals (degenerate faces, isolated vertices) stay zero


# ----------------------------------------------------------------------------------------------
# Checks shared by Material and Mesh
# ----------------------------------------------------------------------------------------------


def _shape(x: object) -> object:
    return list(x.shape) if isinstance(x, Tensor) else type(x).__name__


def _check_float(x: object, name: str, tail: tuple[int | tuple[int, ...], ...], ndim: int) -> None:
    """``x`` is a float tensor of ``ndim`` dims whose trailing sizes match ``tail`` (a tuple = choices)."""
    ok = isinstance(x, Tensor) and x.dim() == ndim and x.is_floating_point()
    if ok:
        for size, want in zip(reversed(x.shape), reversed(tail), strict=False):
            if want != -1 and size not in (want if isinstance(want, tuple) else (want,)):
                ok = False
    if not ok:
        dims = ", ".join("|".join(map(str, t)) if isinstance(t, tuple) else ("*" if t == -1 else str(t))
                         for t in tail)
        lead = ", ".join(["*"] * (ndim - len(tail)) + [dims]) if dims else ", ".join(["*"] * ndim)
        dtype = f" ({x.dtype})" if isinstance(x, Tensor) else ""
        raise ValueError(f"{name} must be a float tensor of shape [{lead}], got {_shape(x)}{dtype}")


def _check_index(x: object, name: str, num_faces: int | None) -> Tensor:
    """``x`` as a contiguous int32 ``[F, 3]`` tensor (any integer dtype is accepted)."""
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != 3:
        raise ValueError(f"{name} must be a [F, 3] integer tensor, got {_shape(x)}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer vertex indices, got dtype {x.dtype}")
    if num_faces is not None and x.shape[0] != num_faces:
        raise ValueError(f"{name} must have one row per face ({num_faces}), got {x.shape[0]}")
    if x.dtype == torch.int64:  # out-of-range values stay out of range (validate() reports them), no sync
        x = x.clamp(-1, 2**31 - 1)
    return x.to(torch.int32).contiguous()


def _texture_problems(tex: Tensor | None, name: str) -> list[tuple[Tensor, str]]:
    """Deferred value checks of a texture: ``(ok_flag, message)`` pairs."""
    if tex is None:
        return []
    finite = torch.isfinite(tex).all()
    return [(finite, f"{name} has NaN or infinite values"),
            (~finite | ((tex >= 0) & (tex <= 1)).all(), f"{name} values must lie in [0, 1]")]


# ----------------------------------------------------------------------------------------------
# Material
# ----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Material:
    """Surface parameters that mesh files carry (only what loaders can fill; all optional but the colour).

    Fields:
        base_color: ``[3]`` or ``[4]`` (RGB or RGBA) float in ``[0, 1]``: OBJ ``Kd`` (+ ``d``), glTF
            ``baseColorFactor``. Multiplies the mesh texture where there is one.
        specular: ``[3]`` OBJ ``Ks``, or None.
        shininess: OBJ ``Ns`` (Phong exponent), or None.
        roughness, metallic: glTF ``roughnessFactor`` / ``metallicFactor`` (OBJ PBR ``Pr`` / ``Pm``);
            they multiply ``roughness_metallic_texture`` where there is one.
        normal_texture: ``[H, W, 3]`` tangent-space normal map as stored (``n = 2 c - 1``), or None.
        roughness_metallic_texture: ``[H, W, C]`` in glTF's layout (G = roughness, B = metallic), or None.
        name: the material's name in the file.

    Textures follow the UV convention of the module docstring (rows top to bottom).
    """

    base_color: Tensor = field(default_factory=lambda: torch.ones(3))
    specular: Tensor | None = None
    shininess: float | None = None
    roughness: float | None = None
    metallic: float | None = None
    normal_texture: Tensor | None = None
    roughness_metallic_texture: Tensor | None = None
    name: str = ""

    def __post_init__(self) -> None:
        _check_float(self.base_color, "base_color", ((3, 4),), 1)
        if self.specular is not None:
            _check_float(self.specular, "specular", (3,), 1)
        if self.normal_texture is not None:
            _check_float(self.normal_texture, "normal_texture", (-1, -1, (3, 4)), 3)
        if self.roughness_metallic_texture is not None:
            _check_float(self.roughness_metallic_texture, "roughness_metallic_texture", (-1, -1, (1, 2, 3, 4)), 3)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Material:
        """Copy with every tensor on ``device`` in float ``dtype``."""

        def f(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.to(device=device, dtype=dtype)

        return dataclasses.replace(
            self, base_color=f(self.base_color), specular=f(self.specular), normal_texture=f(self.normal_texture),
            roughness_metallic_texture=f(self.roughness_metallic_texture),
        )

    def _problems(self) -> list[tuple[Tensor, str]]:
        checks = [(torch.isfinite(self.base_color).all() & ((self.base_color >= 0) & (self.base_color <= 1)).all(),
                   "material base_color must be finite and in [0, 1]")]
        if self.specular is not None:
            checks.append((torch.isfinite(self.specular).all(), "material specular has NaN or infinite values"))
        checks += _texture_problems(self.normal_texture, "material normal_texture")
        checks += _texture_problems(self.roughness_metallic_texture, "material roughness_metallic_texture")
        return checks


# ----------------------------------------------------------------------------------------------
# Mesh
# ----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Mesh:
    """A triangle mesh (conventions: see the module docstring).

    Fields:
        vertices: ``[V, 3]`` float positions.
        faces: ``[F, 3]`` int32 vertex indices, counter-clockwise around the outward normal
            (any integer dtype is converted to contiguous int32).
        normals: ``[V, 3]`` unit vertex normals, or None (see :meth:`with_normals`).
        vertex_colors: ``[V, C]``, ``C`` = 3 (RGB) or 4 (RGBA), float in ``[0, 1]``, or None.
        uvs: ``[Vt, 2]`` texture coordinates ``(u, v)``, ``v`` top to bottom, or None.
        uv_faces: ``[F, 3]`` int32 indices into ``uvs``, one row per face; given with ``uvs``.
        texture: ``[H, W, C]`` float in ``[0, 1]``, ``C`` in 1..4, rows top to bottom, or None.
        material: :class:`Material`, or None.

    Construction raises ``ValueError`` on wrong shapes, dtypes or mixed devices (no device sync);
    :meth:`validate` checks the values.
    """

    vertices: Tensor
    faces: Tensor
    normals: Tensor | None = None
    vertex_colors: Tensor | None = None
    uvs: Tensor | None = None
    uv_faces: Tensor | None = None
    texture: Tensor | None = None
    material: Material | None = None

    def __post_init__(self) -> None:
        _check_float(self.vertices, "vertices", (3,), 2)
        self.faces = _check_index(self.faces, "faces", None)
        V, nf = self.vertices.shape[0], self.faces.shape[0]
        if self.normals is not None:
            _check_float(self.normals, "normals", (3,), 2)
            if self.normals.shape[0] != V:
                raise ValueError(f"normals must be [V, 3] with V = {V}, got {list(self.normals.shape)}")
        if self.vertex_colors is not None:
            _check_float(self.vertex_colors, "vertex_colors", ((3, 4),), 2)
            if self.vertex_colors.shape[0] != V:
                raise ValueError(f"vertex_colors must be [V, 3|4] with V = {V}, got {list(self.vertex_colors.shape)}")
        if (self.uvs is None) != (self.uv_faces is None):
            raise ValueError("uvs and uv_faces come together: give both or neither")
        if self.uvs is not None:
            _check_float(self.uvs, "uvs", (2,), 2)
            self.uv_faces = _check_index(self.uv_faces, "uv_faces", nf)
        if self.texture is not None:
            _check_float(self.texture, "texture", (-1, -1, (1, 2, 3, 4)), 3)
        if self.material is not None and not isinstance(self.material, Material):
            raise ValueError(f"material must be a Material or None, got {type(self.material).__name__}")
        device = self.vertices.device
        for name, x in self._tensors().items():
            if x.device != device:
                raise ValueError(f"{name} is on {x.device} but vertices are on {device}; use Mesh.to()")

    def _tensors(self) -> dict[str, Tensor]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "material"}
        if self.material is not None:
            m = self.material
            out.update({"material." + f.name: getattr(m, f.name) for f in dataclasses.fields(m)})
        return {k: v for k, v in out.items() if isinstance(v, Tensor)}

    # -- basic properties ------------------------------------------------------------------------

    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[0]

    @property
    def num_faces(self) -> int:
        return self.faces.shape[0]

    @property
    def device(self) -> torch.device:
        return self.vertices.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vertices.dtype

    def __repr__(self) -> str:
        parts = [f"V={self.num_vertices}", f"F={self.num_faces}"]
        if self.normals is not None:
            parts.append("normals")
        if self.vertex_colors is not None:
            parts.append(f"vertex_colors={self.vertex_colors.shape[1]}")
        if self.uvs is not None:
            parts.append(f"uvs={self.uvs.shape[0]}")
        if self.texture is not None:
            parts.append("texture=" + "x".join(map(str, self.texture.shape)))
        if self.material is not None:
            parts.append(f"material={self.material.name!r}")
        return f"Mesh({', '.join(parts)}, {self.dtype}, {self.device})"

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Mesh:
        """Copy on ``device`` with float fields in ``dtype`` (index fields stay int32).

        >>> m = Mesh(torch.zeros(3, 3), torch.tensor([[0, 1, 2]])).to(dtype=torch.float64)
        >>> m.vertices.dtype, m.faces.dtype
        (torch.float64, torch.int32)
        """
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be floating point, got {dtype}")

        def f(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.to(device=device, dtype=dtype)

        def i(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.to(device=device)

        return Mesh(
            f(self.vertices), i(self.faces), f(self.normals), f(self.vertex_colors), f(self.uvs), i(self.uv_faces),
            f(self.texture), None if self.material is None else self.material.to(device, dtype),
        )

    # -- geometry --------------------------------------------------------------------------------

    def _face_cross(self) -> Tensor:
        """``[F, 3]`` ``(v1 - v0) x (v2 - v0)``: the outward normal scaled by twice the face area."""
        v = self.vertices[self.faces.long()]  # [F, 3, 3]
        return torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)

    def face_areas(self) -> Tensor:
        """``[F]`` face areas (differentiable)."""
        return self._face_cross().norm(dim=-1) / 2

    def face_normals(self) -> Tensor:
        """``[F, 3]`` unit face normals by the right-hand rule (zero for degenerate faces); differentiable."""
        return F.normalize(self._face_cross(), dim=-1, eps=_NORMALIZE_EPS)

    def vertex_normals(self) -> Tensor:
        """``[V, 3]`` area-weighted vertex normals: each face adds its area times its unit normal.

        Unit length; zero for vertices that no face uses. Differentiable with respect to ``vertices``.

        >>> v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
        >>> Mesh(v, torch.tensor([[0, 1, 2], [0, 3, 1]])).vertex_normals()[0]  # faces along +z and +y
        tensor([0.0000, 0.7071, 0.7071])
        """
        cross = self._face_cross()  # length = 2 * area: the area weighting
        acc = torch.zeros_like(self.vertices)
        for k in range(3):
            acc = acc.index_add(0, self.faces[:, k].long(), cross)
        return F.normalize(acc, dim=-1, eps=_NORMALIZE_EPS)

    def with_normals(self) -> Mesh:
        """Copy with ``normals`` set to :meth:`vertex_normals` (replacing any loaded normals)."""
        return dataclasses.replace(self, normals=self.vertex_normals())

    def bounds(self) -> Tensor:
        """``[2, 3]``: the per-axis minimum (row 0) and maximum (row 1) of the vertices."""
        if self.num_vertices == 0:
            raise ValueError("an empty mesh has no bounds")
        return torch.stack([self.vertices.amin(0), self.vertices.amax(0)])

    def normalized(self, scale: float = 1.0) -> tuple[Mesh, Tensor]:
        """The mesh centred on its bounding-box centre and scaled to fit a sphere of radius ``scale``.

        Returns:
            ``(mesh, T)`` with ``T`` the ``[4, 4]`` similarity ``x_new = T @ [x, 1]``:
            ``[[s I, -s c], [0, 1]]``, ``c`` the bounding-box centre, ``s = scale / max |x - c|``.
            The farthest vertex ends at distance ``scale`` from the origin. Normals are unchanged.

        >>> m, T = Mesh(torch.tensor([[0.0, 0, 0], [2, 0, 0], [0, 2, 0]]), torch.tensor([[0, 1, 2]])).normalized()
        >>> round(m.vertices.norm(dim=-1).max().item(), 6), [round(x, 4) for x in T[:3, 3].tolist()]
        (1.0, [-0.7071, -0.7071, -0.0])
        """
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        lo, hi = self.bounds()
        centre = (lo + hi) / 2
        radius = (self.vertices - centre).norm(dim=-1).max()
        if not bool(radius > 0):
            raise ValueError("cannot normalize a mesh whose vertices all coincide")
        s = scale / radius
        T = torch.eye(4, dtype=self.dtype, device=self.device)
        T[:3, :3] *= s
        T[:3, 3] = -s * centre
        return dataclasses.replace(self, vertices=(self.vertices - centre) * s), T

    def subdivided(self) -> Mesh:
        """Midpoint subdivision: every face becomes 4, every edge gains its midpoint vertex.

        Shared edges share the new vertex, so a watertight mesh stays watertight. Normals (renormalised)
        and vertex colours of a midpoint are the mean of the edge's ends; UVs are subdivided on their
        own index set in the same way. Face ``f`` becomes faces ``4f .. 4f + 3`` (the centre one last).
        """

        def split(values: Tensor, tri: Tensor) -> tuple[Tensor, Tensor]:
            """Unique edges ``[E, 2]`` of ``tri`` and the ``[4F, 3]`` faces using their midpoints ``V + e``."""
            tri = tri.long()
            ends = torch.stack([tri, tri.roll(-1, dims=1)], dim=-1)  # [F, 3, 2]: edges (a,b), (b,c), (c,a)
            key = ends.sort(dim=-1).values.reshape(-1, 2)
            edges, inverse = torch.unique(key, dim=0, return_inverse=True)
            mid = values.shape[0] + inverse.reshape(-1, 3)  # [F, 3]: ab, bc, ca
            a, b, c = tri.unbind(1)
            ab, bc, ca = mid.unbind(1)
            new = torch.stack([
                torch.stack([a, ab, ca], 1), torch.stack([b, bc, ab], 1),
                torch.stack([c, ca, bc], 1), torch.stack([ab, bc, ca], 1),
            ], dim=1).reshape(-1, 3)
            return edges, new.to(torch.int32)

        def extend(values: Tensor | None, edges: Tensor, unit: bool = False) -> Tensor | None:
            if values is None:
                return None
            mid = (values[edges[:, 0]] + values[edges[:, 1]]) / 2
            if unit:
                mid = F.normalize(mid, dim=-1, eps=_NORMALIZE_EPS)
            return torch.cat([values, mid])

        edges, faces = split(self.vertices, self.faces)
        uvs = uv_faces = None
        if self.uvs is not None:
            uv_edges, uv_faces = split(self.uvs, self.uv_faces)
            uvs = extend(self.uvs, uv_edges)
        return dataclasses.replace(
            self, vertices=extend(self.vertices, edges), faces=faces, normals=extend(self.normals, edges, unit=True),
            vertex_colors=extend(self.vertex_colors, edges), uvs=uvs, uv_faces=uv_faces,
        )

    # -- checks ----------------------------------------------------------------------------------

    def validate(self) -> Mesh:
        """Check the values; return ``self`` or raise ``ValueError`` naming every problem found.

        Problems: no vertices or no faces; NaN or infinite positions, normals, colours or UVs; face or
        UV indices out of range; colours or textures outside ``[0, 1]``; a texture (or material
        texture) without UVs. One device sync.

        >>> Mesh(torch.zeros(3, 3), torch.tensor([[0, 1, 3]])).validate()
        Traceback (most recent call last):
        ...
        ValueError: invalid mesh: faces hold indices outside [0, 3)
        """
        V, nf = self.num_vertices, self.num_faces
        if V == 0 or nf == 0:
            raise ValueError(f"invalid mesh: empty ({V} vertices, {nf} faces)")
        checks: list[tuple[Tensor, str]] = [
            (torch.isfinite(self.vertices).all(), "vertices have NaN or infinite values"),
            (((self.faces >= 0) & (self.faces < V)).all(), f"faces hold indices outside [0, {V})"),
        ]
        if self.normals is not None:
            checks.append((torch.isfinite(self.normals).all(), "normals have NaN or infinite values"))
        if self.vertex_colors is not None:
            c = self.vertex_colors
            checks.append((torch.isfinite(c).all() & ((c >= 0) & (c <= 1)).all(),
                           "vertex_colors must be finite and in [0, 1]"))
        if self.uvs is not None:
            nt = self.uvs.shape[0]
            checks.append((torch.isfinite(self.uvs).all(), "uvs have NaN or infinite values"))
            checks.append((((self.uv_faces >= 0) & (self.uv_faces < nt)).all(),
                           f"uv_faces hold indices outside [0, {nt})"))
        checks += _texture_problems(self.texture, "texture")
        textured = self.texture is not None
        if self.material is not None:
            checks += self.material._problems()
            textured |= self.material.normal_texture is not None or self.material.roughness_metallic_texture is not None
        flags = torch.stack([ok for ok, _ in checks]).tolist()
        problems = [msg for ok, (_, msg) in zip(flags, checks, strict=True) if not ok]
        if textured and self.uvs is None:
            problems.append("a texture needs uvs and uv_faces")
        if problems:
            raise ValueError("invalid mesh: " + "; ".join(problems))
        return self
