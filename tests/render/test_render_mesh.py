"""render_mesh: analytic cases, gradients everywhere, and inverse rendering on the Spot mesh
(pose and texture recovered from 8 views)."""

from __future__ import annotations

import math

import pytest
import torch

from scenegrad.datasets.synthetic import orbit_cameras
from scenegrad.render.cameras import Cameras
from scenegrad.render.mesh import Lights, Mesh, render_mesh
from scenegrad.render.rotations import so3_exp

from ..conftest import load_spot


def sphere_mesh(subdivisions=3) -> Mesh:
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=subdivisions)
    return Mesh(vertices=torch.tensor(m.vertices, dtype=torch.float32),
                faces=torch.tensor(m.faces, dtype=torch.int32))


def test_sphere_depth_alpha_and_normals(native):
    mesh = sphere_mesh(4)
    cams = orbit_cameras(3, 4.0, 64, 64, 60.0, elevation=0.3)
    out = render_mesh(mesh, cams, shading="none", antialiased=False)
    covered = out.triangle_ids >= 0
    # Analytic: a unit sphere at distance d subtends a disc of radius f / sqrt(d^2 - 1) pixels, and
    # the ray through the image centre meets it at depth d - 1.
    d = cams.centers.norm(dim=-1)
    disc = math.pi * (60 / math.sqrt(d[0].item() ** 2 - 1)) ** 2 / 64**2
    assert covered.float().mean().item() == pytest.approx(disc, rel=0.03)
    torch.testing.assert_close(out.depth[:, 32, 32], d - 1, atol=0.01, rtol=0)
    assert (out.depth[~covered] == 0).all() and (out.alpha[..., 0] == covered.float()).all()
    # Normals of a unit sphere at the centre pixel point back at the camera.
    to_camera = torch.nn.functional.normalize(cams.centers, dim=-1)
    assert (out.normals[:, 32, 32] * to_camera).sum(-1).min() > 0.99


def test_lambert_matches_closed_form(native):
    # A large quad at z = 0 facing the camera at z = -3 (world +Z points away from the camera).
    mesh = Mesh(vertices=torch.tensor([[-5.0, -5, 0], [5, -5, 0], [5, 5, 0], [-5, 5, 0]]),
                faces=torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32),
                normals=torch.tensor([[0.0, 0, -1]]).expand(4, 3).contiguous(),
                vertex_colors=torch.tensor([[0.5, 0.25, 1.0]]).expand(4, 3).contiguous())
    cams = Cameras(fx=30.0, fy=30.0, cx=16.0, cy=16.0, R=torch.eye(3)[None], t=torch.tensor([[0.0, 0.0, 3.0]]),
                   width=32, height=32)
    lights = Lights(directions=torch.tensor([[0.0, 0.6, -0.8]]), colors=torch.tensor([[1.0, 1.0, 1.0]]),
                    ambient=torch.tensor([0.1, 0.1, 0.1]))
    out = render_mesh(mesh, cams, shading="lambert", lights=lights)
    expected = torch.tensor([0.5, 0.25, 1.0]) * (0.1 + 0.8)
    torch.testing.assert_close(out.color[0, 16, 16], expected)


def test_gradients_reach_every_input(native):
    mesh = sphere_mesh(2)
    verts = mesh.vertices.clone().requires_grad_(True)
    colors = torch.rand(mesh.num_vertices, 3).requires_grad_(True)
    light = torch.tensor([[0.2, -1.0, -0.4]], requires_grad=True)
    cams = orbit_cameras(2, 4.0, 48, 48, 50.0)
    t = cams.t.clone().requires_grad_(True)
    cams = Cameras(fx=cams.fx, fy=cams.fy, cx=cams.cx, cy=cams.cy, R=cams.R, t=t, width=48, height=48)
    m = Mesh(vertices=verts, faces=mesh.faces, vertex_colors=colors)
    out = render_mesh(m, cams, shading="phong", lights=Lights(directions=light), background=0.2)
    loss = out.color.square().mean() + out.depth.mean()
    grads = torch.autograd.grad(loss, (verts, colors, light, t))
    for g in grads:
        assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.fixture(scope="module")
