"""SSIM and MS-SSIM against scikit-image (MS-SSIM assembled per scale by hand), small inputs on purpose."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.filters import gaussian
from skimage.metrics import structural_similarity
from skimage.transform import downscale_local_mean

from anomalib_lite.models.ssim import (
    GLOBAL_WEIGHTS,
    LOCAL_WEIGHTS,
    gaussian_window,
    ms_ssim,
    ms_ssim_map,
    ms_ssim_residual_map,
    ssim,
)


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


def _reference_ms_ssim(x: np.ndarray, y: np.ndarray, weights: tuple[float, ...], sigma: float) -> float:
    """MS-SSIM of Wang et al. (2003) assembled by hand from scikit-image's single-scale SSIM.

    Scale j < M contributes its mean contrast-structure term ``cs_j``, the coarsest scale its mean
    SSIM (luminance included), each raised to its exponent ``w_j``; the images are low-pass filtered
    and halved between scales (2×2 means, as the authors' code). scikit-image returns no ``cs``, so it
    is taken as the SSIM with a huge ``K1``: the luminance factor ``(2μxμy + C1)/(μx² + μy² + C1)`` is
    then 1 to within 1e-16 (luminances lie in [0, 1], ``C1 = 1e16``).
    """
    options = {"data_range": 1.0, "channel_axis": 0, "gaussian_weights": True, "sigma": sigma}
    value = 1.0
    for scale, weight in enumerate(weights):
        last = scale == len(weights) - 1
        term = structural_similarity(x, y, K1=0.01 if last else 1e8, use_sample_covariance=False, **options)
        value *= term**weight
        x, y = downscale_local_mean(x, (1, 2, 2)), downscale_local_mean(y, (1, 2, 2))
    return value


def _smooth_pair(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Two related images with structure at every scale (blurred noise), so every per-scale term matters."""
    x, y = _pair(seed, size, channels=2)
    return gaussian(x, sigma=(0, 2, 2)), gaussian(y, sigma=(0, 2, 2))


@pytest.mark.parametrize(
    ("size", "weights", "window", "sigma"),
    [
        (176, GLOBAL_WEIGHTS, 11, 1.5),  # Wang et al.: 11-wide window, σ 1.5, 5 scales (176 → 11 px)
        (88, LOCAL_WEIGHTS, 11, 1.5),
        # A 3-wide window: scikit-image's Gaussian has 3 taps for σ < 3/7 (radius int(3.5σ + 0.5) = 1).
        (32, LOCAL_WEIGHTS, 3, 0.4),
        (64, GLOBAL_WEIGHTS, 3, 0.4),
    ],
)
def test_ms_ssim_equals_scikit_image_ssim_per_scale_combined_by_hand(size, weights, window, sigma) -> None:
    x, y = _smooth_pair(size, size)
    ours = ms_ssim(torch.from_numpy(x)[None], torch.from_numpy(y)[None], weights, window, sigma=sigma)
    assert ours.item() == pytest.approx(_reference_ms_ssim(x, y, weights, sigma), rel=1e-9)


def test_ssim_map_equals_scikit_image_full_map_away_from_the_border() -> None:
    # One scale of weight 1: the map is 1 − SSIM. The border (5 px) differs by design: our maps pad
    # by reflection about the edge pixel (torch's "reflect"), scikit-image about the edge (SciPy's).
    x, y = _smooth_pair(3, 48)
    ours = ms_ssim_map(torch.from_numpy(x)[None], torch.from_numpy(y)[None], (1.0,), 11)[0].numpy()
    _, full = structural_similarity(
        x, y, data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True
    )
    np.testing.assert_allclose(ours[5:-5, 5:-5], 1 - full.mean(0)[5:-5, 5:-5], atol=1e-12)


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


def test_per_channel_ms_ssim_is_the_mean_of_each_channels_own_ms_ssim_as_the_reference_code():
    # IGD's ref-code (pytorch_msssim): each channel clamped and multiplied over the scales on its own, then the
    # channels averaged. The reference: scikit-image's per-scale SSIM on each channel alone, combined by hand.
    x, y = _smooth_pair(4, 88)
    x, y = np.concatenate([x, x[:1]]), np.concatenate([y, 1 - y[:1]])  # a third channel unlike the other two
    ours = ms_ssim(torch.from_numpy(x)[None], torch.from_numpy(y)[None], LOCAL_WEIGHTS, 11, per_channel=True)
    reference = np.mean([_reference_ms_ssim(x[c : c + 1], y[c : c + 1], LOCAL_WEIGHTS, 1.5) for c in range(3)])
    assert ours.item() == pytest.approx(reference, rel=1e-9)
    joint = ms_ssim(torch.from_numpy(x)[None], torch.from_numpy(y)[None], LOCAL_WEIGHTS, 11)
    assert abs(joint.item() - reference) > 1e-3  # the default (channels pooled per scale) is another number


def test_ms_ssim_reaches_a_one_pixel_coarsest_scale():
    # 16 px, 5 scales: the coarsest scale is 1×1 (no pooling after it).
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(ms_ssim(x, x, GLOBAL_WEIGHTS, 11), torch.ones(2))
    assert ms_ssim_map(x, x, GLOBAL_WEIGHTS, 11).abs().max() < 1e-6


def _naive_residual_map(x: np.ndarray, y: np.ndarray, weights, window: int, sigma: float, data_range: float):
    """The ref-code's per-channel map by loops (multi_scale/pytorch_msssim_residual_map.py, inference_loc.py):
    at each scale, SSIM at every valid window position from its Gaussian-weighted moments, clamped at 0; each
    map scaled back to the input side by nearest neighbour (source index ⌊i·h/H⌋); Σ_j w_j (1 − map_j)."""
    g = gaussian_window(window, sigma).numpy()
    kernel = np.outer(g, g)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    channels, side, _ = x.shape
    total = np.zeros_like(x)
    for scale, weight in enumerate(weights):
        if scale:
            x = x.reshape(channels, x.shape[1] // 2, 2, -1, 2).mean(axis=(2, 4))
            y = y.reshape(channels, y.shape[1] // 2, 2, -1, 2).mean(axis=(2, 4))
        h = x.shape[1] - window + 1
        similarity = np.zeros((channels, h, h))
        for c in range(channels):
            for i in range(h):
                for j in range(h):
                    a, b = x[c, i : i + window, j : j + window], y[c, i : i + window, j : j + window]
                    mu_a, mu_b = (kernel * a).sum(), (kernel * b).sum()
                    var_a = (kernel * a * a).sum() - mu_a**2
                    var_b = (kernel * b * b).sum() - mu_b**2
                    cov = (kernel * a * b).sum() - mu_a * mu_b
                    luminance = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
                    similarity[c, i, j] = max(luminance * (2 * cov + c2) / (var_a + var_b + c2), 0.0)
        index = np.arange(side) * h // side
        total += weight * (1 - similarity[:, index][:, :, index])
    return total


def test_residual_map_equals_the_reference_codes_maps_computed_by_loops():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 32, 32))
    y = 0.7 * x + 0.5 * rng.normal(size=(3, 32, 32))
    y[0] = -y[0]  # a channel with negative SSIM somewhere: the clamp matters
    ours = ms_ssim_residual_map(
        torch.from_numpy(x)[None], torch.from_numpy(y)[None], LOCAL_WEIGHTS, 3, data_range=4.7579
    )
    reference = _naive_residual_map(x, y, LOCAL_WEIGHTS, 3, 1.5, 4.7579)
    np.testing.assert_allclose(ours[0].numpy(), reference, atol=1e-10)
    assert ours.shape == (1, 3, 32, 32)
