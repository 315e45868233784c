"""PSNR and SSIM (scenegrad.recon.metrics) against independent numpy implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scenegrad.recon.metrics import gaussian_window, lpips, psnr, ssim


def _images(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape, generator=g, dtype=torch.float64)
    b = (a + 0.15 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return a, b


def _ssim_numpy(a: np.ndarray, b: np.ndarray) -> float:
    """Direct (non-separable) 11x11 windowed SSIM with zero padding, channel by channel: 3DGS's definition."""
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    g /= g.sum()
    w2 = np.outer(g, g)
    H, W, C = a.shape
    maps = []
    for c in range(C):
        pa, pb = np.pad(a[..., c], 5), np.pad(b[..., c], 5)

        def filt(img):
            out = np.zeros((H, W))
            for i in range(H):
                for j in range(W):
                    out[i, j] = (img[i:i + 11, j:j + 11] * w2).sum()
            return out

        mu_a, mu_b = filt(pa), filt(pb)
        va, vb, cov = filt(pa * pa) - mu_a**2, filt(pb * pb) - mu_b**2, filt(pa * pb) - mu_a * mu_b
        c1, c2 = 0.01**2, 0.03**2
        maps.append(((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2)))
    return float(np.mean(maps))


def test_identical_images():
    a, _ = _images((20, 24, 3))
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-12)
    assert math.isinf(float(psnr(a, a)))


def test_psnr_value_and_mask():
    a = torch.zeros(8, 8, 3)
    b = torch.full((8, 8, 3), 0.1)
    assert float(psnr(a, b)) == pytest.approx(20.0, rel=1e-5)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4] = True
    b[4:] = 0.5  # outside the mask: ignored
    assert float(psnr(a, b, mask)) == pytest.approx(20.0, rel=1e-5)
    batch = psnr(torch.stack([a, a]), torch.stack([b, a]))
    assert batch.shape == (2,) and math.isinf(float(batch[1]))


@pytest.mark.parametrize("shape", [(16, 16, 3), (13, 21, 1), (24, 11, 3)])
def test_ssim_matches_direct_numpy(shape):
    a, b = _images(shape, seed=sum(shape))
    expected = _ssim_numpy(a.numpy(), b.numpy())
    assert float(ssim(a, b)) == pytest.approx(expected, abs=1e-10)
    # float32 agrees to float32 precision
    assert float(ssim(a.float(), b.float())) == pytest.approx(expected, abs=1e-5)


def test_ssim_matches_skimage_interior():
    skimage = pytest.importorskip("skimage.metrics", reason="scikit-image is not installed")
    a, b = _images((48, 48, 3))
    ours = ssim(a, b, reduce=False)[5:-5, 5:-5].mean()  # away from the zero padding
    theirs = skimage.structural_similarity(a.numpy(), b.numpy(), channel_axis=-1, data_range=1.0,
                                           gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert float(ours) == pytest.approx(theirs, abs=1e-6)


def test_batch_and_map_shapes():
    a, b = _images((3, 10, 12, 3))
    per = ssim(a, b)
    assert per.shape == (3,)
    assert torch.allclose(per[1], ssim(a[1], b[1]))
    assert ssim(a, b, reduce=False).shape == a.shape
    assert ssim(a[0], b[0], reduce=False).shape == a[0].shape


def test_window_is_normalised():
    g = gaussian_window()
    assert g.shape == (11,) and float(g.sum()) == pytest.approx(1.0)
    assert int(g.argmax()) == 5


def test_gradients_flow():
    a, b = _images((12, 14, 3))
    a = a.clone().requires_grad_(True)
    loss = 0.8 * (a - b).abs().mean() + 0.2 * (1 - ssim(a, b))
    loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    # SSIM's gradient matches finite differences (float64)
    x = a.detach()[:6, :7].clone().requires_grad_(True)
    y = b[:6, :7].clone()
    assert torch.autograd.gradcheck(lambda t: ssim(t, y), (x,), eps=1e-6, atol=1e-6)
    z = a.detach().clone().requires_grad_(True)
    psnr(z, b).backward()
    assert torch.isfinite(z.grad).all()


def test_shape_errors():
    with pytest.raises(ValueError):
        ssim(torch.zeros(4, 4, 3), torch.zeros(4, 5, 3))
    with pytest.raises(ValueError):
        psnr(torch.zeros(4), torch.zeros(4))


def test_lpips_reports_none_offline():
    assert lpips(torch.zeros(8, 8, 3), torch.zeros(8, 8, 3)) is None
