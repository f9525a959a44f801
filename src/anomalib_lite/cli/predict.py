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

from pathlib import Path

from omegaconf import DictConfig

from anomalib_lite.cli.run_folders import log, report_errors, run_folder
from anomalib_lite.engine.device import resolve_device
from anomalib_lite.errors import DataError
from anomalib_lite.pipeline.inference import load_scorer
from anomalib_lite.pipeline.prediction import Prediction, ScoreWriter, find_inputs, score_files, write_overlays


@report_errors
def predict(cfg: DictConfig) -> list[Prediction]:
    """Score ``cfg.input`` (a file or a folder) with ``cfg.ckpt_path`` (see
    :func:`~anomalib_lite.pipeline.inference.load_scorer`).

    Returns:
        One :class:`Prediction` per file found.
    Raises:
        DataError: not one file could be read (``scores.csv`` still names them all).
    """
    model = load_scorer(Path(cfg.ckpt_path), resolve_device(cfg.device))
    root, files = find_inputs(Path(cfg.input))
    threshold = cfg.threshold if cfg.threshold is not None else model.threshold
    folder = run_folder()
    with (folder / "scores.csv").open("w", newline="") as table:
        scores = ScoreWriter(table, threshold)
        results, scale = score_files(
            model.score, files, root, model.size, cfg.batch_size, folder / "maps", scores, cfg.progress
        )
    write_overlays(results, folder / "maps", model.size, scale)
    failed = [r for r in results if r.error]
    how = "given" if cfg.threshold is not None else model.source if threshold is not None else "none found"
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
        raise DataError(f"input={cfg.input}: none of the {len(results)} files could be read (see scores.csv)")
    return results
