"""``python eval.py ckpt_path=…``: re-evaluate a checkpoint with the config stored inside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from anomalib_lite.cli.run_folders import report_errors, run_folder
from anomalib_lite.engine.device import resolve_device
from anomalib_lite.pipeline.evaluation import evaluate_checkpoint
from anomalib_lite.reporting.tables import format_table


@report_errors
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Re-evaluate ``cfg.ckpt_path`` into this run's folder (a new one: an earlier run's folder is refused before
    anything is written, see :class:`anomalib_lite.cli.run_folders.RunFolderGuard`); see
    :func:`~anomalib_lite.pipeline.evaluation.evaluate_checkpoint` for what it writes.

    ``data`` and ``eval`` options given on the command line replace the stored ones; ``model`` options only when
    given, e.g. ``+model.weight_search.apply=false``.

    Returns:
        The content of ``metrics.json``.
    """
    overrides = {
        part: {key: value for key, value in cfg[part].items() if value is not None} for part in ("data", "eval")
    }
    overrides["model"] = OmegaConf.to_container(cfg.get("model") or OmegaConf.create({}))
    path = Path(cfg.ckpt_path)
    results = evaluate_checkpoint(path, overrides, resolve_device(cfg.device), run_folder(), cfg.progress)
    print(f"\n{results['model']} on {results['data']} — {path}\n{format_table(results['categories'])}")
    return results
