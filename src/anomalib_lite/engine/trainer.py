"""The engine: runs a model's stages with device, precision, seeding, checkpoints and logging."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from anomalib_lite.data.datamodule import DataModule
from anomalib_lite.engine.checkpoint import (
    CheckpointWriter,
    frozen_record,
    lean_state,
    load_checkpoint,
    load_model_state,
)
from anomalib_lite.engine.device import (
    channels_last_used,
    mixed_precision,
    place_model,
    resolve_device,
    seed_everything,
    to_device,
)
from anomalib_lite.engine.feature_cache import MODES as FEATURE_CACHE_MODES
from anomalib_lite.engine.feature_cache import build_feature_cache
from anomalib_lite.engine.monitor import StepMonitor, clip_gradients, gradient_norms
from anomalib_lite.errors import TrainingError
from anomalib_lite.models.base import AnomalyModel

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    """Engine options (``trainer.*``).

    Attributes:
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` or ``fp32``.
        max_epochs: caps every stage's epochs (``None``: the model's own).
        grad_clip: max gradient norm, > 0 (``None``: no clipping).
        resume: continue the run folder's last checkpoint instead of starting afresh.
        progress: show progress bars.
        start_stage: begin at this stage (e.g. UTAD's ``expert_net``), with the earlier ones taken
            from ``init_from``: a checkpoint of the same model in which they are finished.
        init_from: that checkpoint, or the run folder holding it (``checkpoints/<category>/last.pt``).
        log_every: steps between host reads of the loss terms (progress-bar loss and the NaN/inf
            check of loss terms and gradients); in between, everything stays on the device.
        channels_last: channels-last memory format for the model and the image batches: ``auto``
            (on for the CPU, where it was measured faster, see :func:`channels_last_used`), ``true``
            or ``false``.
        compile: ``torch.compile`` each stage's step (a one-off compilation cost per stage).
        checkpoint_every: write the checkpoint after every this many epochs; ``None``: when at least
            ``checkpoint_seconds`` have passed since the last write. The end of a stage is always written.
        checkpoint_seconds: that interval (default 300 s: a lean checkpoint of a few hundred MB takes
            about a second to write, so well under 1 % of training time, and a crash loses ≤ 5 min).
        feature_cache: ``auto`` (compute a stage's frozen features once per run when they fit,
            see :mod:`anomalib_lite.engine.feature_cache`), ``on`` (required: an error when impossible)
            or ``off``.
        feature_cache_budget_gb: memory the cache may take, GB; ``None``: half of the free memory
            of the device (or, on CUDA when that is too little, of pinned host memory).
    """

    device: str = "auto"
    precision: str = "auto"
    max_epochs: int | None = None
    grad_clip: float | None = None
    resume: bool = False
    progress: bool = True
    start_stage: str | None = None
    init_from: str | None = None
    log_every: int = 50
    channels_last: bool | str = "auto"
    compile: bool = False
    checkpoint_every: int | None = None
    checkpoint_seconds: float = 300.0
    feature_cache: str = "auto"
    feature_cache_budget_gb: float | None = None

    def __post_init__(self) -> None:
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"trainer.grad_clip={self.grad_clip} must be > 0 (or null: no clipping)")
        if self.log_every < 1:
            raise ValueError(f"trainer.log_every={self.log_every} must be ≥ 1")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"trainer.precision={self.precision!r}; choices: auto, bf16, fp32")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"trainer.device={self.device!r}; choices: auto, cpu, cuda, cuda:N")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError(f"trainer.max_epochs={self.max_epochs} must be ≥ 1 (or null)")
        if (self.start_stage is None) != (self.init_from is None):
            raise ValueError("trainer.start_stage and trainer.init_from go together (or neither)")
        if self.start_stage is not None and self.resume:
            raise ValueError("trainer.start_stage starts a new run; it cannot be combined with trainer.resume")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"trainer.checkpoint_every={self.checkpoint_every} must be ≥ 1 (or null: by time)")
        if self.checkpoint_seconds < 0:
            raise ValueError(f"trainer.checkpoint_seconds={self.checkpoint_seconds} must be ≥ 0")
        if self.channels_last not in (True, False, "auto"):
            raise ValueError(f"trainer.channels_last={self.channels_last!r}; choices: auto, true, false")
        if self.feature_cache not in FEATURE_CACHE_MODES:
            raise ValueError(f"trainer.feature_cache={self.feature_cache!r}; choices: {', '.join(FEATURE_CACHE_MODES)}")
        if self.feature_cache_budget_gb is not None and self.feature_cache_budget_gb <= 0:
            raise ValueError(f"trainer.feature_cache_budget_gb={self.feature_cache_budget_gb} must be > 0 (or null)")


def _loader(
    datamodule: DataModule, split: str, generator: torch.Generator | None = None, pin_memory: bool = False
) -> DataLoader:
    if split == "validation":
        return datamodule.validation_loader(generator, pin_memory)
    return datamodule.train_loader(generator, pin_memory)


def non_finite_state(model: torch.nn.Module) -> list[str]:
    """Names of the model's floating-point parameters and buffers that hold NaN/inf (one host read).

    Each tensor's largest magnitude, in one fused call, is finite exactly when the tensor is (NaN and inf
    pass through a maximum; a maximum of finite values cannot overflow).
    """
    state = {name: t for name, t in model.state_dict().items() if t.is_floating_point() and t.numel()}
    if not state:
        return []
    peaks = torch._foreach_norm(list(state.values()), ord=float("inf"))
    finite = torch.isfinite(torch.stack(peaks)).tolist()  # stack promotes mixed dtypes
    return [name for name, ok in zip(state, finite) if not ok]


class Engine:
    """Runs :meth:`AnomalyModel.stages` in order.

    Args:
        cfg: :class:`TrainerConfig`. seed: base seed; each epoch's shuffling is seeded
            from it, so a resumed run sees the same batches as an uninterrupted one.
        checkpoint_path: ``last.pt``, written as ``cfg.checkpoint_every`` / ``checkpoint_seconds`` say.
        config: the run's plain config, stored in every checkpoint.
        writer: TensorBoard writer, or ``None``.
    """

    def __init__(
        self,
        cfg: TrainerConfig,
        seed: int,
        checkpoint_path: Path,
        config: dict[str, Any],
        writer: SummaryWriter | None = None,
    ) -> None:
        self.cfg = cfg
        self.seed = seed
        self.checkpoint_path = checkpoint_path
        self.config = config
        self.writer = writer
        self.device = resolve_device(cfg.device)
        self.channels_last = channels_last_used(cfg.channels_last, self.device)
        # What fit() ran: per stage, its epochs and optimiser steps (after trainer.max_epochs).
        self.schedule: list[dict[str, Any]] = []
        self._compiled: dict[int, Callable[[dict], dict[str, torch.Tensor]]] = {}

    def fit(self, model: AnomalyModel, datamodule: DataModule) -> None:
        """Train ``model`` on ``datamodule``'s training split through all its stages.

        Writes lean checkpoints (see :mod:`anomalib_lite.engine.checkpoint`) as ``trainer.checkpoint_*``
        says, and trains from cached frozen features as ``trainer.feature_cache`` says.

        Raises:
            TrainingError: a loss term or a gradient became NaN/inf (names the stage, epoch, step
                and term or parameters), the weights became NaN/inf (nothing is checkpointed then),
                or ``trainer.resume`` found no checkpoint.
            WeightsError: the checkpoint resumed or started from was trained with other frozen weights.
        """
        seed_everything(self.seed)
        frozen = frozen_record(model)  # fingerprints, once per run
        place_model(model, self.device, self.cfg.channels_last)
        stages = model.stages()
        start_stage, start_epoch, step, resumed = 0, 0, 0, None
        if self.cfg.start_stage is not None:
            start_stage = self._initialise(model, stages, frozen)
        if self.cfg.resume:
            if not self.checkpoint_path.is_file():
                raise TrainingError(f"trainer.resume=true but there is no checkpoint at {self.checkpoint_path}")
            resumed = load_checkpoint(self.checkpoint_path)
            load_model_state(model, resumed, self.checkpoint_path, frozen)
            start_stage, start_epoch, step = resumed["stage"], resumed["epoch"], resumed["step"]
            log.info("resuming %s at stage %d, epoch %d", self.checkpoint_path, start_stage, start_epoch)

        checkpoints = CheckpointWriter(self.checkpoint_path, self.cfg.checkpoint_every, self.cfg.checkpoint_seconds)
        for index, stage in enumerate(stages):
            batches = _loader(datamodule, stage.split)  # the stage's batches per epoch, and its images
            epochs = stage.epochs if stage.steps is None else math.ceil(stage.steps / len(batches))
            epochs = min(epochs, self.cfg.max_epochs or epochs)
            self.schedule.append({"stage": stage.name, "epochs": epochs, "steps": epochs * len(batches)})
            if index < start_stage or (index == start_stage and start_epoch >= epochs):
                continue
            first_epoch = start_epoch if index == start_stage else 0
            optimizer = stage.optimizer(stage.parameters)
            scheduler = stage.scheduler(optimizer, epochs * len(batches)) if stage.scheduler else None
            if resumed is not None and index == start_stage:
                try:
                    optimizer.load_state_dict(resumed["optimizer"])
                    if scheduler is not None:
                        scheduler.load_state_dict(resumed["scheduler"])
                except (KeyError, ValueError) as error:
                    raise TrainingError(
                        f"{self.checkpoint_path}: its optimiser or learning-rate schedule of stage '{stage.name}' "
                        f"does not fit this version's ({type(error).__name__}: {error}); it was written by another "
                        "version of the model's training set-up. Start a new run, or trainer.start_stage with "
                        "trainer.init_from to begin from its weights"
                    ) from error
            if stage.on_stage_start:
                stage.on_stage_start(datamodule)
            cache = build_feature_cache(
                stage,
                batches.dataset,
                datamodule.batch_size,
                self.device,
                lambda: mixed_precision(self.cfg.precision, self.device),
                self.cfg.feature_cache,
                self.cfg.feature_cache_budget_gb,
                (epochs - first_epoch) * len(batches),
            )
            running = stage if cache is None else dataclasses.replace(stage, step=cache.wrap(stage.step))
            for epoch in range(first_epoch, epochs):
                step = self._run_epoch(model, running, optimizer, scheduler, datamodule, index, epoch, epochs, step)
                if stage.on_epoch_end:
                    stage.on_epoch_end(epoch + 1)
                self._refuse_non_finite(model, stage.name, epoch)
                if checkpoints.due(epoch + 1, stage_end=epoch + 1 == epochs):
                    checkpoints.write(
                        {
                            "model": lean_state(model, frozen),
                            "frozen": frozen,
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict() if scheduler else {},
                            "stage": index,
                            "epoch": epoch + 1,
                            "step": step,
                            "finished": index == len(stages) - 1 and epoch + 1 == epochs,
                            "stages_done": [s.name for s in stages[:index]]
                            + ([stage.name] if epoch + 1 == epochs else []),
                            "config": self.config,
                        }
                    )
            del cache, running  # free this stage's cache before the next stage builds its own
        log.info("%s: %s", self.checkpoint_path, checkpoints.summary())

    def _initialise(self, model: AnomalyModel, stages: list, frozen: dict) -> int:
        """Load ``init_from`` for a run that starts at ``start_stage``; return that stage's index.

        Raises:
            TrainingError: unknown stage, missing checkpoint, or an earlier stage not finished in it.
        """
        names = [stage.name for stage in stages]
        if self.cfg.start_stage not in names:
            raise TrainingError(
                f"trainer.start_stage={self.cfg.start_stage!r}; this model's stages: {', '.join(names)}"
            )
        index = names.index(self.cfg.start_stage)
        path = Path(self.cfg.init_from)
        if not path.is_file():
            raise TrainingError(f"trainer.init_from={path}: no such checkpoint")
        state = load_checkpoint(path)
        missing = [name for name in names[:index] if name not in state.get("stages_done", [])]
        if missing:
            raise TrainingError(
                f"trainer.start_stage={self.cfg.start_stage} needs {', '.join(missing)} finished in {path}, "
                "which holds an unfinished run; finish it first (trainer.resume=true)"
            )
        load_model_state(model, state, path, frozen)
        log.info("starting at stage %s from %s", self.cfg.start_stage, path)
        return index

    def _refuse_non_finite(self, model: AnomalyModel, stage: str, epoch: int) -> None:
        """Raise instead of checkpointing NaN/inf weights (the last checkpoint stays the previous, sound one)."""
        bad = non_finite_state(model)
        if bad:
            raise TrainingError(
                f"Non-finite weights after stage '{stage}', epoch {epoch + 1}: {', '.join(bad[:5])}"
                f"{f' and {len(bad) - 5} more' if len(bad) > 5 else ''}; not checkpointed. "
                "Lower the learning rate or enable trainer.grad_clip."
            )

    def _step_function(self, stage_index: int, stage) -> Callable[[dict], dict[str, torch.Tensor]]:
        """The stage's step, compiled once per stage with ``trainer.compile``."""
        if not self.cfg.compile:
            return stage.step
        if stage_index not in self._compiled:
            self._compiled[stage_index] = torch.compile(stage.step)
        return self._compiled[stage_index]

    def _run_epoch(self, model, stage, optimizer, scheduler, datamodule, stage_index, epoch, epochs, step) -> int:
        model.train()
        epoch_seed = self.seed * 1_000_003 + stage_index * 10_007 + epoch
        # The shuffling and the model's own random draws (noise, patches) depend only on the epoch,
        # so a resumed run repeats an uninterrupted one.
        torch.manual_seed(epoch_seed)
        generator = torch.Generator().manual_seed(epoch_seed)
        loader = _loader(datamodule, stage.split, generator, pin_memory=self.device.type == "cuda")
        names = {id(p): name for name, p in model.named_parameters()}
        monitor = StepMonitor(stage.name, epoch + 1, [names.get(id(p), "?") for p in stage.parameters], self.device)
        step_fn = self._step_function(stage_index, stage)
        bar = tqdm(loader, desc=f"{stage.name} {epoch + 1}/{epochs}", leave=False, disable=not self.cfg.progress)
        for batch in bar:
            optimizer.zero_grad(set_to_none=True)
            with mixed_precision(self.cfg.precision, self.device):
                terms = step_fn(to_device(batch, self.device, self.channels_last))
            if not stage.backward_in_step:
                terms["loss"].backward()
            indices, norms = gradient_norms(stage.parameters)
            if self.cfg.grad_clip:
                clip_gradients(stage.parameters, norms, self.cfg.grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            monitor.record(step, terms, indices, norms)
            step += 1
            if monitor.steps % self.cfg.log_every == 0:
                bar.set_postfix(loss=f"{monitor.check():.4f}")
        means = monitor.means()
        log.info(
            "%s epoch %d/%d: %s", stage.name, epoch + 1, epochs, " ".join(f"{k}={v:.5f}" for k, v in means.items())
        )
        if self.writer is not None:
            for name, value in means.items():
                self.writer.add_scalar(f"{stage.name}/{name}", value, step)
            self.writer.add_scalar(f"{stage.name}/lr", optimizer.param_groups[0]["lr"], step)
        return step
