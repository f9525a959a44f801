"""``python export.py ckpt_path=… format=onnx|torchscript``: one deployable file from a checkpoint.

Writes ``model.onnx`` or ``model.pt`` (TorchScript) and its settings ``model.<suffix>.json`` into a new
run folder; see :mod:`anomalib_lite.pipeline.deploy` for what the file takes and returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING, DictConfig

from anomalib_lite.cli.run_folders import report_errors, run_folder
from anomalib_lite.pipeline.config import validate_options
from anomalib_lite.pipeline.deploy import FORMATS, check_format
from anomalib_lite.pipeline.inference import export_checkpoint


@dataclass
class ExportOptions:
    """``export.py``'s options (``configs/export.yaml``), checked before any work.

    Attributes:
        ckpt_path: the training checkpoint to export. format: ``onnx`` or ``torchscript``.
    """

    ckpt_path: str = MISSING
    format: str = "onnx"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format={self.format}; choices: {', '.join(FORMATS)}")


@report_errors
def export(cfg: DictConfig) -> Path:
    """Export the checkpoint ``cfg.ckpt_path`` as ``cfg.format``, after checking the options
    (:class:`ExportOptions`).

    Returns:
        The exported file.
    Raises:
        ConfigError: a bad option (named), onnx packages missing, no such checkpoint.
        ExportError: the model cannot be exported (the message says why).
    """
    options = validate_options(cfg, ExportOptions)
    fmt = str(options.format)
    check_format(fmt)
    return export_checkpoint(Path(options.ckpt_path), fmt, run_folder())
