"""``python predict.py ckpt_path=… input=…``: score new images with a trained checkpoint, or with a
file written by ``export.py`` (``.onnx`` or TorchScript ``.pt``; same outputs).

Needs only the checkpoint (or exported file) and the images (not the training data). Writes into a new run
folder: ``scores.csv`` (one row per file: score, decision at the threshold, or the reason it
could not be read; written batch by batch, so an interrupted call keeps what it scored),
``maps/<file>.npy`` (the anomaly map at the model's resolution, float32) and ``maps/<file>.png``
(heat map overlay, one colour scale for the whole run), where ``<file>`` is the input's path
relative to ``input``, suffix included (``a.png`` and ``a.jpg`` get distinct maps). An
unreadable file is named in the CSV and the log; every other file is still scored.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from tqdm import tqdm

from anomalib_lite.cli.evaluate import load_trained
from anomalib_lite.cli.run_folders import log, report_errors, run_folder
from anomalib_lite.data.images import IMAGE_SUFFIXES, read_image, to_model_input
from anomalib_lite.deploy import ExportedModel, is_exported, load_exported, trained_on_grey
from anomalib_lite.engine.trainer import place_model, resolve_device
from anomalib_lite.errors import ConfigError, DataError
from anomalib_lite.models import AnomalyModel
from anomalib_lite.models.base import AnomalyOutput
from anomalib_lite.visualize import overlay_panel


@dataclass
class Prediction:
    """One input file's outcome: its ``score`` (its map is in ``maps/<name>.npy``), or the ``error``
    that stopped it. ``name``: the file's path relative to the input folder, suffix included."""

    path: Path
    name: str
    score: float | None = None
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


def stored_threshold(ckpt_path: Path, category: str) -> tuple[float | None, str]:
    """The F1-optimal image threshold that evaluation stored in the run's ``metrics.json``
    (``<run>/checkpoints/<category>/last.pt`` → ``<run>/metrics.json``), or ``None``.

    Returns:
        The threshold, and where it came from (or why there is none).
    """
    metrics = ckpt_path.parent.parent.parent / "metrics.json"
    if not metrics.is_file():
        return None, f"none: no {metrics} (the run was not evaluated)"
    threshold = json.loads(metrics.read_text()).get("categories", {}).get(category, {}).get("image_threshold")
    if threshold is None:
        return None, f"none: {metrics} has no image_threshold for {category} (undefined without anomalous test images)"
    return threshold, f"F1-optimal image threshold stored by evaluation in {metrics}"


class ScoreWriter:
    """``scores.csv``: ``file, score, anomalous`` (``score ≥ threshold``, blank without one), ``error``.

    Rows are written and flushed batch by batch, so the file keeps every file scored so far.
    """

    def __init__(self, file: TextIO, threshold: float | None) -> None:
        self.file = file
        self.threshold = threshold
        self.writer = csv.writer(file)
        self.writer.writerow(["file", "score", "anomalous", "error"])

    def write(self, results: list[Prediction]) -> None:
        """Append one row per prediction and flush."""
        for item in results:
            decision = "" if item.score is None or self.threshold is None else int(item.score >= self.threshold)
            score = "" if item.score is None else f"{item.score:.6g}"
            self.writer.writerow([str(item.path), score, decision, item.error or ""])
        self.file.flush()


Scorer = Callable[[np.ndarray], AnomalyOutput]


def checkpoint_scorer(model: AnomalyModel, channels: int, device: torch.device) -> Scorer:
    """Scores ``B×S×S×3`` uint8 RGB images with a trained model: as grey (channel mean rounded to
    8 bits) for a model trained on grey images (``channels`` 1), normalised, on ``device``."""

    def score(images: np.ndarray) -> AnomalyOutput:
        if channels == 1:
            images = images.mean(-1, keepdims=True).round().astype(np.uint8)
        return model.predict(to_model_input(torch.from_numpy(images)).to(device))

    return score


def exported_scorer(exported: ExportedModel) -> Scorer:
    """Scores ``B×S×S×3`` uint8 RGB images with an exported file (which normalises them itself)."""
    return lambda images: exported(torch.from_numpy(images).permute(0, 3, 1, 2))


