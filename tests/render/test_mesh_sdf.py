"""extract_surface / sample_grid / attach_field_gradient: narrow-band sampling gives the dense
result, chunking, the MeshSDF gradient against finite differences and closed forms, bad fields."""

from __future__ import annotations

import math

import pytest
import torch

from scenegrad.render.iso import attach_field_gradient, extract_surface, marching_cubes, sample_grid

LO, HI = (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)


def torus_field(p):
    q = torch.stack([torch.hypot(p[..., 0], p[..., 2]) - 0.55, p[..., 1]], -1)
    return q.norm(dim=-1) - 0.2


def volume_and_moment(vertices, faces):
    """Enclosed volume and its first moments (sum over the tetrahedra origin-a-b-c)."""
    F = faces.long()
    a, b, c = vertices[F[:, 0]], vertices[F[:, 1]], vertices[F[:, 2]]
    vol = (a * torch.linalg.cross(b, c)).sum(1) / 6
    return vol.sum(), (vol[:, None] * (a + b + c) / 4).sum(0)


@pytest.mark.parametrize("resolution", [65, (57, 33, 45)])
def test_narrow_band_equals_dense(resolution):
    calls = []

    def field(p):
        calls.append(p.shape[0])
        return torus_field(p)

    dense, spacing = sample_grid(field, LO, HI, resolution, narrow_band=False, dtype=torch.float64)
    n_dense = sum(calls)
    calls.clear()
    band, spacing2 = sample_grid(field, LO, HI, resolution, block=4, chunk=5000, dtype=torch.float64)
    assert spacing == spacing2 and max(calls) <= 5000
    assert sum(calls) < (0.6 if resolution == 65 else 1.0) * n_dense  # at 65^3 most of the volume is skipped
    a = marching_cubes(dense, spacing=spacing, origin=LO)
    b = marching_cubes(band, spacing=spacing, origin=LO)
    assert torch.equal(a.faces, b.faces)  # values near the surface agree to rounding (batched evaluation)
    torch.testing.assert_close(a.vertices, b.vertices, rtol=0, atol=1e-12)


def test_mesh_sdf_gradient_matches_finite_differences_and_closed_form():
    params = torch.tensor([0.55, 0.05, -0.1, 0.08], dtype=torch.float64)  # radius, centre

    def loss_of(p, grad: bool):
        def field(x):
            return (x - p[1:]).norm(dim=-1) - p[0]

        surf = extract_surface(field, LO, HI, 49, dtype=torch.float64)
        vol, moment = volume_and_moment(surf.vertices, surf.faces)
        return vol + 2.0 * moment[0] - 3.0 * moment[2]

    p = params.clone().requires_grad_(True)
    loss_of(p, True).backward()
    h = 1e-3
    fd = torch.stack([(loss_of(params + h * e, False) - loss_of(params - h * e, False)) / (2 * h)
                      for e in torch.eye(4, dtype=torch.float64)])
    r = float(params[0])
    vol = 4 / 3 * math.pi * r**3
    # L = V + 2 V cx - 3 V cz: dL/dr = 4 pi r^2 (1 + 2 cx - 3 cz), dL/dcx = 2 V, dL/dcz = -3 V
    exact = torch.tensor([4 * math.pi * r * r * (1 + 2 * 0.05 - 3 * 0.08), 2 * vol, 0.0, -3 * vol],
                         dtype=torch.float64)
    torch.testing.assert_close(p.grad, fd, rtol=0.02, atol=0.01)
    torch.testing.assert_close(p.grad, exact, rtol=0.02, atol=0.01)


def test_attach_field_gradient_is_identity_in_value_and_checks_the_field():
    v = torch.randn(20, 3, dtype=torch.float64)
    w = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    out = attach_field_gradient(lambda x: x.norm(dim=-1) - w, v)
    assert torch.equal(out, v)
    out.norm(dim=1).sum().backward()
    # every vertex moves along the radial normal by dw: d|v|/dw = 1
    assert w.grad.item() == pytest.approx(20.0)
    with pytest.raises(ValueError, match=r"\[P\] values"):
        attach_field_gradient(lambda x: x, v)
    with pytest.raises(ValueError, match=r"\[P\] values"):
        sample_grid(lambda x: x[:, :2], LO, HI, 9, narrow_band=False)
    with pytest.raises(ValueError, match="lo < hi"):
        sample_grid(torus_field, HI, LO, 9)
    with pytest.raises(ValueError, match="resolution"):
        sample_grid(torus_field, LO, HI, 1)
