"""Bundle adjustment: convergence on random scenes, robust losses, masks, analytic Jacobians, implicit
gradients against finite differences of the full solve, input validation."""

from __future__ import annotations

import math

import pytest
import torch

from scenegrad.recon.ba import BAOptions, Observations, _project, bundle_adjust, reprojection_residuals
from scenegrad.recon.evaluate import pose_errors
from scenegrad.render.cameras import Cameras, project
from scenegrad.render.rotations import so3_exp

from ..conftest import requires_cuda

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Many small tensor ops: one thread runs them steadily on a loaded machine."""


def _scene(n_cams, n_pts, per_point=5, noise=0.5, seed=0, k1=0.0, outliers=0.0, spread=1.0, dist=None, aspect=1.0):
    """Points in [-spread, spread]^3, cameras on a sphere of radius 5 looking at the origin, each point seen by
    ``per_point`` random cameras, pixel noise ``noise`` and a fraction ``outliers`` of uniform pixels; ``dist``
    (OpenCV ``k1, k2, p1, p2, k3``) or ``k1`` make ``"opencv"`` cameras, ``fy = aspect * fx``."""
    g = torch.Generator().manual_seed(seed)
    X = (torch.rand(n_pts, 3, generator=g, dtype=F64) * 2 - 1) * spread
    C = torch.randn(n_cams, 3, generator=g, dtype=F64)
    C = 5 * C / C.norm(dim=1, keepdim=True)
    z = -C / 5
    x = torch.linalg.cross(z, torch.randn(n_cams, 3, generator=g, dtype=F64))
    x = x / x.norm(dim=1, keepdim=True)
    R = torch.stack([x, torch.linalg.cross(z, x), z], 1)
    t = -(R @ C[:, :, None])[:, :, 0]
    if dist is None and k1:
        dist = (k1, 0, 0, 0, 0)
    model, dist = ("opencv", torch.tensor(dist, dtype=F64)) if dist is not None else ("pinhole", None)
    cams = Cameras(500.0, 500.0 * aspect, 320.0, 240.0, R, t, 640, 480, model=model, dist=dist)
    cam = torch.rand(n_pts, n_cams, generator=g).argsort(1)[:, :per_point].reshape(-1)
    pt = torch.arange(n_pts).repeat_interleave(per_point)
    uv = project(cams, X)[0][cam, pt]
    uv = uv + noise * torch.randn(uv.shape, generator=g, dtype=F64)
    bad = torch.rand(len(uv), generator=g) < outliers
    uv[bad] = torch.rand(int(bad.sum()), 2, generator=g, dtype=F64) * torch.tensor([640.0, 480.0], dtype=F64)
    return cams, X, Observations(cam, pt, uv), g


def _perturb(cams, X, g, rot_deg=2.0, trans=0.1, pts=0.05, focal=1.0):
    phi = torch.randn(len(cams), 3, generator=g, dtype=F64) * math.radians(rot_deg)
    R = so3_exp(phi) @ cams.R
    t = cams.t + trans * torch.randn(len(cams), 3, generator=g, dtype=F64)
    dist = None if cams.dist is None else torch.zeros_like(cams.dist)
    start = Cameras(cams.fx * focal, cams.fy * focal, cams.cx, cams.cy, R, t, cams.width, cams.height, cams.model, dist)
    return start, X + pts * torch.randn(X.shape, generator=g, dtype=F64)


def test_converges_to_the_noise_level_from_a_perturbed_start():
    sigma = 0.3
    cams, X, obs, g = _scene(20, 800, noise=sigma)
    start, X0 = _perturb(cams, X, g)
    res = bundle_adjust(start, X0, obs, options=BAOptions(loss="huber", loss_scale=2.0))
    assert res.converged, res.reason
    rmse_truth = float(reprojection_residuals(cams, X, obs).norm(dim=1).pow(2).mean().sqrt())
    assert res.rmse_initial > 10.0
    # the optimum fits at least as well as the truth, and no better than the noise allows
    # (2 residuals per observation, 6 N + 3 M - 7 parameters: E|r|^2 = 2 sigma^2 (1 - params / (2 O)))
    dof = 1 - (6 * 20 + 3 * 800 - 7) / (2 * len(obs.uv))
    assert 0.9 * sigma * math.sqrt(2 * dof) < res.rmse_final <= rmse_truth
    err = pose_errors(res.cameras, cams)
    assert err.rot_max_deg < 0.1 and err.ate < 0.01
    # the gauge: the first camera did not move
    assert torch.equal(res.cameras.R[0], start.R[0]) and torch.equal(res.cameras.t[0], start.t[0])


def test_refines_shared_focal_and_k1():
    cams, X, obs, g = _scene(12, 400, noise=0.3, k1=-0.05, seed=1, spread=1.8)  # wide view: k1 observable
    start, X0 = _perturb(cams, X, g, rot_deg=1.0, focal=1.03)
    shared = torch.zeros(12, dtype=torch.long)
    res = bundle_adjust(start, X0, obs, refine_intrinsics=("focal", "k1"), intrinsic_groups=shared)
    assert res.converged, res.reason
    assert torch.allclose(res.cameras.fx, res.cameras.fx[:1].expand(12))  # shared
    assert res.cost_final <= 0.5 * float(reprojection_residuals(cams, X, obs).pow(2).sum())  # at least the truth's fit
    assert abs(float(res.cameras.fx[0]) / 500.0 - 1) < 3e-3
    assert abs(float(res.cameras.dist[0, 0]) + 0.05) < 3e-3
    assert pose_errors(res.cameras, cams).rot_max_deg < 0.1


def test_refines_separate_focals_and_opencv_distortion():
    """OPENCV (COLMAP): fx != fy and k1, k2, p1, p2 recovered from a start with fy = fx and no distortion."""
    truth = (-0.08, 0.02, 0.002, -0.0015, 0.0)
    cams, X, obs, g = _scene(12, 500, noise=0.3, seed=11, spread=1.8, dist=truth, aspect=1.05)
    start, X0 = _perturb(cams, X, g, rot_deg=1.0, focal=1.03)  # distortion starts at zero
    start = Cameras(start.fx, start.fx.clone(), start.cx, start.cy, start.R, start.t, 640, 480, "opencv", start.dist)
    shared = torch.zeros(12, dtype=torch.long)
    res = bundle_adjust(start, X0, obs, refine_intrinsics=("focal_xy", "k1", "k2", "p1", "p2"), intrinsic_groups=shared)
    assert res.converged, res.reason
    assert res.cost_final <= 0.5 * float(reprojection_residuals(cams, X, obs).pow(2).sum())
    out = res.cameras
    assert torch.equal(out.dist[:, 4], start.dist[:, 4]) and torch.allclose(out.fy, out.fy[:1].expand(12))
    # measured: fx, fy within 0.03 %; k1, k2 off by 4e-3, 7e-3 (0.3 px noise; they trade off), p1, p2 by 1e-4
    assert abs(float(out.fx[0]) / 500.0 - 1) < 2e-3 and abs(float(out.fy[0]) / 525.0 - 1) < 2e-3
    err = (out.dist[0, :4] - torch.tensor(truth[:4], dtype=F64)).abs()
    assert bool((err < torch.tensor([8e-3, 1.5e-2, 3e-4, 3e-4], dtype=F64)).all()), err
    # the same optimum as a solve started at the truth: the perturbed start converged, not stalled
    ref = bundle_adjust(cams, X, obs, refine_intrinsics=("focal_xy", "k1", "k2", "p1", "p2"), intrinsic_groups=shared)
    torch.testing.assert_close(out.dist, ref.cameras.dist, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.fy / out.fx, ref.cameras.fy / ref.cameras.fx, rtol=1e-7, atol=0)
    assert pose_errors(out, cams).rot_max_deg < 0.1
    # "focal" keeps the aspect ratio of the start: it cannot fit fy = 1.05 fx
    kept = bundle_adjust(start, X0, obs, refine_intrinsics=("focal", "k1", "k2", "p1", "p2"), intrinsic_groups=shared)
    torch.testing.assert_close(kept.cameras.fy / kept.cameras.fx, start.fy / start.fx)
    assert kept.rmse_final > 2 * res.rmse_final


def test_robust_losses_beat_least_squares_with_outliers():
    cams, X, obs, g = _scene(15, 500, noise=0.5, outliers=0.15, seed=2)
    start, X0 = _perturb(cams, X, g, rot_deg=1.0, trans=0.05)
    errors = {}
    for loss in ("linear", "huber", "cauchy"):
        res = bundle_adjust(start, X0, obs, options=BAOptions(loss=loss, loss_scale=2.0))
        errors[loss] = pose_errors(res.cameras, cams).rot_mean_deg
        if loss == "cauchy":  # outliers end with small IRLS weights
            inlier = reprojection_residuals(cams, X, obs).norm(dim=1) < 5
            assert float(res.weights[~inlier].mean()) < 0.1 * float(res.weights[inlier].mean())
    # measured: linear 24 deg, Huber 0.15 deg (bounded but non-zero influence), Cauchy 0.06 deg
    assert errors["cauchy"] < 0.1 and errors["huber"] < 0.3
    assert errors["linear"] > 10 * max(errors["cauchy"], errors["huber"])


def test_masks_are_respected():
    cams, X, obs, g = _scene(8, 200, seed=3)
    start, X0 = _perturb(cams, X, g)
    fixed_cams = torch.tensor([False, True, False, True, False, False, False, False])
    fixed_pts = torch.zeros(200, dtype=torch.bool)
    fixed_pts[::7] = True
    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    fixed_intr = torch.tensor([False, True, False, True])
    res = bundle_adjust(start, X0, obs, refine_intrinsics=("focal", "principal_point"), intrinsic_groups=groups,
                        fixed_cameras=fixed_cams, fixed_points=fixed_pts, fixed_intrinsics=fixed_intr)
    out = res.cameras
    assert torch.equal(out.R[fixed_cams], start.R[fixed_cams]) and torch.equal(out.t[fixed_cams], start.t[fixed_cams])
    assert not torch.equal(out.R[~fixed_cams], start.R[~fixed_cams])
    assert torch.equal(res.points[fixed_pts], X0[fixed_pts])
    assert not torch.equal(res.points[~fixed_pts], X0[~fixed_pts])
    frozen = fixed_intr[groups]
    for name in ("fx", "fy", "cx", "cy"):
        assert torch.equal(getattr(out, name)[frozen], getattr(start, name)[frozen])
    assert not torch.equal(out.fx[~frozen], start.fx[~frozen])


@pytest.mark.parametrize("refine", [("focal", "principal_point", "k1"),
                                    ("focal_xy", "principal_point", "k1", "k2", "p1", "p2", "k3")])
def test_analytic_jacobians_match_autograd(refine):
    cams, X, obs, g = _scene(3, 10, per_point=3, k1=-0.1, seed=4, aspect=0.97)
    cams.dist[:, 1:] = torch.tensor([0.01, 0.002, -0.001, 0.003], dtype=F64)  # every OpenCV term
    # a one-iteration solve exposes the structure; Jacobians compared at the start
    from scenegrad.recon import ba

    captured = {}
    original = ba._linearise

    def spy(st, struct, *args, **kwargs):
        captured.setdefault("st", st)
        captured.setdefault("struct", struct)
        return original(st, struct, *args, **kwargs)

    ba._linearise = spy
    try:
        bundle_adjust(cams, X, obs, refine_intrinsics=refine, gauge="none",
                      options=BAOptions(max_iterations=1))
    finally:
        ba._linearise = original
    st, struct = captured["st"], captured["struct"]
    _, _, J_cam, J_pt = _project(st, struct, True)
    N, M, G = len(cams), len(X), 3
    struct.pose_free[:] = True

    def uv_of(d_pose, d_pt, d_intr):
        moved = ba._chart(st, struct, d_pose, d_pt, d_intr, (st.fx, st.fy, st.cx, st.cy, st.dist))
        return _project(moved, struct, False)[0]

    k = len(struct.intr_cols)
    assert J_cam.shape[2] == 6 + k and k == (4 if len(refine) == 3 else 9)
    zeros = (torch.zeros(N, 6, dtype=F64), torch.zeros(M, 3, dtype=F64), torch.zeros(G, k, dtype=F64))
    jac = torch.autograd.functional.jacobian(uv_of, zeros)
    O = len(obs.uv)
    ar = torch.arange(O)
    auto_pose = jac[0][ar, :, struct.cam]  # [O, 2, 6]
    auto_pt = jac[1][ar, :, struct.pt]
    auto_intr = jac[2][ar, :, struct.group[struct.cam]]
    torch.testing.assert_close(J_cam[:, :, :6], auto_pose, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(J_pt, auto_pt, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(J_cam[:, :, 6:], auto_intr, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("loss", ["linear", "cauchy"])
def test_implicit_gradients_match_finite_differences_of_the_solve(loss):
    cams, X, obs, g = _scene(4, 10, per_point=4, noise=0.5, seed=5)
    start, X0 = _perturb(cams, X, g, rot_deg=1.0, trans=0.05, pts=0.02)
    opt = BAOptions(loss=loss, loss_scale=1.0, max_iterations=100, ftol=0.0, xtol=1e-15)
    refine = ("focal",) if loss == "linear" else ()
    w0 = torch.rand(len(obs.uv), generator=g, dtype=F64) + 0.5
    cx0 = start.cx.clone()
    coef = [torch.randn(s, generator=g, dtype=F64) for s in ((4, 3, 3), (4, 3), (10, 3), (4,))]

    def solve(uv, w, cx, init=(start, X0)):
        c = init[0]
        cams_in = Cameras(c.fx, c.fy, cx, c.cy, c.R, c.t, 640, 480)
        res = bundle_adjust(cams_in, init[1], Observations(obs.camera_idx, obs.point_idx, uv, w),
                            refine_intrinsics=refine, options=opt)
        out = (res.cameras.R, res.cameras.t, res.points, res.cameras.fx)
        return sum((o * k).sum() for o, k in zip(out, coef, strict=True)), res

    inputs = [obs.uv.clone().requires_grad_(), w0.clone().requires_grad_(), cx0.clone().requires_grad_()]
    value, res = solve(*inputs)
    assert res.converged, res.reason
    value.backward()
    c = res.cameras
    warm = (Cameras(*(x.detach() for x in (c.fx, c.fy, c.cx, c.cy, c.R, c.t)), 640, 480), res.points.detach())
    eps, errors = 1e-6, []
    for which, count in ((0, 6), (1, 3), (2, 2)):
        grad = inputs[which].grad.reshape(-1)
        for i in torch.randperm(grad.numel(), generator=g)[:count].tolist():
            vals = []
            for sign in (1, -1):
                args = [obs.uv.clone(), w0.clone(), cx0.clone()]
                args[which].view(-1)[i] += sign * eps
                vals.append(float(solve(*args, init=warm)[0]))
            numeric = (vals[0] - vals[1]) / (2 * eps)
            errors.append(abs(numeric - float(grad[i])) / float(grad.abs().max()))
    assert max(errors) < 1e-4, errors


def test_implicit_gradients_with_opencv_intrinsics_refined():
    """Shared fx, fy, k1, k2, p1, p2 refined: gradients of the optimum w.r.t. the observations and a held
    intrinsic (k3, cx) match central finite differences of the full solve."""
    cams, X, obs, g = _scene(5, 40, per_point=4, noise=0.5, seed=12, spread=1.8,
                             dist=(-0.05, 0.01, 0.001, -0.001, 0.002), aspect=1.04)
    start, X0 = _perturb(cams, X, g, rot_deg=0.5, trans=0.02, pts=0.01)
    opt = BAOptions(loss="cauchy", loss_scale=2.0, max_iterations=100, ftol=0.0, xtol=1e-15)
    refine = ("focal_xy", "k1", "k2", "p1", "p2")
    shared = torch.zeros(5, dtype=torch.long)
    coef = [torch.randn(s, generator=g, dtype=F64) for s in ((5, 3), (40, 3), (5,), (5,), (5, 5))]

    def solve(uv, dist, cx, init=(start, X0)):
        c = init[0]
        cams_in = Cameras(c.fx, c.fy, cx, c.cy, c.R, c.t, 640, 480, "opencv", dist)
        res = bundle_adjust(cams_in, init[1], Observations(obs.camera_idx, obs.point_idx, uv),
                            refine_intrinsics=refine, intrinsic_groups=shared, options=opt)
        out = (res.cameras.t, res.points, res.cameras.fx, res.cameras.fy, res.cameras.dist)
        return sum((o * k).sum() for o, k in zip(out, coef, strict=True)), res

    inputs = [obs.uv.clone().requires_grad_(), cams.dist.clone().requires_grad_(), start.cx.clone().requires_grad_()]
    value, res = solve(*inputs)
    assert res.converged, res.reason
    value.backward()
    # a refined coefficient's optimum does not depend on its start: gradient only on the held k3
    assert float(inputs[1].grad[:, :4].abs().max()) == 0.0 and float(inputs[1].grad[:, 4].abs().max()) > 0
    c = res.cameras
    warm = (Cameras(*(x.detach() for x in (c.fx, c.fy, c.cx, c.cy, c.R, c.t)), 640, 480, "opencv"),
            res.points.detach())
    eps, errors = 1e-6, []
    for which, entries in ((0, None), (1, [(i, 4) for i in range(2)]), (2, [(1,), (3,)])):
        grad = inputs[which].grad
        if entries is None:
            entries = [tuple(divmod(i, 2)) for i in torch.randperm(grad.numel(), generator=g)[:5].tolist()]
        for idx in entries:
            step = 1e-8 if which == 1 else eps  # k3 multiplies r^6: a smaller step keeps the difference linear
            vals = []
            for sign in (1, -1):
                args = [obs.uv.clone(), cams.dist.clone(), start.cx.clone()]
                args[which][idx] += sign * step
                vals.append(float(solve(*args, init=warm)[0]))
            numeric = (vals[0] - vals[1]) / (2 * step)
            errors.append(abs(numeric - float(grad[idx])) / max(float(grad.abs().max()), 1e-12))
    assert max(errors) < 1e-4, errors


def test_gradient_is_zero_at_fixed_gauge_and_flows_to_points():
    cams, X, obs, g = _scene(4, 10, per_point=4, seed=6)
    uv = obs.uv.clone().requires_grad_()
    res = bundle_adjust(cams, X, Observations(obs.camera_idx, obs.point_idx, uv))
    (res.cameras.t[0].sum() + res.cameras.R[0].sum()).backward(retain_graph=True)
    assert float(uv.grad.abs().max()) == 0.0  # the first camera is the gauge: fixed
    uv.grad = None
    res.points.sum().backward()
    assert float(uv.grad.abs().max()) > 0.0


def test_bad_input_raises():
    cams, X, obs, _ = _scene(3, 10, per_point=3)
    nan = obs.uv.clone()
    nan[2, 0] = math.nan
    with pytest.raises(ValueError, match="finite"):
        bundle_adjust(cams, X, Observations(obs.camera_idx, obs.point_idx, nan))
    with pytest.raises(ValueError, match="camera_idx out of range"):
        bundle_adjust(cams, X, Observations(obs.camera_idx + 1, obs.point_idx, obs.uv))
    with pytest.raises(ValueError, match="point_idx out of range"):
        bundle_adjust(cams, X, Observations(obs.camera_idx, obs.point_idx - 1, obs.uv))
    with pytest.raises(ValueError, match="same length"):
        bundle_adjust(cams, X, Observations(obs.camera_idx[:-1], obs.point_idx, obs.uv))
    with pytest.raises(ValueError, match=r"\[O, 2\]"):
        bundle_adjust(cams, X, Observations(obs.camera_idx, obs.point_idx, obs.uv[:, :1]))
    with pytest.raises(ValueError, match=r"\[M, 3\]"):
        bundle_adjust(cams, X[:, :2], obs)
    with pytest.raises(ValueError, match="weights"):
        bundle_adjust(cams, X, Observations(obs.camera_idx, obs.point_idx, obs.uv, -torch.ones(len(obs.uv))))
    with pytest.raises(ValueError, match="loss"):
        bundle_adjust(cams, X, obs, options=BAOptions(loss="l2"))
    with pytest.raises(ValueError, match="k1"):
        bundle_adjust(cams, X, obs, refine_intrinsics=("k1",))
    with pytest.raises(ValueError, match="p2"):
        bundle_adjust(cams, X, obs, refine_intrinsics=("focal_xy", "p2"))
    with pytest.raises(ValueError, match="exclude"):
        bundle_adjust(cams, X, obs, refine_intrinsics=("focal", "focal_xy"))
    with pytest.raises(ValueError, match="refine_intrinsics"):
        bundle_adjust(cams, X, obs, refine_intrinsics=("k4",))
    with pytest.raises(ValueError, match="fixed_cameras"):
        bundle_adjust(cams, X, obs, fixed_cameras=torch.zeros(2, dtype=torch.bool))


def test_dense_and_pair_schur_sums_agree(monkeypatch):
    """The Schur complement's point terms are summed by dense products over chunks of points that share
    their cameras (tracks along a sequence) and pair by pair for the rest: the split must not change
    the solution. A sequence of 24 cameras with 600 points tracked over 5-8 neighbouring cameras, 80
    points seen by 3 random cameras and a point observed twice in one camera; the default split (tracks
    dense, the rest in pairs), all pairs and all dense give the same optimum."""
    import scenegrad.recon.ba as ba

    n_tracks, n_random = 600, 80
    cams, X, obs, g = _scene(24, n_tracks + n_random, per_point=3, noise=0.3, seed=3)
    length = torch.randint(5, 9, (n_tracks,), generator=g)
    first = (torch.rand(n_tracks, generator=g) * (24 - length + 1)).long()
    random = obs.point_idx >= n_tracks
    cam = torch.cat([first[i] + torch.arange(int(length[i])) for i in range(n_tracks)] + [obs.camera_idx[random]])
    pt = torch.cat([torch.full((int(length[i]),), i) for i in range(n_tracks)] + [obs.point_idx[random]])
    cam, pt = torch.cat([cam, cam[-1:]]), torch.cat([pt, pt[-1:]])  # a repeated observation
    uv, _ = project(cams, X)
    y = uv[cam, pt] + 0.3 * torch.randn(len(cam), 2, generator=g, dtype=F64)
    observations = Observations(cam, pt, y)
    start, X0 = _perturb(cams, X, g, rot_deg=1.0, trans=0.05)
    results = []
    for waste in (0.0, ba._DENSE_WASTE, 1e9):  # all pairs, the default split, all dense
        monkeypatch.setattr(ba, "_DENSE_WASTE", waste)
        plan = ba._dense_plan(cam, pt, 24, len(X), torch.arange(24 * 6).view(24, 6), 24 * 6)
        results.append((len(plan.obs), bundle_adjust(start, X0, observations, refine_intrinsics=("focal",),
                                                     options=BAOptions(max_iterations=30, backend="reference"))))
    counts = [n for n, _ in results]
    # the default takes every track (and random points whose chunk of tracks they share); the repeated
    # point's 3 + 1 observations always go to the pairs
    assert counts[0] == 0 and int(length.sum()) <= counts[1] < counts[2] == len(cam) - 4
    ref = results[0][1]
    assert ref.rmse_final < 0.5
    for _, res in results[1:]:
        assert abs(res.rmse_final - ref.rmse_final) < 1e-9 * ref.rmse_final
        assert (res.points - ref.points).abs().max() < 1e-7
        assert (res.cameras.t - ref.cameras.t).abs().max() < 1e-7
        assert (res.cameras.fx - ref.cameras.fx).abs().max() < 1e-6


# ----------------------------------------------------------------------------------------------
# The native Schur complement (cuda/ba): against a plain sum, and the solves against the reference's
# ----------------------------------------------------------------------------------------------


def _schur_inputs(C: int, n_points: int = 40, n_cams: int = 9, seed: int = 0, device: str = "cpu"):
    """Random ``W [O, C, 3]``, symmetric positive definite ``V_inv [M, 3, 3]``, points seen 1 to 7 times (one
    of them twice by one camera), pose columns per camera and ``C - 6`` intrinsic columns shared by groups of
    cameras (so two cameras write to the same entries), as ``_solve`` lays them out."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 8, (n_points,), generator=g)
    pt = torch.arange(n_points).repeat_interleave(counts)
    cam = torch.randint(0, n_cams, (len(pt),), generator=g)
    cam[1] = cam[0] if pt[1] == pt[0] else cam[1]
    perm = torch.randperm(len(pt), generator=g)  # observations in any order
    pt, cam = pt[perm], cam[perm]
    W = torch.randn(len(pt), C, 3, generator=g, dtype=F64)
    A = torch.randn(n_points, 3, 3, generator=g, dtype=F64)
    V_inv = A @ A.transpose(1, 2) + 0.1 * torch.eye(3, dtype=F64)
    k, groups = C - 6, 3
    group = torch.arange(n_cams) % groups
    cmap = torch.cat([torch.arange(6 * n_cams).view(n_cams, 6),
                      6 * n_cams + k * group[:, None] + torch.arange(k)], 1)
    S = 6 * n_cams + k * groups
    order = torch.argsort(pt, stable=True)
    starts = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(torch.bincount(pt, minlength=n_points), 0)])
    args = (W, V_inv, pt, cmap[cam].contiguous(), order, starts, S)
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)


