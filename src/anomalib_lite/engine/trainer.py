"""The engine: runs a model's stages with device, precision, seeding, checkpoints and logging."""

from __future__ import annotations

import logging
import math
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from anomalib_lite.data.datamodule import DataModule
from anomalib_lite.errors import ConfigError, TrainingError
from anomalib_lite.models.base import AnomalyModel

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    """Engine options (``trainer.*``).

    Attributes:
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` or ``fp32``.
        max_epochs: caps every stage's epochs (``None``: the model's own).
        grad_clip: max gradient norm (``None``: no clipping).
        resume: continue the run folder's last checkpoint instead of starting afresh.
        progress: show progress bars.
        start_stage: begin at this stage (e.g. UTAD's ``expert_net``), with the earlier ones taken
            from ``init_from``: a checkpoint of the same model in which they are finished.
        init_from: that checkpoint, or the run folder holding it (``checkpoints/<category>/last.pt``).
    """

    device: str = "auto"
    precision: str = "auto"
    max_epochs: int | None = None
    grad_clip: float | None = None
    resume: bool = False
    progress: bool = True
    start_stage: str | None = None
    init_from: str | None = None

    def __post_init__(self) -> None:
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


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else is checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name} but CUDA is not available here; use trainer.device=auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write atomically: a crash mid-write never leaves a broken ``path`` behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".partial-{os.getpid()}")
    torch.save(state, partial)
    os.replace(partial, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely: tensors and plain data only (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _loader(datamodule: DataModule, split: str, generator: torch.Generator | None = None) -> DataLoader:
    return datamodule.validation_loader(generator) if split == "validation" else datamodule.train_loader(generator)


def mixed_precision(precision: str, device: torch.device) -> torch.autocast:
    """The autocast context of training: bf16 for ``precision=bf16``, or ``auto`` on CUDA; else off (fp32)."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)


def to_device(batch: dict, device: torch.device) -> dict:
    """A batch with its tensors moved to ``device`` (other entries, e.g. paths, kept)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class Engine:
    """Runs :meth:`AnomalyModel.stages` in order.

    Args:
        cfg: :class:`TrainerConfig`. seed: base seed; each epoch's shuffling is seeded
            from it, so a resumed run sees the same batches as an uninterrupted one.
        checkpoint_path: ``last.pt``, written after every epoch.
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

    def fit(self, model: AnomalyModel, datamodule: DataModule) -> None:
        """Train ``model`` on ``datamodule``'s training split through all its stages.

        Raises:
            TrainingError: a loss term became NaN/inf (names the stage, epoch and term),
                or ``trainer.resume`` found no checkpoint.
        """
        seed_everything(self.seed)
        model.to(self.device)
        stages = model.stages()
        start_stage, start_epoch, step, resumed = 0, 0, 0, None
        if self.cfg.start_stage is not None:
            start_stage = self._initialise(model, stages)
        if self.cfg.resume:
            if not self.checkpoint_path.is_file():
                raise TrainingError(f"trainer.resume=true but there is no checkpoint at {self.checkpoint_path}")
            resumed = load_checkpoint(self.checkpoint_path)
            model.load_state_dict(resumed["model"])
            start_stage, start_epoch, step = resumed["stage"], resumed["epoch"], resumed["step"]
            log.info("resuming %s at stage %d, epoch %d", self.checkpoint_path, start_stage, start_epoch)

        for index, stage in enumerate(stages):
            epochs = (
                stage.epochs if stage.steps is None else math.ceil(stage.steps / len(_loader(datamodule, stage.split)))
            )
            epochs = min(epochs, self.cfg.max_epochs or epochs)
            if index < start_stage or (index == start_stage and start_epoch >= epochs):
                continue
            first_epoch = start_epoch if index == start_stage else 0
            optimizer = stage.optimizer(stage.parameters)
            steps_per_epoch = len(_loader(datamodule, stage.split))
            scheduler = stage.scheduler(optimizer, epochs * steps_per_epoch) if stage.scheduler else None
            if resumed is not None and index == start_stage:
                optimizer.load_state_dict(resumed["optimizer"])
                if scheduler is not None:
                    scheduler.load_state_dict(resumed["scheduler"])
            if stage.on_stage_start:
                stage.on_stage_start(datamodule)
            for epoch in range(first_epoch, epochs):
                step = self._run_epoch(model, stage, optimizer, scheduler, datamodule, index, epoch, epochs, step)
                if stage.on_epoch_end:
                    stage.on_epoch_end(epoch + 1)
                save_checkpoint(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler else {},
                        "stage": index,
                        "epoch": epoch + 1,
                        "step": step,
                        "finished": index == len(stages) - 1 and epoch + 1 == epochs,
                        "stages_done": [s.name for s in stages[:index]] + ([stage.name] if epoch + 1 == epochs else []),
                        "config": self.config,
                    },
                    self.checkpoint_path,
                )

    def _initialise(self, model: AnomalyModel, stages: list) -> int:
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
        model.load_state_dict(state["model"])
        log.info("starting at stage %s from %s", self.cfg.start_stage, path)
        return index

    def _run_epoch(self, model, stage, optimizer, scheduler, datamodule, stage_index, epoch, epochs, step) -> int:
        model.train()
        epoch_seed = self.seed * 1_000_003 + stage_index * 10_007 + epoch
        # The shuffling and the model's own random draws (noise, patches) depend only on the epoch,
        # so a resumed run repeats an uninterrupted one.
        torch.manual_seed(epoch_seed)
        loader = _loader(datamodule, stage.split, torch.Generator().manual_seed(epoch_seed))
        sums: dict[str, float] = defaultdict(float)
        bar = tqdm(loader, desc=f"{stage.name} {epoch + 1}/{epochs}", leave=False, disable=not self.cfg.progress)
        for batch in bar:
            with mixed_precision(self.cfg.precision, self.device):
                terms = stage.step(to_device(batch, self.device))
            numbers = {name: float(value.detach()) for name, value in terms.items()}
            for name, number in numbers.items():
                if not math.isfinite(number):
                    raise TrainingError(
                        f"Non-finite loss in stage '{stage.name}', epoch {epoch + 1}: term '{name}' = {number}. "
                        "Lower the learning rate or enable trainer.grad_clip."
                    )
                sums[name] += number
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if self.cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(stage.parameters, self.cfg.grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            bar.set_postfix(loss=f"{numbers['loss']:.4f}")
        means = {name: total / max(1, len(loader)) for name, total in sums.items()}
        log.info("%s epoch %d/%d: %s", stage.name, epoch + 1, epochs,
                 " ".join(f"{k}={v:.5f}" for k, v in means.items()))  # fmt: skip
        if self.writer is not None:
            for name, value in means.items():
                self.writer.add_scalar(f"{stage.name}/{name}", value, step)
            self.writer.add_scalar(f"{stage.name}/lr", optimizer.param_groups[0]["lr"], step)
        return step
