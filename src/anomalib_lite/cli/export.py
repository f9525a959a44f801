"""``python export.py ckpt_path=… format=onnx|torchscript``: one deployable file from a checkpoint.

Writes ``model.onnx`` or ``model.pt`` (TorchScript) and its settings ``model.<suffix>.json`` into a new
run folder; see :mod:`anomalib_lite.pipeline.deploy` for what the file takes and returns.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from anomalib_lite.cli.run_folders import log, report_errors, run_folder
from anomalib_lite.pipeline.deploy import FORMATS, check_format, export_model, metadata
from anomalib_lite.pipeline.inference import load_trained, stored_threshold


@report_errors
def export(cfg: DictConfig) -> Path:
    """Export the checkpoint ``cfg.ckpt_path`` as ``cfg.format``.

    Returns:
        The exported file.
    Raises:
        ConfigError: unknown format, onnx packages missing, no such checkpoint.
        ExportError: the model cannot be exported (the message says why).
    """
    fmt = str(cfg.format)
    check_format(fmt)
    path = Path(cfg.ckpt_path)
    run, model = load_trained(path)
    category = str(run.category)
    threshold, note = stored_threshold(path, category)
    target = run_folder() / f"model{FORMATS[fmt]}"
    start = time.perf_counter()
    sidecar = export_model(model, run, fmt, target, metadata(run, fmt, threshold, note, path))
    log.info(
        "%s %s (%s px, threshold %s) exported in %.1f s: %s (settings: %s)",
        run.model.name,
        category,
        run.data.image_size,
        threshold,
        time.perf_counter() - start,
        target,
        sidecar,
    )
    return target
