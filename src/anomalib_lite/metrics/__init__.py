"""Exact anomaly-detection metrics in torch: AUROC, F1-max, pixel AUROC, AUPRO, segmentation IoU."""

from anomalib_lite.metrics.aupro import PixelMetrics, pixel_metrics, region_weights
from anomalib_lite.metrics.auroc import auroc, f1_max
from anomalib_lite.metrics.evaluator import Predictions, collect_predictions, compute_metrics
from anomalib_lite.metrics.iou import segmentation_iou

__all__ = [
    "PixelMetrics",
    "Predictions",
    "auroc",
    "collect_predictions",
    "compute_metrics",
    "f1_max",
    "pixel_metrics",
    "region_weights",
    "segmentation_iou",
]
