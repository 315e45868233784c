"""Synthetic scenes with known ground truth, generated in code (no files needed).

- :func:`torus_mesh`: a textured torus with exact UVs and normals, the default input of
  ``scenegrad render-mesh`` and a test subject for the renderers.
- :func:`room_mesh`: the inside of a box with richly patterned walls (for forward-walking paths).
- :func:`pattern_texture`: colourful random shapes over noise, easy to match and track.
- :func:`orbit_cameras`: OpenCV cameras on a circle, looking at a point.
- :func:`look_at` and :func:`camera_path`: camera paths (orbit, arc, forward walk, handheld shake).

Rendered scenes with ground-truth depth and masks are in :mod:`scenegrad.datasets.generate`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

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


def pattern_texture(size: int = 512, seed: int = 0) -> Tensor:
    """``[size, size, 3]`` texture of random coloured discs and bars over a smooth gradient with
    fine noise: corners and blobs at every scale, so SIFT, KLT and optical flow find matches."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.rand(2, 3, generator=g)
    tex = base[0] * (1 - xs[..., None]) + base[1] * ys[..., None]
    for _ in range(60):
        colour = torch.rand(3, generator=g)
        cx, cy, r = torch.rand(3, generator=g).tolist()
        r = 0.01 + 0.08 * r
        if torch.rand((), generator=g) < 0.5:
            inside = (xs - cx) ** 2 + (ys - cy) ** 2 < r * r
        else:
            w, h = (0.02 + 0.2 * torch.rand(2, generator=g)).tolist()
            inside = ((xs - cx).abs() < w / 2) & ((ys - cy).abs() < h / 2)
        tex = torch.where(inside[..., None], colour, tex)
    tex = tex + 0.08 * (torch.rand(size, size, 1, generator=g) - 0.5)
    return tex.clamp(0, 1).contiguous()


def room_mesh(size: tuple[float, float, float] = (4.0, 2.5, 6.0), texture_size: int = 1024, seed: int = 0) -> Mesh:
    """The inside of an axis-aligned box centred at the origin (``size`` = extent along X, Y, Z),
    faces wound and normals pointing inwards, each wall a cell of one ``pattern_texture`` atlas
    (3 x 2 cells). World +Y is *down* (OpenCV), so ``camera_path(..., up=(0, -1, 0))`` fits."""
    hx, hy, hz = (s / 2 for s in size)
    # Each wall: four corners (counter-clockwise seen from inside) and its inward normal.
    walls = [
        ([[-hx, -hy, -hz], [hx, -hy, -hz], [hx, hy, -hz], [-hx, hy, -hz]], [0, 0, 1]),  # back (z = -hz)
        ([[hx, -hy, hz], [-hx, -hy, hz], [-hx, hy, hz], [hx, hy, hz]], [0, 0, -1]),  # front (z = +hz)
        ([[-hx, -hy, hz], [-hx, -hy, -hz], [-hx, hy, -hz], [-hx, hy, hz]], [1, 0, 0]),  # left (x = -hx)
        ([[hx, -hy, -hz], [hx, -hy, hz], [hx, hy, hz], [hx, hy, -hz]], [-1, 0, 0]),  # right (x = +hx)
        ([[-hx, -hy, hz], [hx, -hy, hz], [hx, -hy, -hz], [-hx, -hy, -hz]], [0, 1, 0]),  # ceiling (y = -hy)
        ([[-hx, hy, -hz], [hx, hy, -hz], [hx, hy, hz], [-hx, hy, hz]], [0, -1, 0]),  # floor (y = +hy)
    ]
    vertices, normals, uvs, faces = [], [], [], []
    for k, (corners, normal) in enumerate(walls):
        u0, v0 = (k % 3) / 3, (k // 3) / 2
        cell = [(u0 + 0.01, v0 + 0.01), (u0 + 1 / 3 - 0.01, v0 + 0.01), (u0 + 1 / 3 - 0.01, v0 + 0.49),
                (u0 + 0.01, v0 + 0.49)]
        base = len(vertices)
        vertices += corners
        normals += [normal] * 4
        uvs += cell
        # Seen from inside (along -normal) the corners run clockwise in the image, so reverse them.
        faces += [[base, base + 2, base + 1], [base, base + 3, base + 2]]
    faces_t = torch.tensor(faces, dtype=torch.int32)
    return Mesh(vertices=torch.tensor(vertices, dtype=torch.float32), faces=faces_t,
                normals=torch.tensor(normals, dtype=torch.float32), uvs=torch.tensor(uvs, dtype=torch.float32),
                uv_faces=faces_t.clone(), texture=pattern_texture(texture_size, seed))


def look_at(eyes: Tensor, targets: Tensor, up: Tensor | tuple[float, float, float] = (0.0, -1.0, 0.0)) -> tuple[
        Tensor, Tensor]:
    """World-to-camera ``(R [N, 3, 3], t [N, 3])`` of OpenCV cameras at ``eyes [N, 3]`` looking at
    ``targets [N, 3]``, with ``up`` (a world direction) pointing up in their images."""
    up_t = torch.as_tensor(up, dtype=eyes.dtype).expand_as(eyes)
    forward = torch.nn.functional.normalize(targets - eyes, dim=-1)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up_t, dim=-1), dim=-1)
    down = torch.linalg.cross(forward, right, dim=-1)
    R = torch.stack([right, down, forward], dim=-2)
    return R, -(R @ eyes[..., None])[..., 0]


