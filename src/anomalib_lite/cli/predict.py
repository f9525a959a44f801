"""``python predict.py ckpt_path=… input=…``: score new images with a trained checkpoint.

Writes into the run folder: ``scores.csv`` (one row per file: score, decision at the
threshold, or the reason it could not be read), ``maps/<name>.npy`` (the anomaly map
at the model's resolution, float32) and ``maps/<name>.png`` (input | heat map overlay,
one colour scale for the whole run). An unreadable file is named in the CSV and the
log; every other file is still scored.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from anomalib_lite.cli.common import log, report_errors, run_folder
from anomalib_lite.cli.evaluate import load_trained
from anomalib_lite.data import categories
from anomalib_lite.data.images import IMAGE_SUFFIXES, read_image, to_model_input
from anomalib_lite.engine.trainer import resolve_device
from anomalib_lite.errors import ConfigError, DataError
from anomalib_lite.visualize import overlay_panel


@dataclass
class Prediction:
    """One input file's outcome: its ``score`` and ``map`` (``H×W``), or the ``error`` that stopped it."""

    path: Path
    name: str
    score: float | None = None
    map: np.ndarray | None = None
    error: str | None = None


def find_inputs(source: Path) -> tuple[Path, list[Path]]:
    """The image files to score: ``source`` itself, or every image under the folder ``source``.

    Returns:
        The folder names are relative to, and the files (sorted).
    Raises:
        ConfigError: ``source`` does not exist, or the folder holds no image file.
    """
    if source.is_file():
        return source.parent, [source]
    if not source.is_dir():
        raise ConfigError(f"input={source}: no such file or folder")
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"input={source}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return source, files


def stored_threshold(ckpt_path: Path, category: str) -> float | None:
    """The F1-optimal image threshold that evaluation stored in the run's ``metrics.json``
    (``<run>/checkpoints/<category>/last.pt`` → ``<run>/metrics.json``), or ``None``."""
    metrics = ckpt_path.parent.parent.parent / "metrics.json"
    if not metrics.is_file():
        return None
    return json.loads(metrics.read_text()).get("categories", {}).get(category, {}).get("image_threshold")


def score_files(
    model: torch.nn.Module,
    files: list[Path],
    root: Path,
    size: int,
    channels: int,
    device: torch.device,
    batch_size: int,
    progress: bool = True,
) -> list[Prediction]:
    """Read, resize and score ``files`` in batches; unreadable files keep their error instead.

    Args:
        size: the model's input side. channels: 3, or 1 for a model trained on grey images.
    Returns:
        One :class:`Prediction` per file, in order.
    """
    results = []
    for start in tqdm(range(0, len(files), batch_size), desc="predict", disable=not progress):
        batch, images = [], []
        for path in files[start : start + batch_size]:
            item = Prediction(path, str(path.relative_to(root).with_suffix("")))
            try:
                image = read_image(path, size)
                images.append(image if channels == 3 else image.mean(-1, keepdims=True).round().astype(np.uint8))
                batch.append(item)
            except DataError as exc:
                item.error = str(exc)
                log.warning("skipped %s", exc)
            results.append(item)
        if not batch:
            continue
        out = model.predict(to_model_input(torch.from_numpy(np.stack(images))).to(device))
        for item, score, anomaly_map in zip(batch, out.score.cpu(), out.anomaly_map.float().cpu(), strict=True):
            item.score, item.map = float(score), anomaly_map.numpy()
    return results


def write_outputs(results: list[Prediction], threshold: float | None, size: int, folder: Path) -> None:
    """``scores.csv``, and a map (``.npy``) and overlay (``.png``) per scored file, under ``folder``."""
    scored = [r for r in results if r.map is not None]
    vmin = min((float(r.map.min()) for r in scored), default=0.0)
    vmax = max((float(r.map.max()) for r in scored), default=1.0)
    for item in scored:
        target = folder / "maps" / item.name
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target.with_suffix(".npy"), item.map.astype(np.float32))
        image = read_image(item.path, size)
        Image.fromarray(overlay_panel(image, item.map, None, vmin, vmax)[:, size:]).save(target.with_suffix(".png"))
    with (folder / "scores.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "score", "anomalous", "error"])
        for item in results:
            decision = "" if item.score is None or threshold is None else int(item.score >= threshold)
            score = "" if item.score is None else f"{item.score:.6g}"
            writer.writerow([str(item.path), score, decision, item.error or ""])


@report_errors
def predict(cfg: DictConfig) -> list[Prediction]:
    """Score ``cfg.input`` (a file or a folder) with the checkpoint ``cfg.ckpt_path``.

    Returns:
        One :class:`Prediction` per file found.
    Raises:
        DataError: not one file could be read (``scores.csv`` still names them all).
    """
    path = Path(cfg.ckpt_path)
    run, model = load_trained(path)
    root, files = find_inputs(Path(cfg.input))
    (category,) = categories(run.data)
    threshold = cfg.threshold if cfg.threshold is not None else stored_threshold(path, category)
    device = resolve_device(cfg.device)
    model.to(device).eval()
    channels = 1 if getattr(run.data, "grey_to_rgb", True) is False else 3
    size = run.data.image_size
    results = score_files(model, files, root, size, channels, device, cfg.batch_size, cfg.progress)
    folder = run_folder()
    write_outputs(results, threshold, size, folder)
    failed = [r for r in results if r.error]
    summary: dict[str, Any] = {"scored": len(results) - len(failed), "unreadable": len(failed)}
    how = "given" if cfg.threshold is not None else "stored by evaluation" if threshold is not None else "none found"
    log.info("%s images scored, %s unreadable; threshold %s (%s); results in %s",
             summary["scored"], summary["unreadable"], threshold, how, folder / "scores.csv")  # fmt: skip
    for item in failed:
        log.warning("unreadable: %s", item.path)
    if len(failed) == len(results):
        raise DataError(f"input={cfg.input}: none of the {len(results)} files could be read (see scores.csv)")
    return results
