"""The trainable Gaussian model of :mod:`scenegrad.recon.splat`: raw 3DGS parameters with their
Adam state and densification statistics, and 3DGS's adaptive density control (clone small, split
large, prune transparent or oversized Gaussians, opacity reset) keeping the optimiser rows in step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scenegrad.recon.splat_config import PARAM_NAMES, SplatConfig
from scenegrad.render.rotations import quat_to_matrix


@dataclass
class DensifyRecord:
    """What one :func:`densify_and_prune` did."""

    iteration: int
    cloned: int
    split: int
    pruned: int
    num_gaussians: int


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# ----------------------------------------------------------------------------------------------
# The model: parameters, their Adam state, densification statistics
# ----------------------------------------------------------------------------------------------


class GaussianModel:
    """Raw 3DGS parameters with their Adam optimiser and densification statistics.

    ``params[name]`` are leaf ``nn.Parameter`` tensors named as the fields of
    :class:`~scenegrad.datasets.splats.Splats` (:data:`PARAM_NAMES`);
    ``optimizer`` has one group per parameter, named by ``group["name"]``. Statistics (all ``[N]``):
    ``grad_accum`` (sum of NDC-scaled view-space gradient norms), ``grad_count`` (steps visible),
    ``max_radii`` (largest screen radius in pixels since the last densification).

    Everything lives on ``device`` (default: the device of ``params["means"]``); :meth:`state_dict` returns
    CPU copies (checkpoints load anywhere) and :meth:`from_state_dict` puts them back on a device.
    """

    def __init__(self, params: dict[str, Tensor], lrs: dict[str, float],
                 device: torch.device | str | None = None) -> None:
        device = params["means"].device if device is None else torch.device(device)
        self.params = {k: nn.Parameter(params[k].detach().to(device=device, dtype=torch.float32).contiguous())
                       for k in PARAM_NAMES}
        self.optimizer = torch.optim.Adam(
            [{"params": [self.params[k]], "lr": lrs[k], "name": k} for k in PARAM_NAMES], eps=1e-15
        )
        self.reset_stats()

    @property
    def num(self) -> int:
        return self.params["means"].shape[0]

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    def reset_stats(self) -> None:
        n, device = self.num, self.device
        self.grad_accum = torch.zeros(n, device=device)
        self.grad_count = torch.zeros(n, dtype=torch.int32, device=device)
        self.max_radii = torch.zeros(n, device=device)

    # -- activations ----------------------------------------------------------------------------

    def activated(self, sh_degree: int) -> dict[str, Tensor]:
        """Renderer inputs: normalised quats, exp scales, sigmoid opacities, ``[N, (d+1)², 3]`` SH."""
        p = self.params
        K = (sh_degree + 1) ** 2
        return {
            "means": p["means"],
            "quats": F.normalize(p["quats"], dim=-1),
            "scales": p["log_scales"].exp(),
            "opacities": p["opacity_logits"].sigmoid(),
            "colors": torch.cat([p["sh0"], p["shN"]], 1)[:, :K],
        }

    # -- optimiser surgery (3DGS's cat_tensors_to_optimizer / _prune_optimizer / replace_tensor) ----

    def _swap(self, name: str, value: Tensor, state_fn) -> None:
        group = next(g for g in self.optimizer.param_groups if g["name"] == name)
        old = group["params"][0]
        state = self.optimizer.state.pop(old, None)
        new = nn.Parameter(value.contiguous())
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                state[key] = state_fn(state[key]).contiguous()
            self.optimizer.state[new] = state
        group["params"][0] = new
        self.params[name] = new

    def append(self, rows: dict[str, Tensor]) -> None:
        """Append rows to every parameter; their Adam moments start at zero; statistics at zero."""
        m = next(iter(rows.values())).shape[0]
        for k in PARAM_NAMES:
            extra = rows[k].detach().to(self.params[k].dtype)
            self._swap(k, torch.cat([self.params[k].detach(), extra]),
                       lambda s, e=extra: torch.cat([s, torch.zeros_like(e)]))
        device = self.device
        self.grad_accum = torch.cat([self.grad_accum, torch.zeros(m, device=device)])
        self.grad_count = torch.cat([self.grad_count, torch.zeros(m, dtype=torch.int32, device=device)])
        self.max_radii = torch.cat([self.max_radii, torch.zeros(m, device=device)])

    def keep(self, mask: Tensor) -> None:
        """Keep the rows where ``mask [N]`` is true (parameters, Adam moments, statistics)."""
        for k in PARAM_NAMES:
            self._swap(k, self.params[k].detach()[mask], lambda s: s[mask])
        self.grad_accum, self.grad_count, self.max_radii = (
            self.grad_accum[mask], self.grad_count[mask], self.max_radii[mask])

    def replace(self, name: str, value: Tensor) -> None:
        """Replace a parameter's values and zero its Adam moments (as 3DGS's opacity reset does)."""
        self._swap(name, value.detach(), torch.zeros_like)

    # -- persistence ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Parameters, Adam state and statistics as CPU tensors (copies where the model is on the CPU)."""
        return {
            "params": {k: v.detach().to("cpu", copy=True) for k, v in self.params.items()},
            "optimizer": _on_cpu(self.optimizer.state_dict()),
            "grad_accum": self.grad_accum.to("cpu", copy=True),
            "grad_count": self.grad_count.to("cpu", copy=True),
            "max_radii": self.max_radii.to("cpu", copy=True),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: torch.device | str | None = None) -> GaussianModel:
        """The model of :meth:`state_dict` on ``device`` (default: where ``state``'s parameters are). Adam's
        moments follow the parameters; its step counts stay CPU scalars, as in a fresh optimiser."""
        lrs = {g["name"]: g["lr"] for g in state["optimizer"]["param_groups"]}
        model = cls(state["params"], lrs, device)
        model.optimizer.load_state_dict(state["optimizer"])
        model.grad_accum = state["grad_accum"].to(model.device)
        model.grad_count = state["grad_count"].to(model.device)
        model.max_radii = state["max_radii"].to(model.device)
        return model


