"""Configuration of the 3DGS trainer (:func:`scenegrad.recon.splat.train`): :class:`SplatConfig`
with the original 3DGS recipe (:meth:`SplatConfig.default`) and a CPU preset (:meth:`SplatConfig.fast`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

PARAM_NAMES = ("means", "quats", "log_scales", "opacity_logits", "sh0", "shN")  # the fields of Splats


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


@dataclass
class SplatConfig:
    """Every knob of :func:`train`; the defaults are the original 3DGS training defaults.

    Presets: :meth:`default` (3DGS, 30k iterations, for a GPU) and :meth:`fast` (a CPU budget).
    """

    name: str = "default"
    iterations: int = 30_000
    seed: int = 0
    # data
    downscale: float = 1.0  # images are divided by this ...
    max_side: int | None = 1600  # ... and by more if their longer side still exceeds this (3DGS: 1.6k width)
    test_every: int | None = 8  # hold out frames with index % test_every == 0; None / 0: none
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    random_background: bool = False
    # initialisation
    sh_degree: int = 3
    sh_degree_interval: int = 1000
    init_opacity: float = 0.1
    init_random_count: int = 100_000
    # learning rates (3DGS)
    means_lr_init: float = 1.6e-4  # x scene extent
    means_lr_final: float = 1.6e-6  # x scene extent
    sh0_lr: float = 2.5e-3
    shN_lr: float = 2.5e-3 / 20
    opacities_lr: float = 0.05
    scales_lr: float = 5e-3
    quats_lr: float = 1e-3
    ssim_lambda: float = 0.2
    # densification (3DGS)
    densify_from: int = 500
    densify_until: int = 15_000
    densify_every: int = 100
    grad_threshold: float = 2e-4
    percent_dense: float = 0.01
    opacity_reset_every: int | None = 3000
    prune_opacity: float = 0.005
    prune_world_scale: float = 0.1  # x extent
    prune_screen_radius: float | None = 20.0  # pixels
    max_gaussians: int | None = None
    # rendering
    rasterize_mode: Literal["classic", "antialiased"] = "classic"
    near_plane: float = 0.01
    # where the model, the views and every step run: "cpu", "cuda" or "cuda:N" (checked by
    # :func:`scenegrad.recon.device.resolve_device`); checkpoints are saved on the CPU either way
    device: str = "cpu"
    # bookkeeping
    checkpoint_every: int | None = 5000
    max_seconds: float | None = None  # stop early (schedules still assume ``iterations``)
    video: bool = False

    @classmethod
    def default(cls) -> SplatConfig:
        """The original 3DGS schedule: 30k iterations, densify 500..15k, SH degree 3."""
        return cls()

    @classmethod
    def fast(cls) -> SplatConfig:
        """A CPU budget: 3k iterations on images of at most 320 pixels, SH degree 1, densification
        every 100 iterations from 300 until 60 % of the run, opacity reset every 1000, at most 50k
        Gaussians, 20k random initial points, and colour learning rates 8x 3DGS's (``sh0_lr = 0.02``,
        ``shN_lr = 0.001``): with a tenth of the iterations, 3DGS's rates leave colours far from
        converged (measured on the fox at 1/8 resolution, 600 iterations from random points:
        21.2 dB held-out PSNR with 3DGS's rates, 22.9 dB with 4x, 24.0 dB with 8x)."""
        return cls(
            name="fast", iterations=3000, max_side=320, sh_degree=1, sh_degree_interval=500,
            init_random_count=20_000, densify_from=300, densify_until=1800, densify_every=100,
            opacity_reset_every=1000, max_gaussians=50_000, checkpoint_every=1000, sh0_lr=0.02, shN_lr=0.001,
        )

    def scaled(self, iterations: int) -> SplatConfig:
        """The same recipe stretched or shrunk to ``iterations`` (every schedule scaled alike), with
        two floors for short runs: densification at most every 50 iterations (the statistics need
        views), and no opacity reset when the scaled interval falls under 500 iterations (the
        opacities need a few hundred steps to recover after one)."""
        s = iterations / self.iterations

        def it(x: int) -> int:
            return max(1, round(x * s))

        reset = None if self.opacity_reset_every is None else it(self.opacity_reset_every)
        return dataclasses.replace(
            self, iterations=iterations, sh_degree_interval=it(self.sh_degree_interval),
            densify_from=it(self.densify_from), densify_until=it(self.densify_until),
            densify_every=max(it(self.densify_every), min(self.densify_every, 50)),
            opacity_reset_every=reset if reset is not None and reset >= 500 else None,
            checkpoint_every=None if self.checkpoint_every is None else it(self.checkpoint_every),
        )
