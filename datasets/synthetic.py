"""Synthetic scenes with known ground truth, generated in code (no files needed).

- :func:`torus_mesh`: a textured torus with exact UVs and normals, the default input of
  ``scenegrad render-mesh`` and a test subject for the renderers.
- :func:`orbit_cameras`: OpenCV cameras on a circle, looking at a point.
"""

from __future__ import annotations

import math

import torch

from scenegrad.render.cameras import Cameras
from scenegrad.render.mesh import Mesh


def torus_mesh(
    major: float = 1.0, minor: float = 0.4, rings: int = 64, sides: int = 32, texture_size: int = 256
) -> Mesh:
    """A torus around the world Y axis with UVs (seams duplicated), analytic normals and a
    checkerboard-and-gradient texture (``[texture_size, texture_size, 3]``)."""
    i = torch.arange(rings + 1, dtype=torch.float32)
    j = torch.arange(sides + 1, dtype=torch.float32)
    theta = (2 * math.pi * i / rings)[:, None]  # around the main axis
    phi = (2 * math.pi * j / sides)[None, :]  # around the tube
    ring = major + minor * torch.cos(phi)
    x = ring * torch.cos(theta)
    z = ring * torch.sin(theta)
    y = (minor * torch.sin(phi)).expand_as(x)
    vertices = torch.stack([x, y, z], -1).reshape(-1, 3)
    normals = torch.stack(
        [torch.cos(phi) * torch.cos(theta), torch.sin(phi).expand_as(x), torch.cos(phi) * torch.sin(theta)], -1
    ).reshape(-1, 3)
    uvs = torch.stack([(i / rings)[:, None].expand(-1, sides + 1), (j / sides)[None, :].expand(rings + 1, -1)], -1)
    a = (torch.arange(rings)[:, None] * (sides + 1) + torch.arange(sides)[None, :]).reshape(-1)
    b, c, d = a + sides + 1, a + sides + 2, a + 1
    faces = torch.cat([torch.stack([a, b, c], -1), torch.stack([a, c, d], -1)]).to(torch.int32)
    u = torch.linspace(0, 1, texture_size)
    checker = ((torch.arange(texture_size)[:, None] // (texture_size // 8)
                + torch.arange(texture_size)[None, :] // (texture_size // 16)) % 2).float()
    texture = torch.stack([0.25 + 0.7 * u[None, :].expand(texture_size, -1),
                           0.3 + 0.5 * checker,
                           0.9 - 0.6 * u[:, None].expand(-1, texture_size)], -1).clamp(0, 1)
    return Mesh(vertices=vertices, faces=faces, normals=normals, uvs=uvs.reshape(-1, 2), uv_faces=faces.clone(),
                texture=texture.contiguous())


def orbit_cameras(count: int, radius: float, width: int, height: int, focal: float,
                  centre: tuple[float, float, float] = (0.0, 0.0, 0.0), elevation: float = 0.35,
                  up: tuple[float, float, float] = (0.0, -1.0, 0.0)) -> Cameras:
    """``count`` OpenCV cameras evenly spaced on a circle of ``radius`` around ``centre`` (in the
    world X-Z plane, raised by ``elevation * radius`` along ``up``), looking at it, with ``up``
    pointing up in their images. The default ``up`` is -Y (OpenCV/COLMAP worlds, +Y down); use
    ``(0, 1, 0)`` for meshes in glTF/OBJ convention (+Y up)."""
    c = torch.tensor(centre, dtype=torch.float64)
    up_t = torch.tensor(up, dtype=torch.float64)
    up_t = up_t / up_t.norm()
    Rs, ts = [], []
    for k in range(count):
        angle = 2 * math.pi * k / count
        around = torch.tensor([math.sin(angle), 0.0, math.cos(angle)], dtype=torch.float64)
        eye = c + radius * (around + elevation * up_t)
        forward = (c - eye) / (c - eye).norm()
        right = torch.linalg.cross(forward, up_t)
        right = right / right.norm()
        down = torch.linalg.cross(forward, right)
        R = torch.stack([right, down, forward])
        Rs.append(R)
        ts.append(-R @ eye)
    return Cameras(fx=focal, fy=focal, cx=width / 2, cy=height / 2, R=torch.stack(Rs).float(),
                   t=torch.stack(ts).float(), width=width, height=height)
