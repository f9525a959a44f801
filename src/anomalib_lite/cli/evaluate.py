"""``python eval.py ckpt_path=…``: re-evaluate a checkpoint with the config stored inside it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from anomalib_lite.cli.evaluation_outputs import (
    evaluate_category,
    hold_out_validation,
    save_outputs,
    write_json,
    write_scores,
)
from anomalib_lite.cli.run_folders import report_errors, run_folder
from anomalib_lite.cli.tables import format_table
from anomalib_lite.config import RunConfig, validate
from anomalib_lite.data import build_datamodule, categories
from anomalib_lite.engine.checkpoint import load_checkpoint, load_model_state
from anomalib_lite.engine.trainer import place_model, resolve_device
from anomalib_lite.errors import ConfigError
from anomalib_lite.models import AnomalyModel, build_model
from anomalib_lite.report import write_report


def load_trained(path: Path, overrides: dict[str, Any] | None = None) -> tuple[RunConfig, AnomalyModel]:
    """Rebuild the model stored in checkpoint ``path``.

    A lean checkpoint's frozen networks are rebuilt as its config says (their weights from the torch
    cache or the pip package) and checked against its fingerprints; a full checkpoint holds them.

    Args:
        overrides: replace stored options, e.g. ``{"model": {"weight_search": {"apply": False}}}``.
    Returns:
        The validated run config and the model with its trained weights, on the CPU.
    Raises:
        ConfigError: no such file.
        WeightsError: a frozen network's weights differ from those it was trained with.
    """
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path}: no such file")
    state = load_checkpoint(path)
    run = validate(OmegaConf.merge(OmegaConf.create(state["config"]), overrides or {}))
    backbone = run.backbone if "frozen" in state else dataclasses.replace(run.backbone, weights="none")
    model = build_model(run.model, backbone)
    load_model_state(model, state, path)
    return run, model


@report_errors
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Load ``cfg.ckpt_path``, rebuild its model and data, and compute every metric.

    The frozen backbone's weights come from where training took them (see :func:`load_trained`).
    Writes ``metrics.json``, then ``curves/``, ``maps/``, ``tensorboard/`` and ``report.html``, into this
    run's folder (a new one: an earlier run's folder is refused before anything is written, see
    :class:`anomalib_lite.cli.run_folders.RunFolderGuard`).

    Returns:
        The content of ``metrics.json``.
    """
    overrides = {
        part: {key: value for key, value in cfg[part].items() if value is not None} for part in ("data", "eval")
    }
    # Model options replace stored ones only when given, e.g. +model.weight_search.apply=false.
    overrides["model"] = OmegaConf.to_container(cfg.get("model") or OmegaConf.create({}))
    path = Path(cfg.ckpt_path)
    run, model = load_trained(path, overrides)
    (category,) = categories(run.data)
    device = resolve_device(cfg.device)
    place_model(model, device, run.trainer.channels_last)
    datamodule = build_datamodule(run.data, category)
    hold_out_validation(model, datamodule)
    folder = run_folder()
    evaluation, predictions = evaluate_category(model, datamodule, device, run.eval, cfg.progress)
    metrics = evaluation.metrics
    results = {
        "checkpoint": str(path),
        "model": run.model.name,
        "data": run.data.name,
        "categories": {category: metrics},
    }
    write_json(results, folder / "metrics.json")
    write_scores(predictions, folder / "scores" / f"{category}.csv")
    save_outputs(model, datamodule, evaluation, predictions, device, run.eval, folder, category)
    write_report(folder, dataclasses.asdict(run))
    print(f"\n{run.model.name} on {run.data.name} — {path}\n{format_table({category: metrics})}")
    return results
