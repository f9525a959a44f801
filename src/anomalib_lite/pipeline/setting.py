"""What a run really ran, for the ``setting`` key of ``metrics.json``.

``scripts/reproduce.py`` compares a run with a paper only where this setting matches the paper's in every
option that decides what is measured (:func:`compared_setting`: dataset, backbone and its weights and layers,
image and map size, the AUPRO FPR limit, every model option, the training budget), so it records the backbone
actually used (and whether it stood in for the one asked for), not the one the config named.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import torch

from anomalib_lite.engine.device import precision_used
from anomalib_lite.pipeline.config import RunConfig

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# Options that do not change what a run measures: where the data is and how it is loaded, which category (a
# table compares category by category), the offline fallback and whether it may be used (``backbone.stand_in``
# says whether it was).
NOT_COMPARED = frozenset(
    {
        "data.root",
        "data.category",
        "data.num_workers",
        "data.skip_unreadable",
        "data.normal_class",
        "model.offline_backbone",
        "backbone.allow_stand_in",
        "backbone.stand_in_for",
    }
)


def git_commit(where: Path = PACKAGE_DIR) -> str:
    """The commit checked out at ``where`` (default: this package's folder; ``+dirty`` when tracked files
    changed), or ``unknown`` outside a git checkout (e.g. after ``pip install``) or without git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "") if commit else "unknown"


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted names: ``{"model": {"lr": 0.4}}`` → ``{"model.lr": 0.4}``."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def compared_setting(run: RunConfig) -> dict[str, Any]:
    """Every option that decides what ``run`` measures, by dotted name (``model.epochs`` → 200): the dataset
    (``data.name``) and its options, the backbone (the one used; ``backbone.stand_in``: whether it stood in for
    the one asked for), every model option, ``eval.fpr_limit``, ``eval.map_size`` (the size the metrics are
    computed at) and ``trainer.max_epochs`` (a cap on every stage); not :data:`NOT_COMPARED`.

    Two runs (or a run and a paper table's setting, composed from its experiment config) measure the same thing
    exactly when these agree; budgets (``…epochs``, ``…steps``) are the options a longer run may exceed. The numeric
    precision (bf16 autocast on CUDA, our choice; the papers name none) is recorded in ``setting.precision`` and
    shown by ``reproduce.py``, but not compared: it changes the last bits of training, not what is measured.
    """
    parts = {
        "data": dataclasses.asdict(run.data),
        "backbone": dataclasses.asdict(run.backbone),
        "model": dataclasses.asdict(run.model),
        "eval": {"fpr_limit": run.eval.fpr_limit, "map_size": run.eval.map_size or run.data.image_size},
        "trainer": {"max_epochs": run.trainer.max_epochs},
    }
    flat = flatten(parts)
    flat["backbone.stand_in"] = run.backbone.stand_in_for is not None
    return {key: value for key, value in flat.items() if key not in NOT_COMPARED}


def run_setting(
    run: RunConfig, categories: list[str], device: torch.device, schedule: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """The ``setting`` of ``metrics.json``.

    Args:
        run: the validated run, its backbone the one really used (see
            :func:`anomalib_lite.pipeline.training.run_config`).
        categories: the categories (or normal classes) the run covers.
        device: where it trained.
        schedule: per category, the stages the engine ran (``Engine.schedule``: stage, epochs, steps).
    Returns:
        ``model``, ``dataset``, ``categories``, ``normal_class`` (one-class data, else ``None``),
        ``backbone`` (``requested``, ``used``, ``stand_in``, ``weights``, ``layers``), ``image_size``,
        ``map_size``, ``fpr_limit`` (AUPRO's), ``precision`` (``fp32``/``bf16``), ``device``, ``seed``,
        ``schedule``, ``commit`` and ``compared`` (:func:`compared_setting`).
    """
    backbone = run.backbone
    return {
        "model": run.model.name,
        "dataset": run.data.name,
        "categories": list(categories),
        "normal_class": getattr(run.data, "normal_class", None),
        "backbone": {
            "requested": backbone.stand_in_for or backbone.name,
            "used": backbone.name,
            "stand_in": backbone.stand_in_for is not None,
            "weights": backbone.weights,
            "layers": backbone.layers,
        },
        "image_size": run.data.image_size,
        "map_size": run.eval.map_size or run.data.image_size,
        "fpr_limit": run.eval.fpr_limit,
        "precision": precision_used(run.trainer.precision, device),
        "device": device.type,
        "seed": run.seed,
        "schedule": schedule,
        "commit": git_commit(),
        "compared": compared_setting(run),
    }
