"""The reconstruction's device (issue 8): ``cpu`` / ``cuda`` / ``cuda:N`` checked up front with a clear error,
``device="cpu"`` passed explicitly through the trainer and FlowMap, checkpoints on the CPU, and every tensor
factory of the device-following modules naming its device. The ``cuda`` tests run the trainer, FlowMap and
``scenegrad reconstruct`` (tiny preset) on a GPU and skip without one."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scenegrad.datasets.generate import synthetic_scene
from scenegrad.recon import flowmap, splat
from scenegrad.recon.device import resolve_device
from scenegrad.recon.reconstruct import ReconstructConfig, run
from scenegrad.recon.splat import SplatConfig, train

from ..conftest import REPO, requires_cuda

NO_CUDA = "CUDA is not available: torch.cuda.is_available() is False"


@pytest.fixture
def no_cuda(monkeypatch):
    """A machine without CUDA, also where there is one."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def torus():
    return synthetic_scene("torus", path="orbit", count=10, size=(48, 36), points=400)


def _tiny_splat(**kw) -> SplatConfig:
    base = dict(name="test", iterations=12, max_side=None, sh_degree=1, sh_degree_interval=4, densify_from=3,
                densify_until=10, densify_every=3, opacity_reset_every=None, background=(1.0, 1.0, 1.0),
                checkpoint_every=6, max_gaussians=2000)
    base.update(kw)
    return SplatConfig(**base)


def _tiny_flowmap(**kw) -> flowmap.FlowMapConfig:
    return flowmap.FlowMapConfig.fast(steps=12, refine_steps=6, focal_search_steps=6, progress=False, **kw)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def test_resolve_device_accepts_cpu_and_names_bad_devices(no_cuda):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("tpu", "cpu:1", "cuda:x", "", "gpu"):
        with pytest.raises(ValueError, match="use cpu, cuda or cuda:N"):
            resolve_device(bad)
    for name in ("cuda", "cuda:0", "CUDA:1"):
        with pytest.raises(ValueError, match="use --device cpu") as error:
            resolve_device(name)
        assert NO_CUDA in str(error.value)


def test_cuda_index_beyond_the_devices_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"sees 2 CUDA device\(s\) \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


def test_reconstruct_refuses_cuda_before_any_work(no_cuda, tmp_path):
    out = tmp_path / "out"
    clip = tmp_path / "clip.mp4"  # not even there: the device is checked first
    with pytest.raises(ValueError, match="CUDA is not available"):
        run(clip, out, ReconstructConfig(preset="tiny", device="cuda", progress=False))
    assert not out.exists()