def score_files(
    score: Scorer,
    files: list[Path],
    root: Path,
    size: int,
    batch_size: int,
    maps_dir: Path,
    scores: ScoreWriter,
    progress: bool = True,
) -> tuple[list[Prediction], tuple[float, float]]:
    """Read, resize and score ``files`` in batches; after each batch, save each map as
    ``maps_dir/<name>.npy`` (float32, the model's resolution) and write the batch's rows to ``scores``.
    Unreadable files keep their error instead.

    Args:
        score: the model, given ``B×size×size×3`` uint8 RGB images (:func:`checkpoint_scorer`,
            :func:`exported_scorer`). size: the model's input side.
    Returns:
        One :class:`Prediction` per file, in order, and the range of every map (the colour scale).
    """
    results, low, high = [], float("inf"), float("-inf")
    for start in tqdm(range(0, len(files), batch_size), desc="predict", disable=not progress):
        chunk, batch, images = [], [], []
        for path in files[start : start + batch_size]:
            item = Prediction(path, str(path.relative_to(root)))
            try:
                images.append(read_image(path, size))
                batch.append(item)
            except DataError as exc:
                item.error = str(exc)
                log.warning("skipped %s", exc)
            chunk.append(item)
        if batch:
            out = score(np.stack(images))
            for item, value, anomaly_map in zip(batch, out.score.cpu(), out.anomaly_map.float().cpu(), strict=True):
                item.score = float(value)
                target = maps_dir / f"{item.name}.npy"
                target.parent.mkdir(parents=True, exist_ok=True)
                np.save(target, anomaly_map.numpy())
                low, high = min(low, float(anomaly_map.min())), max(high, float(anomaly_map.max()))
        scores.write(chunk)
        results += chunk
    return results, (low, high)


def write_overlays(results: list[Prediction], maps_dir: Path, size: int, scale: tuple[float, float]) -> None:
    """``maps_dir/<name>.png``: each scored image with its saved map as a heat map, on one colour
    ``scale`` for the run (so the images are drawn after every map is known; one at a time)."""
    for item in results:
        if item.score is None:
            continue
        anomaly_map = np.load(maps_dir / f"{item.name}.npy")
        panel = overlay_panel(read_image(item.path, size), anomaly_map, None, *scale)[:, size:]
        Image.fromarray(panel).save(maps_dir / f"{item.name}.png")


@report_errors
def predict(cfg: DictConfig) -> list[Prediction]:
    """Score ``cfg.input`` (a file or a folder) with ``cfg.ckpt_path``: a training checkpoint, or a file
    written by ``export.py`` (``.onnx``, or TorchScript ``.pt``: told apart from a checkpoint by its content).

    Returns:
        One :class:`Prediction` per file found.
    Raises:
        DataError: not one file could be read (``scores.csv`` still names them all).
    """
    path = Path(cfg.ckpt_path)
    device = resolve_device(cfg.device)
    if path.is_file() and is_exported(path):
        exported = load_exported(path, device)
        score, size = exported_scorer(exported), exported.size
        stored, source = exported.info["threshold"], f"stored in {path.name}"
    else:
        run, model = load_trained(path)
        place_model(model, device, run.trainer.channels_last).eval()
        channels = 1 if trained_on_grey(run) else 3
        score, size = checkpoint_scorer(model, channels, device), run.data.image_size
        # a checkpoint stores its own category; the data need not be here
        stored, source = stored_threshold(path, str(run.category))[0], "stored by evaluation"
    root, files = find_inputs(Path(cfg.input))
    threshold = cfg.threshold if cfg.threshold is not None else stored
    folder = run_folder()
    with (folder / "scores.csv").open("w", newline="") as table:
        scores = ScoreWriter(table, threshold)
        results, scale = score_files(score, files, root, size, cfg.batch_size, folder / "maps", scores, cfg.progress)
    write_overlays(results, folder / "maps", size, scale)
    failed = [r for r in results if r.error]
    how = "given" if cfg.threshold is not None else source if threshold is not None else "none found"
    log.info("%s images scored, %s unreadable; threshold %s (%s); results in %s",
             len(results) - len(failed), len(failed), threshold, how, folder / "scores.csv")  # fmt: skip
    for item in failed:
        log.warning("unreadable: %s", item.path)
    if len(failed) == len(results):
        raise DataError(f"input={cfg.input}: none of the {len(results)} files could be read (see scores.csv)")
    return results
