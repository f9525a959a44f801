"""``python predict.py ckpt_path=… input=…``: score new images with a trained checkpoint, or with a
file written by ``export.py`` (``.onnx`` or TorchScript ``.pt``; same outputs).

Needs only the checkpoint (or exported file) and the images (not the training data). Writes into a new run
folder: ``scores.csv`` (one row per file: score, decision at the threshold, or the reason it
could not be read; written batch by batch, so an interrupted call keeps what it scored),
``maps/<file>.npy`` (the anomaly map at the model's resolution, float32) and ``maps/<file>.png``
(heat map overlay, one colour scale for the whole run), where ``<file>`` is the input's path
relative to ``input``, suffix included (``a.png`` and ``a.jpg`` get distinct maps). An
unreadable file is named in the CSV and the log; every other file is still scored. No partial file: each
map and overlay is written whole or not at all, and so is each row of ``scores.csv`` (a full disk stops the call
with one line; what was written before is kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING, DictConfig

from anomalib_lite.cli.run_folders import log, report_errors, run_folder
from anomalib_lite.engine.device import resolve_device
from anomalib_lite.errors import DataError
from anomalib_lite.pipeline.config import validate_options
from anomalib_lite.pipeline.inference import check_device, load_scorer
from anomalib_lite.pipeline.prediction import Prediction, find_inputs, score_files, scores_table, write_overlays


@dataclass
class PredictOptions:
    """``predict.py``'s options (``configs/predict.yaml``), checked before any work.

    Attributes:
        ckpt_path: a training checkpoint or a file written by ``export.py``. input: an image file or a folder.
        threshold: the image-score threshold of the ``anomalous`` column (finite), ``None``: the stored one.
        device: ``auto``, ``cpu``, ``cuda[:N]``. batch_size: images scored at once (≥ 1). progress: a progress bar.
    """

    ckpt_path: str = MISSING
    input: str = MISSING
    threshold: float | None = None
    device: str = "auto"
    batch_size: int = 8
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be ≥ 1")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ValueError(
                f"threshold={self.threshold} must be a finite number (NaN would mark every image normal, ±inf every "
                "image one way), or null for the stored threshold"
            )
        check_device(self.device)


@report_errors
def predict(cfg: DictConfig) -> list[Prediction]:
    """Score ``cfg.input`` (a file or a folder) with ``cfg.ckpt_path`` (see
    :func:`~anomalib_lite.pipeline.inference.load_scorer`), after checking the options (:class:`PredictOptions`).

    Returns:
        One :class:`Prediction` per file found.
    Raises:
        ConfigError: a bad option (named), before any work.
        DataError: not one file could be read (``scores.csv`` still names them all).
    """
    options = validate_options(cfg, PredictOptions)
    model = load_scorer(Path(options.ckpt_path), resolve_device(options.device))
    root, files = find_inputs(Path(options.input))
    threshold = options.threshold if options.threshold is not None else model.threshold
    folder = run_folder()
    with scores_table(folder / "scores.csv", threshold) as scores:
        results, scale = score_files(
            model.score, files, root, model.size, options.batch_size, folder / "maps", scores, options.progress
        )
    write_overlays(results, folder / "maps", model.size, scale)
    failed = [r for r in results if r.error]
    how = "given" if options.threshold is not None else model.source if threshold is not None else "none found"
    log.info(
        "%s images scored, %s unreadable; threshold %s (%s); results in %s",
        len(results) - len(failed),
        len(failed),
        threshold,
        how,
        folder / "scores.csv",
    )
    for item in failed:
        log.warning("unreadable: %s", item.path)
    if len(failed) == len(results):
        raise DataError(f"input={options.input}: none of the {len(results)} files could be read (see scores.csv)")
    return results
