"""Evaluation with its outputs: the test-split metrics, ``metrics.json``, the curves, the overlay images and
their TensorBoard copies."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from anomalib_lite.data import DataModule, build_datamodule, categories
from anomalib_lite.engine.device import place_model
from anomalib_lite.files import write_atomically
from anomalib_lite.metrics import Evaluation, Predictions, collect_predictions, evaluate_predictions
from anomalib_lite.metrics.auroc import auroc
from anomalib_lite.models import AnomalyModel
from anomalib_lite.pipeline.config import EvalConfig
from anomalib_lite.pipeline.inference import load_trained
from anomalib_lite.pipeline.setting import run_setting
from anomalib_lite.pipeline.tiling import tiled
from anomalib_lite.reporting.curves import read_curves, write_curves
from anomalib_lite.reporting.gallery import save_gallery
from anomalib_lite.reporting.plots import plot_curves
from anomalib_lite.reporting.run_report import write_report

log = logging.getLogger("anomalib_lite")


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write JSON atomically (never a half-written file, no partial file left when the write fails)."""
    write_atomically(path, lambda file: file.write(json.dumps(data, indent=2).encode()))


SCORE_COLUMNS = ("path", "label", "score", "defect", "predicted", "pixel_auroc")


def write_scores(pred: Predictions, path: Path, threshold: float | None = None) -> None:
    """Write each test image's row (CSV, atomically) for paired tests between runs (``scripts/compare.py``), the
    report's score histogram and a look at single images: ``path, label, score, defect`` (empty where the dataset
    names none), ``predicted`` (``score ≥ threshold``, the stored image threshold; empty without one) and
    ``pixel_auroc`` (the exact pixel AUROC of the image's own map, for an image whose mask has both anomalous and
    normal pixels; else empty)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(SCORE_COLUMNS)
    defects = pred.defects or [""] * len(pred.paths)
    masks = pred.masks.bool()
    rows = zip(pred.paths, pred.labels.tolist(), pred.scores.tolist(), defects, pred.maps, masks, pred.mask_valid)
    for name, label, score, defect, anomaly_map, mask, valid in rows:
        predicted = "" if threshold is None else int(score >= threshold)
        pixel = auroc(anomaly_map, mask) if bool(valid) and mask.any() and not mask.all() else None
        writer.writerow([name, int(label), repr(float(score)), defect, predicted, "" if pixel is None else repr(pixel)])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda file: file.write(text.getvalue().encode()))


def hold_out_validation(model: AnomalyModel, datamodule: DataModule) -> None:
    """Carve the model's validation split (if it asks for one) out of the test set, logging its size."""
    split = model.validation_split()
    if split is not None:
        datamodule.split_validation(split)
        held_out = datamodule.validation_set.records
        kinds = sorted({r.defect for r in held_out})
        log.info(
            "%s: %d test images held out for validation (%s), %d left for the metrics",
            datamodule.name,
            len(held_out),
            ", ".join(kinds),
            len(datamodule.test_set),
        )


def evaluate_category(
    model: AnomalyModel,
    datamodule: DataModule,
    device: torch.device,
    cfg: EvalConfig,
    progress: bool = True,
) -> tuple[Evaluation, Predictions]:
    """Metrics of one category's test split (with the inference time per image; per defect type and the
    exact curves as ``cfg.per_defect`` and ``cfg.curves`` say). A model trained on tiles (``datamodule.tiling``)
    predicts the whole test images tile by tile, and is evaluated on the stitched whole-image maps.

    Returns:
        The evaluation (``.metrics`` for ``metrics.json``, ``.curves``), and the predictions it came from
        (for :func:`save_outputs`).
    """
    start = time.perf_counter()
    whole = tiled(model, datamodule.tiling, datamodule.batch_size)  # a model trained on tiles predicts whole images
    pred = collect_predictions(whole, datamodule.test_loader(), device, cfg.map_size, progress)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    evaluation = evaluate_predictions(pred, cfg.fpr_limit, model.reported_metrics(), cfg.curves, cfg.per_defect)
    metrics = evaluation.metrics
    # Wall time of predicting the test split (batches, transfers, map resizing included).
    metrics["inference_ms_per_image"] = 1000 * seconds / max(1, len(pred.labels))
    notes = []
    if not datamodule.has_masks:
        notes.append("no ground-truth masks: pixel metrics undefined")
    elif metrics["n_pixel_images"] < metrics["n_images"]:
        notes.append(
            f"pixel metrics over the {metrics['n_pixel_images']} of {metrics['n_images']} images whose masks are known"
        )
    if datamodule.empty_masks:
        side = datamodule.test_set.images.shape[1]
        notes.append(
            f"{len(datamodule.empty_masks)} defect image(s) have an empty mask at {side} px; "
            "their pixels count as normal in the pixel metrics: " + ", ".join(datamodule.empty_masks)
        )
    if notes:
        metrics["note"] = "; ".join(notes)
    return evaluation, pred


