"""Pixel AUROC, AUPRO, pixel AP and pixel F1-max from the exact ranks of the anomalous pixels among the normal
ones (AP and F1-max: :mod:`~anomalib_lite.metrics.precision_recall`).

The AUPRO follows the MVTec AD reference algorithm: ground-truth regions are the
8-connected components of each mask; pixels are swept by descending score with tied
scores merged; FPR is the share of normal pixels above the threshold, PRO the sum
over region pixels of ``1 / (region size × number of regions)``; the curve starts
at (0, 0) and is integrated by trapezoids up to ``fpr_limit`` (linearly
interpolated there), then divided by ``fpr_limit``.

Only the FPR axis moves at a normal pixel's score, so each normal pixel ``n`` above the
crossing value (the ``k``-th largest normal score, where the FPR first exceeds ``fpr_limit``)
adds a trapezoid of width ``1 / N_normal`` and height ``(PRO(> n) + PRO(≥ n)) / 2``.
Summed over anomalous pixels instead, pixel ``p`` of weight ``w`` adds
``w · (2 · #normals strictly between the crossing value and p + #normals equal to p above it)``,
which needs only the ranks that pixel AUROC needs as well. The crossing trapezoid is
interpolated from the counts at the crossing value.
"""

from __future__ import annotations

import contextvars
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from anomalib_lite.metrics.auroc import auroc_from_ranks
from anomalib_lite.metrics.precision_recall import (
    average_precision_from_counts,
    f1_max_from_counts,
    precision_recall_counts,
)
from anomalib_lite.metrics.profiling import phase
from anomalib_lite.metrics.ranks import PositiveRanks, RankCurve, curve_from_ranks, rank_positives, ranks_descending


