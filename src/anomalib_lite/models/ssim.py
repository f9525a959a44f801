"""SSIM and multi-scale SSIM (Wang et al. 2003) with a Gaussian window, as losses and per-pixel maps.

Conventions follow scikit-image's ``structural_similarity(gaussian_weights=True,
use_sample_covariance=False)``: a Gaussian window of width ``window`` and standard
deviation ``sigma``, constants ``C1 = (K1·L)²``, ``C2 = (K2·L)²`` for data range ``L``,
statistics over the window positions that fit inside the image ("valid"), averaged
over those positions and the channels.

Small inputs are handled deliberately: at a scale whose side is smaller than the
window, the window is cut to the largest odd width that fits (its Gaussian weights
renormalised), so a 32×32 input works with an 11-wide window at 5 scales (sides 32,
16, 8, 4, 2). An input too small to be pooled ``scales − 1`` times is an error.
Where the window fits at every scale, :func:`ms_ssim` is Wang et al.'s MS-SSIM (tests compare
it with scikit-image's SSIM per scale); the cut windows are a **choice** (Wang et al.'s 11-wide window,
used by IGD's reference code at 256 px, ``p256/ssim_main.py:254``, needs a side ≥ 176 for 5 scales; the IGD
paper gives no window). The padded maps of :func:`ms_ssim_map` reflect about
the edge pixel (torch's ``reflect``), so their border differs from scikit-image's full map.

Colour images. :func:`ms_ssim` by default averages each scale's statistic over the channels before the clamp
and the product (a **choice**, as scikit-image's SSIM averages channels); ``per_channel=True`` is IGD's
reference code (``pytorch_msssim``, ``p32/ssim_main.py:15``, bundled as
``multi_scale/pytorch_msssim_residual_map.py:201-222``): each channel clamped, raised and multiplied over the
scales on its own, the channels averaged last. Per-pixel maps: :func:`ms_ssim_map` (ours) and
:func:`ms_ssim_residual_map` (the reference code's localisation maps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GLOBAL_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
LOCAL_WEIGHTS = (0.0516, 0.3295, 0.3463, 0.2726)


def gaussian_window(width: int, sigma: float) -> torch.Tensor:
    """A normalised 1-D Gaussian of odd ``width`` (float64, sums to 1)."""
    offsets = torch.arange(width, dtype=torch.float64) - (width - 1) / 2
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    return weights / weights.sum()


def _fitting_width(width: int, side: int) -> int:
    fitted = min(width, side)
    return fitted if fitted % 2 == 1 else fitted - 1


def _filter(x: torch.Tensor, window: torch.Tensor, pad: bool) -> torch.Tensor:
    """Separable Gaussian filter of ``B×C×H×W``; ``pad`` keeps the size (reflect), else "valid"."""
    # int(): a constant even when traced for export (the kernel's shape must be known there).
    channels, width = int(x.shape[1]), window.numel()
    if pad and width > 1:
        x = F.pad(x, [width // 2] * 4, mode="reflect")
    kernel = window.to(x)
    x = F.conv2d(x, kernel.view(1, 1, 1, width).expand(channels, 1, 1, width), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, width, 1).expand(channels, 1, width, 1), groups=channels)


def ssim_maps(
    x: torch.Tensor,
    y: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    data_range: float = 1.0,
    pad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position SSIM and its contrast-structure part.

    Args:
        x, y: ``B×C×H×W`` images. window: Gaussian width (cut to fit, see module doc).
        sigma: the window's standard deviation (1.5: Wang et al.'s, and ``pytorch_msssim``'s default
            ``win_sigma`` that IGD's reference code uses, ``p32/ssim_main.py:15, 273``; the IGD paper gives none).
        k1, k2: ``C1 = (K1·L)²``, ``C2 = (K2·L)²`` (0.01 and 0.03: Wang et al.'s, IGD paper L185).
        data_range: ``L``.
        pad: reflect-pad so the maps keep ``H×W``; else maps cover the valid positions only.
    Returns:
        ``(ssim, cs)``, each ``B×C×H'×W'``.
    """
    kernel = gaussian_window(_fitting_width(window, min(int(side) for side in x.shape[-2:])), sigma)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    # The five local means in one filter pass over the stacked images (each channel is filtered alone: the same
    # values as five passes, in about half the time on a CPU: 318 vs 699 ms for 900 patches of 32×32, forward and
    # backward).
    mu_x, mu_y, xx, yy, xy = _filter(torch.cat([x, y, x * x, y * y, x * y], 1), kernel, pad).chunk(5, 1)
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov = xy - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return luminance * cs, cs


