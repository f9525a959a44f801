"""anomalib's models as baselines: anomalib trains and fits them through its own Lightning module's hooks; our engine
runs those hooks, our datamodule feeds them and our evaluator scores what they predict.

Per baseline, what is anomalib's and what is ours:

- anomalib's: the Lightning module (``anomalib.models.<Model>``) and its torch model, built by anomalib with its
  options; ``training_step`` (the loss, or a memory bank's gathering), ``configure_optimizers`` (optimiser and
  schedule), the memory banks' ``fit`` (``on_train_epoch_end``: PatchCore's coreset, PaDiM's Gaussians),
  EfficientAD's teacher statistics (``teacher_channel_mean_std``), pretrained teacher (``prepare_pretrained_model``),
  penalty images (``prepare_imagenette_data``) and map quantiles (``map_norm_quantiles``); at inference the torch
  model's raw maps and scores (``module.model(image)`` in eval mode).
- ours: the data (our batches as anomalib's ``ImageBatch``, ImageNet-normalised as anomalib's pre-processing makes
  them, or in [0, 1] for EfficientAD), the loop (epochs, seeding, checkpoints, resume, precision, device), the
  frozen backbones' weights (ours, never downloaded: :mod:`.adapter`), the evaluation of the **raw** maps and scores
  (anomalib's post-processor, which normalises them to [0, 1] with thresholds from its validation set, is not
  used), and maps at the input size (then ``eval.map_size`` as for every family).

Departures from a run of ``anomalib.engine.Engine().fit`` (each a choice, said where it is made): EfficientAD's
``StepLR`` is stepped per optimiser step (anomalib returns it without an interval, so Lightning steps it per epoch
and its decay at 95 % of the steps never comes), its penalty iterator is reshuffled each epoch (anomalib's runs on
across epochs; ours restarts so that a resumed run repeats an uninterrupted one), and its map quantiles come from
the training images (anomalib's from its validation split, by default the test set).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from anomalib_lite.models.anomalib_baselines.adapter import (
    AnomalibBatches,
    PenaltyStandIn,
    anomalib_batch,
    configured_optimizers,
    import_anomalib,
    load_frozen_weights,
    model_input,
    no_download,
    penalty_transform,
    reset_randomly,
)
from anomalib_lite.models.anomalib_baselines.config import (
    ANOMALIB_DEFAULT,
    BASELINES,
    MEMORY_BANKS,
    PADIM_N_FEATURES,
    PADIM_OTHER_N_FEATURES,
    AnomalibConfig,
    EfficientAdOptions,
    PadimOptions,
)
from anomalib_lite.models.backbones import BackboneConfig
from anomalib_lite.models.base import AnomalyModel, AnomalyOutput, Capabilities, Stage, TinySetting
from anomalib_lite.models.registry import register_model

# Where each baseline's frozen ImageNet network sits in anomalib's Lightning module (a timm network).
FROZEN_NETWORK = {
    "patchcore": "model.feature_extractor.feature_extractor",
    "padim": "model.feature_extractor.feature_extractor",
    "stfpm": "model.teacher_model.feature_extractor",
    "reverse_distillation": "model.encoder.feature_extractor",
    "fastflow": "model.feature_extractor",
}
# Lightning warns once per process that self.log() has no trainer: our engine logs the loss instead.
_NO_TRAINER_LOG = ".*self.log.*not registered.*"


def _quietly(call: Any, *args: Any) -> Any:
    """``call(*args)`` without Lightning's warning that ``self.log`` has no trainer (our engine logs the terms)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NO_TRAINER_LOG)
        return call(*args)


