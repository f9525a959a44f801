"""Exact anomaly-detection metrics in torch: AUROC, average precision, F1-max, pixel AUROC, AUPRO, AUPIMO,
segmentation IoU, per-image pixel AUROC and image accuracy; the predicted masks at a pixel threshold; the evaluator
that computes them over a test split (``evaluator``, from ``predictions``) and the catalogue of what each metric
is (``catalogue``)."""

from anomalib_lite.metrics.aupimo import Aupimo, aupimo
from anomalib_lite.metrics.aupro import PixelMetrics, pixel_metrics, region_weights
from anomalib_lite.metrics.auroc import auroc
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
from anomalib_lite.metrics.precision_recall import average_precision, f1_max, predicted_masks
from anomalib_lite.metrics.predictions import Predictions

__all__ = [
    "METRICS",
    "Aupimo",
    "Evaluation",
    "Metric",
    "PixelMetrics",
    "Predictions",
    "aupimo",
    "auroc",
    "average_precision",
    "collect_predictions",
    "compute_metrics",
    "evaluate_predictions",
    "f1_max",
    "image_accuracy",
    "metric_columns",
    "per_defect_metrics",
    "per_image_pixel_aurocs",
    "pixel_metrics",
    "predicted_masks",
    "region_weights",
    "register_metric",
    "segmentation_iou",
]