def _schur_sum(W, V_inv, pt, pos, order, starts, S):
    """The point terms ``sum_p sum_(a, b) W_a V_p^-1 W_b^T`` at ``(pos_a, pos_b)``, one pair at a time."""
    T = torch.zeros(S, S, dtype=F64)
    for p in range(len(starts) - 1):
        obs = order[starts[p]:starts[p + 1]].tolist()
        for a in obs:
            for b in obs:
                T[pos[a][:, None], pos[b][None, :]] += W[a] @ V_inv[p] @ W[b].T
    return T


@pytest.mark.parametrize("C", [6, 7, 9])
def test_native_schur_terms_match_a_plain_sum(C):
    from scenegrad.render.backend import native_module

    args = _schur_inputs(C, seed=C)
    T = native_module().ba_schur(*args)
    ref = _schur_sum(*args)
    assert torch.allclose(T, ref, rtol=1e-12, atol=1e-10)
    assert torch.equal(T, T.T)


def test_native_schur_refuses_bad_indices():
    from scenegrad.render.backend import native_module

    W, V_inv, pt, pos, order, starts, S = _schur_inputs(7)
    with pytest.raises(RuntimeError, match="group"):
        native_module().ba_schur(W, V_inv, pt, pos, order.flip(0), starts, S)
    with pytest.raises(RuntimeError, match="pos out of range"):
        native_module().ba_schur(W, V_inv, pt, pos.clamp_max(S - 1) + 1, order, starts, S)
    with pytest.raises(RuntimeError, match="float64"):
        native_module().ba_schur(W.float(), V_inv, pt, pos, order, starts, S)