def _smooth_noise(count: int, dims: int, g: torch.Generator) -> Tensor:
    """``[count, dims]`` smooth random curves in about [-1, 1]: a few sinusoids per dimension."""
    s = torch.linspace(0, 1, count, dtype=torch.float64)[:, None]
    out = torch.zeros(count, dims, dtype=torch.float64)
    for freq in (1.3, 2.9, 6.1):
        phase = 2 * math.pi * torch.rand(dims, generator=g, dtype=torch.float64)
        amp = torch.rand(dims, generator=g, dtype=torch.float64)
        out += amp * torch.sin(2 * math.pi * freq * s + phase) / 2
    return out


def camera_path(
    kind: Literal["orbit", "arc", "walk", "handheld"],
    count: int,
    *,
    width: int = 320,
    height: int = 240,
    fov_deg: float = 60.0,
    target: tuple[float, float, float] = (0.0, 0.0, 0.0),
    radius: float = 3.0,
    elevation: float = 0.3,
    span_deg: float = 90.0,
    up: tuple[float, float, float] = (0.0, -1.0, 0.0),
    start: tuple[float, float, float] = (0.0, 0.0, 2.0),
    end: tuple[float, float, float] = (0.0, 0.0, -1.0),
    shake: float = 1.0,
    seed: int = 0,
) -> Cameras:
    """``count`` pinhole cameras (``width x height``, horizontal field of view ``fov_deg``,
    principal point at the image centre) along a path, in time order:

    - ``"orbit"``: a full circle of ``radius`` around ``target``, raised by ``elevation * radius``
      along ``up``, looking at ``target``;
    - ``"arc"``: ``span_deg`` degrees of that circle (a video walking around an object);
    - ``"walk"``: from ``start`` to ``end`` looking ahead along the way, swaying gently (a forward
      walk through a room);
    - ``"handheld"``: the arc with a hand's shake: smooth random wobble of the aim (about
      ``2 * shake`` degrees) and the position (about ``3 * shake`` % of ``radius``).

    >>> cams = camera_path("arc", 5, width=64, height=48)
    >>> len(cams), round(float(cams.centers[0].norm()), 3)   # radius 3, raised by 0.3 * 3
    (5, 3.132)
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    c = torch.tensor(target, dtype=f64)
    up_t = torch.nn.functional.normalize(torch.tensor(up, dtype=f64), dim=0)
    # an orthonormal basis of the orbit plane (perpendicular to up)
    helper = torch.tensor([0.0, 0.0, 1.0], dtype=f64)
    if abs(float(helper @ up_t)) > 0.9:
        helper = torch.tensor([1.0, 0.0, 0.0], dtype=f64)
    a1 = torch.nn.functional.normalize(helper - (helper @ up_t) * up_t, dim=0)
    a2 = torch.linalg.cross(up_t, a1)
    if kind in ("orbit", "arc", "handheld"):
        span = 2 * math.pi if kind == "orbit" else math.radians(span_deg)
        steps = torch.arange(count, dtype=f64) / (count if kind == "orbit" else max(count - 1, 1))
        angle = (steps * span)[:, None]
        eyes = c + radius * (torch.cos(angle) * a1 + torch.sin(angle) * a2 + elevation * up_t)
        targets = c.expand(count, 3).clone()
        if kind == "handheld":
            eyes = eyes + 0.03 * shake * radius * _smooth_noise(count, 3, g)
            aim = 0.035 * shake * radius * _smooth_noise(count, 3, g)  # ~2 degrees at the target
            targets = targets + aim
    elif kind == "walk":
        s = torch.linspace(0, 1, count, dtype=f64)[:, None]
        p0, p1 = torch.tensor(start, dtype=f64), torch.tensor(end, dtype=f64)
        eyes = p0 + s * (p1 - p0) + 0.02 * (p1 - p0).norm() * _smooth_noise(count, 3, g)
        ahead = torch.nn.functional.normalize(p1 - p0, dim=0)
        side = torch.nn.functional.normalize(torch.linalg.cross(ahead, up_t), dim=0)
        sway = 0.15 * _smooth_noise(count, 1, g)  # about 8 degrees of yaw
        targets = eyes + ahead + sway * side
    else:
        raise ValueError(f"kind must be 'orbit', 'arc', 'walk' or 'handheld', got {kind!r}")
    R, t = look_at(eyes, targets, up_t)
    focal = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    return Cameras(fx=focal, fy=focal, cx=width / 2, cy=height / 2, R=R.float(), t=t.float(), width=width,
                   height=height)