def _on_cpu(value: Any) -> Any:
    """``value`` (nested dicts / lists / tuples of tensors and plain values) with every tensor on the CPU."""
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_on_cpu(v) for v in value)
    return value


def _pick_budget(candidates: Tensor, grads: Tensor, budget: int) -> Tensor:
    """Keep only the ``budget`` candidates (bool ``[N]``) with the largest ``grads``."""
    if int(candidates.sum()) <= budget:
        return candidates
    out = torch.zeros_like(candidates)
    if budget > 0:
        idx = torch.nonzero(candidates)[:, 0]
        out[idx[grads[idx].topk(budget).indices]] = True
    return out


@torch.no_grad()
def densify_and_prune(model: GaussianModel, config: SplatConfig, extent: float, *, prune_big: bool,
                      generator: torch.Generator | None = None, iteration: int = 0) -> DensifyRecord:
    """One 3DGS densification step on ``model`` (see the module docstring), then reset the statistics.

    Clones are exact copies; a split Gaussian is replaced by two children whose means are sampled
    from it (``R diag(s) z``, ``z ~ N(0, I)``, drawn from ``generator``) and whose scales are
    ``s / 1.6``. Pruning: opacity ``< prune_opacity``; with ``prune_big`` also world scale
    ``> prune_world_scale x extent`` or screen radius ``> prune_screen_radius``.
    """
    n = model.num
    p = {k: v.detach() for k, v in model.params.items()}
    grads = torch.where(model.grad_count > 0, model.grad_accum / model.grad_count.clamp_min(1), 0.0)
    max_scale = p["log_scales"].exp().amax(-1)
    big_grad = grads >= config.grad_threshold
    small = max_scale <= config.percent_dense * extent
    clone, split = big_grad & small, big_grad & ~small
    if config.max_gaussians is not None:  # every densified Gaussian adds one
        budget = config.max_gaussians - n
        both = _pick_budget(clone | split, grads, budget)
        clone, split = clone & both, split & both

    rows = {k: p[k][clone] for k in PARAM_NAMES}
    n_split = int(split.sum())
    if n_split:
        s = p["log_scales"][split].exp().repeat(2, 1)
        # drawn where the generator lives (a seeded CPU one keeps runs reproducible on any device), then moved
        z = torch.randn(s.shape, generator=generator, dtype=s.dtype,
                        device=s.device if generator is None else generator.device).to(s.device)
        R = quat_to_matrix(p["quats"][split]).repeat(2, 1, 1)
        children = {k: p[k][split].repeat(2, *([1] * (p[k].dim() - 1))) for k in PARAM_NAMES}
        children["means"] = (R @ (s * z)[..., None])[..., 0] + children["means"]
        children["log_scales"] = (s / 1.6).log()
        rows = {k: torch.cat([rows[k], children[k]]) for k in PARAM_NAMES}
    old_radii = model.max_radii.clone()
    model.append(rows)

    m = model.num
    prune = torch.zeros(m, dtype=torch.bool, device=model.device)
    prune[:n] = split  # the split parents
    prune |= model.params["opacity_logits"].detach().sigmoid() < config.prune_opacity
    if prune_big:
        prune |= model.params["log_scales"].detach().exp().amax(-1) > config.prune_world_scale * extent
        if config.prune_screen_radius is not None:
            prune[:n] |= old_radii > config.prune_screen_radius
    model.keep(~prune)
    model.reset_stats()
    return DensifyRecord(iteration, int(clone.sum()), n_split, int(prune.sum()) - n_split, model.num)


@torch.no_grad()
def reset_opacity(model: GaussianModel, value: float = 0.01) -> None:
    """Opacities become ``min(opacity, value)`` with fresh Adam moments (3DGS's ``reset_opacity``)."""
    o = model.params["opacity_logits"].detach()
    model.replace("opacity_logits", torch.minimum(o, torch.full_like(o, _logit(value))))