@pytest.mark.parametrize(("refine", "dist", "loss"), [
    ((), None, "linear"),
    (("focal",), None, "huber"),
    (("focal_xy", "principal_point", "k1", "k2", "p1", "p2", "k3"), (0.02, -0.01, 1e-3, -2e-3, 5e-3), "cauchy"),
    (("focal", "k1"), (0.03, 0, 0, 0, 0), "huber"),
])
def test_native_linearisation_matches_the_reference(monkeypatch, refine, dist, loss):
    """Every linearisation of a solve (IRLS and, in the polish and the backward, the exact robust curvature) by
    the native kernel against the torch reference at the same state: a fixed camera, fixed points, intrinsics
    shared by groups, outliers (the robust loss's both branches), points behind a camera (no terms)."""
    import scenegrad.recon.ba as ba

    cams, X, obs, g = _scene(8, 120, per_point=4, noise=0.3, seed=11, dist=dist, outliers=0.1)
    X = X.clone()
    X[:3] = -(cams.R[obs.camera_idx[:1]].transpose(1, 2) @ cams.t[obs.camera_idx[:1], :, None])[0, :, 0] * 1.5
    start, X0 = _perturb(cams, X, g, rot_deg=1.0, trans=0.05, focal=1.02)
    checked, original = [], ba._linearise_native

    def both(st, struct, y, c, exact):
        native = original(st, struct, y, c, exact)
        ref = ba._linearise_reference(st, struct, y, c, exact)
        (nq, r, w), (nq_ref, r_ref, w_ref) = native, ref
        for name in ("U", "V", "W", "g_c", "g_p"):
            a, b = getattr(nq, name), getattr(nq_ref, name)
            assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-10, atol=1e-9 * float(b.abs().max())), name
        assert torch.allclose(r, r_ref, rtol=1e-12, atol=1e-9) and torch.allclose(w, w_ref, rtol=1e-12, atol=1e-15)
        checked.append((exact, int((w == 0).sum())))
        return native

    monkeypatch.setattr(ba, "_linearise_native", both)
    groups = torch.arange(8) % 3
    fixed_pt = torch.zeros(len(X), dtype=torch.bool)
    fixed_pt[5:8] = True
    uv = obs.uv.clone().requires_grad_()
    res = bundle_adjust(start, X0, Observations(obs.camera_idx, obs.point_idx, uv), refine_intrinsics=refine,
                        intrinsic_groups=groups, fixed_cameras=torch.arange(8) == 2, fixed_points=fixed_pt,
                        options=BAOptions(loss=loss, loss_scale=1.5, max_iterations=12, backend="native"))
    res.points[:, 0].sum().backward()
    assert len(checked) >= 5 and any(exact for exact, _ in checked)  # the backward's linearisation is exact
    assert checked[0][1] >= 1  # the start has points behind a camera


