"""What a training run really ran, for the ``setting`` key of ``metrics.json``.

``scripts/reproduce.py`` compares a run with a paper only where this setting matches the paper's
(dataset, every category of the table, backbone, metric), so it records the backbone actually
used (and whether it stood in for the one asked for), not the one the config named.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import torch

from anomalib_lite.engine.device import precision_used
from anomalib_lite.pipeline.config import RunConfig

PACKAGE_DIR = Path(__file__).resolve().parents[1]


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
        ``map_size``, ``precision`` (``fp32``/``bf16``), ``device``, ``seed``, ``schedule``, ``commit``.
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
        "precision": precision_used(run.trainer.precision, device),
        "device": device.type,
        "seed": run.seed,
        "schedule": schedule,
        "commit": git_commit(),
    }
