"""The engine: runs a model's stages with device, precision, seeding, checkpoints and logging."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader
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
from anomalib_lite.engine.measure import PeakMemory
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
            check of loss terms and gradients); in between, everything stays on the device. The last step of each
            epoch is read too (the epoch's means read then anyway), so the progress bar shows a loss on every epoch.
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


class ScalarWriter(Protocol):
    """Where the engine logs each epoch's numbers: a TensorBoard ``SummaryWriter``, or anything with its
    ``add_scalar``."""

    def add_scalar(self, tag: str, scalar_value: float, global_step: int | None = None) -> None:
        """Record ``scalar_value`` under ``tag`` at optimiser step ``global_step``."""


def new_training_record() -> dict[str, Any]:
    """An empty training record (:attr:`Engine.training`): ``{"seconds": 0.0, "stages": []}``."""
    return {"seconds": 0.0, "stages": []}


@dataclass
class _StageRun:
    """Where a stage stands in :meth:`Engine.fit`: all the stages, this one's index, its epochs, its (unshuffled)
    loader of one epoch's batches, the epoch it starts from, the frozen networks' record and the checkpoint writer."""

    stages: list
    index: int
    epochs: int
    batches: DataLoader
    first_epoch: int
    frozen: dict
    checkpoints: CheckpointWriter


@dataclass
class EpochResult:
    """One epoch's outcome: the optimiser step after it, the images it trained on, its wall time (s) and the mean
    of each loss term over its steps."""

    step: int
    images: int
    seconds: float
    means: dict[str, float]


class Engine:
    """Runs :meth:`AnomalyModel.stages` in order.

    Args:
        cfg: :class:`TrainerConfig`. seed: base seed; each epoch's shuffling is seeded
            from it, so a resumed run sees the same batches as an uninterrupted one.
        checkpoint_path: ``last.pt``, written as ``cfg.checkpoint_every`` / ``checkpoint_seconds`` say.
        config: the run's plain config, stored in every checkpoint.
        writer: where each epoch's loss terms, learning rate, time and images/s go (TensorBoard), or ``None``.

    Attributes:
        schedule: what :meth:`fit` ran: per stage, ``stage``, ``epochs`` and optimiser ``steps`` (after
            ``trainer.max_epochs``).
        training: the training record of ``metrics.json``: ``seconds`` (all stages) and per stage run, ``name``,
            ``epochs``, ``seconds`` (its wall time, set-up such as the feature cache included), ``images_per_second``
            (images trained on over those seconds), ``batch_size``, ``learning_rate`` (the first parameter group's
            at the stage's start), ``peak_memory_mib`` (:class:`~anomalib_lite.engine.measure.PeakMemory`) and
            ``loss`` (the mean loss of each epoch). Stored in every checkpoint, so a resumed run keeps the epochs
            run before (stages taken from ``trainer.init_from`` are not in it).
        step: the optimiser step :meth:`fit` ended at.
    """

    def __init__(
        self,
        cfg: TrainerConfig,
        seed: int,
        checkpoint_path: Path,
        config: dict[str, Any],
        writer: ScalarWriter | None = None,
    ) -> None:
        self.cfg = cfg
        self.seed = seed
        self.checkpoint_path = checkpoint_path
        self.config = config
        self.writer = writer
        self.device = resolve_device(cfg.device)
        self.channels_last = channels_last_used(cfg.channels_last, self.device)
        self.schedule: list[dict[str, Any]] = []
        self.training = new_training_record()
        self.step = 0
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
            self.training = resumed.get("training") or new_training_record()  # older checkpoints have none
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
            run = _StageRun(stages, index, epochs, batches, first_epoch, frozen, checkpoints)
            step = self._run_stage(model, datamodule, run, resumed if index == start_stage else None, step)
        self.step = step
        log.info("%s: %s", self.checkpoint_path, checkpoints.summary())

    def _run_stage(
        self, model: AnomalyModel, datamodule: DataModule, run: _StageRun, resumed: dict[str, Any] | None, step: int
    ) -> int:
        """Train one stage from ``run.first_epoch`` (its optimiser state from ``resumed``, when it goes on from a
        checkpoint), keeping its entry of :attr:`training` and writing checkpoints; returns the step it ended at."""
        stage = run.stages[run.index]
        started = time.perf_counter()
        with PeakMemory(self.device) as memory:
            optimizer = stage.optimizer(stage.parameters) if stage.optimizer else None  # None: a fitting stage
            scheduler = None
            if stage.scheduler and optimizer is not None:
                scheduler = stage.scheduler(optimizer, run.epochs * len(run.batches))
            if resumed is not None and optimizer is not None:
                self._load_optimizer(stage.name, resumed, optimizer, scheduler)
            record = self._stage_record(stage.name, run.first_epoch, run.batches.batch_size, optimizer)
            before = dict(record)  # what earlier sessions recorded of this stage
            if stage.on_stage_start:
                stage.on_stage_start(datamodule)
            cache = build_feature_cache(
                stage,
                run.batches.dataset,
                datamodule.batch_size,
                self.device,
                lambda: mixed_precision(self.cfg.precision, self.device),
                self.cfg.feature_cache,
                self.cfg.feature_cache_budget_gb,
                (run.epochs - run.first_epoch) * len(run.batches),
            )
            running = stage if cache is None else dataclasses.replace(stage, step=cache.wrap(stage.step))
            images = before["images_per_second"] * before["seconds"]
            for epoch in range(run.first_epoch, run.epochs):
                result = self._run_epoch(
                    model, running, optimizer, scheduler, datamodule, run.index, epoch, run.epochs, step
                )
                step, images = result.step, images + result.images
                if stage.on_epoch_end:
                    stage.on_epoch_end(epoch + 1)
                self._refuse_non_finite(model, stage.name, epoch)
                seconds = before["seconds"] + time.perf_counter() - started
                record.update(
                    epochs=epoch + 1,
                    seconds=seconds,
                    images_per_second=images / seconds if seconds > 0 else 0.0,
                    peak_memory_mib=_larger(before["peak_memory_mib"], memory.mib),
                    loss=[*record["loss"], result.means.get("loss")],
                )
                self.training["seconds"] = sum(entry["seconds"] for entry in self.training["stages"])
                if run.checkpoints.due(epoch + 1, stage_end=epoch + 1 == run.epochs):
                    run.checkpoints.write(self._checkpoint(model, run, optimizer, scheduler, epoch + 1, step))
            del cache, running  # free this stage's cache before the next stage builds its own
        peak = record["peak_memory_mib"]
        log.info(
            "%s: %d epoch(s) in %.1f s, %.1f images/s, peak memory %s",
            stage.name,
            record["epochs"],
            record["seconds"],
            record["images_per_second"],
            "unknown" if peak is None else f"{peak:.1f} MiB",
        )
        return step

    def _checkpoint(
        self, model: AnomalyModel, run: _StageRun, optimizer, scheduler, epoch: int, step: int
    ) -> dict[str, Any]:
        """The checkpoint after ``epoch`` (from 1) of stage ``run.index``: the lean weights, the optimiser and
        schedule, where training stands, the config and :attr:`training`."""
        stage_end = epoch == run.epochs
        names = [stage.name for stage in run.stages]
        return {
            "model": lean_state(model, run.frozen),
            "frozen": run.frozen,
            "optimizer": optimizer.state_dict() if optimizer else {},
            "scheduler": scheduler.state_dict() if scheduler else {},
            "stage": run.index,
            "epoch": epoch,
            "step": step,
            "finished": run.index == len(names) - 1 and stage_end,
            "stages_done": names[: run.index + 1] if stage_end else names[: run.index],
            "config": self.config,
            "training": self.training,
        }

    def _load_optimizer(self, stage: str, resumed: dict[str, Any], optimizer, scheduler) -> None:
        """Restore a resumed stage's optimiser and learning-rate schedule from its checkpoint.

        Raises:
            TrainingError: they do not fit this version's (the checkpoint was written by another training set-up).
        """
        try:
            optimizer.load_state_dict(resumed["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(resumed["scheduler"])
        except (KeyError, ValueError) as error:
            raise TrainingError(
                f"{self.checkpoint_path}: its optimiser or learning-rate schedule of stage '{stage}' "
                f"does not fit this version's ({type(error).__name__}: {error}); it was written by another "
                "version of the model's training set-up. Start a new run, or trainer.start_stage with "
                "trainer.init_from to begin from its weights"
            ) from error

    def _stage_record(
        self, name: str, first_epoch: int, batch_size: int | None, optimizer: torch.optim.Optimizer | None
    ) -> dict[str, Any]:
        """The entry of stage ``name`` in :attr:`training`: the resumed one when the stage goes on from
        ``first_epoch`` > 0 (recorded by an earlier session), else a new one appended."""
        stages = self.training["stages"]
        if first_epoch > 0 and stages and stages[-1]["name"] == name:
            return stages[-1]
        groups = optimizer.param_groups if optimizer else []
        lr = groups[0].get("lr") if groups else None
        record = {
            "name": name,
            "epochs": first_epoch,
            "seconds": 0.0,
            "images_per_second": 0.0,
            "batch_size": batch_size,
            "learning_rate": float(lr) if isinstance(lr, (int, float, torch.Tensor)) else None,
            "peak_memory_mib": None,
            "loss": [],
        }
        stages.append(record)
        return record

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

    def _run_epoch(
        self, model, stage, optimizer, scheduler, datamodule, stage_index, epoch, epochs, step
    ) -> EpochResult:
        """Train one epoch of ``stage``; log its mean loss terms, time and images/s (and to :attr:`writer`)."""
        started = time.perf_counter()
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
        images = 0
        bar = tqdm(loader, desc=f"{stage.name} {epoch + 1}/{epochs}", leave=False, disable=not self.cfg.progress)
        for batch in bar:
            images += len(batch["image"])
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            with mixed_precision(self.cfg.precision, self.device):
                terms = step_fn(to_device(batch, self.device, self.channels_last))
            if optimizer is not None and not stage.backward_in_step:
                terms["loss"].backward()
            indices, norms = gradient_norms(stage.parameters)  # none in a fitting stage
            if self.cfg.grad_clip:
                clip_gradients(stage.parameters, norms, self.cfg.grad_clip)
            if optimizer is not None:
                optimizer.step()
            if scheduler is not None:
                scheduler.step()
            monitor.record(step, terms, indices, norms)
            step += 1
            if monitor.steps % self.cfg.log_every == 0 or monitor.steps == len(loader):  # the epoch's end reads anyway
                bar.set_postfix(loss=f"{monitor.check():.4f}")
        means = monitor.means()
        seconds = time.perf_counter() - started
        rate = images / seconds if seconds > 0 else 0.0
        log.info(
            "%s epoch %d/%d: %s (%.2f s, %.1f images/s)",
            stage.name,
            epoch + 1,
            epochs,
            " ".join(f"{k}={v:.5f}" for k, v in means.items()),
            seconds,
            rate,
        )
        if self.writer is not None:
            for name, value in means.items():
                self.writer.add_scalar(f"{stage.name}/{name}", value, step)
            if optimizer is not None:
                self.writer.add_scalar(f"{stage.name}/lr", optimizer.param_groups[0]["lr"], step)
            self.writer.add_scalar(f"{stage.name}/epoch_seconds", seconds, step)
            self.writer.add_scalar(f"{stage.name}/images_per_second", rate, step)
        return EpochResult(step, images, seconds, means)


def _larger(a: float | None, b: float | None) -> float | None:
    """The larger of two optional numbers (``None`` when both are)."""
    known = [x for x in (a, b) if x is not None]
    return max(known) if known else None