def ssim(x: torch.Tensor, y: torch.Tensor, **options: float) -> torch.Tensor:
    """Mean SSIM of each image pair: ``B×C×H×W`` twice → ``B`` (options as :func:`ssim_maps`)."""
    return ssim_maps(x, y, **options)[0].mean(dim=(1, 2, 3))


def _check_scales(x: torch.Tensor, scales: int) -> None:
    if min(x.shape[-2:]) < 2 ** (scales - 1):
        raise ValueError(f"MS-SSIM with {scales} scales needs images of side ≥ {2 ** (scales - 1)}, got {x.shape[-2:]}")


def ms_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    weights: tuple[float, ...] = GLOBAL_WEIGHTS,
    window: int = 11,
    per_channel: bool = False,
    **options: float,
) -> torch.Tensor:
    """Multi-scale SSIM of each image pair: ``B×C×H×W`` twice → ``B``.

    ``Π_{j<M} cs_j^{w_j} · ssim_M^{w_M}`` over ``M = len(weights)`` scales, 2×2 average pooling between scales,
    each per-scale mean clamped at 0 before the power (the reference code clamps too, with a ReLU). The means are
    over ``C×H×W`` (choice); with ``per_channel`` over ``H×W`` of each channel, whose MS-SSIMs are then averaged
    (the reference code's ``pytorch_msssim``, see the module doc). A clamped scale gives 0 and no gradient.
    """
    _check_scales(x, len(weights))
    dims = (2, 3) if per_channel else (1, 2, 3)
    result = torch.ones(x.shape[:2] if per_channel else x.shape[:1], dtype=x.dtype, device=x.device)
    for scale, weight in enumerate(weights):
        if scale:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        full, cs = ssim_maps(x, y, window, **options)
        value = (full if scale == len(weights) - 1 else cs).mean(dim=dims)
        result = result * value.clamp_min(0) ** weight
    return result.mean(1) if per_channel else result


def ms_ssim_map(
    x: torch.Tensor, y: torch.Tensor, weights: tuple[float, ...] = GLOBAL_WEIGHTS, window: int = 11, **options: float
) -> torch.Tensor:
    """Per-pixel dissimilarity ``Σ_j w_j (1 − m_j)``: ``B×C×H×W`` twice → ``B×H×W`` (choice).

    ``m_j`` is the padded contrast-structure map at scale ``j < M`` and the SSIM map at the
    coarsest scale, averaged over channels and upsampled (bilinear) to ``H×W``, unclamped. A weighted sum of the
    per-scale maps, as the reference code's (:func:`ms_ssim_residual_map`), not the per-pixel product of IGD's
    eq. 9/12 (L121, L141).
    """
    _check_scales(x, len(weights))
    size = x.shape[-2:]
    total = torch.zeros(x.shape[0], *size, dtype=x.dtype, device=x.device)
    for scale, weight in enumerate(weights):
        if scale:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        full, cs = ssim_maps(x, y, window, pad=True, **options)
        similarity = (full if scale == len(weights) - 1 else cs).mean(dim=1, keepdim=True)
        upsampled = F.interpolate(similarity, size=size, mode="bilinear", align_corners=False)
        total = total + weight * (1 - upsampled[:, 0])
    return total


def ms_ssim_residual_map(
    x: torch.Tensor, y: torch.Tensor, weights: tuple[float, ...] = GLOBAL_WEIGHTS, window: int = 11, **options: float
) -> torch.Tensor:
    """The reference code's per-pixel dissimilarity, per channel: ``B×C×H×W`` twice → ``B×C×H×W``.

    ``Σ_j w_j (1 − max(s_j, 0))``, ``s_j`` the **full** SSIM map (luminance × contrast-structure) at every scale
    ``j``, over the valid window positions only (no padding), upsampled nearest to ``H×W`` (``F.interpolate``'s
    default), channels kept: IGD's ``multi_scale/pytorch_msssim_residual_map.py:207`` (``residual_map``, ReLU'd
    SSIM maps) combined as ``multi_scale/inference_loc.py:283-296, 305-317``.
    """
    _check_scales(x, len(weights))
    size = x.shape[-2:]
    total = torch.zeros_like(x)
    for scale, weight in enumerate(weights):
        if scale:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        full, _ = ssim_maps(x, y, window, **options)
        upsampled = F.interpolate(full.clamp_min(0), size=size, mode="nearest")
        total = total + weight * (1 - upsampled)
    return total
