"""The contract every model family follows: training stages and a ``predict``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from anomalib_lite.data.datamodule import ValidationSplit
from anomalib_lite.models.backbones import BackboneConfig

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]


@dataclass
class AnomalyOutput:
    """What ``predict`` returns.

    Attributes:
        anomaly_map: ``B×H×W`` float, at the input resolution; higher = more anomalous.
        score: ``B`` float image scores; higher = more anomalous.
    """

    anomaly_map: torch.Tensor
    score: torch.Tensor


@dataclass
class Stage:
    """One phase of a model's training recipe, run by the engine.

    Attributes:
        name: shown in progress bars, logs and error messages.
        epochs: passes over the training loader.
        parameters: what the optimiser trains.
        optimizer: builds the optimiser from ``parameters``; ``None``: a fitting stage, without gradient steps
            (``parameters`` empty): its ``step`` gathers what it fits (e.g. a memory bank's features, under
            ``torch.no_grad``) and ``on_epoch_end`` fits it; the engine runs no backward pass and no optimiser.
        step: ``batch -> {"loss": Tensor, <other terms>: Tensor}``; ``"loss"`` is
            optimised, every term is logged and checked for NaN/inf.
        scheduler: optional, built from the optimiser and the stage's total steps;
            stepped after every optimiser step.
        on_stage_start: optional hook given the datamodule before the first epoch
            (also when a run resumes inside this stage).
        on_epoch_end: optional hook given the number of finished epochs.
        split: the images it trains on: ``train`` (normal training images) or ``validation``
            (held out from the test set, see :meth:`AnomalyModel.validation_split`).
        features: optional, for a stage whose frozen network sees the un-augmented images: their
            frozen features, ``B×C×H×W`` images → name → ``B×…`` tensors (computed without grad).
            The engine may compute them once per run (``trainer.feature_cache``) and pass each
            batch its rows as ``batch["features"]``; ``step`` must then use them instead of
            computing them, with the same result.
        steps: optional budget in optimiser steps instead of epochs (e.g. IGD's distillation, counted in
            iterations by its paper): the stage runs ``ceil(steps / batches per epoch)`` epochs.
        features_per_image: inputs of the frozen network per image that ``features`` computes (e.g. every
            patch of it); with ``features_per_step``, what ``trainer.feature_cache=auto`` weighs.
        features_per_step: batch size → inputs of the frozen network one uncached step computes (e.g. a
            random subset of the batch's patches); ``None``: ``features_per_image`` per image of the batch.
            ``auto`` caches only when training uncached would run the frozen network on more inputs.
        backward_in_step: ``step`` back-propagates its loss itself (e.g. over micro-batches, gradients accumulated)
            and returns its terms detached; the engine then only clips and steps the optimiser.
    """

    name: str
    epochs: int
    parameters: list[nn.Parameter]
    optimizer: OptimizerFactory | None
    step: Callable[[dict], dict[str, torch.Tensor]]
    scheduler: SchedulerFactory | None = None
    on_stage_start: Callable[[object], None] | None = None
    on_epoch_end: Callable[[int], None] | None = None
    split: str = "train"
    features: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None
    steps: int | None = None
    features_per_image: int = 1
    features_per_step: Callable[[int], int] | None = None
    backward_in_step: bool = False


@dataclass
class TinySetting:
    """A family's smallest setting: every stage trains in seconds on a CPU, on ``image_size`` px images with
    random frozen weights, the last stage for at least two epochs of at least two steps (so that a run killed
    in its second epoch resumes from a checkpoint inside it). The registry-driven contract tests
    (``tests/test_families.py``) run every registered family on its own, on 6 training and 6 test images.

    Attributes:
        model: the family's config dataclass. backbone: its frozen network (``weights="none"``: random).
        image_size: the data's side (``data.image_size``; the model's config must agree).
        batch_size: the data's batch size (``data.batch_size``).
    """

    model: Any
    backbone: BackboneConfig
    image_size: int = 64
    batch_size: int = 2


@dataclass(frozen=True)
class Capabilities:
    """Which parts of the shared contract (``tests/test_families.py``) a family supports, each exception with its
    reason; the default is every part, with nothing beyond the core dependencies.

    Attributes:
        requires: ``(module, extra)``: the optional package the family imports to build a model and the pip extra
            that installs it (e.g. ``("anomalib", "anomalib_lite[baselines]")``); ``None``: none. Without it, the
            family's runs stop in one line naming the extra and the contract tests skip it with that reason.
        resumes_inside_last_stage: a run killed in its last stage's second epoch resumes from the checkpoint of
            its first; ``False`` with :attr:`single_pass_reason`: the last stage is one pass over the data (a
            memory bank gathered and fitted once), so a killed run redoes it whole, to the same state.
        single_pass_reason: why the last stage is a single pass (required when ``resumes_inside_last_stage`` is
            ``False``).
        config_group: the file of ``configs/model/`` that selects the family (``None``: ``<name>.yaml``), e.g.
            ``anomalib`` for the six anomalib baselines, chosen by ``model=anomalib model.name=<name>``.
        slow_reason: why even the tiny setting takes minutes on a CPU (e.g. a network whose smallest input is
            256 px); its contract tests are then marked ``slow`` (``make test`` runs them, a bare ``pytest`` not).
    """

    requires: tuple[str, str] | None = None
    resumes_inside_last_stage: bool = True
    single_pass_reason: str = ""
    config_group: str | None = None
    slow_reason: str = ""

    def __post_init__(self) -> None:
        if not self.resumes_inside_last_stage and not self.single_pass_reason:
            raise ValueError("Capabilities: resumes_inside_last_stage=False needs its single_pass_reason")


class AnomalyModel(nn.Module):
    """Base class of the model families.

    Subclasses implement :meth:`stages` and :meth:`predict`; a model never opens
    files, picks devices or logs: the engine does.
    """

    @classmethod
    def tiny(cls) -> TinySetting:
        """The family's :class:`TinySetting`, for the contract tests that every registered family passes."""
        raise NotImplementedError(f"{cls.__name__} declares no tiny setting (AnomalyModel.tiny)")

    @classmethod
    def capabilities(cls, model_cfg: Any = None) -> Capabilities:
        """What of the shared contract the family (with config ``model_cfg``, when its capabilities depend on
        it; ``None``: its tiny setting's) supports: :class:`Capabilities`, every part by default."""
        return Capabilities()

    def stages(self) -> list[Stage]:
        """The training recipe, in order."""
        raise NotImplementedError

    def validation_split(self) -> ValidationSplit | None:
        """The test images to hold out for a ``validation`` stage, or ``None``.

        The held-out images never count in the reported metrics.
        """
        return None

    def reported_metrics(self) -> dict[str, dict[str, Any]]:
        """Metrics of the catalogue (:mod:`anomalib_lite.metrics.catalogue`) that this family's paper reports
        beyond the shared ones, each with the options of its ``compute`` (e.g. UTAD's
        ``{"iou": {"threshold": 0.5}}``); the evaluator adds them to ``metrics.json``. None by default."""
        return {}

    def intermediates(self, image: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Optional images worth showing beside the maps (e.g. UTAD's impression and reconstruction):
        name → ``B×3×H×W`` in [0, 1], for ``B×C×H×W`` normalised input; ``None`` when a model has none."""
        return None

    def predict(self, image: torch.Tensor) -> AnomalyOutput:
        """Anomaly maps and scores for ``B×3×H×W`` normalised images (call in eval mode)."""
        raise NotImplementedError

    def export_refusal(self) -> str | None:
        """Why ``predict`` cannot be exported as a fixed graph (``deploy.py``), or ``None`` when it can.

        ``predict`` is traced at the training size: it may branch on shapes and settings, not on the
        values of its input, and must be deterministic.
        """
        return None