@pytest.mark.parametrize("dist", [None, (0.02, -0.01, 1e-3, -2e-3, 5e-3)])
def test_native_projections_match_the_reference(monkeypatch, dist):
    """Every projection of a solve's cost by the native kernel ``ba_project`` against the reference's, points
    behind a camera included."""
    import dataclasses

    import scenegrad.recon.ba as ba

    cams, X, obs, g = _scene(6, 80, per_point=3, noise=0.3, seed=13, dist=dist)
    X = X.clone()
    X[:2] = -(cams.R[obs.camera_idx[:1]].transpose(1, 2) @ cams.t[obs.camera_idx[:1], :, None])[0, :, 0] * 1.5
    start, X0 = _perturb(cams, X, g, rot_deg=1.0, trans=0.05)
    checked, original = [], ba._project

    def both(st, struct, with_jacobians):
        out = original(st, struct, with_jacobians)
        if not with_jacobians and struct.backend == "native":
            ref = original(st, dataclasses.replace(struct, backend="reference"), False)
            assert torch.allclose(out[0], ref[0], rtol=1e-13, atol=1e-9) and torch.equal(out[1], ref[1])
            checked.append(int((~out[1]).sum()))
        return out

    monkeypatch.setattr(ba, "_project", both)
    bundle_adjust(start, X0, obs, options=BAOptions(max_iterations=5, backend="native"))
    assert len(checked) >= 5 and checked[0] >= 1  # points behind the camera are not valid


