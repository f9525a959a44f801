"""SSIM against scikit-image, MS-SSIM against a naive per-scale loop, small inputs on purpose."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from anomalib_lite.models.ssim import GLOBAL_WEIGHTS, LOCAL_WEIGHTS, ms_ssim, ms_ssim_map, ssim


def _pair(seed: int, size: int, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((channels, size, size))
    # A structured, partly similar second image: blurred copy plus noise.
    y = 0.6 * x + 0.4 * rng.random((channels, size, size))
    y[:, : size // 3] = 1 - y[:, : size // 3]
    return x, y


@pytest.mark.parametrize("seed", [0, 1])
def test_ssim_equals_scikit_image(seed: int) -> None:
    x, y = _pair(seed, 48, channels=3)
    ours = ssim(torch.from_numpy(x)[None], torch.from_numpy(y)[None], window=11, sigma=1.5)
    reference = structural_similarity(
        x, y, data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ours.item() == pytest.approx(reference, abs=1e-4)


def _naive_scale(x: np.ndarray, y: np.ndarray, window: int, sigma: float = 1.5) -> tuple[float, float]:
    """Mean SSIM and mean contrast-structure over valid window positions, by explicit loops."""
    side = min(x.shape[-2:])
    width = min(window, side)
    width -= 1 - width % 2
    g = np.array([np.exp(-((i - (width - 1) / 2) ** 2) / (2 * sigma**2)) for i in range(width)])
    w2 = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    full, cs = [], []
    for c in range(x.shape[0]):
        for i in range(x.shape[1] - width + 1):
            for j in range(x.shape[2] - width + 1):
                a, b = x[c, i : i + width, j : j + width], y[c, i : i + width, j : j + width]
                ma, mb = (w2 * a).sum(), (w2 * b).sum()
                va, vb = (w2 * (a - ma) ** 2).sum(), (w2 * (b - mb) ** 2).sum()
                cov = (w2 * (a - ma) * (b - mb)).sum()
                s = (2 * cov + c2) / (va + vb + c2)
                cs.append(s)
                full.append(s * (2 * ma * mb + c1) / (ma**2 + mb**2 + c1))
    return float(np.mean(full)), float(np.mean(cs))


def _naive_ms_ssim(x: np.ndarray, y: np.ndarray, weights: tuple[float, ...], window: int) -> float:
    value = 1.0
    for scale, weight in enumerate(weights):
        full, cs = _naive_scale(x, y, window)
        value *= max(full if scale == len(weights) - 1 else cs, 0.0) ** weight
        x = x.reshape(x.shape[0], x.shape[1] // 2, 2, x.shape[2] // 2, 2).mean(axis=(2, 4))
        y = y.reshape(y.shape[0], y.shape[1] // 2, 2, y.shape[2] // 2, 2).mean(axis=(2, 4))
    return value


@pytest.mark.parametrize(
    ("size", "weights", "window"),
    [(48, LOCAL_WEIGHTS, 3), (32, GLOBAL_WEIGHTS, 11), (64, GLOBAL_WEIGHTS, 11)],
)
def test_ms_ssim_equals_naive_per_scale_loop(size: int, weights: tuple[float, ...], window: int) -> None:
    x, y = _pair(size, size, channels=2)
    ours = ms_ssim(torch.from_numpy(x)[None], torch.from_numpy(y)[None], weights, window)
    assert ours.item() == pytest.approx(_naive_ms_ssim(x, y, weights, window), abs=1e-6)


def test_small_input_is_handled_and_identical_images_score_one() -> None:
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(ms_ssim(x, x, GLOBAL_WEIGHTS, 11), torch.ones(3))
    assert ms_ssim_map(x, x, GLOBAL_WEIGHTS, 11).abs().max() < 1e-6
    noisy = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    value = ms_ssim(x, noisy, GLOBAL_WEIGHTS, 11)
    assert torch.isfinite(value).all() and (value < 0.99).all()
    with pytest.raises(ValueError, match="side ≥ 16"):
        ms_ssim(x[..., :8, :8], x[..., :8, :8], GLOBAL_WEIGHTS, 11)


def test_ms_ssim_map_is_high_where_images_differ() -> None:
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    y = x.clone()
    y[..., 40:56, 8:24] = torch.rand(3, 16, 16, dtype=torch.float64)
    heat = ms_ssim_map(x, y, LOCAL_WEIGHTS, 3)[0]
    assert heat.shape == (64, 64)
    assert heat[40:56, 8:24].mean() > 5 * heat[:24, 32:].mean()
