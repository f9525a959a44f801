"""One training run: validate its config, then per category build the data and the model, run the engine,
evaluate, and keep ``metrics.json``, the scores, checkpoints, curves, maps and ``report.html`` up to date in the
run folder; resuming a run only with the options it was trained with."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from anomalib_lite.data import build_datamodule, categories
from anomalib_lite.engine.device import job_device, resolve_device, seed_everything
from anomalib_lite.engine.trainer import Engine, load_checkpoint
from anomalib_lite.errors import ConfigError
from anomalib_lite.models import build_model
from anomalib_lite.models.backbones import cached_or_offline
from anomalib_lite.pipeline.config import RunConfig, plain_config, validate
from anomalib_lite.pipeline.evaluation import (
    evaluate_category,
    hold_out_validation,
    save_outputs,
    write_json,
    write_scores,
)
from anomalib_lite.pipeline.progress import RunProgress
from anomalib_lite.pipeline.setting import run_setting
from anomalib_lite.pipeline.tracking import CategoryTracker, check_logger, track_category
from anomalib_lite.reporting.run_report import write_report
from anomalib_lite.reporting.tables import format_table, mean_metrics

log = logging.getLogger("anomalib_lite")

# Options a resumed run may change: they do not change what is trained (where the data is, how
# it is loaded and shown, on which device, which extra results evaluation gives, where the numbers are tracked,
# what a sweeper optimises).
RESUME_FREE_KEYS = frozenset(
    {
        "trainer.resume",
        "trainer.progress",
        "trainer.device",
        "data.root",
        "data.num_workers",
        "eval.per_defect",
        "eval.curves",
        "logger.name",
        "logger.tracking_uri",
        "logger.experiment",
        "objective",
    }
)


# metrics.json's list of the categories whose metrics are in it but whose curves, maps and TensorBoard images
# are not all written yet (the run was stopped in between); a resumed run writes them. Absent when none is.
OUTPUTS_PENDING = "outputs_pending"


def run_config(cfg: DictConfig) -> tuple[RunConfig, dict[str, Any]]:
    """The validated run and the plain config stored in its checkpoints (with the backbone really
    used, so that eval.py rebuilds the same network from a checkpoint).

    A model config with a ``resolve_run(backbone, data) -> (model, backbone)`` method checks and completes the
    setting for this machine first (its defaults, its weights or their stand-in, its optional package).

    Raises:
        ConfigError: an invalid option (named), the backbone's weights are not cached and
            ``backbone.allow_stand_in`` is false (with the command that fetches them), or the logger's optional
            extra is not installed.
    """
    run = validate(cfg)
    check_logger(run.logger)
    config = plain_config(cfg)
    resolve = getattr(run.model, "resolve_run", None)  # a family's own checks and completion (the anomalib baselines)
    if resolve is not None:
        model, backbone = resolve(run.backbone, run.data)
        run = dataclasses.replace(run, model=model, backbone=backbone)
        config["model"], config["backbone"] = dataclasses.asdict(model), dataclasses.asdict(backbone)
    offline = getattr(run.model, "offline_backbone", None)
    if offline:
        run = dataclasses.replace(run, backbone=cached_or_offline(run.backbone, offline))
        config["backbone"] = dataclasses.asdict(run.backbone)
    return run, config


def category_config(config: dict[str, Any], category: str) -> dict[str, Any]:
    """The config stored in the checkpoints of ``category``: the run's, narrowed to that category."""
    return {**config, "category": category, "data": {**config["data"], "category": category}}