def test_native_linearisation_refuses_bad_inputs():
    from scenegrad.render.backend import native_module

    N, M, O = 2, 3, 4
    args = [torch.eye(3, dtype=F64).repeat(N, 1, 1), torch.zeros(N, 3, dtype=F64), torch.ones(M, 3, dtype=F64),
            torch.ones(N, 4, dtype=F64), torch.zeros(N, 0, dtype=F64), torch.zeros(O, 2, dtype=F64),
            torch.ones(O, dtype=F64), torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 2]), torch.arange(O),
            torch.tensor([0, 2, 3, 4]), torch.tensor([0]), torch.ones(N, 7, dtype=F64), torch.ones(M, dtype=F64)]
    out = native_module().ba_linearise(*args, 1, 1.0, 1e-6, False)
    assert [tuple(x.shape) for x in out] == [(2, 7, 7), (3, 3, 3), (4, 7, 3), (2, 7), (3, 3), (4, 2), (4,)]
    uv, valid = native_module().ba_project(*args[:5], args[7], args[8], 1e-6)
    assert tuple(uv.shape) == (4, 2) and valid.dtype == torch.bool
    with pytest.raises(RuntimeError, match="out of range"):
        native_module().ba_project(*args[:5], args[7], args[8] + 1, 1e-6)
    bad = list(args)
    bad[7] = torch.tensor([0, 1, 0, 2])
    with pytest.raises(RuntimeError, match="cam out of range"):
        native_module().ba_linearise(*bad, 1, 1.0, 1e-6, False)
    bad = list(args)
    bad[9] = torch.tensor([2, 0, 1, 3])
    with pytest.raises(RuntimeError, match="group"):
        native_module().ba_linearise(*bad, 1, 1.0, 1e-6, False)
    bad = list(args)
    bad[2] = torch.ones(M, 3)
    with pytest.raises(RuntimeError, match="X must be a contiguous float64"):
        native_module().ba_linearise(*bad, 1, 1.0, 1e-6, False)
    bad = list(args)
    bad[11] = torch.tensor([12])
    with pytest.raises(RuntimeError, match="intrinsic column code"):
        native_module().ba_linearise(*bad, 1, 1.0, 1e-6, False)
    with pytest.raises(RuntimeError, match="loss code"):
        native_module().ba_linearise(*args, 7, 1.0, 1e-6, False)


