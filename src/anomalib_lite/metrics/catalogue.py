"""The metric catalogue: every metric a run can report, with how tables show it and who reports it.

The evaluator computes the shared metrics for every model; a metric that only some papers report (UTAD's
segmentation IoU) is computed for the families that declare it (:meth:`AnomalyModel.reported_metrics
<anomalib_lite.models.base.AnomalyModel.reported_metrics>`), by the entry's ``compute``. Tables, the report,
``collect.py``, ``compare.py`` and ``reproduce.py`` take their columns and directions from here; a new metric
is one :func:`register_metric` call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from anomalib_lite.errors import ConfigError
from anomalib_lite.metrics.iou import segmentation_iou
from anomalib_lite.metrics.predictions import Predictions


@dataclass(frozen=True)
class Metric:
    """One metric of ``metrics.json``.

    Attributes:
        name: its key in ``metrics.json`` and its column in tables. title: its readable name.
        higher_is_better: the direction (``compare.py`` tests it; tables mark the best).
        always: a column of every table (the shared metrics); else shown when some row reports it.
        compute: for a metric that families declare: ``(predictions, **options)`` → the keys it adds to
            ``metrics.json`` (itself and, e.g., the threshold it used); ``None`` for the evaluator's own.
        digits: decimals shown in tables.
        test_set_threshold: how the metric depends on a threshold chosen on the test set (ours, where the paper
            states no rule), or ``None``; ``scripts/reproduce.py`` never compares such a metric with a paper.
        column: ``False`` for a value of ``metrics.json`` that is not a metric to rank runs by (a threshold):
            the catalogue names and labels it, but no table, ``collect.py`` or ``compare.py`` shows or tests it.
    """

    name: str
    title: str
    higher_is_better: bool = True
    always: bool = False
    compute: Callable[..., dict[str, Any]] | None = None
    digits: int = 4
    test_set_threshold: str | None = None
    column: bool = True

    def format(self, value: Any) -> str:
        """``value`` as a table shows it: ``-`` when undefined (``None`` or NaN)."""
        if value is None or (isinstance(value, float) and value != value):
            return "-"
        return f"{value:.{self.digits}f}"


def _segmentation_iou(pred: Predictions, threshold: float) -> dict[str, Any]:
    """UTAD's IoU: maps min–max scaled over the test set, binarised at ``threshold`` (see
    :func:`~anomalib_lite.metrics.iou.segmentation_iou`)."""
    return {"iou": segmentation_iou(pred.maps, pred.masks, threshold, pred.mask_valid), "iou_threshold": threshold}


METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add ``metric`` to the catalogue (tables show the metrics in the order they were registered).

    Raises:
        ValueError: a metric of that name is already registered.
    """
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is registered twice")
    METRICS[metric.name] = metric
    return metric


for _metric in (
    Metric("image_auroc", "image AUROC", always=True),
    Metric("pixel_auroc", "pixel AUROC", always=True),
    Metric("aupro", "AUPRO", always=True),
    Metric("image_f1_max", "image F1-max", always=True),
    Metric("image_ap", "image AP", always=True),
    Metric("pixel_ap", "pixel AP", always=True),
    Metric("pixel_f1_max", "pixel F1-max", always=True),
    Metric("aupimo", "AUPIMO", always=True),
    Metric(
        "iou",
        "segmentation IoU",
        compute=_segmentation_iou,
        test_set_threshold="maps min-max scaled over our test set, binarised at model.iou_threshold (our choice)",
    ),
    Metric("pixel_auroc_per_image", "pixel AUROC per anomalous image"),
    Metric(
        "image_accuracy",
        "image accuracy",
        test_set_threshold="at the F1-optimal threshold of our test set (our choice)",
    ),
    Metric(
        "image_balanced_accuracy",
        "image balanced accuracy",
        test_set_threshold="at the F1-optimal threshold of our test set (our choice)",
    ),
    Metric(
        "image_threshold",
        "image threshold",
        column=False,
        test_set_threshold="the image F1-max threshold of our test set (our choice)",
    ),
    Metric(
        "pixel_threshold",
        "pixel threshold",
        column=False,
        test_set_threshold="the pixel F1-max threshold of our test set (our choice): predicted masks are maps >= it",
    ),
):
    register_metric(_metric)


def metric_columns(rows: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """The metric columns of a table of ``rows`` (name → metrics): every ``always`` metric, then each other
    metric some row reports, in catalogue order."""
    return tuple(
        name
        for name, metric in METRICS.items()
        if metric.column and (metric.always or any(row.get(name) is not None for row in rows.values()))
    )


def declared_metrics(pred: Predictions, declared: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The metrics a family declares (name → options of its ``compute``), computed on ``pred``.

    Raises:
        ConfigError: a declared name is not in the catalogue, or is one the evaluator computes for every model.
    """
    values: dict[str, Any] = {}
    for name, options in declared.items():
        metric = METRICS.get(name)
        if metric is None or metric.compute is None:
            known = ", ".join(n for n, m in METRICS.items() if m.compute is not None)
            raise ConfigError(f"a model declares the metric {name!r}, which has no compute in the catalogue: {known}")
        values.update(metric.compute(pred, **options))
    return values
