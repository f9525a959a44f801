"""Scoring image files: find them, read and resize them in batches, save each map and write ``scores.csv`` row
by row (an interrupted call keeps what it scored), then draw the overlays on one colour scale."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image
from tqdm import tqdm

from anomalib_lite.data.images import IMAGE_SUFFIXES, read_image
from anomalib_lite.errors import ConfigError, DataError
from anomalib_lite.pipeline.inference import Scorer
from anomalib_lite.reporting.overlays import overlay_panel

log = logging.getLogger("anomalib_lite")


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