@pytest.mark.parametrize("refine", [("focal",), ("focal", "k1")])
def test_native_and_reference_solves_agree(refine):
    """A bundle adjustment with the native Schur terms reaches the reference's optimum (shared intrinsics,
    a point seen twice by one camera, Huber loss)."""
    cams, X, obs, g = _scene(12, 300, per_point=4, noise=0.3, seed=5, k1=0.01 if "k1" in refine else 0.0)
    cam = torch.cat([obs.camera_idx, obs.camera_idx[:1]])
    pt = torch.cat([obs.point_idx, obs.point_idx[:1]])
    uv = torch.cat([obs.uv, obs.uv[:1] + 0.2])
    start, X0 = _perturb(cams, X, g, rot_deg=1.0, trans=0.05, focal=1.03)
    out = {}
    for backend in ("native", "reference"):
        out[backend] = bundle_adjust(start, X0, Observations(cam, pt, uv), refine_intrinsics=refine,
                                     intrinsic_groups=torch.zeros(12, dtype=torch.long),
                                     options=BAOptions(loss="huber", max_iterations=40, backend=backend))
    a, b = out["native"], out["reference"]
    assert a.iterations == b.iterations and abs(a.rmse_final - b.rmse_final) < 1e-9 * b.rmse_final
    assert (a.points - b.points).abs().max() < 1e-7 and (a.cameras.R - b.cameras.R).abs().max() < 1e-9
    assert (a.cameras.fx - b.cameras.fx).abs().max() < 1e-6