def test_cli_reports_cuda_unavailable(no_cuda, tmp_path, capsys):
    from scenegrad.apps.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["reconstruct", str(tmp_path / "clip.mp4"), "--out", str(tmp_path / "o"), "--preset", "tiny",
              "--device", "cuda"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("scenegrad reconstruct: ") and NO_CUDA in err and "--device cpu" in err
    with pytest.raises(SystemExit):  # no input: refused before the sample clip is rendered into the folder
        main(["reconstruct", "--out", str(tmp_path / "sample"), "--preset", "tiny", "--device", "cuda"])
    assert NO_CUDA in capsys.readouterr().err and not (tmp_path / "sample").exists()
    with pytest.raises(SystemExit) as exit_info:  # scenegrad render too, before it looks for the folder
        main(["render", str(tmp_path / "run"), "--device", "cuda"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("scenegrad render: device 'cuda'")


def test_trainer_and_flowmap_refuse_cuda(no_cuda, torus):
    with pytest.raises(ValueError, match="CUDA is not available"):
        train(torus, torus.points, _tiny_splat(device="cuda"), progress=False)
    frames = [f.image() for f in torus.frames]
    with pytest.raises(ValueError, match="CUDA is not available"):
        flowmap.fit(frames, _tiny_flowmap(device="cuda:0"))


# ----------------------------------------------------------------------------------------------
# device="cpu" explicitly
# ----------------------------------------------------------------------------------------------


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def test_explicit_cpu_trains_the_same_and_checkpoints_hold_cpu_tensors(torus, tmp_path, one_thread):
    a = train(torus, torus.points, _tiny_splat(), out_dir=tmp_path / "a", progress=False, backend="reference")
    b = train(torus, torus.points, _tiny_splat(device="cpu"), out_dir=tmp_path / "b", progress=False,
              backend="reference")
    for name in splat.PARAM_NAMES:
        assert getattr(b.splats, name).device.type == "cpu"
        torch.testing.assert_close(getattr(a.splats, name), getattr(b.splats, name), rtol=0, atol=0)
    state = torch.load(tmp_path / "b" / "checkpoints" / "ckpt_0000012.pt", weights_only=False)
    assert state["config"]["device"] == "cpu"
    saved = list(_tensors(state))
    assert len(saved) > 10 and all(t.device.type == "cpu" for t in saved)
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["config"]["device"] == "cpu"


def test_explicit_cpu_flowmap_matches_the_default(torus, one_thread):
    frames = [f.image() for f in torus.frames]
    a = flowmap.fit(frames, _tiny_flowmap(track_refine=False))
    b = flowmap.fit(frames, _tiny_flowmap(track_refine=False, device="cpu"))
    assert a.loss == b.loss
    np.testing.assert_array_equal(a.focal_history, b.focal_history)  # NaN during the focal search
    assert b.depths.device.type == "cpu" and b.cameras.device.type == "cpu"
    torch.testing.assert_close(a.depths, b.depths, rtol=0, atol=0)


# Modules whose tensors follow the configured device: every tensor they create names its device (the
# configured one, another tensor's, or "cpu" on purpose: the CPU generator's draws, CPU-side bookkeeping).
# A factory without ``device=`` lands on torch's default device, the CPU, and breaks a CUDA run at the first
# op that mixes it with device tensors: this catches that mix-up without a GPU.
FOLLOWING_DEVICE = ("recon/splat.py", "recon/densify.py", "recon/metrics.py", "recon/flowmap.py")
FACTORIES = {"zeros", "ones", "empty", "full", "tensor", "as_tensor", "arange", "linspace", "logspace", "eye",
             "rand", "randn", "randint", "randperm", "normal", "Generator"}


def test_device_following_modules_name_the_device_of_every_new_tensor():
    missing = []
    for rel in FOLLOWING_DEVICE:
        tree = ast.parse((REPO / rel).read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FACTORIES
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                    and not any(k.arg == "device" for k in node.keywords)):
                missing.append(f"{rel}:{node.lineno}: torch.{node.func.attr}(...) without device=")
    assert not missing, "\n".join(missing)


# ----------------------------------------------------------------------------------------------
# On a GPU (skipped without one)
# ----------------------------------------------------------------------------------------------


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


@requires_cuda
def test_trainer_on_cuda_and_its_checkpoint_resumes_on_cpu(tmp_path):
    scene = synthetic_scene("torus", path="orbit", count=16, size=(64, 48))
    cfg = _tiny_splat(iterations=300, sh_degree_interval=100, densify_from=50, densify_until=200, densify_every=50,
                      checkpoint_every=150, max_gaussians=6000, device="cuda")
    result = train(scene, scene.points, cfg, out_dir=tmp_path / "gpu", eval_every=100, progress=False)
    assert all(getattr(result.splats, n).device.type == "cpu" and _finite(getattr(result.splats, n))
               for n in splat.PARAM_NAMES)
    assert result.final_psnr is not None and result.final_psnr > 20.0  # the CPU test's bar for this run
    assert result.densify_log and (tmp_path / "gpu" / "point_cloud.ply").is_file()
    images = splat.render_splats(result.splats, scene.cameras[[0, 8]], background=(1.0, 1.0, 1.0), device="cuda")
    assert images.device.type == "cuda" and _finite(images)
    ckpt = tmp_path / "gpu" / "checkpoints" / "ckpt_0000150.pt"
    assert all(t.device.type == "cpu" for t in _tensors(torch.load(ckpt, weights_only=False)))
    (tmp_path / "cpu" / "checkpoints").mkdir(parents=True)
    (tmp_path / "cpu" / "checkpoints" / ckpt.name).write_bytes(ckpt.read_bytes())
    resumed = train(scene, None, dataclasses.replace(cfg, device="cpu"), out_dir=tmp_path / "cpu",
                    eval_every=100, progress=False, resume=True)
    assert resumed.iterations == 300 and resumed.final_psnr is not None and resumed.final_psnr > 20.0


@requires_cuda
def test_flowmap_on_cuda_agrees_with_cpu():
    frames = [f.image() for f in synthetic_scene("room", path="walk", count=8, size=(96, 72)).frames]
    cfg = flowmap.FlowMapConfig.fast(steps=60, refine_steps=30, focal_search_steps=30, progress=False,
                                     track_refine=False)
    cpu = flowmap.fit(frames, cfg)
    gpu = flowmap.fit(frames, dataclasses.replace(cfg, device="cuda"))
    assert gpu.depths.device.type == "cpu" and gpu.cameras.device.type == "cpu"
    assert _finite(gpu.depths) and _finite(gpu.cameras.R) and _finite(gpu.cameras.t)
    assert np.isfinite(gpu.loss).all() and len(gpu.loss) == len(cpu.loss)
    # the same samples (one CPU generator); float differences grow over the steps, not to another solution
    assert abs(float(gpu.cameras.fx[0]) / float(cpu.cameras.fx[0]) - 1) < 0.1
    assert gpu.loss[-1] < 2 * cpu.loss[-1] + 0.05


@requires_cuda
def test_reconstruct_tiny_on_cuda(tmp_path):
    from scenegrad.datasets.meshes import load_mesh
    from scenegrad.datasets.splats import load_splats_ply
    from scenegrad.datasets.video import probe_video, write_video

    scene = synthetic_scene("room", path="walk", count=12, size=(128, 96))
    clip = write_video(tmp_path / "walk.mp4", (f.image() for f in scene.frames), fps=10)
    out = tmp_path / "out"
    report = run(clip, out, ReconstructConfig(preset="tiny", device="cuda", progress=False))
    assert report["config"]["device"] == "cuda"
    assert all(report["stages"][s]["done"] for s in ("frames", "poses", "splats", "mesh", "render"))
    splats = load_splats_ply(out / "splats.ply")
    assert len(splats) > 0 and all(_finite(getattr(splats, n)) for n in splat.PARAM_NAMES)
    mesh = load_mesh(out / "mesh.ply")
    assert mesh.faces.shape[0] > 100 and _finite(mesh.vertices)
    assert probe_video(out / "renders" / "orbit.mp4").frame_count == report["stages"]["render"]["frames"]
    assert all(_finite(torch.from_numpy(np.load(p))) for p in Path(out / "depth").glob("*.npy"))
    psnr = report["stages"]["splats"]["heldout_psnr"]
    assert psnr is not None and np.isfinite(psnr) and psnr > 18.0  # the CPU run of this clip reaches > 20 dB
