"""Per-defect-type results: each defect type's images against the good images.

A defect type is the test sub-folder an anomalous image comes from (``test/<defect>/`` in the MVTec AD
layout; the class for one-class datasets). Its subset is the good (label 0) test images plus that
type's images, and its metrics are the usual ones on that subset: image AUROC and AP, and over the subset's
images with a known mask, pixel AUROC, AUPRO and pixel AP; its AUPIMO is the mean of its images' (their shared
FPR comes from the good images in every subset, so each image's value is the overall one).

Every subset shares the good images' pixels, so they are sorted once: an anomalous pixel's rank among
the subset's normal pixels is its rank among the good images' pixels (binary search in that sort) plus
its rank among the normal pixels of its own type's images (sorted per type), and the AUPRO's crossing
value is selected from the two sorted arrays. The counts are exact, so the metrics equal
:func:`~anomalib_lite.metrics.aupro.pixel_metrics` on the subset.
"""

from __future__ import annotations

import torch

from anomalib_lite.metrics.aupimo import defined_mean
from anomalib_lite.metrics.aupro import PixelMetrics, crossing_rank, metrics_from_ranks, pixel_metrics, region_weights
from anomalib_lite.metrics.auroc import auroc
from anomalib_lite.metrics.precision_recall import average_precision
from anomalib_lite.metrics.ranks import KthLargest, PositiveRanks


def defect_types(labels: torch.Tensor, defects: list[str]) -> list[str]:
    """The sorted defect types of the anomalous images (``defects[i]`` of each image with label 1)."""
    return sorted({defect for defect, label in zip(defects, labels.tolist()) if label == 1})


def per_defect_metrics(
    scores: torch.Tensor,
    labels: torch.Tensor,
    maps: torch.Tensor,
    masks: torch.Tensor,
    mask_valid: torch.Tensor,
    defects: list[str],
    fpr_limit: float = 0.3,
    aupimo: torch.Tensor | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """Image AUROC and AP, pixel AUROC, AUPRO and pixel AP, and AUPIMO of each defect type against the good
    images.

    Args:
        scores: ``N`` image scores. labels: ``N`` labels in {0, 1}. maps: ``N×H×W`` anomaly maps.
        masks: ``N×H×W`` bool ground truth. mask_valid: ``N`` bool, whether each mask is known.
        defects: ``N`` defect types (``good``, or anything, for the normal images: label 0 decides).
        fpr_limit: upper FPR bound of the AUPRO.
        aupimo: ``N`` float64 AUPIMO of each image, NaN where it has none (the evaluator's
            :func:`~anomalib_lite.metrics.evaluator.aupimo_by_image`); ``None``: no AUPIMO.
    Returns:
        defect type → ``{image_auroc, image_ap, pixel_auroc, aupro, pixel_ap, aupimo, n_images, n_anomalous}``
        (``None`` where undefined), in sorted order; empty when there is no good image or fewer than two
        defect types (the overall metrics are then the only type's).
    """
    if len(defects) != labels.numel():
        raise ValueError(f"{len(defects)} defect types for {labels.numel()} images")
    kinds = defect_types(labels, defects)
    normal = labels == 0
    if len(kinds) < 2 or not bool(normal.any()):
        return {}
    good = normal & mask_valid
    # The shared sort needs the good images to be all normal pixels (else: each subset on its own).
    good_sorted = None if bool(masks[good].any()) else torch.sort(maps[good].float().reshape(-1)).values
    results = {}
    for kind in kinds:
        of_kind = torch.tensor([defect == kind for defect in defects], device=labels.device) & (labels == 1)
        chosen = normal | of_kind
        if good_sorted is None:
            pixel = pixel_metrics(maps[chosen & mask_valid], masks[chosen & mask_valid], fpr_limit)
        else:
            known = of_kind & mask_valid
            pixel = pixel_metrics_beside(good_sorted, maps[known], masks[known], fpr_limit)
        results[kind] = {
            "image_auroc": auroc(scores[chosen], labels[chosen]),
            "image_ap": average_precision(scores[chosen], labels[chosen]),
            "pixel_auroc": pixel.pixel_auroc,
            "aupro": pixel.aupro,
            "pixel_ap": pixel.pixel_ap,
            "aupimo": None if aupimo is None else defined_mean(aupimo[of_kind.to(aupimo.device)]),
            "n_images": int(chosen.sum()),
            "n_anomalous": int(of_kind.sum()),
        }
    return results


def pixel_metrics_beside(
    normal_sorted: torch.Tensor, maps: torch.Tensor, masks: torch.Tensor, fpr_limit: float = 0.3
) -> PixelMetrics:
    """Exact pixel AUROC, AUPRO, AP and F1-max of ``maps``/``masks`` together with extra normal pixels, given
    sorted.

    Equal to :func:`~anomalib_lite.metrics.aupro.pixel_metrics` of the images of ``maps`` plus images
    holding the scores ``normal_sorted`` with empty masks.

    Args:
        normal_sorted: ascending float32 scores of the extra normal pixels (1-D).
        maps: ``N×H×W`` anomaly maps. masks: ``N×H×W`` ground truth of those maps.
        fpr_limit: upper FPR bound of the AUPRO.
    """
    anomalous = masks.bool()
    positives = maps[anomalous].float() + 0.0  # −0.0 → +0.0, as rank_positives returns them
    others = torch.sort(maps[~anomalous].float()).values
    n_normal = normal_sorted.numel() + others.numel()
    if positives.numel() == 0 or n_normal == 0:
        return PixelMetrics(None, None)
    below, not_above = _count_in(normal_sorted, others, positives)
    k = crossing_rank(n_normal, fpr_limit)
    kth = None
    if k is not None:
        value = _kth_smallest(normal_sorted, others, n_normal - k)
        kth_below, kth_not_above = _count_in(normal_sorted, others, value)
        kth = KthLargest(float(value[0] + 0.0), int(kth_below[0]), int(kth_not_above[0] - kth_below[0]))
    ranks = PositiveRanks(positives, below, not_above - below, n_normal, kth)
    return metrics_from_ranks(ranks, region_weights(anomalous), fpr_limit)


def _count_in(first: torch.Tensor, second: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How many scores of the two ascending arrays are ``< values`` and ``<= values`` (int64, per value)."""
    below = torch.searchsorted(first, values, side="left") + torch.searchsorted(second, values, side="left")
    not_above = torch.searchsorted(first, values, side="right") + torch.searchsorted(second, values, side="right")
    return below, not_above


def _kth_smallest(first: torch.Tensor, second: torch.Tensor, m: int) -> torch.Tensor:
    """The ``m``-th smallest (0-based) score of the union of two ascending arrays, as a 1-element tensor:
    a binary search in each array for the value with ``#(< v) <= m < #(<= v)`` over both."""
    for array in (first, second):
        low, high = 0, array.numel() - 1
        while low <= high:
            middle = (low + high) // 2
            value = array[middle : middle + 1]
            below, not_above = (int(c) for c in _count_in(first, second, value))
            if not_above <= m:
                low = middle + 1
            elif below > m:
                high = middle - 1
            else:
                return value
    raise ValueError(f"no {m}-th smallest of {first.numel()} + {second.numel()} scores")
