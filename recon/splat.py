"""3D Gaussian splatting training (Kerbl et al. 2023) through :func:`scenegrad.render.gaussians.rasterize_gaussians`.

:func:`train` fits a :class:`~scenegrad.datasets.splats.Splats` to the posed frames of a
:class:`~scenegrad.datasets.scene.Scene` with the original 3DGS recipe, all of it plain torch
around the renderer:

- **Parameters**: the fields of :class:`~scenegrad.datasets.splats.Splats` (raw, as stored in 3DGS
  PLY files): ``means [N, 3]``, ``quats [N, 4]`` (w, x, y, z, unnormalised), ``log_scales [N, 3]``,
  ``opacity_logits [N]``, ``sh0 [N, 1, 3]`` and ``shN [N, K-1, 3]`` spherical-harmonics coefficients,
  ``K = (sh_degree + 1)²``. The renderer gets ``exp(log_scales)``, ``sigmoid(opacity_logits)``,
  normalised quaternions and ``cat(sh0, shN)`` with the active SH degree (raised by one every
  ``sh_degree_interval`` iterations).
- **Optimiser**: Adam (eps 1e-15), one parameter group per tensor with 3DGS's learning rates; the
  position rate decays exponentially from ``means_lr_init`` to ``means_lr_final`` (both multiplied
  by the scene extent) over ``iterations``.
- **Loss**: ``(1 - ssim_lambda) L1 + ssim_lambda (1 - SSIM)`` (:mod:`scenegrad.recon.metrics`), one
  view per step, views drawn as shuffled epochs.
- **Densification** (:func:`densify_and_prune`), every ``densify_every`` iterations in
  ``(densify_from, densify_until)``: the densification statistic of a Gaussian is the mean, over the
  steps where it was visible (``radii > 0``), of ``‖∂L/∂means2d · (W/2, H/2)‖`` (the view-space
  gradient in NDC units, what 3DGS's CUDA kernel reports). Above ``grad_threshold``, Gaussians whose
  largest scale is ``<= percent_dense · extent`` are cloned; larger ones are split into two, sampled
  from the Gaussian itself, with scales divided by 1.6. Gaussians with opacity ``< prune_opacity``
  are pruned; after the first opacity reset also those larger than ``prune_world_scale · extent`` in
  the world or whose screen radius reached ``prune_screen_radius`` pixels since the last
  densification. (The original code resets its screen radii before testing them, which disables
  that test; here it is applied as the paper describes; set ``prune_screen_radius=None`` for 3DGS's
  behaviour.) Every ``opacity_reset_every`` iterations opacities become ``min(opacity, 0.01)``
  (``None``: never, and then big Gaussians are never pruned either).
  New rows get zero Adam moments and pruned rows lose theirs, as 3DGS's ``cat_tensors_to_optimizer``
  / ``_prune_optimizer`` do. ``max_gaussians`` caps the count: when a densification would exceed it,
  only the candidates with the largest gradients are densified.
- **Scene extent**: 1.1 x the largest distance of a training camera centre from their mean (3DGS's
  ``getNerfppNorm``).
- **Initialisation**: from ``init_points`` (or ``scene.points``) with
  :func:`~scenegrad.datasets.splats.splats_from_points`, as 3DGS does (colours to SH band 0,
  isotropic scales = RMS distance to the 3 nearest neighbours, identity rotations, opacity
  ``init_opacity``). Without points, ``init_random_count`` points are drawn uniformly in a cube around
  the point nearest to all optical axes (half-size = the extent) and kept where at least
  ``max(2, 25 %)`` of the training cameras see them (the frustum intersection), with grey colours;
  this is the depth-free stand-in until scenegrad has SfM.
- **Data**: every frame's image is loaded once and cached as a tensor, downscaled with area
  interpolation to ``1/downscale`` (and at most ``max_side`` pixels on the longer side) with the
  cameras scaled by :func:`scenegrad.render.cameras.resize`. RGBA images are composited over the
  background of the step (so ``random_background`` learns transparency). Every ``test_every``-th
  frame (index ``% test_every == 0``, 3DGS's ``llffhold``) is held out for evaluation (PSNR/SSIM over
  the background ``background``). Distorted cameras are undistorted first with
  :func:`scenegrad.datasets.undistort.undistort_scene` (``alpha="valid"``: no invalid pixels). Masks
  are not used.
- **Device** (``config.device``: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``, checked by
  :func:`scenegrad.recon.device.resolve_device`): the parameters, their Adam state, the densification
  statistics, the cached views and the background live there, and every step, densification and
  evaluation runs there (the renderer dispatches to its kernel by the tensors' device). Random draws
  (view order, random backgrounds, split samples) come from one seeded CPU generator and are moved, so a
  seed gives the same draws on any device. Checkpoints are saved as CPU tensors and loaded onto the
  configured device; the returned splats, the PLY and the video come back to the CPU.
- **Output** (``out_dir``): checkpoints ``checkpoints/ckpt_<iteration>.pt`` every
  ``checkpoint_every`` iterations (parameters, Adam state, densification statistics, iteration, the
  sampler's RNG state and the view queue, so ``resume=True`` continues the same run: bit-for-bit
  with the deterministic pure-torch renderer, ``backend="reference"``; the native CPU kernel may sum
  gradients in thread order), ``point_cloud.ply`` (:func:`~scenegrad.datasets.splats.save_splats_ply`), ``metrics.json``
  (the evaluation history) and, with ``video=True``, ``video.mp4`` rendered along the training
  cameras (:func:`render_video`).

>>> SplatConfig.fast().iterations, SplatConfig.default().iterations
(3000, 30000)
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from scenegrad.datasets.scene import Points, Scene
from scenegrad.datasets.splats import Splats, save_splats_ply, splats_from_points
from scenegrad.recon.densify import DensifyRecord, GaussianModel, densify_and_prune, reset_opacity
from scenegrad.recon.device import resolve_device
from scenegrad.recon.metrics import psnr, ssim
from scenegrad.recon.splat_config import PARAM_NAMES, SplatConfig
from scenegrad.render.cameras import Cameras, resize

__all__ = [
    "SplatConfig",
    "EvalRecord",
    "DensifyRecord",
    "SplatResult",
    "GaussianModel",
    "train",
    "densify_and_prune",
    "reset_opacity",
    "render_splats",
    "render_video",
    "scene_extent",
    "random_frustum_points",
    "exponential_lr",
]

# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


@dataclass
class EvalRecord:
    """One evaluation: mean held-out PSNR (dB) / SSIM (``None`` without held-out frames), the
    training loss averaged since the previous record, wall-clock seconds of training so far."""

    iteration: int
    seconds: float
    loss: float
    psnr: float | None
    ssim: float | None
    num_gaussians: int


@dataclass
class SplatResult:
    """What :func:`train` returns.

    Fields:
        splats: the trained :class:`~scenegrad.datasets.splats.Splats` (raw parameters, CPU, whatever
            ``config.device`` was).
        history: evaluations in order (the last one after the final iteration).
        densify_log: every densification step.
        iterations: the last iteration run; ``seconds``: training wall-clock time (without evaluation).
        sh_degree: the active SH degree at the end; ``extent``: the scene extent used.
        train_indices / test_indices: frame indices used for training / held out.
        lpips: always ``None`` (no offline LPIPS weights; see :func:`scenegrad.recon.metrics.lpips`).
        ply_path: ``out_dir/point_cloud.ply`` when written.
    """

    splats: Splats
    history: list[EvalRecord]
    densify_log: list[DensifyRecord]
    iterations: int
    seconds: float
    sh_degree: int
    extent: float
    train_indices: list[int]
    test_indices: list[int]
    lpips: float | None = None
    ply_path: Path | None = None

    @property
    def num_gaussians(self) -> int:
        return int(self.splats.means.shape[0])

    @property
    def final_psnr(self) -> float | None:
        return self.history[-1].psnr if self.history else None

    @property
    def final_ssim(self) -> float | None:
        return self.history[-1].ssim if self.history else None


# ----------------------------------------------------------------------------------------------
# Schedules, extent, initialisation
# ----------------------------------------------------------------------------------------------


def exponential_lr(step: int, lr_init: float, lr_final: float, max_steps: int) -> float:
    """3DGS's ``get_expon_lr_func`` (without delay): log-linear from ``lr_init`` at 0 to ``lr_final``
    at ``max_steps`` (held after)."""
    if lr_init == lr_final:
        return lr_init
    t = min(max(step / max(max_steps, 1), 0.0), 1.0)
    return math.exp(math.log(lr_init) * (1 - t) + math.log(lr_final) * t)


def scene_extent(cameras: Cameras) -> float:
    """3DGS's ``getNerfppNorm`` radius: 1.1 x the largest distance of a camera centre from their mean
    (a single camera gives 1.1 x 1e-2 ... so at least 1e-2 is used)."""
    c = cameras.centers.double()
    radius = float((c - c.mean(0)).norm(dim=-1).max()) if len(c) else 0.0
    return 1.1 * max(radius, 1e-2)


def _look_at_point(cameras: Cameras) -> Tensor:
    """The point nearest (least squares) to every optical axis; ``[3]`` float64."""
    c = cameras.centers.double()
    d = cameras.R.double()[:, 2, :]  # camera +Z in world coordinates
    A = torch.eye(3, dtype=torch.float64, device=c.device)[None] - d[:, :, None] * d[:, None, :]
    lhs, rhs = A.sum(0), (A @ c[:, :, None]).sum(0)[:, 0]
    if len(c) < 2 or torch.linalg.cond(lhs) > 1e6:  # (nearly) parallel axes: forward-facing capture
        return c.mean(0) + d.mean(0) * scene_extent(cameras)
    return torch.linalg.solve(lhs, rhs)


def random_frustum_points(cameras: Cameras, count: int, generator: torch.Generator | None = None,
                          min_views: float = 0.25) -> Points:
    """``count`` points drawn uniformly in a cube around the point nearest to every optical axis
    (half-size: :func:`scene_extent`), keeping those that at least ``max(2, min_views x #cameras)``
    cameras see in front of them and inside their image (the frustum intersection); grey colours
    ``0.5``. Falls back to the best-covered candidates when too few qualify. Returns float32 ``Points``."""
    from scenegrad.render.cameras import project

    cams = cameras.to(dtype=torch.float64)
    centre, half = _look_at_point(cams), scene_extent(cams)
    need = min(len(cams), max(2, math.ceil(min_views * len(cams))))
    kept, best = [], []
    for _ in range(20):
        cand = centre + (torch.rand(max(4 * count, 1024), 3, generator=generator, dtype=torch.float64,
                                    device=centre.device) * 2 - 1) * half
        uv, depth = project(cams, cand)
        inside = (depth > 0) & (uv[..., 0] >= 0) & (uv[..., 1] >= 0)
        inside &= (uv[..., 0] <= cams.width[:, None]) & (uv[..., 1] <= cams.height[:, None])
        views = inside.sum(0)
        kept.append(cand[views >= need])
        best.append((cand, views))
        if sum(len(k) for k in kept) >= count:
            break
    xyz = torch.cat(kept)[:count]
    if len(xyz) < count:  # not enough inside the intersection: the most-seen candidates
        cand = torch.cat([b[0] for b in best])
        views = torch.cat([b[1] for b in best])
        xyz = cand[views.argsort(descending=True)[:count]]
    return Points(xyz=xyz.float(), rgb=torch.full((len(xyz), 3), 0.5, device=xyz.device))


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _rasterize(*args, **kwargs):
    """The renderer (one indirection so tests can substitute a dense reference)."""
    from scenegrad.render.gaussians.render import rasterize_gaussians

    return rasterize_gaussians(*args, **kwargs)


def _render(inputs: dict[str, Tensor], cameras: Cameras, sh_degree: int, background: Tensor | None,
            *, rasterize_mode: str = "classic", near_plane: float = 0.01, render_mode: str = "RGB",
            backend: str | None = None):
    """Render ``inputs`` (on one device) from ``cameras`` (one image size, any device: moved to the inputs')."""
    device = inputs["means"].device
    return _render_at(inputs, cameras.viewmats.float().to(device), cameras.K.float().to(device),
                      int(cameras.width[0]), int(cameras.height[0]), sh_degree, background,
                      rasterize_mode=rasterize_mode, near_plane=near_plane, render_mode=render_mode, backend=backend)


def _render_at(inputs: dict[str, Tensor], viewmats: Tensor, Ks: Tensor, width: int, height: int, sh_degree: int,
               background: Tensor | None, *, rasterize_mode: str = "classic", near_plane: float = 0.01,
               render_mode: str = "RGB", backend: str | None = None):
    """:func:`_render` with the cameras as ``viewmats [C, 4, 4]`` and ``Ks [C, 3, 3]`` float32 already on the
    inputs' device (the training step: nothing crosses devices)."""
    return _rasterize(
        inputs["means"], inputs["quats"], inputs["scales"], inputs["opacities"], inputs["colors"],
        viewmats, Ks, width, height, near_plane=near_plane, sh_degree=sh_degree,
        backgrounds=None if background is None else background.expand(viewmats.shape[0], 3),
        render_mode=render_mode, rasterize_mode=rasterize_mode, backend=backend,
    )


def _splats_inputs(splats: Splats, sh_degree: int | None,
                   device: torch.device | str | None = None) -> tuple[dict[str, Tensor], int]:
    """Renderer inputs of ``splats`` on ``device`` (default: the splats' own) and the SH degree used."""
    d = splats.sh_degree if sh_degree is None else min(sh_degree, splats.sh_degree)
    device = splats.means.device if device is None else resolve_device(device)
    return {
        "means": splats.means.float().to(device),
        "quats": splats.unit_quats.float().to(device),
        "scales": splats.scales.float().to(device),
        "opacities": splats.opacities.float().to(device),
        "colors": splats.sh_coeffs.float()[:, : (d + 1) ** 2].to(device),
    }, d


@torch.no_grad()
def render_splats(splats: Splats, cameras: Cameras, *, sh_degree: int | None = None,
                  background: tuple[float, float, float] | Tensor = (0.0, 0.0, 0.0),
                  rasterize_mode: str = "classic", backend: str | None = None,
                  device: torch.device | str | None = None) -> Tensor:
    """Render trained :class:`~scenegrad.datasets.splats.Splats` from each camera in turn (all of one
    image size) over ``background``: ``[C, H, W, 3]`` in ``[0, 1]``, no gradients, on ``device``
    (default: the splats' device; the splats and cameras are copied there). ``sh_degree`` defaults to
    the splats' own."""
    inputs, d = _splats_inputs(splats, sh_degree, device)
    bg = torch.as_tensor(background, dtype=torch.float32, device=inputs["means"].device)
    images = [_render(inputs, cameras[i], d, bg, rasterize_mode=rasterize_mode, backend=backend).colors[0, ..., :3]
              for i in range(len(cameras))]
    return torch.stack(images).clamp(0, 1)


def render_video(splats: Splats, cameras: Cameras, path: str | Path, *, fps: float = 30.0,
                 background: tuple[float, float, float] = (0.0, 0.0, 0.0), sh_degree: int | None = None,
                 backend: str | None = None, overwrite: bool = True, device: torch.device | str | None = None) -> Path:
    """Render ``splats`` along ``cameras`` (in order; e.g. the training path) and write an H.264 video
    with :func:`scenegrad.datasets.video.write_video`. All cameras must share one image size. The frames
    are rendered on ``device`` (default: the splats' device) and written from the CPU."""
    from scenegrad.datasets.video import write_video

    inputs, d = _splats_inputs(splats, sh_degree, device)
    bg = torch.as_tensor(background, dtype=torch.float32, device=inputs["means"].device)

    def frames():
        for i in range(len(cameras)):
            with torch.no_grad():
                yield _render(inputs, cameras[i], d, bg, backend=backend).colors[0, ..., :3].clamp(0, 1).cpu()

    return write_video(path, frames(), fps, overwrite=overwrite)


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


@dataclass
class _View:
    camera: Cameras  # one camera, resized to the image (CPU)
    image: Tensor  # [H, W, 3 or 4] float32, on the training device
    viewmat: Tensor  # [1, 4, 4] float32, on the training device
    K: Tensor  # [1, 3, 3] float32, on the training device
    ndc: Tensor  # [2] float32 (W / 2, H / 2) on the training device: pixels -> NDC for the densification statistic

    @property
    def width(self) -> int:
        return self.image.shape[1]

    @property
    def height(self) -> int:
        return self.image.shape[0]


def _load_views(scene: Scene, config: SplatConfig, device: torch.device | None = None) -> list[_View]:
    """Every frame, downscaled and cached on ``device`` with its camera's matrices (default: the CPU)."""
    device = torch.device("cpu") if device is None else device
    views = []
    for i, frame in enumerate(scene.frames):
        cam = scene.cameras[i].to(dtype=torch.float32)
        W, H = int(cam.width[0]), int(cam.height[0])
        scale = 1.0 / max(config.downscale, 1e-9)
        if config.max_side is not None:
            scale = min(scale, config.max_side / max(W, H))
        w, h = max(1, round(W * scale)), max(1, round(H * scale))
        img = frame.image().float()
        if img.shape[-1] == 1:
            img = img.expand(-1, -1, 3)
        elif img.shape[-1] == 2:  # grey + alpha
            img = torch.cat([img[..., :1].expand(-1, -1, 3), img[..., 1:]], -1)
        if tuple(img.shape[:2]) != (h, w):
            img = F.interpolate(img.permute(2, 0, 1)[None], size=(h, w), mode="area")[0].permute(1, 2, 0)
        if (w, h) != (W, H):
            cam = resize(cam, (w, h))
        views.append(_View(cam, img.to(device).contiguous(), cam.viewmats.float().to(device),
                           cam.K.float().to(device),
                           torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32, device=device)))
    return views


def _target(view: _View, background: Tensor) -> Tensor:
    img = view.image
    if img.shape[-1] == 4:
        return img[..., :3] * img[..., 3:] + background * (1 - img[..., 3:])
    return img[..., :3]


def _split_indices(n: int, test_every: int | None) -> tuple[list[int], list[int]]:
    if not test_every or n < 2:
        return list(range(n)), []
    test = [i for i in range(n) if i % test_every == 0]
    return [i for i in range(n) if i % test_every != 0], test


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def _lrs(config: SplatConfig, extent: float) -> dict[str, float]:
    return {"means": config.means_lr_init * extent, "quats": config.quats_lr, "log_scales": config.scales_lr,
            "opacity_logits": config.opacities_lr, "sh0": config.sh0_lr, "shN": config.shN_lr}


def _to_splats(model: GaussianModel) -> Splats:
    """The model's parameters as :class:`Splats` on the CPU (copies)."""
    return Splats(**{k: v.detach().to("cpu", copy=True) for k, v in model.params.items()})


def _latest_checkpoint(folder: Path) -> Path | None:
    files = sorted(folder.glob("ckpt_*.pt"))
    return files[-1] if files else None


@torch.no_grad()
def _evaluate(model: GaussianModel, views: list[_View], sh_degree: int, background: Tensor, config: SplatConfig,
              backend: str | None) -> tuple[float | None, float | None]:
    if not views:
        return None, None
    inputs = {k: v.detach() for k, v in model.activated(sh_degree).items()}
    ps, ss = [], []
    for v in views:
        out = _render_at(inputs, v.viewmat, v.K, v.width, v.height, sh_degree, background,
                         rasterize_mode=config.rasterize_mode, near_plane=config.near_plane,
                         backend=backend).colors[0, ..., :3].clamp(0, 1)
        gt = _target(v, background)
        ps.append(float(psnr(out, gt)))
        ss.append(float(ssim(out, gt)))
    return sum(ps) / len(ps), sum(ss) / len(ss)


def train(
    scene: Scene,
    init_points: Points | None = None,
    config: SplatConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    eval_every: int | None = None,
    progress: bool = True,
    resume: bool = False,
    backend: str | None = None,
) -> SplatResult:
    """Train 3D Gaussians on the posed frames of ``scene`` (the recipe: see the module docstring).

    Args:
        scene: frames with cameras (OpenCV, pixels). Distorted cameras are undistorted first.
        init_points: seed points; ``None`` uses ``scene.points`` and, without those, random points in
            the cameras' frustum intersection (:func:`random_frustum_points`).
        config: a :class:`SplatConfig` (default: :meth:`SplatConfig.default`).
        out_dir: where checkpoints, ``point_cloud.ply``, ``metrics.json`` (and ``video.mp4``) go;
            ``None`` writes nothing.
        eval_every: evaluate the held-out frames every this many iterations (default: a tenth of the
            run); the final iteration is always evaluated.
        progress: a tqdm bar with the loss, the last held-out PSNR and the Gaussian count.
        resume: continue from the latest checkpoint in ``out_dir/checkpoints`` (if any).
        backend: passed to :func:`~scenegrad.render.gaussians.rasterize_gaussians`.

    Returns:
        A :class:`SplatResult` (CPU tensors). Runs on ``config.device`` (float32); deterministic for a fixed
        ``config.seed`` with a deterministic renderer.

    Raises:
        ValueError: an unposed scene, ``resume`` without ``out_dir``, or a device that cannot run here
            (:func:`~scenegrad.recon.device.resolve_device`).
    """
    config = config or SplatConfig.default()
    device = resolve_device(config.device)
    if scene.cameras is None:
        raise ValueError("train needs a posed scene (scene.cameras is None): estimate cameras first")
    if scene.cameras.is_distorted:
        from scenegrad.datasets.undistort import undistort_scene

        scene = undistort_scene(scene, alpha="valid")
    out = Path(out_dir) if out_dir is not None else None
    ckpt_dir = out / "checkpoints" if out is not None else None
    if resume and out is None:
        raise ValueError("resume=True needs out_dir (where the checkpoints are)")

    train_idx, test_idx = _split_indices(len(scene), config.test_every)
    views = _load_views(scene, config, device)
    train_views, test_views = [views[i] for i in train_idx], [views[i] for i in test_idx]
    cpu_train_idx = torch.tensor(train_idx, dtype=torch.long, device="cpu")
    extent = scene_extent(scene.cameras[cpu_train_idx])
    background = torch.tensor(config.background, dtype=torch.float32, device=device)
    white = all(c == 1 for c in config.background)
    eval_every = eval_every or max(1, config.iterations // 10)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)  # the CPU draws of any device

    state = None
    if resume and ckpt_dir is not None and (latest := _latest_checkpoint(ckpt_dir)) is not None:
        state = torch.load(latest, map_location="cpu", weights_only=False)  # moved by from_state_dict
    if state is not None:
        asked = {k: v for k, v in dataclasses.asdict(config).items() if k != "device"}  # any device may resume
        if {k: v for k, v in state["config"].items() if k != "device"} != asked:
            changed = sorted(k for k, v in asked.items() if state["config"].get(k) != v)
            warnings.warn(f"resuming {latest} with a different config ({', '.join(changed)}): "
                          "the run continues with the new values", stacklevel=2)
        model = GaussianModel.from_state_dict(state["model"], device)
        start, sh_degree = state["iteration"], state["sh_degree"]
        generator.set_state(state["rng"])
        queue: list[int] = list(state["queue"])
        history = [EvalRecord(**r) for r in state["history"]]
        densify_log = [DensifyRecord(**r) for r in state["densify_log"]]
        elapsed = state["seconds"]
    else:
        points = init_points if init_points is not None else scene.points
        if points is None:
            points = random_frustum_points(scene.cameras[cpu_train_idx], config.init_random_count, generator)
        init = splats_from_points(points, sh_degree=config.sh_degree, init_opacity=config.init_opacity)
        model = GaussianModel({k: getattr(init, k) for k in PARAM_NAMES}, _lrs(config, extent), device)
        start, sh_degree, queue, history, densify_log, elapsed = 0, 0, [], [], [], 0.0

    def checkpoint(iteration: int) -> None:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": model.state_dict(), "iteration": iteration, "sh_degree": sh_degree, "rng": generator.get_state(),
            "queue": list(queue), "history": [dataclasses.asdict(r) for r in history],
            "densify_log": [dataclasses.asdict(r) for r in densify_log], "seconds": elapsed,
            "config": dataclasses.asdict(config), "extent": extent,
        }
        tmp = ckpt_dir / f"ckpt_{iteration:07d}.pt.tmp"
        torch.save(payload, tmp)
        tmp.replace(ckpt_dir / f"ckpt_{iteration:07d}.pt")

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.iterations, initial=start, desc=f"splat ({config.name})", dynamic_ncols=True)
    # the loss is summed on the device (float64) and read at evaluations and progress updates only: no
    # device-to-host copy in the step
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    loss_n, last_psnr, it = 0, history[-1].psnr if history else None, start
    t0 = time.perf_counter() - elapsed
    for it in range(start + 1, config.iterations + 1):
        if config.max_seconds is not None and time.perf_counter() - t0 > config.max_seconds:
            it -= 1
            break
        model.optimizer.param_groups[0]["lr"] = exponential_lr(
            it, config.means_lr_init * extent, config.means_lr_final * extent, config.iterations)
        if it % config.sh_degree_interval == 0 and sh_degree < config.sh_degree:
            sh_degree += 1
        if not queue:
            queue = torch.randperm(len(train_views), generator=generator, device="cpu").tolist()
        view = train_views[queue.pop()]
        if config.random_background:
            bg = torch.rand(3, generator=generator, device="cpu").to(device)
        else:
            bg = background

        out_render = _render_at(model.activated(sh_degree), view.viewmat, view.K, view.width, view.height, sh_degree,
                                bg, rasterize_mode=config.rasterize_mode, near_plane=config.near_plane,
                                backend=backend)
        image = out_render.colors[0, ..., :3]
        gt = _target(view, bg)
        l1 = (image - gt).abs().mean()
        loss = (1 - config.ssim_lambda) * l1 + config.ssim_lambda * (1 - ssim(image, gt))
        loss.backward()
        loss_sum += loss.detach()
        loss_n += 1

        with torch.no_grad():
            if it < config.densify_until:  # masks by torch.where, not by indexing: no device sync
                radii = out_render.radii[0].float()
                radii = radii.amax(-1) if radii.dim() == 2 else radii
                vis = radii > 0
                gnorm = (out_render.means2d.grad[0] * view.ndc).norm(dim=-1)
                model.grad_accum += torch.where(vis, gnorm, 0.0)
                model.grad_count += vis
                model.max_radii = torch.where(vis, torch.maximum(model.max_radii, radii), model.max_radii)
            model.optimizer.step()
            model.optimizer.zero_grad(set_to_none=True)
            if it < config.densify_until:
                if it > config.densify_from and it % config.densify_every == 0:
                    densify_log.append(densify_and_prune(model, config, extent, generator=generator, iteration=it,
                                                         prune_big=config.opacity_reset_every is not None
                                                         and it > config.opacity_reset_every))
                reset = config.opacity_reset_every is not None and it % config.opacity_reset_every == 0
                if reset or (white and it == config.densify_from):
                    reset_opacity(model)

        if it % eval_every == 0 or it == config.iterations:
            elapsed = time.perf_counter() - t0
            p, s = _evaluate(model, test_views, sh_degree, background, config, backend)
            history.append(EvalRecord(it, elapsed, float(loss_sum) / max(loss_n, 1), p, s, model.num))
            loss_sum, loss_n, last_psnr = torch.zeros_like(loss_sum), 0, p
            t0 = time.perf_counter() - elapsed  # evaluation time is not training time
        if ckpt_dir is not None and config.checkpoint_every and it % config.checkpoint_every == 0:
            elapsed = time.perf_counter() - t0
            checkpoint(it)
            t0 = time.perf_counter() - elapsed
        if bar is not None:
            bar.update(1)
            if it % 10 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}",
                                psnr="-" if last_psnr is None else f"{last_psnr:.2f}", n=model.num)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t0
    if not history or history[-1].iteration != it:
        p, s = _evaluate(model, test_views, sh_degree, background, config, backend)
        history.append(EvalRecord(it, elapsed, float(loss_sum) / max(loss_n, 1), p, s, model.num))

    splats = _to_splats(model)
    result = SplatResult(splats, history, densify_log, it, elapsed, sh_degree, extent, train_idx, test_idx)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if ckpt_dir is not None and config.checkpoint_every and (it % config.checkpoint_every != 0):
            checkpoint(it)
        result.ply_path = save_splats_ply(splats, out / "point_cloud.ply")
        (out / "metrics.json").write_text(json.dumps({
            "config": dataclasses.asdict(config), "extent": extent, "iterations": it, "seconds": elapsed,
            "num_gaussians": model.num, "sh_degree": sh_degree, "lpips": None,
            "history": [dataclasses.asdict(r) for r in history],
            "densify": [dataclasses.asdict(r) for r in densify_log],
        }, indent=2))
        if config.video:
            cams = [views[i].camera for i in train_idx]
            sizes = {(int(c.width[0]), int(c.height[0])) for c in cams}
            if len(sizes) == 1:
                render_video(splats, _cat_cameras(cams), out / "video.mp4", background=config.background,
                             backend=backend, device=device)
    return result


def _cat_cameras(cams: list[Cameras]) -> Cameras:
    """One batch of single cameras of the same model."""
    def cat(name: str) -> Tensor:
        return torch.cat([getattr(c, name) for c in cams])

    dist = None if cams[0].dist is None else cat("dist")
    return Cameras(cat("fx"), cat("fy"), cat("cx"), cat("cy"), cat("R"), cat("t"), cat("width"), cat("height"),
                   cams[0].model, dist)