class AnomalibBaseline(AnomalyModel):
    """An anomalib 2.7 model (``cfg.name``: patchcore, padim, efficient_ad, reverse_distillation, fastflow, stfpm)
    under our engine, data and evaluator.

    Args:
        cfg: :class:`AnomalibConfig`. backbone_cfg: the frozen network (resolved by :meth:`AnomalibConfig.resolve_run`
            when the run started; resolved again here, which leaves a resolved one as it is).

    Attributes:
        module: anomalib's Lightning module (its pre-processor only tells RD and FastFlow the input size; no
            post-processor, evaluator or visualiser).
    Raises:
        ConfigError: anomalib is not installed (one line naming ``anomalib_lite[baselines]``), or the setting does not
            fit the baseline.
    """

    @classmethod
    def tiny(cls) -> TinySetting:
        """Set per baseline by :func:`_register` (each registered name has its own)."""
        raise NotImplementedError("AnomalibBaseline is registered once per baseline, each with its tiny setting")

    @classmethod
    def capabilities(cls, model_cfg: Any = None) -> Capabilities:
        """anomalib is an optional package; the memory banks (and EfficientAD's map quantiles, a last pass over
        the training images) end in a single pass, redone whole by a killed run; config group ``anomalib``;
        EfficientAD's contract tests are slow (its smallest input is 256 px)."""
        cfg = model_cfg if model_cfg is not None else cls.tiny().model
        single = ""
        if cfg.name in MEMORY_BANKS:
            single = f"{cfg.title}'s memory bank is gathered in one pass over the training images, then fitted"
        elif cfg.name == "efficient_ad" and cfg.efficient_ad.map_quantiles == "train":
            single = "EfficientAD's map quantiles are one pass over the training images after training"
        slow = ""
        if cfg.name == "efficient_ad":
            slow = "EfficientAD's PDNs take 256 px at least: ~200 GFLOP a training step, minutes for 12 steps on a CPU"
        return Capabilities(
            requires=("anomalib", "anomalib_lite[baselines]"),
            resumes_inside_last_stage=not single,
            single_pass_reason=single,
            config_group="anomalib",
            slow_reason=slow,
        )

    def __init__(self, cfg: AnomalibConfig, backbone_cfg: BackboneConfig) -> None:
        super().__init__()
        cfg, backbone_cfg = cfg.resolve_run(backbone_cfg)
        self.cfg, self.backbone_cfg = cfg, backbone_cfg
        self.module = _build(cfg, backbone_cfg)
        self._penalty_loader: DataLoader | None = None
        self._new_epoch = True

    @property
    def name(self) -> str:
        """The baseline's ``model.name``."""
        return self.cfg.name

    def to(self, *args: Any, **kwargs: Any) -> AnomalibBaseline:
        """Move as asked, in the default memory layout whatever ``memory_format`` says: anomalib's models assume it
        (RD's loss views its features), so ``trainer.channels_last`` does not apply to the baselines."""
        kwargs.pop("memory_format", None)
        return super().to(*args, **kwargs)

    def _sync_device(self) -> None:
        """Tell the Lightning module where its weights are (it tracks ``.device`` only through its own ``.to``, which
        moving this wrapper does not call); anomalib's hooks put tensors there."""
        device = next(self.module.parameters()).device
        if self.module.device != device:
            self.module.to(device)

    # --- training: anomalib's hooks, run by our engine -------------------------------------------------------------

    def stages(self) -> list[Stage]:
        """The memory banks: one fitting stage (``training_step`` gathers, ``on_train_epoch_end`` fits). The others:
        one stage of anomalib's ``training_step`` with its ``configure_optimizers``; EfficientAD then, with
        ``map_quantiles=train``, a fitting stage that computes the map quantiles."""
        epochs, steps = self.cfg.budget()
        if self.name in MEMORY_BANKS:
            return [
                Stage(
                    "memory_bank",
                    1,
                    [],
                    None,
                    self._gather,
                    on_epoch_end=lambda _: _quietly(self._fit_memory_bank),
                )
            ]
        optimizer, _ = configured_optimizers(self.module, 1)  # only to read which parameters anomalib trains
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        stage = Stage(
            "train",
            epochs,
            parameters,
            self._optimizer,
            self._training_step,
            scheduler=self._scheduler if self.name == "efficient_ad" else None,
            on_stage_start=self._start_training,
            on_epoch_end=self._end_epoch,
            steps=steps,
        )
        if self.name == "efficient_ad" and self.cfg.efficient_ad.map_quantiles == "train":
            quantiles = Stage("map_quantiles", 1, [], None, self._no_step, on_stage_start=self._map_quantiles)
            return [stage, quantiles]
        return [stage]

    def _optimizer(self, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """anomalib's optimiser (``configure_optimizers``) over the parameters it chooses (``parameters``)."""
        return configured_optimizers(self.module, 1)[0]

    def _scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        """EfficientAD's schedule: anomalib's ``StepLR`` as its ``configure_optimizers`` sets it for ``total_steps``
        (the decay by ``gamma`` at 95 % of the steps), on ``optimizer``, stepped per optimiser step (choice: see the
        module's docstring)."""
        scheduler = configured_optimizers(self.module, total_steps)[1]
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=scheduler.step_size, gamma=scheduler.gamma)

    def _training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """anomalib's ``training_step`` on our batch; EfficientAD's penalty images restart each epoch."""
        if self.name == "efficient_ad" and self._new_epoch:
            self.module.imagenet_iterator = iter(self.module.imagenet_loader)
            self._new_epoch = False
        out = _quietly(self.module.training_step, anomalib_batch(batch, self.name == "efficient_ad"), 0)
        return {"loss": out["loss"]}

    def _gather(self, batch: dict) -> dict[str, torch.Tensor]:
        """A memory bank's step: anomalib's ``training_step`` stores the batch's features (in fp32, anomalib's
        precision, without gradients); its loss is anomalib's constant 0."""
        with torch.no_grad(), torch.autocast(batch["image"].device.type, enabled=False):
            out = _quietly(self.module.training_step, anomalib_batch(batch), 0)
        return {"loss": out.detach()}

    def _fit_memory_bank(self) -> None:
        """anomalib's ``on_train_epoch_end``: fits the memory bank once (PatchCore's coreset, PaDiM's Gaussians).

        The fitted buffers are then stored contiguously, as a checkpoint reloads them: PaDiM's inverse covariances
        come out transposed, and its matrix products round differently on them, so the model evaluated after
        training would differ in the last bits from the one ``eval.py`` rebuilds."""
        self._sync_device()
        self.module.on_train_epoch_end()
        for name, buffer in self.module.named_buffers():
            if not buffer.is_contiguous():
                owner, _, key = name.rpartition(".")
                setattr(self.module.get_submodule(owner), key, buffer.contiguous())

    def _no_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """The map-quantile stage's step: nothing (its work is one pass at its start)."""
        return {"loss": torch.zeros((), device=batch["image"].device)}

    def _start_training(self, datamodule: Any) -> None:
        """What anomalib's ``on_train_start`` does for EfficientAD: its pretrained teacher is loaded at build time;
        here its penalty images and, unless resumed with them, the teacher's channel statistics on the training
        images. Nothing for the other baselines."""
        self._new_epoch = True
        if self.name != "efficient_ad":
            return
        self._sync_device()
        size = self.cfg.image_size
        if self.cfg.efficient_ad.penalty == "imagenette":
            self.module.prepare_imagenette_data((size, size))  # anomalib's own: ImageFolder(imagenet_dir)
        else:
            self.module.imagenet_loader = DataLoader(
                PenaltyStandIn(penalty_transform(size)), batch_size=1, shuffle=True
            )
        model = self.module.model
        if not model.is_set(model.mean_std):
            images = AnomalibBatches(datamodule.train_set, datamodule.batch_size, True, self.module.device)
            model.mean_std.update(self.module.teacher_channel_mean_std(images))

    def _end_epoch(self, epochs: int) -> None:
        """After each epoch: EfficientAD's penalty images restart with the next one."""
        self._new_epoch = True

    def _map_quantiles(self, datamodule: Any) -> None:
        """anomalib's ``map_norm_quantiles`` on the training images, in eval mode (as anomalib's validation runs it);
        they normalise EfficientAD's two maps before they are averaged."""
        self._sync_device()
        model = self.module.model
        model.eval()
        try:
            images = AnomalibBatches(datamodule.train_set, datamodule.batch_size, True, self.module.device)
            model.quantiles.update(self.module.map_norm_quantiles(images))
        finally:
            model.train()

    # --- inference ------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def predict(self, image: torch.Tensor) -> AnomalyOutput:
        """anomalib's torch model in eval mode on ``B×C×S×S`` normalised images: its raw anomaly maps (``B×S×S``,
        bilinearly resized to the input where a model gives another size) and raw scores (``B``); anomalib's
        post-processing (normalisation to [0, 1], thresholds) is not applied."""
        out = self.module.model(model_input(image, self.name == "efficient_ad"))
        maps = out.anomaly_map.float()
        maps = maps if maps.dim() == 4 else maps.unsqueeze(1)
        if maps.shape[-2:] != image.shape[-2:]:
            maps = F.interpolate(maps, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return AnomalyOutput(anomaly_map=maps[:, 0], score=out.pred_score.float().flatten())


def _build(cfg: AnomalibConfig, backbone: BackboneConfig) -> Any:
    """anomalib's Lightning module for ``cfg`` with ``backbone``'s weights in its frozen network (built without any
    download, its trainable parts drawn from the global random state, as anomalib does)."""
    models = import_anomalib()
    cls = getattr(models, BASELINES[cfg.name][0])
    size = (cfg.image_size, cfg.image_size)
    parts = {
        "pre_processor": cls.configure_pre_processor(image_size=size),
        "post_processor": False,
        "evaluator": False,
        "visualizer": False,
    }
    layers = list(backbone.layers or [])
    options = {
        "patchcore": lambda: {
            "backbone": backbone.name,
            "layers": layers,
            "pre_trained": False,
            "coreset_sampling_ratio": cfg.patchcore.coreset_sampling_ratio,
            "num_neighbors": cfg.patchcore.num_neighbors,
        },
        "padim": lambda: {
            "backbone": backbone.name,
            "layers": layers,
            "pre_trained": False,
            "n_features": _padim_features(cfg.padim, backbone.name),
        },
        "stfpm": lambda: {"backbone": backbone.name, "layers": layers},
        "reverse_distillation": lambda: {
            "backbone": backbone.name,
            "layers": layers,
            "pre_trained": False,
            "anomaly_map_mode": cfg.reverse_distillation.anomaly_map_mode,
        },
        "fastflow": lambda: {
            "backbone": backbone.name,
            "pre_trained": False,
            "flow_steps": cfg.fastflow.flow_steps,
            "conv3x3_only": cfg.fastflow.conv3x3_only,
            "hidden_ratio": cfg.fastflow.hidden_ratio,
        },
        "efficient_ad": lambda: {
            "imagenet_dir": cfg.efficient_ad.imagenet_dir,
            "teacher_out_channels": cfg.efficient_ad.teacher_out_channels,
            "model_size": cfg.efficient_ad.model_size,
            "lr": cfg.efficient_ad.lr,
            "weight_decay": cfg.efficient_ad.weight_decay,
            "padding": cfg.efficient_ad.padding,
            "pad_maps": cfg.efficient_ad.pad_maps,
        },
    }[cfg.name]()
    with no_download(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = cls(**options, **parts)
    # Never attached to a Lightning trainer: Lightning's own flag for that (its to_torchscript sets it) lets the
    # exporters walk the module, whose `trainer` would raise otherwise.
    module._jit_is_scripting = True
    if cfg.name == "efficient_ad":
        if backbone.weights == "imagenet":
            module.prepare_pretrained_model()  # anomalib's: the teacher from its cache (checked present)
        else:
            reset_randomly(module.model.teacher)
    else:
        load_frozen_weights(module.get_submodule(FROZEN_NETWORK[cfg.name]), backbone)
    return module


def _padim_features(options: PadimOptions, backbone: str) -> int | None:
    """PaDiM's kept channels: the option, else anomalib's default for the backbone (``None``: anomalib picks it),
    else :data:`PADIM_OTHER_N_FEATURES` (choice; anomalib refuses a backbone it has no default for)."""
    if options.n_features is not None or backbone in PADIM_N_FEATURES:
        return options.n_features
    return PADIM_OTHER_N_FEATURES


def _register(name: str, tiny: TinySetting) -> None:
    """Register baseline ``name`` (``model.name=<name>``) as its own family, with its tiny setting."""

    def tiny_setting(cls: type[AnomalyModel]) -> TinySetting:
        return tiny

    family = type(f"Anomalib_{name}", (AnomalibBaseline,), {"tiny": classmethod(tiny_setting)})
    family.__doc__ = f"anomalib 2.7's {BASELINES[name][1]} (``model=anomalib model.name={name}``)."
    register_model(name, AnomalibConfig)(family)


def _tiny(name: str) -> TinySetting:
    """A baseline's tiny setting: a random ResNet-18 at 64 px, two epochs where it trains; EfficientAD: a random
    16-channel teacher at 256 px (its smallest input), batch 1, 12 steps (two epochs of 6 images), the stand-in
    penalty images and no map quantiles (a last pass the contract cannot kill inside)."""
    if name == "efficient_ad":
        options = EfficientAdOptions(teacher_out_channels=16, penalty="stand_in", map_quantiles="none")
        config = AnomalibConfig(name=name, image_size=256, steps=12, efficient_ad=options)
        return TinySetting(config, BackboneConfig(name=ANOMALIB_DEFAULT, weights="none"), 256, 1)
    config = AnomalibConfig(name=name, image_size=64, epochs=None if name in MEMORY_BANKS else 2)
    return TinySetting(config, BackboneConfig(name="resnet18", weights="none"), 64, 2)


for _name in BASELINES:
    _register(_name, _tiny(_name))