def changed_keys(stored: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the options whose values differ between two plain configs (added or removed too)."""
    if not (isinstance(stored, dict) and isinstance(new, dict)):
        return [] if stored == new else [prefix.rstrip(".")]
    return [
        name
        for key in sorted(set(stored) | set(new), key=str)
        for name in changed_keys(stored.get(key, "<absent>"), new.get(key, "<absent>"), f"{prefix}{key}.")
    ]


def check_resume_config(folder: Path, config: dict[str, Any]) -> None:
    """Refuse to resume the run in ``folder`` with options that change training.

    Each ``checkpoints/<category>/last.pt`` stores the config it was trained with; every option
    but :data:`RESUME_FREE_KEYS` must be the same in the command's ``config``.

    Raises:
        ConfigError: naming each changed option with its stored and new values.
    """
    for checkpoint in sorted(folder.glob("checkpoints/*/last.pt")):
        stored = load_checkpoint(checkpoint)["config"]
        new = category_config(config, checkpoint.parent.name)
        changed = [k for k in changed_keys(stored, new) if k not in RESUME_FREE_KEYS]
        if changed:
            values = OmegaConf.create(stored), OmegaConf.create(new)
            details = ", ".join(
                f"{k} ({OmegaConf.select(values[0], k, default='<absent>')} → "
                f"{OmegaConf.select(values[1], k, default='<absent>')})"
                for k in changed
            )
            raise ConfigError(
                f"trainer.resume=true but the command changes options {checkpoint} was trained with: {details}. "
                "Resume with the run's own options (see its .hydra/overrides.yaml), or start a new run."
            )


def train_category(
    run: RunConfig,
    category: str,
    config: dict[str, Any],
    folder: Path,
    tracker: CategoryTracker,
    job_number: int | None = None,
) -> tuple[dict[str, Any], Callable[[], None], Engine]:
    """Train, checkpoint and evaluate one category; write its per-image scores to ``scores/<category>.csv``.

    Args:
        tracker: where the engine logs each epoch (:func:`~anomalib_lite.pipeline.tracking.track_category`).
    Returns:
        Its metrics (with ``training``: the engine's :attr:`~anomalib_lite.engine.trainer.Engine.training`
        record), the function that saves its curves, overlays and TensorBoard images (see
        :func:`~anomalib_lite.pipeline.evaluation.save_outputs`, at the last optimiser step; called once the metrics
        are in ``metrics.json``), and the engine (its ``schedule``, ``device`` and ``step``).
    """
    config = category_config(config, category)
    checkpoint = folder / "checkpoints" / category / "last.pt"
    init_from = run.trainer.init_from
    if init_from and Path(init_from).is_dir():  # a run folder: this category's checkpoint in it
        init_from = str(Path(init_from) / "checkpoints" / category / "last.pt")
    trainer_cfg = dataclasses.replace(
        run.trainer,
        resume=run.trainer.resume and checkpoint.is_file(),
        init_from=init_from,
        device=job_device(run.trainer.device, job_number, torch.cuda.device_count()),
    )
    datamodule = build_datamodule(run.data, category)
    seed_everything(run.seed)
    model = build_model(run.model, run.backbone)
    hold_out_validation(model, datamodule)
    engine = Engine(trainer_cfg, run.seed, checkpoint, config, tracker)
    log.info("%s: training %s on %s (device %s)", category, run.model.name, datamodule.name, engine.device)
    engine.fit(model, datamodule)
    evaluation, predictions = evaluate_category(model, datamodule, engine.device, run.eval, run.trainer.progress)
    evaluation.metrics["training"] = engine.training
    write_scores(predictions, folder / "scores" / f"{category}.csv", evaluation.metrics.get("image_threshold"))
    save = functools.partial(
        save_outputs,
        model,
        datamodule,
        evaluation,
        predictions,
        engine.device,
        run.eval,
        folder,
        category,
        engine.step,
    )
    return evaluation.metrics, save, engine


def train_run(run: RunConfig, config: dict[str, Any], folder: Path, job_number: int | None = None) -> dict[str, Any]:
    """Train and evaluate every category of ``run`` into ``folder`` (categories already in its ``metrics.json``,
    from an interrupted run that is resumed, are kept as they are; those whose curves and maps were not all
    written, see :data:`OUTPUTS_PENDING`, are evaluated again from their finished checkpoint to write them).

    Writes ``metrics.json`` (updated after each category; its ``setting`` says what ran, see
    :func:`anomalib_lite.pipeline.setting.run_setting`; per category its metrics and ``training``, the time,
    images/s, peak memory and losses of each stage), ``scores/<category>.csv`` (per-image scores),
    ``checkpoints/<category>/last.pt``, ``tensorboard/<category>/`` (and MLflow with ``logger=mlflow``, see
    :mod:`anomalib_lite.pipeline.tracking`), ``curves/<category>/``, ``maps/<category>/`` and ``report.html``
    (rewritten after each category). Logs each category's start with the run's progress
    (:class:`~anomalib_lite.pipeline.progress.RunProgress`), then the metrics table and the report's path.

    Args:
        run, config: from :func:`run_config`. job_number: this job's number in a multirun (its GPU, see
            :func:`~anomalib_lite.engine.device.job_device`), ``None`` in a single run.
    Returns:
        The content of ``metrics.json``.
    """
    wanted = categories(run.data)
    metrics_path = folder / "metrics.json"
    previous = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    done = previous.get("categories", {})
    pending = set(previous.get(OUTPUTS_PENDING, []))
    schedule = previous.get("setting", {}).get("schedule", {})
    device = resolve_device(run.trainer.device)
    results: dict[str, Any] = {"task": run.task_name, "model": run.model.name, "data": run.data.name}
    progress = RunProgress(wanted, set(done) - pending)
    report = folder / "report.html"
    for category in wanted:
        trains = category not in done or category in pending
        progress.start(category, trains)
        tracking = track_category(run.logger, folder, category, category_config(config, category), run.task_name)
        with tracking if trains else contextlib.nullcontext() as tracker:
            save_category_maps = engine = None
            if trains:
                if category in done:
                    log.info("%s: writing the curves and maps the interrupted run had not written", category)
                metrics, save_category_maps, engine = train_category(run, category, config, folder, tracker, job_number)
                schedule[category], device = engine.schedule, engine.device
                done.setdefault(category, metrics)  # a category already in metrics.json keeps its metrics
                pending.add(category)
            setting = run_setting(run, wanted, device, schedule)
            results.update(setting=setting, categories=done, mean=mean_metrics(done))
            write_json(_with_pending(results, pending), metrics_path)
            if save_category_maps:  # after metrics.json: the overlays are optional, the metrics are not
                save_category_maps()
                pending.discard(category)
                write_json(_with_pending(results, pending), metrics_path)
            report = write_report(folder, dataclasses.asdict(run))
            if engine is not None:
                tracker.finish(done[category], engine.step, [report, metrics_path])
        progress.finish(category, trains)
        if torch.cuda.is_available():
            # Parallel launchers reuse worker processes: hand the cached GPU memory back.
            torch.cuda.empty_cache()
    table = format_table(results["categories"])
    log.info("%s on %s — %s\n%s\nreport: %s", run.model.name, run.data.name, folder, table, report)
    return results


def _with_pending(results: dict[str, Any], pending: set[str]) -> dict[str, Any]:
    """``results`` with :data:`OUTPUTS_PENDING` listing ``pending`` (left out when none is)."""
    return {**results, OUTPUTS_PENDING: sorted(pending)} if pending else results