def spot() -> Mesh:
    mesh = load_spot()
    # A 256^2 texture keeps the test fast and lets a perfect solution exist at that resolution.
    tex = torch.nn.functional.interpolate(mesh.texture[None].permute(0, 3, 1, 2)[:, :3], size=(256, 256),
                                          mode="area")
    mesh.texture = tex.permute(0, 2, 3, 1)[0].contiguous()
    return mesh


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return (-10 * torch.log10((a - b).square().mean())).item()


@pytest.mark.slow
def test_inverse_rendering_recovers_pose(native, spot):
    torch.manual_seed(0)
    centre = spot.vertices.mean(0)
    size = (spot.vertices.max(0).values - spot.vertices.min(0).values).norm().item()
    cams = orbit_cameras(8, 2.0 * size, 96, 96, 110.0, centre=tuple(centre.tolist()))
    lights = Lights()
    target = render_mesh(spot, cams, shading="lambert", lights=lights)
    # Perturb the pose: 10 degrees about a random axis, 10% of the size along a random direction.
    axis = torch.nn.functional.normalize(torch.randn(3), dim=0)
    shift = torch.nn.functional.normalize(torch.randn(3), dim=0) * 0.1 * size
    true_rot = axis * math.radians(10)

    def posed(r: torch.Tensor, tr: torch.Tensor) -> Mesh:
        R = so3_exp(r)
        v = (spot.vertices - centre) @ R.T + centre + tr
        n = spot.vertex_normals() @ R.T
        return Mesh(vertices=v, faces=spot.faces, normals=n, uvs=spot.uvs, uv_faces=spot.uv_faces,
                    texture=spot.texture)

    # Start from the perturbed pose; the true pose is rot = 0, trans = 0.
    rot = true_rot.clone().requires_grad_(True)
    trans = shift.clone().requires_grad_(True)
    start_err = (posed(rot.detach(), trans.detach()).vertices - spot.vertices).norm(dim=-1).mean().item()
    assert start_err > 0.05 * size, "the perturbation did not move the mesh"
    opt = torch.optim.Adam([{"params": [rot], "lr": 0.01}, {"params": [trans], "lr": 0.01 * size}])
    for step in range(300):
        opt.zero_grad()
        out = render_mesh(posed(rot, trans), cams, shading="lambert", lights=lights)
        loss = (out.color - target.color).square().mean() + (out.alpha - target.alpha).square().mean()
        loss.backward()
        opt.step()
        if step == 200:
            for group in opt.param_groups:
                group["lr"] *= 0.2
    final_v = posed(rot.detach(), trans.detach()).vertices
    err = (final_v - spot.vertices).norm(dim=-1)
    # Rotation error from the best-fit rotation between centred vertex sets, translation from the centroid.
    from scenegrad.render.rotations import matrix_to_axis_angle, umeyama

    _, R_err, _ = umeyama(final_v.double(), spot.vertices.double(), with_scale=False)
    angle = math.degrees(matrix_to_axis_angle(R_err).norm().item())
    offset = (final_v.mean(0) - spot.vertices.mean(0)).norm().item() / size
    print(f"\npose recovered to {angle:.4f} deg and {offset * 100:.4f}% of the size")
    assert angle < 0.2, f"rotation error {angle:.3f} deg"
    assert offset < 0.002, f"translation error {offset * 100:.3f}% of the size"
    assert err.max().item() < 0.01 * size


@pytest.mark.slow
def test_inverse_rendering_recovers_texture(native, spot):
    torch.manual_seed(1)
    centre = spot.vertices.mean(0)
    size = (spot.vertices.max(0).values - spot.vertices.min(0).values).norm().item()
    cams = orbit_cameras(8, 1.6 * size, 128, 128, 150.0, centre=tuple(centre.tolist()))
    target = render_mesh(spot, cams, shading="none").color
    tex = torch.rand_like(spot.texture).requires_grad_(True)
    opt = torch.optim.Adam([tex], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        m = Mesh(vertices=spot.vertices, faces=spot.faces, uvs=spot.uvs, uv_faces=spot.uv_faces, texture=tex)
        out = render_mesh(m, cams, shading="none").color
        loss = (out - target).square().mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        m = Mesh(vertices=spot.vertices, faces=spot.faces, uvs=spot.uvs, uv_faces=spot.uv_faces, texture=tex)
        final = render_mesh(m, cams, shading="none").color
    value = psnr(final, target)
    print(f"\ntexture recovered to {value:.2f} dB PSNR over the 8 views")
    assert value > 30, f"PSNR {value:.1f} dB"
