"""``python eval.py ckpt_path=…``: re-evaluate a checkpoint with the config stored inside it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig

from anomalib_lite.cli.run_folders import report_errors, run_folder
from anomalib_lite.engine.device import resolve_device
from anomalib_lite.pipeline.config import validate_options
from anomalib_lite.pipeline.evaluation import evaluate_checkpoint
from anomalib_lite.pipeline.inference import check_device
from anomalib_lite.reporting.tables import format_table

log = logging.getLogger("anomalib_lite")


@dataclass
class EvalOptions:
    """``eval.py``'s options (``configs/eval.yaml``), checked before any work.

    Attributes:
        ckpt_path: the training checkpoint. device: ``auto``, ``cpu``, ``cuda[:N]``. progress: a progress bar.
        data, eval, model: options that replace the stored ones (``None``: keep the stored value); checked with
            the stored config when the checkpoint is loaded.
    """

    ckpt_path: str = MISSING
    device: str = "auto"
    progress: bool = True
    data: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_device(self.device)


@report_errors
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Re-evaluate ``cfg.ckpt_path`` into this run's folder (a new one: an earlier run's folder is refused before
    anything is written, see :class:`anomalib_lite.cli.run_folders.RunFolderGuard`); see
    :func:`~anomalib_lite.pipeline.evaluation.evaluate_checkpoint` for what it writes. Logs (``eval.log`` and the
    console) the metrics table and the report's path.

    ``data`` and ``eval`` options given on the command line replace the stored ones; ``model`` options only when
    given, e.g. ``+model.weight_search.apply=false``.

    Returns:
        The content of ``metrics.json``.
    Raises:
        ConfigError: a bad option (named: :class:`EvalOptions`), before any work.
    """
    options = validate_options(cfg, EvalOptions)
    overrides: dict[str, Any] = {
        part: {key: value for key, value in getattr(options, part).items() if value is not None}
        for part in ("data", "eval")
    }
    overrides["model"] = options.model
    path, folder = Path(options.ckpt_path), run_folder()
    results = evaluate_checkpoint(path, overrides, resolve_device(options.device), folder, options.progress)
    table = format_table(results["categories"])
    log.info("%s on %s — %s\n%s\nreport: %s", results["model"], results["data"], path, table, folder / "report.html")
    return results
