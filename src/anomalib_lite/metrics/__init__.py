"""Exact anomaly-detection metrics in torch: AUROC, F1-max, pixel AUROC, AUPRO, segmentation IoU,
per-image pixel AUROC and image accuracy."""

from anomalib_lite.metrics.aupro import PixelMetrics, pixel_metrics, region_weights
from anomalib_lite.metrics.auroc import auroc, f1_max
from anomalib_lite.metrics.evaluator import (
    Evaluation,
    Predictions,
    collect_predictions,
    compute_metrics,
    evaluate_predictions,
)
from anomalib_lite.metrics.iou import segmentation_iou
from anomalib_lite.metrics.per_defect import per_defect_metrics
from anomalib_lite.metrics.per_image import image_accuracy, per_image_pixel_aurocs

__all__ = [
    "Evaluation",
    "PixelMetrics",
    "Predictions",
    "auroc",
    "collect_predictions",
    "compute_metrics",
    "evaluate_predictions",
    "f1_max",
    "image_accuracy",
    "per_defect_metrics",
    "per_image_pixel_aurocs",
    "pixel_metrics",
    "region_weights",
    "segmentation_iou",
]
