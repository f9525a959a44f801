"""Per-defect-type results: each defect type's images against the good images.

A defect type is the test sub-folder an anomalous image comes from (``test/<defect>/`` in the MVTec AD
layout; the class for one-class datasets). Its subset is the good (label 0) test images plus that
type's images, and its metrics are the usual ones on that subset: image AUROC, and over the subset's
images with a known mask, pixel AUROC and AUPRO.
"""

from __future__ import annotations

import torch

from anomalib_lite.metrics.aupro import pixel_metrics
from anomalib_lite.metrics.auroc import auroc


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
) -> dict[str, dict[str, float | int | None]]:
    """Image AUROC, pixel AUROC and AUPRO of each defect type against the good images.

    Args:
        scores: ``N`` image scores. labels: ``N`` labels in {0, 1}. maps: ``N×H×W`` anomaly maps.
        masks: ``N×H×W`` bool ground truth. mask_valid: ``N`` bool, whether each mask is known.
        defects: ``N`` defect types (``good``, or anything, for the normal images: label 0 decides).
        fpr_limit: upper FPR bound of the AUPRO.
    Returns:
        defect type → ``{image_auroc, pixel_auroc, aupro, n_images, n_anomalous}`` (``None`` where
        undefined), in sorted order; empty when there is no good image or fewer than two defect types
        (the overall metrics are then the only type's).
    """
    if len(defects) != labels.numel():
        raise ValueError(f"{len(defects)} defect types for {labels.numel()} images")
    kinds = defect_types(labels, defects)
    normal = labels == 0
    if len(kinds) < 2 or not bool(normal.any()):
        return {}
    results = {}
    for kind in kinds:
        of_kind = torch.tensor([defect == kind for defect in defects], device=labels.device) & (labels == 1)
        chosen = normal | of_kind
        with_mask = chosen & mask_valid
        pixel = pixel_metrics(maps[with_mask], masks[with_mask], fpr_limit)
        results[kind] = {
            "image_auroc": auroc(scores[chosen], labels[chosen]),
            "pixel_auroc": pixel.pixel_auroc,
            "aupro": pixel.aupro,
            "n_images": int(chosen.sum()),
            "n_anomalous": int(of_kind.sum()),
        }
    return results
