"""Scoring image files: find them, read and resize them in batches, save each map and write ``scores.csv`` row
by row (an interrupted call keeps what it scored), then draw the overlays on one colour scale.

No partial file: each map and overlay is written atomically, and a row of ``scores.csv`` is written whole or
not at all (a failed write, e.g. on a full disk, is cut back to the rows before it)."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image
from tqdm import tqdm

from anomalib_lite.data.images import IMAGE_SUFFIXES, read_image
from anomalib_lite.errors import ConfigError, DataError
from anomalib_lite.files import write_atomically
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

    Rows are written batch by batch, each batch straight to the file (unbuffered), so the file keeps every file
    scored so far. A write that fails part-way (a full disk) is cut back to the rows before it and raised, naming
    the file: a row is in the file whole or not at all.

    Args:
        file: the table, opened for unbuffered binary writing (``open(path, "xb", buffering=0)``; see
            :func:`scores_table`), empty. threshold: the image threshold, or ``None``.
    Raises:
        OSError: the header cannot be written.
    """

    def __init__(self, file: BinaryIO, threshold: float | None) -> None:
        self.file = file
        self.threshold = threshold
        self.size = 0  # bytes of whole rows in the file
        self._append([["file", "score", "anomalous", "error"]])

    def write(self, results: list[Prediction]) -> None:
        """Append one row per prediction.

        Raises:
            OSError: the rows cannot be written (none of them is then in the file).
        """
        rows = []
        for item in results:
            decision = "" if item.score is None or self.threshold is None else int(item.score >= self.threshold)
            score = "" if item.score is None else f"{item.score:.6g}"
            rows.append([str(item.path), score, decision, item.error or ""])
        self._append(rows)

    def _append(self, rows: list[list]) -> None:
        text = io.StringIO()
        csv.writer(text).writerows(rows)
        data = memoryview(text.getvalue().encode())
        try:
            while data:
                data = data[self.file.write(data) :]  # an unbuffered write may write part of it
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.file.truncate(self.size)
                self.file.seek(self.size)
            raise _naming(exc, getattr(self.file, "name", None)) from exc
        self.size = self.file.tell()


@contextlib.contextmanager
def scores_table(path: Path, threshold: float | None) -> Iterator[ScoreWriter]:
    """A :class:`ScoreWriter` on the new file ``path`` (never over an existing one), closed on exit; a file
    whose header could not be written is removed.

    Raises:
        FileExistsError: ``path`` exists. OSError: it cannot be written.
    """
    with path.open("xb", buffering=0) as file:
        try:
            writer = ScoreWriter(file, threshold)
        except OSError:
            path.unlink(missing_ok=True)
            raise
        yield writer


def _naming(exc: OSError, path: Path | str | None) -> OSError:
    """``exc`` naming ``path`` (a failed write's error names no file), for the one-line message of a full disk."""
    return OSError(exc.errno, exc.strerror, str(path)) if exc.errno is not None and path is not None else exc


def write_output(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` (a map or an image, encoded in memory: a full disk is then an ``OSError`` with its errno, where
    NumPy's own file writes say only "4096 requested and 4064 written") to ``path`` atomically
    (:func:`anomalib_lite.files.write_atomically`): complete or absent, never partial.

    Raises:
        OSError: it cannot be written (naming ``path``).
    """
    try:
        write_atomically(path, lambda file: file.write(data))
    except OSError as exc:
        raise _naming(exc, path) from exc


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
    ``maps_dir/<name>.npy`` (float32, the model's resolution; atomically) and write the batch's rows to ``scores``.
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
                encoded = io.BytesIO()
                np.save(encoded, anomaly_map.numpy())
                write_output(target, encoded.getbuffer())
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
        encoded = io.BytesIO()
        Image.fromarray(panel).save(encoded, "PNG")
        write_output(maps_dir / f"{item.name}.png", encoded.getbuffer())
