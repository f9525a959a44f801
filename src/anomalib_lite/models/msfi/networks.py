"""MSFI's networks: students copied from teacher stages, the antialiased image pyramid, the block map."""

from __future__ import annotations

import copy
import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anomalib_lite.models.layers import squared_normalized_distance


def fresh_copy(module: nn.Module) -> nn.Module:
    """A trainable copy of ``module`` with every layer re-initialised (random weights, reset statistics)."""
    clone = copy.deepcopy(module)
    for layer in clone.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.reset_running_stats()
    clone.requires_grad_(True)
    return clone


def pyramid_input(image: torch.Tensor, side: int) -> torch.Tensor:
    """One level of the image pyramid: ``image`` (``B×C×H×W``, decoded at the largest scale) at ``side×side``.

    Itself at its own size; a smaller side is a bilinear downsample with antialiasing (each output pixel
    averages the input pixels it covers, as PIL's resize does), so no aliasing of fine detail. A larger
    side (refused by :class:`MSFIConfig` for runs) would be a plain bilinear upsample.
    """
    height, width = image.shape[-2:]
    if (height, width) == (side, side):
        return image
    if side > min(height, width):
        return F.interpolate(image, size=(side, side), mode="bilinear")
    rows = torch.from_numpy(antialiased_bilinear_weights(int(height), side)).to(image)
    columns = torch.from_numpy(antialiased_bilinear_weights(int(width), side)).to(image)
    # Separable: ``rows @ image @ columnsᵀ``, two matrix products (exportable to ONNX, unlike the
    # antialiased interpolation kernel, which has no ONNX operator).
    return rows @ image @ columns.T


@functools.lru_cache(maxsize=32)
def antialiased_bilinear_weights(size_in: int, size_out: int) -> np.ndarray:
    """``size_out×size_in`` float32 weights of a bilinear downsample with antialiasing along one axis.

    The triangle filter stretched by the scale ``size_in / size_out`` over each output pixel's footprint,
    normalised to sum 1 per output pixel (PIL's and ``F.interpolate(..., antialias=True)``'s resampling).
    """
    scale = size_in / size_out
    weights = np.zeros((size_out, size_in))
    for i in range(size_out):
        centre = scale * (i + 0.5)
        first, last = max(int(centre - scale + 0.5), 0), min(int(centre + scale + 0.5), size_in)
        taps = np.arange(first, last)
        row = np.clip(1.0 - np.abs((taps - centre + 0.5) / scale), 0.0, None)
        weights[i, first:last] = row / row.sum()
    return weights.astype(np.float32)


def block_map(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """``0.25·‖f̂_t − f̂_s‖²`` per position: ``B×C×h×w`` twice → ``B×h×w`` in [0, 1]."""
    return 0.25 * squared_normalized_distance(teacher.float(), student.float())
