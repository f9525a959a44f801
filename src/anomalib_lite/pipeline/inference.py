"""A trained model for inference: rebuilt from its checkpoint, placed on a device, with the image threshold its
evaluation stored; and the scorers that turn uint8 images into maps and scores, from a checkpoint or an
exported file (:mod:`anomalib_lite.pipeline.deploy`); and the export of a checkpoint into one deployable file."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from anomalib_lite.data.images import to_model_input
from anomalib_lite.engine.checkpoint import load_checkpoint, load_model_state
from anomalib_lite.engine.device import place_model
from anomalib_lite.engine.trainer import non_finite_state
from anomalib_lite.errors import ConfigError, WeightsError
from anomalib_lite.models import AnomalyModel, build_model
from anomalib_lite.models.base import AnomalyOutput
from anomalib_lite.pipeline.config import RunConfig, validate
from anomalib_lite.pipeline.deploy import (
    FORMATS,
    ExportedModel,
    export_model,
    is_exported,
    load_exported,
    metadata,
    trained_on_grey,
)
from anomalib_lite.pipeline.tiling import tiled

log = logging.getLogger("anomalib_lite")


def load_trained(path: Path, overrides: dict[str, Any] | None = None) -> tuple[RunConfig, AnomalyModel]:
    """Rebuild the model stored in checkpoint ``path``.

    A lean checkpoint's frozen networks are rebuilt as its config says (their weights from the torch
    cache or the pip package) and checked against its fingerprints; a full checkpoint holds them.

    Args:
        overrides: replace stored options, e.g. ``{"model": {"weight_search": {"apply": False}}}``.
    Returns:
        The validated run config and the model with its trained weights, on the CPU.
    Raises:
        ConfigError: no such file; a file written by ``export.py``; not a checkpoint of this project (see
            :func:`~anomalib_lite.engine.checkpoint.load_checkpoint`).
        WeightsError: a frozen network's weights differ from those it was trained with, or the weights hold
            NaN/inf (naming the tensors: such a model scores every image NaN).
    """
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path}: no such file")
    if is_exported(path):
        raise ConfigError(
            f"ckpt_path={path} is an exported file (written by export.py), to use with predict.py "
            f"(predict.py ckpt_path={path} input=…); this command needs a training checkpoint "
            "(<run>/checkpoints/<category>/last.pt)"
        )
    state = load_checkpoint(path)
    run = validate(OmegaConf.merge(OmegaConf.create(state["config"]), overrides or {}))
    backbone = run.backbone if "frozen" in state else dataclasses.replace(run.backbone, weights="none")
    model = build_model(run.model, backbone)
    load_model_state(model, state, path)
    refuse_non_finite(model, path)
    return run, model


def refuse_non_finite(model: AnomalyModel, path: Path) -> None:
    """Raise a :class:`WeightsError` naming ``path`` and the tensors of ``model`` (loaded from it) that hold
    NaN/inf: every score would be NaN (training never checkpoints such weights; the file was damaged or written
    elsewhere)."""
    bad = non_finite_state(model)
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise WeightsError(
            f"ckpt_path={path}: its weights hold NaN/inf in {', '.join(bad[:5])}{more}, so every score would be NaN; "
            "use an earlier checkpoint or retrain"
        )


def check_device(name: str, option: str = "device") -> None:
    """Check the device option ``option=name`` of eval.py or predict.py: ``auto``, ``cpu``, ``cuda`` or
    ``cuda:<index>`` (CUDA only where it is available).

    Raises:
        ValueError: naming the option, its value and the choices (the options' dataclasses turn it into a
            :class:`ConfigError`).
    """
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{option}={name} is not a device; choices: auto, cpu, cuda, cuda:<index>") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{option}={name} but CUDA is not available here; use {option}=auto or cpu")


def stored_threshold(ckpt_path: Path, category: str) -> tuple[float | None, str]:
    """The F1-optimal image threshold that evaluation stored in the run's ``metrics.json``
    (``<run>/checkpoints/<category>/last.pt`` → ``<run>/metrics.json``), or ``None``.

    Returns:
        The threshold, and where it came from (or why there is none).
    """
    metrics = ckpt_path.parent.parent.parent / "metrics.json"
    if not metrics.is_file():
        return None, f"none: no {metrics} (the run was not evaluated)"
    threshold = json.loads(metrics.read_text()).get("categories", {}).get(category, {}).get("image_threshold")
    if threshold is None:
        why = "undefined with one class in its test split"
        return None, f"none: {metrics} has no image_threshold for {category} ({why})"
    return threshold, f"F1-optimal image threshold stored by evaluation in {metrics}"


Scorer = Callable[[np.ndarray], AnomalyOutput]


def checkpoint_scorer(model: AnomalyModel, channels: int, device: torch.device) -> Scorer:
    """Scores ``B×S×S×3`` uint8 RGB images with a trained model: as grey (channel mean rounded to
    8 bits) for a model trained on grey images (``channels`` 1), normalised, on ``device``."""

    def score(images: np.ndarray) -> AnomalyOutput:
        if channels == 1:
            images = images.mean(-1, keepdims=True).round().astype(np.uint8)
        return model.predict(to_model_input(torch.from_numpy(images)).to(device))

    return score


def exported_scorer(exported: ExportedModel) -> Scorer:
    """Scores ``B×S×S×3`` uint8 RGB images with an exported file (which normalises them itself)."""
    return lambda images: exported(torch.from_numpy(images).permute(0, 3, 1, 2))


@dataclasses.dataclass
class LoadedScorer:
    """A model ready to score images, from a checkpoint or an exported file (see :func:`load_scorer`).

    Attributes:
        score: ``B×size×size×3`` uint8 RGB images → :class:`AnomalyOutput`. size: the model's input side.
        threshold: the stored F1-optimal image threshold, or ``None``. source: where it came from (or why none).
    """

    score: Scorer
    size: int
    threshold: float | None
    source: str


def load_scorer(path: Path, device: torch.device) -> LoadedScorer:
    """Open a training checkpoint, or a file written by ``export.py`` (``.onnx``, or TorchScript ``.pt``: told
    apart from a checkpoint by its content), for scoring on ``device``; needs neither the training data nor
    the run's config.

    Raises:
        ConfigError: no such file. WeightsError: a frozen network's weights differ from the trained ones.
    """
    if path.is_file() and is_exported(path):
        exported = load_exported(path, device)
        return LoadedScorer(
            exported_scorer(exported), exported.size, exported.info["threshold"], f"stored in {path.name}"
        )
    run, model = load_trained(path)
    place_model(model, device, run.trainer.channels_last).eval()
    channels = 1 if trained_on_grey(run) else 3
    # a checkpoint stores its own category; the data need not be here
    threshold = stored_threshold(path, str(run.category))[0]
    whole = tiled(model, run.data.tiling(), run.data.batch_size)  # trained on tiles: predicts whole images
    return LoadedScorer(
        checkpoint_scorer(whole, channels, device), run.data.image_size, threshold, "stored by evaluation"
    )


def export_checkpoint(path: Path, fmt: str, folder: Path) -> Path:
    """Export the training checkpoint ``path`` as ``fmt`` (``onnx`` or ``torchscript``) into ``folder``
    (``model.onnx`` or ``model.pt``, beside its settings ``model.<suffix>.json`` with the stored image threshold).

    Returns:
        The exported file.
    Raises:
        ConfigError: no such checkpoint, or the onnx packages are missing. ExportError: the model cannot be
            exported (the message says why).
    """
    run, model = load_trained(path)
    category = str(run.category)
    threshold, note = stored_threshold(path, category)
    target = folder / f"model{FORMATS[fmt]}"
    start = time.perf_counter()
    sidecar = export_model(tiled(model, run.data.tiling()), run, fmt, target, metadata(run, fmt, threshold, note, path))
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
