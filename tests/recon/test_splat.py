"""The 3DGS trainer (scenegrad.recon.splat): schedules, densification bookkeeping, checkpoints, and a
short training run on a synthetic torus with exact cameras.

Training runs through :func:`scenegrad.render.gaussians.rasterize_gaussians` (``backend=None``).
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from scenegrad.datasets.generate import synthetic_scene
from scenegrad.recon import splat
from scenegrad.recon.metrics import psnr
from scenegrad.recon.splat import (
    GaussianModel,
    SplatConfig,
    densify_and_prune,
    exponential_lr,
    random_frustum_points,
    render_splats,
    render_video,
    reset_opacity,
    scene_extent,
    train,
)
from scenegrad.render.rotations import quat_to_matrix


@pytest.fixture(scope="module")
def torus():
    return synthetic_scene("torus", path="orbit", count=16, size=(64, 48))


def _small_config(**kw) -> SplatConfig:
    base = dict(name="test", iterations=300, max_side=None, sh_degree=1, sh_degree_interval=100,
                densify_from=50, densify_until=200, densify_every=50, opacity_reset_every=10_000,
                background=(1.0, 1.0, 1.0), checkpoint_every=None, max_gaussians=6000)
    base.update(kw)
    return SplatConfig(**base)


# ----------------------------------------------------------------------------------------------
# Configuration and schedules
# ----------------------------------------------------------------------------------------------


def test_default_preset_is_3dgs():
    c = SplatConfig.default()
    assert (c.iterations, c.means_lr_init, c.means_lr_final, c.sh0_lr, c.shN_lr) == (30_000, 1.6e-4, 1.6e-6, 2.5e-3,
                                                                                      2.5e-3 / 20)
    assert (c.opacities_lr, c.scales_lr, c.quats_lr, c.ssim_lambda) == (0.05, 5e-3, 1e-3, 0.2)
    assert (c.densify_from, c.densify_until, c.densify_every, c.grad_threshold) == (500, 15_000, 100, 2e-4)
    assert (c.opacity_reset_every, c.prune_opacity, c.percent_dense, c.sh_degree_interval) == (3000, 0.005, 0.01, 1000)
    f = SplatConfig.fast()
    assert f.iterations < c.iterations and f.sh_degree <= 2 and f.max_gaussians is not None
    assert f.densify_until <= 0.6 * f.iterations
    s = c.scaled(6000)
    assert (s.iterations, s.densify_until, s.opacity_reset_every, s.densify_every) == (6000, 3000, 600, 50)
    assert c.scaled(3000).opacity_reset_every is None  # 300 iterations could not recover from a reset


def test_exponential_lr():
    assert exponential_lr(0, 1e-2, 1e-4, 100) == pytest.approx(1e-2)
    assert exponential_lr(50, 1e-2, 1e-4, 100) == pytest.approx(1e-3)
    assert exponential_lr(100, 1e-2, 1e-4, 100) == pytest.approx(1e-4)
    assert exponential_lr(500, 1e-2, 1e-4, 100) == pytest.approx(1e-4)


def test_extent_and_random_init(torus):
    cams = torus.cameras
    c = cams.centers.double()
    assert scene_extent(cams) == pytest.approx(1.1 * float((c - c.mean(0)).norm(dim=-1).max()))
    pts = random_frustum_points(cams, 500, torch.Generator().manual_seed(0))
    assert pts.xyz.shape == (500, 3) and pts.rgb.shape == (500, 3)
    from scenegrad.render.cameras import project

    uv, depth = project(cams.to(dtype=torch.float64), pts.xyz.double())
    inside = (depth > 0) & (uv[..., 0] >= 0) & (uv[..., 0] <= 64) & (uv[..., 1] >= 0) & (uv[..., 1] <= 48)
    assert bool((inside.sum(0) >= math.ceil(0.25 * len(cams))).all())


# ----------------------------------------------------------------------------------------------
# Densification on hand-built states
# ----------------------------------------------------------------------------------------------


def _hand_model() -> GaussianModel:
    """Four Gaussians: 0 small + large gradient (clone), 1 large + large gradient (split),
    2 transparent (prune), 3 small gradient (kept as is)."""
    n = 4
    quats = torch.tensor([[1.0, 0, 0, 0]] * n)
    quats[1] = torch.tensor([0.9, 0.1, -0.3, 0.2])
    params = {
        "means": torch.arange(n * 3, dtype=torch.float32).view(n, 3),
        "quats": quats,
        "log_scales": torch.tensor([0.001, 0.5, 0.001, 0.001]).log()[:, None].repeat(1, 3),
        "opacity_logits": torch.tensor([0.5, 0.5, 0.001, 0.5]).logit(),
        "sh0": torch.arange(n, dtype=torch.float32).view(n, 1, 1).repeat(1, 1, 3),
        "shN": torch.zeros(n, 3, 3),
    }
    params["log_scales"][1] = torch.tensor([0.5, 0.2, 0.1]).log()
    model = GaussianModel(params, dict.fromkeys(splat.PARAM_NAMES, 1e-3))
    # one Adam step with row-identifiable gradients so every row has its own moments
    for p in model.params.values():
        p.grad = (torch.arange(n, dtype=torch.float32) + 1).view(n, *([1] * (p.dim() - 1))).expand_as(p).clone()
    model.optimizer.step()
    model.grad_accum = torch.tensor([1e-2, 1e-2, 1e-2, 1e-5]) * 3
    model.grad_count = torch.tensor([3, 3, 3, 3], dtype=torch.int32)
    return model


def _moments(model: GaussianModel, name: str) -> torch.Tensor:
    return model.optimizer.state[model.params[name]]["exp_avg"]


def test_clone_split_prune_and_optimizer_rows():
    model = _hand_model()
    cfg = SplatConfig(percent_dense=0.01, grad_threshold=2e-4, prune_opacity=0.005)
    before = {k: v.detach().clone() for k, v in model.params.items()}
    m_before = _moments(model, "sh0").clone()
    rec = densify_and_prune(model, cfg, extent=1.0, prune_big=False, generator=torch.Generator().manual_seed(0))
    # 0 cloned (1 new), 1 split (2 children, parent removed), 2 pruned (and its clone? no: large scale => no)
    assert (rec.cloned, rec.split) == (2, 1)  # 0 and the transparent 2 are small with large gradients
    # survivors: originals 0 and 3 (2 is transparent, 1 was split), clone of 0, (clone of 2 is pruned), 2 children
    assert rec.num_gaussians == model.num == 5
    sh = [round(v) for v in model.params["sh0"].detach()[:, 0, 0].tolist()]  # (moved 1e-3 by the Adam step)
    assert sh == [0.0, 3.0, 0.0, 1.0, 1.0]  # [orig 0, orig 3, clone of 0, child of 1, child of 1]
    assert rec.pruned == 2  # the transparent original and its clone
    # clones are exact copies
    assert torch.equal(model.params["means"][2], before["means"][0])
    # split children: scales / 1.6, means drawn from the parent Gaussian (within 5 sigma)
    for row in (3, 4):
        assert torch.allclose(model.params["log_scales"][row].exp(), before["log_scales"][1].exp() / 1.6)
        R = quat_to_matrix(before["quats"][1])
        local = (R.T @ (model.params["means"][row] - before["means"][1]).detach()) / before["log_scales"][1].exp()
        assert bool((local.abs() < 5).all()) and float(local.abs().max()) > 0
    # Adam moments: survivors keep theirs, new rows start at zero, pruned rows are gone
    m_after = _moments(model, "sh0")
    assert m_after.shape[0] == model.num
    assert torch.equal(m_after[0], m_before[0]) and torch.equal(m_after[1], m_before[3])
    assert not m_after[2:].any()
    for name in splat.PARAM_NAMES:
        state = model.optimizer.state[model.params[name]]
        assert state["exp_avg"].shape == model.params[name].shape == state["exp_avg_sq"].shape
    assert len(model.optimizer.state) == len(splat.PARAM_NAMES)
    # statistics reset
    assert model.grad_accum.shape == (5,) and not model.grad_accum.any() and not model.grad_count.any()


def test_prune_big_and_cap():
    model = _hand_model()
    model.max_radii = torch.tensor([0.0, 0.0, 0.0, 50.0])  # Gaussian 3 covers a large screen area
    cfg = SplatConfig(prune_screen_radius=20.0, prune_world_scale=0.1, grad_threshold=1.0)  # no densification
    rec = densify_and_prune(model, cfg, extent=1.0, prune_big=True)
    # 1 is too big in the world (0.5 > 0.1), 2 transparent, 3 too big on screen
    assert (rec.cloned, rec.split, rec.pruned, model.num) == (0, 0, 3, 1)
    model = _hand_model()
    cfg = SplatConfig(max_gaussians=5)  # room for one more: the largest gradient only (a tie: any one)
    rec = densify_and_prune(model, cfg, extent=1.0, prune_big=False)
    assert rec.cloned + rec.split == 1


def test_opacity_reset_zeroes_moments():
    model = _hand_model()
    reset_opacity(model, 0.01)
    o = model.params["opacity_logits"].detach().sigmoid()
    assert torch.allclose(o, torch.tensor([0.01, 0.01, 0.001, 0.01]), atol=1e-6)
    assert not _moments(model, "opacity_logits").any()
    assert _moments(model, "means").any()


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def test_training_reaches_psnr(torus, tmp_path):
    cfg = _small_config(iterations=300, checkpoint_every=None)
    result = train(torus, torus.points, cfg, out_dir=tmp_path, eval_every=100, progress=False)
    first, last = result.history[0], result.history[-1]
    print([(r.iteration, round(r.loss, 4), round(r.psnr, 2), r.num_gaussians) for r in result.history])
    assert result.test_indices == [0, 8] and len(result.train_indices) == 14
    assert last.iteration == 300 and last.psnr is not None
    assert last.psnr > 20.0  # measured: see the report in the test log
    assert last.loss < 0.6 * first.loss
    assert result.densify_log and any(r.cloned + r.split > 0 for r in result.densify_log)
    assert result.num_gaussians != len(torus.points)
    assert result.sh_degree == 1
    assert (tmp_path / "point_cloud.ply").is_file() and result.ply_path == tmp_path / "point_cloud.ply"
    assert (tmp_path / "metrics.json").is_file()
    images = render_splats(result.splats, torus.cameras[[0, 8]], background=(1.0, 1.0, 1.0))
    assert images.shape == (2, 48, 64, 3)
    assert float(psnr(images[0], torus.frames[0].image())) > 18.0  # a training-size render of a held-out view
    video = render_video(result.splats, torus.cameras[:4], tmp_path / "orbit.mp4", fps=4)
    assert video.is_file() and video.stat().st_size > 0
    from scenegrad.datasets.splats import load_splats_ply

    back = load_splats_ply(tmp_path / "point_cloud.ply")
    assert back.means.shape == result.splats.means.shape
    assert torch.allclose(back.means.float(), result.splats.means.float())


def test_checkpoint_resume_reproduces(torus, tmp_path):
    cfg = _small_config(iterations=24, densify_from=5, densify_until=20, densify_every=5, checkpoint_every=12,
                        sh_degree_interval=8)
    pts = random_frustum_points(torus.cameras, 300, torch.Generator().manual_seed(1))
    # the pure-torch renderer: deterministic (the native CPU kernel's backward may sum in thread order)
    a = train(torus, pts, cfg, out_dir=tmp_path / "a", eval_every=12, progress=False, backend="reference")
    assert (tmp_path / "a" / "checkpoints" / "ckpt_0000012.pt").is_file()
    assert any(r.cloned + r.split > 0 for r in a.densify_log if r.iteration > 12)  # densification after the resume
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "a" / "checkpoints" / "ckpt_0000012.pt", tmp_path / "b" / "checkpoints")
    b = train(torus, None, cfg, out_dir=tmp_path / "b", eval_every=12, progress=False, resume=True, backend="reference")
    assert b.iterations == a.iterations == 24
    assert b.num_gaussians == a.num_gaussians
    for name in splat.PARAM_NAMES:
        assert torch.allclose(getattr(a.splats, name), getattr(b.splats, name), atol=1e-6), name
    assert [r.iteration for r in b.history] == [12, 24]
    assert b.history[-1].psnr == pytest.approx(a.history[-1].psnr, abs=1e-4)


def test_random_init_and_max_seconds(torus):
    cfg = _small_config(iterations=1000, init_random_count=300, max_seconds=0.5, test_every=None)
    result = train(torus, None, cfg, progress=False)
    assert 0 < result.iterations < 1000
    assert result.test_indices == [] and result.history[-1].psnr is None
