"""Pixel AUROC and AUPRO from one (parallel, values-only) sort of the normal pixels.

The AUPRO follows the MVTec AD reference algorithm: ground-truth regions are the
8-connected components of each mask; pixels are swept by descending score with tied
scores merged; FPR is the share of normal pixels above the threshold, PRO the sum
over region pixels of ``1 / (region size × number of regions)``; the curve starts
at (0, 0) and is integrated by trapezoids up to ``fpr_limit`` (linearly
interpolated there), then divided by ``fpr_limit``.

Only the FPR axis moves at a normal pixel's score, so the trapezoids are summed
over the distinct normal scores ``v``: each adds ``count(v) / N_normal`` times the
mean of the PRO just above ``v`` and at ``v``. The anomalous pixels (few) are
sorted with their weights; the normal ones (most) are sorted as values only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from anomalib_lite.metrics.auroc import count_ranks, largest, select, sort_in_parts_


def region_weights(masks: torch.Tensor) -> torch.Tensor:
    """PRO weight of each anomalous pixel: ``1 / (region size × number of regions)``.

    Args:
        masks: ``N×H×W`` bool ground truth.
    Returns:
        float64 weights of the anomalous pixels, in the order of ``masks[masks]``.
        Regions are the 8-connected components of each mask (never across images).
    """
    connect_8_in_plane = np.zeros((3, 3, 3), dtype=bool)
    connect_8_in_plane[1] = True
    with_region = masks.flatten(1).any(dim=1)  # labelling the others would find nothing
    regions, n_regions = ndimage.label(masks[with_region].cpu().numpy(), structure=connect_8_in_plane)
    region_of_pixel = torch.from_numpy(regions[regions > 0]).to(masks.device)
    sizes = torch.bincount(region_of_pixel, minlength=n_regions + 1).double()
    return 1.0 / (sizes[region_of_pixel] * n_regions)


@dataclass
class PixelMetrics:
    """Pixel AUROC and AUPRO; ``None`` where undefined (no anomalous or no normal pixel)."""

    pixel_auroc: float | None
    aupro: float | None


def pixel_metrics(maps: torch.Tensor, masks: torch.Tensor, fpr_limit: float = 0.3) -> PixelMetrics:
    """Exact pixel AUROC and AUPRO of anomaly maps against ground-truth masks.

    Args:
        maps: ``N×H×W`` anomaly scores (any float dtype), on any device.
        masks: ``N×H×W`` ground truth (bool or {0, 1}), same shape.
        fpr_limit: upper FPR bound of the PRO integral, in (0, 1].
    Returns:
        :class:`PixelMetrics`.
    """
    if maps.shape != masks.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ in shape")
    anomalous = masks.to(maps.device).bool()
    maps = maps.float()
    n_anomalous = int(anomalous.sum())
    n_normal = anomalous.numel() - n_anomalous
    if n_anomalous == 0 or n_normal == 0:
        return PixelMetrics(None, None)

    normal_parts = sort_in_parts_(select(maps, ~anomalous))
    anomalous_scores = select(maps, anomalous)
    pixel_auroc = float(count_ranks(normal_parts, anomalous_scores) / (n_anomalous * n_normal))

    order = torch.argsort(anomalous_scores)
    anomalous_sorted = anomalous_scores[order]
    weights = region_weights(anomalous)[order]
    # pro_at_or_above[i] = PRO of the threshold anomalous_sorted[i]; one extra 0 at the end.
    pro_at_or_above = torch.cat([weights.flip(0).cumsum(0).flip(0), weights.new_zeros(1)])

    # The curve beyond fpr_limit is never integrated: only the normal scores whose FPR is at most
    # fpr_limit, and the tie group where it is crossed, need their distinct values and counts.
    top = largest(normal_parts, min(n_normal, math.floor(fpr_limit * n_normal) + 1))
    values, counts = torch.unique_consecutive(top, return_counts=True)
    values, counts = values.flip(0), counts.flip(0)
    fpr_at = counts.double().cumsum(0) / n_normal
    pro_at = pro_at_or_above[torch.searchsorted(anomalous_sorted, values, side="left")]
    pro_above = pro_at_or_above[torch.searchsorted(anomalous_sorted, values, side="right")]
    fpr_above = fpr_at - counts.double() / n_normal

    inside = fpr_at <= fpr_limit
    area = ((fpr_at - fpr_above) * (pro_at + pro_above) / 2)[inside].sum()
    crossing = int(inside.sum())
    if crossing < values.numel():
        x0, x1 = fpr_above[crossing], fpr_at[crossing]
        y0, y1 = pro_above[crossing], pro_at[crossing]
        y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        area = area + (fpr_limit - x0) * (y0 + y_limit) / 2
    return PixelMetrics(pixel_auroc, float(area / fpr_limit))
