"""Exact anomaly-detection metrics in torch: AUROC, F1-max, pixel AUROC, AUPRO, segmentation IoU,
per-image pixel AUROC and image accuracy; the evaluator that computes them over a test split (``evaluator``,
from ``predictions``) and the catalogue of what each metric is (``catalogue``)."""

from anomalib_lite.metrics.aupro import PixelMetrics, pixel_metrics, region_weights
from anomalib_lite.metrics.auroc import auroc, f1_max
from anomalib_lite.metrics.catalogue import METRICS, Metric, metric_columns, register_metric
from anomalib_lite.metrics.evaluator import (
    Evaluation,
    collect_predictions,
    compute_metrics,
    evaluate_predictions,
)
from anomalib_lite.metrics.iou import segmentation_iou
from anomalib_lite.metrics.per_defect import per_defect_metrics
from anomalib_lite.metrics.per_image import image_accuracy, per_image_pixel_aurocs
from anomalib_lite.metrics.predictions import Predictions

__all__ = [
    "METRICS",
    "Evaluation",
    "Metric",
    "PixelMetrics",
    "Predictions",
    "auroc",
    "collect_predictions",
    "compute_metrics",
    "evaluate_predictions",
    "f1_max",
    "image_accuracy",
    "metric_columns",
    "per_defect_metrics",
    "per_image_pixel_aurocs",
    "pixel_metrics",
    "region_weights",
    "register_metric",
    "segmentation_iou",
]
