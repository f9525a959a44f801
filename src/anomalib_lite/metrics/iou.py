"""Segmentation IoU at a fixed threshold on the test set's normalised anomaly maps.

UTAD reports a mean IoU on MVTec AD. The maps are scaled to [0, 1] with the minimum
and maximum over the whole test set (every image, including normal ones and those
without a mask file: one scale for all, so a normal image can stay below the
threshold), binarised at ``threshold``, and compared with the ground truth of each
anomalous image that has a mask; the IoU is the mean over those images.
"""

from __future__ import annotations

import torch


def segmentation_iou(
    maps: torch.Tensor, masks: torch.Tensor, threshold: float = 0.5, valid: torch.Tensor | None = None
) -> float | None:
    """Mean per-image IoU of the binarised maps with the masks, over images whose mask is known and not empty.

    Args:
        maps: ``N×H×W`` anomaly maps of **all** test images: the normalisation spans them all (normal
            images and images without a mask file too).
        masks: ``N×H×W`` bool ground truth.
        threshold: in [0, 1], applied to ``(map − min) / (max − min)`` over the whole set.
        valid: ``N`` bool, False for images whose mask is unknown (they count in the normalisation only);
            ``None``: every mask is known.
    Returns:
        The mean IoU, or ``None`` when no image with a known mask has an anomalous pixel.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"IoU threshold {threshold} must be in [0, 1]")
    anomalous = masks.flatten(1).any(dim=1)
    if valid is not None:
        anomalous = anomalous & valid.to(anomalous.device).bool()
    if not anomalous.any():
        return None
    low, high = maps.min().double(), maps.max().double()
    scale = high - low if high > low else torch.ones_like(high)
    predicted = (maps[anomalous].double() - low) / scale >= threshold
    truth = masks[anomalous]
    intersection = (predicted & truth).flatten(1).sum(dim=1)
    union = (predicted | truth).flatten(1).sum(dim=1)
    return float((intersection.double() / union.double()).mean())
