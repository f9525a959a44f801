"""The metrics of IGD's and UTAD's papers: mean per-anomalous-image pixel AUROC, and image accuracy.

The per-image pixel AUROC is the CAVGA protocol, which IGD follows (igd.txt L208: "mean pixel-level AUC of all
anomalous images"; IGD Table 4): one ROC per anomalous image over its own pixels, then the mean over those images.
For UTAD it is our reading: the paper says only "Area under ROC curve (AuROC)" (utad.txt L112), its Table 1 row
labels are lost (L92-93) and Table 4's "AuROC" (L167) names no level; the reading rests on Table 1's baseline
AuROCs being CAVGA's own figures (L112: "we directly use the results from their supplement materials"). It differs
from the pooled pixel AUROC (one ROC over every pixel of the test set), which the MVTec AD convention uses.

Image accuracy (IGD Table 2, "mean accuracy") is the share of test images classified correctly by
``score ≥ threshold``; the paper does not say which threshold, so the caller states it. Nor does it say whether
its mean is over all images (:func:`image_accuracy`) or over the two classes (:func:`image_balanced_accuracy`,
the mean of the normal and the anomalous images' accuracies: MVTec AD's test sets are about 73 % anomalous, so the
two differ); both are reported.
"""

from __future__ import annotations

import torch

from anomalib_lite.metrics.auroc import auroc


def per_image_pixel_aurocs(maps: torch.Tensor, masks: torch.Tensor) -> list[float]:
    """The exact pixel AUROC of each anomalous image's own map.

    Args:
        maps: ``N×H×W`` anomaly maps. masks: ``N×H×W`` bool ground truth.
    Returns:
        One AUROC per image whose mask has both anomalous and normal pixels (an AUROC is undefined
        otherwise), in image order.
    """
    if maps.shape != masks.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ in shape")
    values = [auroc(m, k) for m, k in zip(maps, masks.bool()) if k.any()]
    return [v for v in values if v is not None]


def image_accuracy(scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> float:
    """Share of images with ``(score ≥ threshold) == label``.

    Args:
        scores: ``N`` image scores. labels: ``N`` labels in {0, 1}. threshold: the decision threshold.
    """
    predicted = scores.reshape(-1) >= threshold
    return float((predicted == labels.reshape(-1).bool()).double().mean())


def image_balanced_accuracy(scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> float | None:
    """The mean of the two classes' accuracies at ``score ≥ threshold`` (sensitivity and specificity), or
    ``None`` with a single class.

    Args:
        scores: ``N`` image scores. labels: ``N`` labels in {0, 1}. threshold: the decision threshold.
    """
    predicted = scores.reshape(-1) >= threshold
    labels = labels.reshape(-1).bool()
    if bool(labels.all()) or not bool(labels.any()):
        return None
    sensitivity = predicted[labels].double().mean()
    specificity = (~predicted[~labels]).double().mean()
    return float((sensitivity + specificity) / 2)