def region_weights(masks: torch.Tensor) -> torch.Tensor:
    """PRO weight of each anomalous pixel: ``1 / (region size × number of regions)``.

    Args:
        masks: ``N×H×W`` bool ground truth.
    Returns:
        float64 weights of the anomalous pixels, in the order of ``masks[masks]``.
        Regions are the 8-connected components of each mask (never across images). Each image is labelled
        within the bounding box of its anomalous pixels (the rest holds no region), a few thousand pixels for
        a typical defect instead of the whole frame.
    """
    stack = masks.cpu().numpy()
    rows, columns = stack.any(axis=2), stack.any(axis=1)
    connect_8 = np.ones((3, 3), dtype=bool)
    region_of_pixel, n_regions = [], 0
    for image in np.flatnonzero(rows.any(axis=1)):
        ys, xs = np.flatnonzero(rows[image]), np.flatnonzero(columns[image])
        crop = stack[image, ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
        regions, n = ndimage.label(crop, structure=connect_8)
        region_of_pixel.append(regions[crop] + n_regions)  # row-major, as masks[masks]
        n_regions += n
    if not region_of_pixel:
        return torch.zeros(0, dtype=torch.float64, device=masks.device)
    region = torch.from_numpy(np.concatenate(region_of_pixel)).to(masks.device)
    sizes = torch.bincount(region, minlength=n_regions + 1).double()
    return 1.0 / (sizes[region] * n_regions)


@dataclass
class PixelMetrics:
    """Pixel AUROC and AUPRO; ``None`` where undefined (no anomalous or no normal pixel). When asked for,
    also the pixel AP, the pixel F1-max and the threshold reaching it (the highest such), and the exact pixel
    ROC curve and the PRO curve up to the FPR limit (``y`` = PRO), whose trapezoidal areas are ``pixel_auroc``
    and ``aupro × fpr_limit``."""

    pixel_auroc: float | None
    aupro: float | None
    roc: RankCurve | None = None
    pro: RankCurve | None = None
    pixel_ap: float | None = None
    pixel_f1_max: float | None = None
    pixel_threshold: float | None = None


def crossing_rank(n_normal: int, fpr_limit: float) -> int | None:
    """The smallest ``k`` with ``k / n_normal > fpr_limit`` (float64, as the reference's FPR axis), i.e. the
    rank from the top of the normal score whose tie group crosses the limit; ``None`` when none does."""
    k = math.floor(fpr_limit * n_normal) + 1
    while k > 1 and (k - 1) / n_normal > fpr_limit:
        k -= 1
    while k <= n_normal and k / n_normal <= fpr_limit:
        k += 1
    return k if k <= n_normal else None


def aupro_from_ranks(ranks: PositiveRanks, weights: torch.Tensor, fpr_limit: float) -> float:
    """AUPRO up to ``fpr_limit`` from the anomalous pixels' exact ranks and PRO weights (module docstring).

    Args:
        ranks: from :func:`rank_positives` with ``kth_largest=crossing_rank(...)`` (or none when ``None``).
        weights: float64 PRO weight of each anomalous pixel, in the order of ``ranks.positives``.
        fpr_limit: upper FPR bound of the integral, in (0, 1].
    """
    n_normal = ranks.n_negative
    kth = ranks.kth
    if kth is None:  # the whole curve lies inside the limit
        twice_height = 2 * ranks.below + ranks.equal
        return float((weights * twice_height.double()).sum()) / (2 * n_normal) / fpr_limit
    at_or_below = kth.below + kth.equal  # normals ≤ the crossing value
    above = ranks.positives > kth.value
    twice_height = 2 * (ranks.below - at_or_below).clamp(min=0) + ranks.equal * above
    area = float((weights * twice_height.double()).sum()) / (2 * n_normal)
    x0, x1 = (n_normal - at_or_below) / n_normal, (n_normal - kth.below) / n_normal
    y0 = float(weights[above].sum())
    y1 = y0 + float(weights[ranks.positives == kth.value].sum())
    y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
    area += (fpr_limit - x0) * (y0 + y_limit) / 2
    return area / fpr_limit


def pixel_metrics(
    maps: torch.Tensor,
    masks: torch.Tensor,
    fpr_limit: float = 0.3,
    curves: bool = False,
    precision_recall: bool = True,
) -> PixelMetrics:
    """Exact pixel AUROC and AUPRO (and pixel AP and F1-max) of anomaly maps against ground-truth masks.

    Args:
        maps: ``N×H×W`` anomaly scores (any float dtype, compared as float32), on any device.
        masks: ``N×H×W`` ground truth (bool or {0, 1}), same shape.
        fpr_limit: upper FPR bound of the PRO integral, in (0, 1].
        curves: also return the pixel ROC and PRO curves.
        precision_recall: also the pixel AP, F1-max and its threshold. Curves and these come from the same
            ranks, after one sort of the anomalous pixels (not of every pixel).
    Returns:
        :class:`PixelMetrics`.
    """
    if maps.shape != masks.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ in shape")
    anomalous = masks.to(maps.device).bool()
    n_anomalous = int(torch.count_nonzero(anomalous))  # a bool .sum() is 20× slower on CPU
    n_normal = anomalous.numel() - n_anomalous
    if n_anomalous == 0 or n_normal == 0:
        return PixelMetrics(None, None)
    # Connected-component labelling (CPU, releases the GIL) runs in a thread while the ranks are counted.
    with ThreadPoolExecutor(1) as pool:
        labelled = pool.submit(contextvars.copy_context().run, _timed_region_weights, anomalous)
        ranks = rank_positives(maps.float().reshape(-1), anomalous.reshape(-1), crossing_rank(n_normal, fpr_limit))
        weights = labelled.result()
    return metrics_from_ranks(ranks, weights, fpr_limit, curves, precision_recall)


def metrics_from_ranks(
    ranks: PositiveRanks,
    weights: torch.Tensor,
    fpr_limit: float,
    curves: bool = False,
    precision_recall: bool = True,
) -> PixelMetrics:
    """:class:`PixelMetrics` from the anomalous pixels' exact ranks (with the crossing value of ``fpr_limit``,
    see :func:`aupro_from_ranks`) and their PRO weights (in the order of ``ranks.positives``)."""
    with phase("metrics from ranks"):
        metrics = PixelMetrics(auroc_from_ranks(ranks), aupro_from_ranks(ranks, weights, fpr_limit))
    if not (curves or precision_recall):
        return metrics
    with phase("sort of the anomalous pixels"):
        ordered, order = ranks_descending(ranks)
    if precision_recall:
        with phase("precision-recall from ranks"):
            counts = precision_recall_counts(ordered)
            metrics.pixel_ap = average_precision_from_counts(counts)
            metrics.pixel_f1_max, metrics.pixel_threshold = f1_max_from_counts(counts)
    if curves:
        with phase("curves from ranks"):
            metrics.roc = curve_from_ranks(ordered)
            metrics.pro = curve_from_ranks(ordered, weights if order is None else weights[order], fpr_limit)
    return metrics


def _timed_region_weights(masks: torch.Tensor) -> torch.Tensor:
    with phase("region labelling (thread)"):
        return region_weights(masks)
