"""The shared evaluator: runs a model over a test loader and computes every metric."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from anomalib_lite.errors import NonFiniteError
from anomalib_lite.metrics.aupimo import aupimo, defined_mean
from anomalib_lite.metrics.aupro import pixel_metrics
from anomalib_lite.metrics.auroc import auroc, roc_curve
from anomalib_lite.metrics.catalogue import declared_metrics
from anomalib_lite.metrics.per_defect import per_defect_metrics
from anomalib_lite.metrics.per_image import image_accuracy, image_balanced_accuracy, per_image_pixel_aurocs
from anomalib_lite.metrics.precision_recall import average_precision, f1_max
from anomalib_lite.metrics.predictions import Predictions
from anomalib_lite.metrics.ranks import RankCurve


@dataclass
class Evaluation:
    """What :func:`evaluate_predictions` gives.

    Attributes:
        metrics: name → value, as in ``metrics.json`` (see :func:`compute_metrics`).
        curves: the exact curves that were asked for and are defined: ``image_roc``, ``pixel_roc``,
            ``pro`` (up to the FPR limit; ``y`` = PRO).
    """

    metrics: dict[str, Any]
    curves: dict[str, RankCurve] = field(default_factory=dict)


def check_finite(pred: Predictions) -> None:
    """Refuse NaN/inf scores or maps, naming the images (their paths, else their indices).

    Raises:
        NonFiniteError: at least one image has a non-finite score or map value.
    """
    bad_score = ~torch.isfinite(pred.scores)
    bad_map = ~torch.isfinite(pred.maps).flatten(1).all(1)
    bad = torch.nonzero(bad_score | bad_map)[:, 0].tolist()
    if not bad:
        return
    bad_score, bad_map = bad_score.tolist(), bad_map.tolist()

    def describe(i: int) -> str:
        what = " and ".join(part for part, flag in (("score", bad_score[i]), ("map", bad_map[i])) if flag)
        return f"{pred.paths[i] if i < len(pred.paths) else f'image #{i}'} ({what})"

    shown = ", ".join(describe(i) for i in bad[:10])
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    raise NonFiniteError(
        f"The model gave NaN/inf anomaly scores or maps for {len(bad)} of {len(pred.scores)} test images: "
        f"{shown}{more}. No metric was computed; the model's weights or inputs are broken."
    )


def compute_metrics(
    pred: Predictions,
    fpr_limit: float = 0.3,
    declared: Mapping[str, Mapping[str, Any]] | None = None,
    per_defect: bool = True,
) -> dict[str, Any]:
    """Image AUROC, image AP, image F1-max (and its threshold), pixel AUROC, AUPRO, pixel AP, pixel F1-max and
    ``pixel_threshold``, the pixel threshold reaching it (the rule of predicted masks: our choice, a threshold
    chosen on the test set; :func:`~anomalib_lite.metrics.precision_recall.predicted_masks`), AUPIMO (the mean
    over the anomalous images with a known mask; ``aupimo_by_image``: path → value, ``n_aupimo_images``; the
    shared FPR over the normal images with a known, empty mask; :mod:`~anomalib_lite.metrics.aupimo`), the mean
    per-anomalous-image pixel AUROC (IGD/UTAD papers; ``n_pixel_auroc_images``: over how many images) and the
    image accuracy at the F1-max threshold (IGD Table 2; the paper states no threshold, so this one is a
    choice); with
    ``declared`` the metrics a family declares (catalogue name → options, e.g. ``{"iou": {"threshold": 0.5}}``:
    UTAD's segmentation IoU, see :func:`~anomalib_lite.metrics.catalogue.declared_metrics`); with ``per_defect``
    and ``pred.defects``, ``per_defect``: each defect type against the good images
    (:func:`~anomalib_lite.metrics.per_defect.per_defect_metrics`; absent with fewer than two types).

    Pixel metrics cover the images whose masks are known; metrics that are
    undefined on this test set (one class only) are ``None``.

    Raises:
        NonFiniteError: a score or map is NaN/inf (such values would be ranked as numbers);
            the message names those images.
    """
    return evaluate_predictions(pred, fpr_limit, declared, curves=False, per_defect=per_defect).metrics


def evaluate_predictions(
    pred: Predictions,
    fpr_limit: float = 0.3,
    declared: Mapping[str, Mapping[str, Any]] | None = None,
    curves: bool = True,
    per_defect: bool = True,
) -> Evaluation:
    """:func:`compute_metrics`' metrics and, with ``curves``, the exact image ROC, pixel ROC and PRO curves
    (from the same ranks as the metrics; their trapezoidal areas are image AUROC, pixel AUROC and
    ``aupro × fpr_limit``).

    Raises:
        NonFiniteError: as :func:`compute_metrics`.
    """
    check_finite(pred)
    f1 = f1_max(pred.scores, pred.labels)
    valid = pred.mask_valid
    # Boolean indexing copies the maps (0.45 GB at MVTec AD size): skip it when every mask is known.
    maps, masks = (pred.maps, pred.masks) if bool(valid.all()) else (pred.maps[valid], pred.masks[valid])
    pixel = pixel_metrics(maps, masks, fpr_limit, curves)
    per_image = per_image_pixel_aurocs(maps, masks)
    by_image = aupimo_by_image(pred)
    metrics = {
        "image_auroc": auroc(pred.scores, pred.labels),
        "image_ap": average_precision(pred.scores, pred.labels),
        "image_f1_max": None if f1 is None else f1[0],
        "image_threshold": None if f1 is None else f1[1],
        "pixel_auroc": pixel.pixel_auroc,
        "aupro": pixel.aupro,
        "pixel_ap": pixel.pixel_ap,
        "pixel_f1_max": pixel.pixel_f1_max,
        "pixel_threshold": pixel.pixel_threshold,
        "aupimo": None if by_image is None else defined_mean(by_image),
        "n_aupimo_images": 0 if by_image is None else int((~by_image.isnan()).sum()),
        "aupimo_by_image": {} if by_image is None else _by_path(pred, by_image),
        "n_images": int(pred.labels.numel()),
        "n_anomalous": int(pred.labels.sum()),
        "n_pixel_images": int(valid.sum()),
        "pixel_auroc_per_image": sum(per_image) / len(per_image) if per_image else None,
        "n_pixel_auroc_images": len(per_image),
        "image_accuracy": None if f1 is None else image_accuracy(pred.scores, pred.labels, f1[1]),
        "image_balanced_accuracy": None if f1 is None else image_balanced_accuracy(pred.scores, pred.labels, f1[1]),
    }
    metrics.update(declared_metrics(pred, declared or {}))
    if per_defect and pred.defects:
        defects = per_defect_metrics(
            pred.scores, pred.labels, pred.maps, pred.masks, valid, pred.defects, fpr_limit, by_image
        )
        if defects:
            metrics["per_defect"] = defects
    found: dict[str, RankCurve | None] = {}
    if curves:
        found = {"image_roc": roc_curve(pred.scores, pred.labels), "pixel_roc": pixel.roc, "pro": pixel.pro}
    return Evaluation(metrics, {name: curve for name, curve in found.items() if curve is not None})


def aupimo_by_image(pred: Predictions) -> torch.Tensor | None:
    """The AUPIMO of each image (:func:`~anomalib_lite.metrics.aupimo.aupimo`): ``N`` float64, NaN for an image
    without one; ``None`` when undefined on this test set (no normal or no anomalous image with a known mask).

    Images with a known mask take part: the shared FPR comes from those labelled normal whose mask is empty, and
    each one with an anomalous pixel gets a value.
    """
    has_mask = pred.masks.flatten(1).any(1)
    valid = pred.mask_valid.to(has_mask.device).bool()
    normal = (pred.labels.to(has_mask.device) == 0) & ~has_mask
    # Boolean indexing copies the maps: only when some mask is unknown (as for the pixel metrics).
    every = bool(valid.all())
    maps, masks = (pred.maps, pred.masks) if every else (pred.maps[valid], pred.masks[valid])
    result = aupimo(maps, masks, normal if every else normal[valid])
    if result is None:
        return None
    values = torch.full((len(pred.labels),), float("nan"), dtype=torch.float64, device=result.values.device)
    images = result.images if every else torch.nonzero(valid).flatten()[result.images]
    values[images] = result.values
    return values


def _by_path(pred: Predictions, values: torch.Tensor) -> dict[str, float]:
    """``{path: value}`` of the images whose value is not NaN (``#<index>`` where paths are unknown)."""
    return {
        pred.paths[i] if i < len(pred.paths) else f"#{i}": float(values[i])
        for i in torch.nonzero(~values.isnan()).flatten().tolist()
    }


def collect_predictions(
    model: torch.nn.Module,
    loader: Iterable[dict],
    device: torch.device,
    map_size: int | None = None,
    progress: bool = True,
) -> Predictions:
    """Run ``model.predict`` over a loader; keep scores, maps and masks on ``device``.

    Args:
        model: an :class:`~anomalib_lite.models.base.AnomalyModel`.
        loader: batches following the data contract (``image``, ``label``, ``mask``,
            ``mask_valid``, ``path``; ``defect`` where known).
        device: where the model runs and the results are gathered.
        map_size: resize maps and masks to this side (maps bilinear, masks nearest)
            before the metrics; ``None`` keeps the input resolution.
    """
    model.eval()
    parts: dict[str, list] = {k: [] for k in ("scores", "labels", "maps", "masks", "mask_valid", "paths", "defects")}
    for batch in tqdm(loader, desc="evaluate", leave=False, disable=not progress):
        with torch.inference_mode():
            out = model.predict(batch["image"].to(device))
        maps = out.anomaly_map.float()
        masks = batch["mask"].to(device)[:, 0]
        if map_size is not None and maps.shape[-1] != map_size:
            maps = F.interpolate(maps[:, None], size=(map_size, map_size), mode="bilinear", align_corners=False)[:, 0]
            masks = F.interpolate(masks[:, None], size=(map_size, map_size), mode="nearest")[:, 0]
        parts["scores"].append(out.score.float())
        parts["labels"].append(batch["label"].to(device))
        parts["maps"].append(maps)
        parts["masks"].append(masks > 0.5)
        parts["mask_valid"].append(batch["mask_valid"].to(device))
        parts["paths"].extend(batch["path"])
        parts["defects"].extend(batch.get("defect", []))
    paths, defects = parts.pop("paths"), parts.pop("defects")
    return Predictions(**{k: torch.cat(v) for k, v in parts.items()}, paths=paths, defects=defects)
