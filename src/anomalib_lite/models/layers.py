"""Small tensor operations several model families share."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anomalib_lite.data.normalisation import IMAGENET_MEAN, IMAGENET_STD

_MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian filter of ``B×H×W`` maps, like ``scipy.ndimage.gaussian_filter`` (truncate 4, reflect).

    Args:
        maps: ``B×H×W`` float.
        sigma: standard deviation in pixels; ``0`` returns the maps unchanged.
    Returns:
        ``B×H×W``, same dtype and device.
    """
    if sigma <= 0:
        return maps
    radius = int(4 * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, device=maps.device, dtype=torch.float64)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(maps.dtype)
    out = maps[:, None]
    for shape in ((1, 1, 1, -1), (1, 1, -1, 1)):
        pad = [radius, radius, 0, 0] if shape[-1] == -1 else [0, 0, radius, radius]
        mode = "reflect" if min(out.shape[-2:]) > radius else "replicate"
        out = F.conv2d(F.pad(out, pad, mode=mode), kernel.view(shape))
    return out[:, 0]


def normalized_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-position L2 distance of channel-wise L2-normalised features.

    Args:
        a, b: ``B×C×H×W``.
    Returns:
        ``B×H×W``, in [0, 2].
    """
    return torch.linalg.vector_norm(F.normalize(a, dim=1, eps=eps) - F.normalize(b, dim=1, eps=eps), dim=1)


def squared_normalized_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """:func:`normalized_distance` squared, ``B×H×W`` in [0, 4], summed directly (no root to square again:
    fewer passes forward and backward in a training loss)."""
    return (F.normalize(a, dim=1, eps=eps) - F.normalize(b, dim=1, eps=eps)).square().sum(1)


def upsample_sum(maps: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize ``B×h_i×w_i`` maps to ``size`` and sum them: ``B×H×W``."""
    return sum(F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False)[:, 0] for m in maps)


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """Normalised ``B×1×H×W`` grey → ``B×3×H×W`` RGB normalised per channel (ImageNet statistics); 3-channel
    input is returned as is.

    A grey image was normalised with the channel means of the statistics (``data.images``): its value ``v``
    becomes ``(v − mean_c) / std_c`` in each channel ``c``, as the same image loaded as RGB would be.
    """
    if images.shape[1] != 1:
        return images
    return (images * _STD.mean().to(images) + _MEAN.mean().to(images) - _MEAN.to(images)) / _STD.to(images)


def to_unit_range(image: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised ``B×C×H×W`` (C 1 or 3, grey as in :func:`as_rgb`) → RGB ``B×3×H×W`` in [0, 1]
    (for reconstructing models)."""
    return as_rgb(image) * _STD.to(image) + _MEAN.to(image)


def to_normalised(image: torch.Tensor) -> torch.Tensor:
    """RGB ``B×3×H×W`` in [0, 1] → ImageNet-normalised, the inverse of :func:`to_unit_range`."""
    return (image - _MEAN.to(image)) / _STD.to(image)
