"""Dense correspondences between video frames for :mod:`scenegrad.recon.flowmap`: OpenCV DIS optical flow
with forward-backward consistency and texture masks.

Conventions: images ``[N, H, W, 3]`` float in ``[0, 1]``; flow ``[P, H, W, 2]`` in pixels, ``(du, dv)``
with ``u`` along columns and ``v`` along rows, so the pixel centred at ``(u, v)`` in frame ``i`` matches
``(u + du, v + dv)`` in frame ``j`` (pixel centres at ``+0.5``, as in :mod:`scenegrad.render.cameras`).
Nothing here is differentiable: flow is an observation.

>>> import numpy as np
>>> frames = np.random.default_rng(0).random((4, 48, 64, 3)).astype(np.float32)
>>> pairs = compute_flow_pairs(frames, skips=(1, 2))
>>> pairs.pairs.tolist(), tuple(pairs.flow.shape), tuple(pairs.weight.shape)
([[0, 1], [1, 2], [2, 3], [0, 2], [1, 3]], (5, 48, 64, 2), (5, 48, 64))
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from scenegrad.recon.threads import thread_map

__all__ = ["FlowPairs", "compute_flow_pairs", "dis_flow", "texture_mask", "pair_indices"]


@dataclass
class FlowPairs:
    """Observed flow between frame pairs ``(i, j)``, ``i < j``.

    Fields:
        pairs: ``[P, 2]`` int64 frame indices ``(i, j)``.
        flow: ``[P, H, W, 2]`` float32 forward flow ``i -> j`` in pixels.
        weight: ``[P, H, W]`` float32 in ``[0, 1]``: forward-backward consistency times texture, 0 where the
            flow leaves the image.
    """

    pairs: Tensor
    flow: Tensor
    weight: Tensor


def pair_indices(count: int, skips: tuple[int, ...]) -> list[tuple[int, int]]:
    """Frame pairs ``(i, i + s)`` for each skip ``s`` (skips in the order given, then by ``i``)."""
    return [(i, i + s) for s in skips for i in range(count - s)]


def _gray8(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2GRAY)


def dis_flow(a: np.ndarray, b: np.ndarray, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> np.ndarray:
    """DIS optical flow ``a -> b`` (``[H, W]`` uint8 grey images) as ``[H, W, 2]`` float32 pixels."""
    dis = cv2.DISOpticalFlow_create(preset)
    return dis.calc(a, b, None)


def _warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` (``[H, W, C]``) sampled at ``pixel + flow`` (bilinear, border replicated)."""
    H, W = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    return cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def texture_mask(gray: np.ndarray, threshold: float = 2e-5, window: int = 5) -> np.ndarray:
    """``[H, W]`` float32 in ``[0, 1]``: where the smaller eigenvalue of the structure tensor (grey in
    ``[0, 1]``, ``window``-pixel box) is above ``threshold`` (flow is well defined there); a soft ramp."""
    g = gray.astype(np.float32) / 255.0
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8
    k = (window, window)
    ixx, iyy, ixy = cv2.blur(gx * gx, k), cv2.blur(gy * gy, k), cv2.blur(gx * gy, k)
    lam = 0.5 * (ixx + iyy - np.sqrt((ixx - iyy) ** 2 + 4 * ixy**2))
    return np.clip(lam / threshold, 0, 1).astype(np.float32)


def compute_flow_pairs(frames: np.ndarray, skips: tuple[int, ...] = (1, 2, 4), fb_threshold: float = 1.0,
                       texture_threshold: float = 2e-5, size: tuple[int, int] | None = None,
                       workers: int = 1) -> FlowPairs:
    """Forward DIS flow for every pair ``(i, i + s)`` with its weight.

    Args:
        frames: ``[N, H, W, 3]`` float images in ``[0, 1]``.
        skips: frame offsets; skips ``>= N`` are dropped.
        fb_threshold: forward-backward error (pixels, plus 5 % of the flow length) above which a pixel gets
            weight 0; below it the weight falls off linearly.
        texture_threshold: see :func:`texture_mask` (0 disables the texture mask).
        size: ``(w, h)`` of the returned flow (area-resized, vectors scaled): computing flow on larger frames
            than the working resolution makes it more precise. None: the frames' size.
        workers: threads computing the pairs (OpenCV and numpy release the GIL); the result is the same.

    Returns:
        :class:`FlowPairs`.
    """
    if size is not None and (size[0], size[1]) != (frames.shape[2], frames.shape[1]):
        big = compute_flow_pairs(frames, skips, fb_threshold, texture_threshold, workers=workers)
        w, h = size
        sx, sy = w / frames.shape[2], h / frames.shape[1]
        flow = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in big.flow.numpy()])
        flow = flow * np.array([sx, sy], np.float32)
        weight = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in big.weight.numpy()])
        weight = np.where(weight > 0.99, weight, 0).astype(np.float32)  # drop pixels mixing good and bad flow
        return FlowPairs(pairs=big.pairs, flow=torch.from_numpy(np.ascontiguousarray(flow)),
                         weight=torch.from_numpy(np.ascontiguousarray(weight)))
    N, H, W = frames.shape[:3]
    gray = [_gray8(f) for f in frames]
    tex = [texture_mask(g, texture_threshold) if texture_threshold > 0 else np.ones((H, W), np.float32)
           for g in gray]
    xs, ys = np.meshgrid(np.arange(W, dtype=np.float32) + 0.5, np.arange(H, dtype=np.float32) + 0.5)
    def pair(ij: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        i, j = ij
        fwd = dis_flow(gray[i], gray[j])
        bwd = dis_flow(gray[j], gray[i])
        back = _warp(bwd, fwd)
        err = np.linalg.norm(fwd + back, axis=-1)
        tol = fb_threshold + 0.05 * np.linalg.norm(fwd, axis=-1)
        w = np.clip(2.0 - 2.0 * err / tol, 0, 1)
        u, v = xs + fwd[..., 0], ys + fwd[..., 1]
        inside = (u > 0) & (u < W) & (v > 0) & (v < H)
        return fwd, (w * inside * tex[i] * _warp(tex[j], fwd)).astype(np.float32)

    pairs = pair_indices(N, tuple(s for s in skips if 0 < s < N))
    results = thread_map(pair, pairs, workers, "flow-pairs")
    flows = [fwd for fwd, _ in results]
    weights = [w for _, w in results]
    return FlowPairs(pairs=torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
                     flow=torch.from_numpy(np.stack(flows)) if flows else torch.zeros(0, H, W, 2),
                     weight=torch.from_numpy(np.stack(weights)) if weights else torch.zeros(0, H, W))
