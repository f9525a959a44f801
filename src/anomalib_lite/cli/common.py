"""What the entry points share: run-folder safety, evaluation with its outputs, tables."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from anomalib_lite.config import EvalConfig
from anomalib_lite.data import DataModule
from anomalib_lite.errors import AnomalibLiteError
from anomalib_lite.metrics import collect_predictions, compute_metrics
from anomalib_lite.models import AnomalyModel
from anomalib_lite.visualize import sample_indices, save_overlays, save_stages

log = logging.getLogger("anomalib_lite")
METRIC_COLUMNS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max")
# Reported only by the models whose papers report them; a table shows them when a row has them.
OPTIONAL_COLUMNS = ("iou", "pixel_auroc_per_image", "image_accuracy")


def metric_columns(rows: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """The metric columns of a table of ``rows``: the shared ones, then the optional ones some row has."""
    return METRIC_COLUMNS + tuple(c for c in OPTIONAL_COLUMNS if any(m.get(c) is not None for m in rows.values()))


def run_folder() -> Path:
    """The folder Hydra made for this run (or this multirun job)."""
    return Path(HydraConfig.get().runtime.output_dir)


def job_device(device: str, job_number: int | None, gpu_count: int) -> str:
    """The device of one job: ``auto`` in a multirun job (``job_number`` given) on a machine with
    several GPUs becomes ``cuda:<job_number mod gpu_count>``, so parallel jobs
    (``hydra/launcher=parallel``) get one GPU each; anything else is kept."""
    if device != "auto" or job_number is None or gpu_count < 2:
        return device
    return f"cuda:{job_number % gpu_count}"


def multirun_job_number() -> int | None:
    """This job's number in a Hydra multirun, ``None`` in a single run."""
    hydra = HydraConfig.get()
    return hydra.job.num if hydra.mode == RunMode.MULTIRUN else None


def discard_if_fresh(folder: Path) -> None:
    """Remove a run folder that holds nothing but Hydra's own files (the run failed before any work)."""
    if folder.is_dir() and {p.name for p in folder.iterdir()} <= {".hydra", "train.log", "eval.log"}:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # the task folder, if this run was its only one
            folder.parent.rmdir()


def report_errors(job: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Wrap a Hydra task: a user error is printed as one message (no traceback).

    A run that failed before any work leaves no folder behind. In a single run the
    process exits with status 1; in a multirun the error is raised so Hydra goes on
    with the other jobs and reports the failure at the end.
    """

    def wrapped(cfg: DictConfig) -> Any:
        try:
            return job(cfg)
        except AnomalibLiteError as exc:
            log.error("%s", exc)
            discard_if_fresh(run_folder())
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                raise
            sys.exit(1)

    return wrapped


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without Hydra's own node: plain data, safe to store in checkpoints."""
    values = OmegaConf.to_container(cfg, resolve=True)
    values.pop("hydra", None)
    return values


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write JSON atomically (never a half-written file)."""
    partial = path.with_suffix(f".partial-{os.getpid()}")
    partial.write_text(json.dumps(data, indent=2))
    os.replace(partial, path)


def hold_out_validation(model: AnomalyModel, datamodule: DataModule) -> None:
    """Carve the model's validation split (if it asks for one) out of the test set, logging its size."""
    split = model.validation_split()
    if split is not None:
        datamodule.split_validation(*split)
        log.info(
            "%s: %d test images held out for validation, %d left for the metrics",
            datamodule.name, len(datamodule.validation_set), len(datamodule.test_set),
        )  # fmt: skip


def evaluate_category(
    model: AnomalyModel,
    datamodule: DataModule,
    device: torch.device,
    cfg: EvalConfig,
    maps_dir: Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Metrics of one category's test split (with the inference time per image), and overlays
    for a sample of its images in ``maps_dir``."""
    start = time.perf_counter()
    pred = collect_predictions(model, datamodule.test_loader(), device, cfg.map_size, progress)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    metrics = compute_metrics(pred, cfg.fpr_limit, model.iou_threshold())
    # Wall time of predicting the test split (batches, transfers, map resizing included).
    metrics["inference_ms_per_image"] = 1000 * seconds / max(1, len(pred.labels))
    if not datamodule.has_masks:
        metrics["note"] = "no ground-truth masks: pixel metrics undefined"
    elif metrics["n_pixel_images"] < metrics["n_images"]:
        metrics["note"] = (
            f"pixel metrics over the {metrics['n_pixel_images']} of {metrics['n_images']} images whose masks are known"
        )
    test = datamodule.test_set
    chosen = sample_indices(pred.labels, cfg.n_maps)
    save_overlays(test.images, pred.maps, test.masks, pred.paths, chosen, maps_dir)
    if chosen:
        batch = torch.stack([test[i]["image"] for i in chosen]).to(device)
        model.eval()
        with torch.inference_mode():
            stages = model.intermediates(batch)
        if stages:
            save_stages(stages, pred.maps[chosen], [pred.paths[i] for i in chosen], maps_dir)
    return metrics


def mean_metrics(per_category: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Mean of each metric over the categories where it is defined."""
    means: dict[str, float | None] = {}
    for column in metric_columns(per_category):
        values = [m[column] for m in per_category.values() if m.get(column) is not None]
        means[column] = sum(values) / len(values) if values else None
    return means


def format_table(per_category: dict[str, dict[str, Any]], label: str = "category", mean: bool = True) -> str:
    """A Markdown table: one row per category (or run) and, with ``mean``, a mean row; undefined metrics: ``-``."""

    def cell(value: Any) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"

    columns = metric_columns(per_category)
    header = f"| {label} | " + " | ".join(columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    rows = {**per_category, "mean": mean_metrics(per_category)} if mean and len(per_category) > 1 else per_category
    for name, metrics in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(metrics.get(c)) for c in columns) + " |")
    by_note: dict[str, list[str]] = {}
    for name, metrics in per_category.items():
        if metrics.get("note"):
            by_note.setdefault(metrics["note"], []).append(name)
    notes = [f"- {', '.join(names)}: {note}" for note, names in by_note.items()]
    return "\n".join(lines + notes)