def save_outputs(
    model: AnomalyModel,
    datamodule: DataModule,
    evaluation: Evaluation,
    pred: Predictions,
    device: torch.device,
    cfg: EvalConfig,
    folder: Path,
    category: str,
    step: int = 0,
) -> None:
    """One category's optional outputs in the run ``folder``: ``curves/<category>/`` (a CSV per curve and
    ``curves.png``), ``maps/<category>/`` (overlays), and in ``tensorboard/<category>/`` the metrics as
    scalars (per defect type as ``metrics/<defect>/<name>``), the curve figure and the overlays as images, at
    ``step`` (training: the last optimiser step, so they stand at the end of the loss curves).

    Callers write ``metrics.json`` first, so a full disk here loses no metric.
    """
    curve_dir = folder / "curves" / category
    write_curves(evaluation.curves, curve_dir)
    overlays = save_maps(model, datamodule, pred, evaluation.metrics, device, cfg.n_maps, folder / "maps" / category)
    title = f"{model.__class__.__name__}, {datamodule.name}"
    figure = plot_curves({category: read_curves(curve_dir)}, curve_dir / "curves.png", title, cfg.fpr_limit)
    with SummaryWriter(str(folder / "tensorboard" / category)) as writer:
        log_evaluation(writer, evaluation.metrics, [figure] if figure else [], overlays, step)


def log_evaluation(
    writer: SummaryWriter, metrics: dict[str, Any], figures: list[Path], overlays: list[Path], step: int = 0
) -> None:
    """TensorBoard, at ``step``: every float metric as ``metrics/<name>`` (per defect type
    ``metrics/<defect>/<name>``), the curve figures as ``curves/<file stem>`` and the overlays as
    ``overlays/<file stem>`` images."""
    scalars = {f"metrics/{name}": value for name, value in metrics.items() if isinstance(value, float)}
    for defect, values in (metrics.get("per_defect") or {}).items():
        scalars.update({f"metrics/{defect}/{n}": v for n, v in values.items() if isinstance(v, float)})
    for tag, value in scalars.items():
        writer.add_scalar(tag, value, step)
    for group, paths in (("curves", figures), ("overlays", overlays)):
        for path in paths:
            image = np.asarray(Image.open(path).convert("RGB"))
            writer.add_image(f"{group}/{path.stem}", image, step, dataformats="HWC")


def save_maps(
    model: AnomalyModel,
    datamodule: DataModule,
    pred: Predictions,
    metrics: dict[str, Any],
    device: torch.device,
    n_maps: int,
    maps_dir: Path,
) -> list[Path]:
    """The gallery (:func:`~anomalib_lite.reporting.gallery.save_gallery`: worst cases and a sample of ``n_maps``
    test images, with the model's intermediate stages) in ``maps_dir``, thresholds from the category's ``metrics``.

    Returns:
        The overlay files (not the stage images).
    """
    test = datamodule.test_set

    def intermediates(chosen: list[int]) -> dict[str, torch.Tensor] | None:
        batch = torch.stack([test[i]["image"] for i in chosen]).to(device)
        model.eval()
        with torch.inference_mode():
            return tiled(model, datamodule.tiling, datamodule.batch_size).intermediates(batch)

    return save_gallery(test.images, test.masks, pred, metrics, n_maps, maps_dir, intermediates)


def evaluate_checkpoint(
    path: Path, overrides: dict[str, Any], device: torch.device, folder: Path, progress: bool = True
) -> dict[str, Any]:
    """Re-evaluate the checkpoint ``path`` with the config stored inside it, into ``folder``.

    The frozen backbone's weights come from where training took them (see
    :func:`~anomalib_lite.pipeline.inference.load_trained`). Writes ``metrics.json``, ``scores/<category>.csv``,
    then ``curves/``, ``maps/``, ``tensorboard/`` and ``report.html``. ``metrics.json`` records the run's
    ``setting`` as training does (:func:`~anomalib_lite.pipeline.setting.run_setting`; the stages the engine ran
    are read from the training run's own ``metrics.json`` next to the checkpoint, when it is there), so that a
    re-evaluated run can be compared with a paper like a trained one.

    Args:
        overrides: replace stored options (``data``, ``eval``, ``model``), e.g. the data's new root.
    Returns:
        The content of ``metrics.json``.
    """
    run, model = load_trained(path, overrides)
    (category,) = categories(run.data)
    place_model(model, device, run.trainer.channels_last)
    datamodule = build_datamodule(run.data, category)
    hold_out_validation(model, datamodule)
    evaluation, predictions = evaluate_category(model, datamodule, device, run.eval, progress)
    trained = path.parent.parent.parent / "metrics.json"  # <run>/checkpoints/<category>/last.pt
    stored = json.loads(trained.read_text()).get("setting", {}) if trained.is_file() else {}
    schedule = {category: stored.get("schedule", {}).get(category, [])}
    results = {
        "checkpoint": str(path),
        "model": run.model.name,
        "data": run.data.name,
        "setting": run_setting(run, [category], device, schedule),
        "categories": {category: evaluation.metrics},
    }
    write_json(results, folder / "metrics.json")
    write_scores(predictions, folder / "scores" / f"{category}.csv", evaluation.metrics.get("image_threshold"))
    save_outputs(model, datamodule, evaluation, predictions, device, run.eval, folder, category)
    write_report(folder, dataclasses.asdict(run))
    return results