def test_implicit_gradients_agree_between_backends():
    cams, X, obs, g = _scene(6, 60, per_point=4, noise=0.3, seed=6)
    grads = {}
    for backend in ("native", "reference"):
        uv = obs.uv.clone().requires_grad_()
        res = bundle_adjust(cams, X, Observations(obs.camera_idx, obs.point_idx, uv), refine_intrinsics=("focal",),
                            options=BAOptions(max_iterations=30, backend=backend))
        (res.cameras.t.sum() + res.points[:, 0].sum() + res.cameras.fx.sum()).backward()
        grads[backend] = uv.grad
    assert torch.allclose(grads["native"], grads["reference"], rtol=1e-6, atol=1e-9)


@requires_cuda
@pytest.mark.parametrize("C", [6, 8])
def test_cuda_schur_terms_match_the_cpu(C):
    from scenegrad.render.backend import native_module

    args = _schur_inputs(C, n_points=300, n_cams=20, seed=C)
    cpu = native_module().ba_schur(*args)
    cuda = native_module().ba_schur(*_schur_inputs(C, n_points=300, n_cams=20, seed=C, device="cuda"))
    assert torch.allclose(cuda.cpu(), cpu, rtol=1e-11, atol=1e-9)


@requires_cuda
@pytest.mark.parametrize(("refine", "dist"), [(("focal",), None), (("focal_xy", "principal_point", "k1", "p2"),
                                                                   (0.02, -0.01, 1e-3, -2e-3, 5e-3))])
