"""``python train.py``: train and evaluate one model on each requested category."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter

from anomalib_lite.cli.common import (
    evaluate_category,
    format_table,
    hold_out_validation,
    job_device,
    log,
    mean_metrics,
    multirun_job_number,
    plain_config,
    report_errors,
    run_folder,
    write_json,
)
from anomalib_lite.config import RunConfig, validate
from anomalib_lite.data import build_datamodule, categories
from anomalib_lite.engine.trainer import Engine, seed_everything
from anomalib_lite.errors import ConfigError
from anomalib_lite.models import build_model
from anomalib_lite.models.backbones import cached_or_offline


def check_run_folder(folder: Path, resume: bool) -> None:
    """Refuse to write over another run; with ``resume``, require something to resume.

    Raises:
        ConfigError: the folder already holds a run (and ``resume`` is off), or holds
            no checkpoint to resume (``resume`` on).
    """
    has_run = (folder / "metrics.json").exists() or (folder / "checkpoints").exists()
    if has_run and not resume:
        raise ConfigError(
            f"Run folder {folder} already holds a run; nothing was overwritten. "
            "Pass trainer.resume=true to continue it, or choose another hydra.run.dir."
        )
    if resume and not (folder / "checkpoints").exists():
        raise ConfigError(
            f"trainer.resume=true but {folder} holds no checkpoints. Point hydra.run.dir at the "
            "interrupted run's folder, e.g. hydra.run.dir=outputs/<task>/<date>_<time>."
        )


def train_category(run: RunConfig, category: str, config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Train, checkpoint and evaluate one category; return its metrics."""
    config = {**config, "category": category, "data": {**config["data"], "category": category}}
    checkpoint = folder / "checkpoints" / category / "last.pt"
    init_from = run.trainer.init_from
    if init_from and Path(init_from).is_dir():  # a run folder: this category's checkpoint in it
        init_from = str(Path(init_from) / "checkpoints" / category / "last.pt")
    trainer_cfg = dataclasses.replace(
        run.trainer,
        resume=run.trainer.resume and checkpoint.is_file(),
        init_from=init_from,
        device=job_device(run.trainer.device, multirun_job_number(), torch.cuda.device_count()),
    )
    datamodule = build_datamodule(run.data, category)
    seed_everything(run.seed)
    model = build_model(run.model, run.backbone)
    hold_out_validation(model, datamodule)
    with SummaryWriter(str(folder / "tensorboard" / category)) as writer:
        engine = Engine(trainer_cfg, run.seed, checkpoint, config, writer)
        log.info("%s: training %s on %s (device %s)", category, run.model.name, datamodule.name, engine.device)
        engine.fit(model, datamodule)
        metrics = evaluate_category(
            model, datamodule, engine.device, run.eval, folder / "maps" / category, run.trainer.progress
        )
        for name, value in metrics.items():
            if isinstance(value, float):
                writer.add_scalar(f"metrics/{name}", value)
    return metrics


@report_errors
def train(cfg: DictConfig) -> dict[str, Any]:
    """Validate the config, then train and evaluate every requested category.

    Writes ``metrics.json`` (updated after each category), ``checkpoints/<category>/last.pt``,
    ``tensorboard/<category>/`` and ``maps/<category>/`` into the run folder.

    Returns:
        The content of ``metrics.json``.
    """
    folder = run_folder()
    run = validate(cfg)
    wanted = categories(run.data)
    check_run_folder(folder, run.trainer.resume)
    config = plain_config(cfg)
    offline = getattr(run.model, "offline_backbone", None)
    if offline:
        # Record the backbone really used, so eval.py rebuilds the same network from the checkpoint.
        run = dataclasses.replace(run, backbone=cached_or_offline(run.backbone, offline))
        config["backbone"] = dataclasses.asdict(run.backbone)
    metrics_path = folder / "metrics.json"
    done = json.loads(metrics_path.read_text())["categories"] if metrics_path.exists() else {}
    results: dict[str, Any] = {"task": run.task_name, "model": run.model.name, "data": run.data.name}
    for category in wanted:
        if category not in done:
            done[category] = train_category(run, category, config, folder)
            if torch.cuda.is_available():
                # Parallel launchers reuse worker processes: hand the cached GPU memory back.
                torch.cuda.empty_cache()
        results.update(categories=done, mean=mean_metrics(done))
        write_json(results, metrics_path)
    print(f"\n{run.model.name} on {run.data.name} — {folder}\n{format_table(done)}")
    return results
