"""``render_mesh``: a complete, differentiable mesh render composed from the four primitives.

Plain torch on top of :func:`rasterize`, :func:`interpolate`, :func:`texture` and :func:`antialias`:
camera projection, texture or vertex-colour albedo, Lambert or Phong shading with directional
lights and an optional environment cube map, background compositing and silhouette
antialiasing. Everything is differentiable: vertices, colours, textures, lights, cameras.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from scenegrad.render.cameras import Cameras, world_to_camera
from scenegrad.render.conventions import world_to_clip
from scenegrad.render.mesh.antialias import antialias, antialias_topology
from scenegrad.render.mesh.interpolate import interpolate
from scenegrad.render.mesh.mesh import Mesh
from scenegrad.render.mesh.rasterize import rasterize
from scenegrad.render.mesh.texture import texture


@dataclass
class Lights:
    """Directional lights in world coordinates plus an ambient term.

    ``directions [L, 3]`` point from the surface towards each light; ``colors [L, 3]`` are their
    intensities; ``ambient [3]`` is added to every lit pixel.
    """

    directions: Tensor = field(default_factory=lambda: torch.tensor([[0.3, -1.0, -0.5]]))
    colors: Tensor = field(default_factory=lambda: torch.tensor([[0.8, 0.8, 0.8]]))
    ambient: Tensor = field(default_factory=lambda: torch.tensor([0.3, 0.3, 0.3]))

    def to(self, device: torch.device, dtype: torch.dtype) -> Lights:
        return Lights(*(x.to(device=device, dtype=dtype) for x in (self.directions, self.colors, self.ambient)))


@dataclass
class MeshRender:
    """Output of :func:`render_mesh`, every image ``[N, H, W, C]`` for ``N`` cameras."""

    color: Tensor  # [N, H, W, 3] shaded, composited over the background, antialiased
    alpha: Tensor  # [N, H, W, 1] coverage, antialiased
    depth: Tensor  # [N, H, W] camera-space z (OpenCV: distance along +Z), 0 on background
    normals: Tensor  # [N, H, W, 3] unit world-space shading normals, 0 on background
    triangle_ids: Tensor  # [N, H, W] int64 face index, -1 on background
    rast: Tensor  # [N, H, W, 4] the raw rasterizer output, for further interpolation


def render_mesh(
    mesh: Mesh,
    cameras: Cameras,
    *,
    near: float = 0.01,
    far: float = 100.0,
    shading: Literal["none", "lambert", "phong"] = "lambert",
    lights: Lights | None = None,
    envmap: Tensor | None = None,
    background: Tensor | float = 0.0,
    antialiased: bool = True,
    topology: Tensor | None = None,
    backend: str | None = None,
) -> MeshRender:
    """Render ``mesh`` from every camera in ``cameras`` (all of the same image size).

    Args:
        mesh: vertices, faces and an albedo source: ``texture`` with ``uvs``/``uv_faces``, else
            ``vertex_colors``, else the material's base colour, else white.
        cameras: ``N`` pinhole cameras (undistort first: distortion is not rasterized).
        near, far: clip planes in camera depth.
        shading: ``"none"`` (albedo only), ``"lambert"`` or ``"phong"`` (Lambert plus a specular
            lobe with the material's ``specular`` and ``shininess``).
        lights: directional lights (default: one white key light and ambient).
        envmap: ``[6, h, w, 3]`` cube map of incoming radiance in world directions; when given,
            diffuse light is looked up in the direction of the normal (added to the lights).
        background: colour behind the mesh (scalar or ``[3]``).
        antialiased: run :func:`antialias` on colour and coverage (needed for gradients that move
            silhouettes).
        topology: ``antialias_topology(mesh.faces)``, to reuse across calls.
        backend: implementation of the primitives (:mod:`scenegrad.render.backend`).

    Returns:
        :class:`MeshRender`.

    Example:
        >>> import torch
        >>> from scenegrad.render.cameras import Cameras
        >>> from scenegrad.render.mesh import Mesh, render_mesh
        >>> mesh = Mesh(vertices=torch.tensor([[-1.0, -1, 0], [1, -1, 0], [0, 1, 0]]),
        ...             faces=torch.tensor([[0, 1, 2]], dtype=torch.int32))
        >>> cams = Cameras(fx=50.0, fy=50.0, cx=32.0, cy=32.0, R=torch.eye(3)[None],
        ...                t=torch.tensor([[0.0, 0.0, 3.0]]), width=64, height=64)
        >>> out = render_mesh(mesh, cams, shading="none")
        >>> out.color.shape, float(out.depth[0, 32, 32])
        (torch.Size([1, 64, 64, 3]), 3.0)
    """
    heights, widths = cameras.height.unique(), cameras.width.unique()
    if heights.numel() != 1 or widths.numel() != 1:
        raise ValueError("render_mesh needs cameras of one image size; render groups of cameras separately")
    if cameras.is_distorted:
        raise ValueError("render_mesh rasterizes pinhole cameras: undistort the cameras (and images) first")
    H, W = int(heights), int(widths)
    N = len(cameras)
    dtype, device = mesh.vertices.dtype, mesh.vertices.device
    cameras = cameras.to(device=device, dtype=dtype)
    faces = mesh.faces
    verts = mesh.vertices[None].expand(N, -1, -1)
    pos = world_to_clip(cameras, verts, near=near, far=far).contiguous()
    rast, rast_db = rasterize(pos, faces, (H, W), backend=backend)
    covered = rast[..., 3:4] > 0

    albedo = _albedo(mesh, rast, rast_db, backend)
    cam_z = world_to_camera(cameras, verts)[..., 2:3]  # [N, V, 1]
    normals = mesh.normals if mesh.normals is not None else mesh.vertex_normals()
    # normals and depth in one pass: [N, V, 4] = (nx, ny, nz, z)
    attrs = torch.cat([normals.to(dtype).expand(N, -1, -1), cam_z], -1).contiguous()
    n_z = interpolate(attrs, rast, faces, backend=backend).out
    depth = n_z[..., 3]
    n = torch.where(covered, F.normalize(n_z[..., :3], dim=-1, eps=1e-12), 0.0)

    if shading == "none":
        shaded = albedo
    elif shading in ("lambert", "phong"):
        shaded = _shade(mesh, cameras, verts, rast, faces, n, albedo, lights, envmap, shading, backend)
    else:
        raise ValueError(f"shading must be 'none', 'lambert' or 'phong', got {shading!r}")

    bg = torch.as_tensor(background, dtype=dtype, device=device).expand(3)
    alpha = covered.to(dtype)
    image = torch.cat([torch.where(covered, shaded, bg), alpha], -1)
    if antialiased:
        if topology is None:
            topology = antialias_topology(faces)
        image = antialias(image.contiguous(), rast, pos, faces, topology=topology, backend=backend)
    return MeshRender(
        color=image[..., :3],
        alpha=image[..., 3:],
        depth=depth,
        normals=n,
        triangle_ids=rast[..., 3].long() - 1,
        rast=rast,
    )


def _albedo(mesh: Mesh, rast: Tensor, rast_db: Tensor, backend: str | None) -> Tensor:
    N, H, W = rast.shape[:3]
    dtype, device = rast.dtype, rast.device
    if mesh.texture is not None and mesh.uvs is not None:
        uv_faces = mesh.uv_faces if mesh.uv_faces is not None else mesh.faces
        uv, uv_da = interpolate(mesh.uvs, rast, uv_faces, rast_db, diff_attrs="all", backend=backend)
        tex = mesh.texture[..., :3]
        return texture(tex, uv, uv_da, filter_mode="linear-mipmap-linear", boundary_mode="wrap",
                       mask=rast[..., 3] > 0, backend=backend)  # the background is composited later
    if mesh.vertex_colors is not None:
        return interpolate(mesh.vertex_colors[..., :3], rast, mesh.faces, backend=backend).out
    base = mesh.material.base_color[:3] if mesh.material is not None else torch.ones(3)
    return base.to(device=device, dtype=dtype).expand(N, H, W, 3)


def _shade(mesh, cameras, verts, rast, faces, n, albedo, lights, envmap, shading, backend) -> Tensor:
    lights = (lights or Lights()).to(albedo.device, albedo.dtype)
    light_dirs = F.normalize(lights.directions, dim=-1)  # [L, 3]
    cos = (n[..., None, :] * light_dirs).sum(-1).clamp(min=0)  # [N, H, W, L]
    diffuse = lights.ambient + (cos[..., None] * lights.colors).sum(-2)
    if envmap is not None:
        diffuse = diffuse + texture(envmap.to(albedo), n + (n == 0).all(-1, keepdim=True).to(n), boundary_mode="cube",
                                    backend=backend)
    out = albedo * diffuse
    if shading == "phong":
        material = mesh.material
        ks = material.specular if material is not None and material.specular is not None else torch.tensor(0.3)
        shininess = material.shininess if material is not None and material.shininess else 32.0
        world = interpolate(verts.contiguous(), rast, faces, backend=backend).out
        view = F.normalize(cameras.centers[:, None, None, :] - world, dim=-1)
        reflect = 2 * (n[..., None, :] * light_dirs).sum(-1, keepdim=True) * n[..., None, :] - light_dirs
        spec = (reflect * view[..., None, :]).sum(-1).clamp(min=0) ** shininess * (cos > 0)
        out = out + ks.to(albedo).expand(3) * (spec[..., None] * lights.colors).sum(-2)
    return out