def test_cuda_linearisation_matches_the_cpu(monkeypatch, refine, dist):
    """The CUDA kernel's normal equations at every linearisation of a CPU solve, against the CPU kernel's."""
    import scenegrad.recon.ba as ba

    cams, X, obs, g = _scene(10, 200, per_point=4, noise=0.3, seed=12, dist=dist, outliers=0.1)
    start, X0 = _perturb(cams, X, g, rot_deg=1.0, trans=0.05, focal=1.02)
    checked, original = [], ba._linearise_native

    def both(st, struct, y, c, exact):
        cpu = original(st, struct, y, c, exact)
        moved = lambda x: x.cuda() if isinstance(x, torch.Tensor) else x  # noqa: E731
        st_cuda = ba._State(*[moved(x) for x in (st.R, st.t, st.X, st.fx, st.fy, st.cx, st.cy, st.dist)])
        struct_cuda = ba._Structure(moved(struct.cam), moved(struct.pt), moved(struct.group), struct.n_cams,
                                    struct.n_points, struct.n_groups, struct.intr_cols, moved(struct.pose_free),
                                    moved(struct.point_free), moved(struct.intr_free), struct.model, struct.loss,
                                    struct.scale, struct.min_depth, backend="native")
        (nq, r, w), (nq_cpu, r_cpu, w_cpu) = original(st_cuda, struct_cuda, y.cuda(), c.cuda(), exact), cpu
        for name in ("U", "V", "W", "g_c", "g_p"):
            a, b = getattr(nq, name).cpu(), getattr(nq_cpu, name)
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-9 * float(b.abs().max())), name
        assert torch.allclose(r.cpu(), r_cpu, rtol=1e-12, atol=1e-9) and torch.allclose(w.cpu(), w_cpu)
        checked.append(exact)
        return cpu

    monkeypatch.setattr(ba, "_linearise_native", both)
    bundle_adjust(start, X0, obs, refine_intrinsics=refine, intrinsic_groups=torch.arange(10) % 3,
                  options=BAOptions(loss="huber", max_iterations=8, backend="native"))
    assert len(checked) >= 3
