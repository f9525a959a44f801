"""The Python API: the commands' work from a script or a notebook, over the same code (no Hydra run needed).

    from anomalib_lite import api

    run = api.train(["model=hfr", "category=brick", "model.epochs=1"])  # outputs/<task>/<time>, as train.py
    run.metrics["categories"]["brick"]["image_auroc"]
    metrics = api.evaluate(run.checkpoint("brick"))                  # as eval.py, into a new folder
    detector = api.load(run.checkpoint("brick"))                     # a checkpoint or an exported file
    result = detector.predict(images)                                # N×H×W×3 uint8 arrays or image paths
    result.scores, result.maps, result.anomalous
    onnx_file = api.export(run.checkpoint("brick"), "onnx")          # as export.py

Overrides are the command line's (``group=option``, ``key=value``); every option is checked as there, and a
run never writes into an earlier run's folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from omegaconf import DictConfig

from anomalib_lite.cli.run_folders import check_run_folder, fresh_dir
from anomalib_lite.configs import CONFIG_MODULE
from anomalib_lite.data import categories
from anomalib_lite.data.images import read_image
from anomalib_lite.engine.device import resolve_device
from anomalib_lite.errors import ConfigError
from anomalib_lite.pipeline.deploy import FORMATS, check_format
from anomalib_lite.pipeline.evaluation import evaluate_checkpoint
from anomalib_lite.pipeline.inference import export_checkpoint, load_scorer
from anomalib_lite.pipeline.training import run_config, train_run

log = logging.getLogger("anomalib_lite")


def compose(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """The config a command composes from the packaged configs and ``overrides`` (without Hydra's own node).

    Args:
        overrides: e.g. ``["model=msfi", "data=mvtec", "category=screw"]``. config_name: ``train``, ``eval``,
            ``predict`` or ``export``.
    Raises:
        hydra.errors.ConfigCompositionException: an unknown group option or key (named by Hydra).
    """
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))


def new_folder(folder: str | Path | None, task: str) -> Path:
    """``folder``, refused if it already holds files (an earlier run's outputs are never overwritten); or, when
    ``None``, a new ``outputs/<task>/<date>_<time>`` in the current folder."""
    if folder is None:
        return Path(fresh_dir(f"outputs/{task}/{time.strftime('%Y-%m-%d_%H-%M-%S')}"))
    path = Path(folder)
    check_run_folder(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def logged_to(path: Path) -> Iterator[None]:
    """The package's log lines from INFO up also go to ``path`` (the commands' ``train.log`` and friends) while
    inside."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    level = log.level
    log.setLevel(min(log.getEffectiveLevel(), logging.INFO))
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        handler.close()


@dataclass
class TrainedRun:
    """A finished training run.

    Attributes:
        folder: its run folder (checkpoints, metrics.json, scores, report.html). metrics: ``metrics.json``.
    """

    folder: Path
    metrics: dict[str, Any]

    def checkpoint(self, category: str | None = None) -> Path:
        """The checkpoint of ``category`` (default: the run's only category).

        Raises:
            ConfigError: no category given and the run has several, or no checkpoint of that category.
        """
        trained = sorted(self.metrics["categories"])
        if category is None:
            if len(trained) != 1:
                raise ConfigError(f"the run trained {len(trained)} categories ({', '.join(trained)}): name one")
            category = trained[0]
        path = self.folder / "checkpoints" / category / "last.pt"
        if not path.is_file():
            raise ConfigError(f"category {category!r}: no checkpoint {path} (trained: {', '.join(trained)})")
        return path


def train(overrides: Sequence[str] = (), folder: str | Path | None = None) -> TrainedRun:
    """Train and evaluate as ``train.py`` does with ``overrides``, into ``folder`` (see :func:`new_folder`).

    Returns:
        The run: its folder and its ``metrics.json``.
    Raises:
        ConfigError: a bad option (named), missing data, or a folder that already holds files; before any work.
    """
    run, config = run_config(compose(overrides))
    categories(run.data)  # unknown categories and missing data are refused before a folder is made
    target = new_folder(folder, f"{run.model.name}_{run.data.name}")
    with logged_to(target / "train.log"):
        metrics = train_run(run, config, target)
    return TrainedRun(target, metrics)


def evaluate(
    checkpoint: str | Path,
    folder: str | Path | None = None,
    device: str = "auto",
    progress: bool = False,
    **replace: dict[str, Any],
) -> dict[str, Any]:
    """Re-evaluate ``checkpoint`` as ``eval.py`` does, into ``folder`` (see :func:`new_folder`).

    Args:
        replace: stored options to replace, by part: ``data={"root": "/elsewhere"}``, ``eval={"map_size": 256}``,
            ``model={...}``.
    Returns:
        The content of the new ``metrics.json``.
    """
    unknown = set(replace) - {"data", "eval", "model"}
    if unknown:
        raise ConfigError(f"evaluate: unknown part(s) {', '.join(sorted(unknown))}; choose data, eval or model")
    overrides = {part: dict(replace.get(part, {})) for part in ("data", "eval", "model")}
    target = new_folder(folder, "eval")
    with logged_to(target / "eval.log"):
        return evaluate_checkpoint(Path(checkpoint), overrides, resolve_device(device), target, progress)


@dataclass
class Detection:
    """What :meth:`Detector.predict` returns for N images.

    Attributes:
        scores: ``N`` image scores (higher = more anomalous). maps: ``N×S×S`` anomaly maps at the model's input
            side ``S``. anomalous: ``N`` booleans at the stored image threshold, or ``None`` without one.
    """

    scores: np.ndarray
    maps: np.ndarray
    anomalous: np.ndarray | None


class Detector:
    """A trained model (a checkpoint or a file from :func:`export`) that scores images; see :func:`load`.

    Attributes:
        size: the model's input side (images are resized to it). threshold: the stored F1-optimal image threshold,
            or ``None``.
    """

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        self._scorer = load_scorer(Path(path), resolve_device(device))
        self.size = self._scorer.size
        self.threshold = self._scorer.threshold

    def predict(self, images: np.ndarray | Sequence[str | Path], batch_size: int = 16) -> Detection:
        """Score ``images``: an ``N×S×S×3`` uint8 RGB array at the model's side, or image files (any size; read and
        resized as the training data were).

        Raises:
            ConfigError: an array of the wrong shape or type. DataError: an unreadable file (named).
        """
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (self.size, self.size, 3):
                raise ConfigError(
                    f"images: expected N×{self.size}×{self.size}×3 uint8 RGB, got {images.dtype} {images.shape}"
                )
            array = images
        else:
            array = np.stack([read_image(Path(p), self.size) for p in images])
        scores, maps = [], []
        for start in range(0, len(array), batch_size):
            out = self._scorer.score(np.ascontiguousarray(array[start : start + batch_size]))
            scores.append(out.score.float().cpu().numpy())
            maps.append(out.anomaly_map.float().cpu().numpy())
        score = np.concatenate(scores)
        anomalous = None if self.threshold is None else score >= self.threshold
        return Detection(score, np.concatenate(maps), anomalous)


def load(path: str | Path, device: str = "auto") -> Detector:
    """A :class:`Detector` from a training checkpoint or an exported ``.onnx`` / TorchScript ``.pt`` file."""
    return Detector(path, device)


def export(checkpoint: str | Path, fmt: str = "onnx", folder: str | Path | None = None) -> Path:
    """Export ``checkpoint`` as ``onnx`` or ``torchscript`` into ``folder`` (see :func:`new_folder`), as
    ``export.py`` does (checked against the checkpoint's own predictions).

    Returns:
        The exported file (beside it, its settings ``model.<suffix>.json``).
    """
    check_format(fmt)
    target = new_folder(folder, "export")
    with logged_to(target / "export.log"):
        return export_checkpoint(Path(checkpoint), fmt, target)


__all__ = ["FORMATS", "Detection", "Detector", "TrainedRun", "compose", "evaluate", "export", "load", "train"]
