"""The anomalib baselines' configuration: :class:`AnomalibConfig` (``model=anomalib model.name=<baseline>``), one
section of options per baseline, and :meth:`AnomalibConfig.resolve_run`, which completes a run's setting for this
machine before any work (anomalib's defaults, the weights that are here or their labelled stand-in).

Importing this module never imports anomalib (it takes ~15 s): only building a model does.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomalib_lite.models.backbones import (
    BACKBONES,
    OFFLINE_BACKBONES,
    BackboneConfig,
    cached_or_offline,
    torchvision_weights_path,
)

log = logging.getLogger(__name__)

# model.name -> anomalib 2.7's class (anomalib.models.<class>) and the title used in messages.
BASELINES = {
    "patchcore": ("Patchcore", "PatchCore"),
    "padim": ("Padim", "PaDiM"),
    "efficient_ad": ("EfficientAd", "EfficientAD"),
    "reverse_distillation": ("ReverseDistillation", "Reverse Distillation"),
    "fastflow": ("Fastflow", "FastFlow"),
    "stfpm": ("Stfpm", "STFPM"),
}
MEMORY_BANKS = ("patchcore", "padim")  # no gradient step: features gathered in one pass, then fitted
EXTRA = "pip install 'anomalib_lite[baselines]'"
ANOMALIB_VERSIONS = "2.7"  # the anomalib the adapter is written against (the extra pins >=2.7,<2.8)

# backbone.name that stands for anomalib's default backbone of model.name (configs/backbone/anomalib_default.yaml).
ANOMALIB_DEFAULT = "anomalib_default"
# ref-code: anomalib 2.7 models/image/<model>/lightning_model.py, the constructors' defaults.
DEFAULT_BACKBONE = {
    "patchcore": "wide_resnet50_2",
    "padim": "resnet18",
    "reverse_distillation": "wide_resnet50_2",
    "fastflow": "resnet18",
    "stfpm": "resnet18",
}
DEFAULT_LAYERS = {
    "patchcore": ["layer2", "layer3"],
    "padim": ["layer1", "layer2", "layer3"],
    "reverse_distillation": ["layer1", "layer2", "layer3"],
    "fastflow": ["layer1", "layer2", "layer3"],  # fixed in anomalib (fastflow/torch_model.py: out_indices [1, 2, 3])
    "stfpm": ["layer1", "layer2", "layer3"],
}
# The backbones each baseline takes, among ours (models/backbones.py: weights from the torch cache or a pip
# package). ref-code: anomalib 2.7 reverse_distillation decodes ResNets only (components/backbone/resnet_decoder.py);
# fastflow/torch_model.py takes resnet18 and wide_resnet50_2 (and two transformers we offer no weights for).
ANY_CNN = [name for name in BACKBONES if name != "vgg19"]
SUPPORTED = {
    "patchcore": ANY_CNN,
    "padim": ANY_CNN,
    "stfpm": ANY_CNN,
    "reverse_distillation": ["resnet18", "resnet50", "wide_resnet50_2"],
    "fastflow": ["resnet18", "wide_resnet50_2"],
}
# ResNet stage -> the EfficientNet-Lite stage at the same stride (4, 8, 16, 32): where Lite stands in (choice, as
# models/backbones.py's default taps).
LITE_OF_RESNET = {"layer1": "blocks.1", "layer2": "blocks.2", "layer3": "blocks.4", "layer4": "blocks.6"}
# The training budget when model.epochs / model.steps are null: choice, each baseline's own paper (anomalib 2.7 sets
# none: Lightning's default of 1000 epochs), except the memory banks' single pass (ref-code: trainer_arguments
# max_epochs=1). EfficientAD counts iterations (its paper: 70 000 at batch 1).
DEFAULT_EPOCHS = {"patchcore": 1, "padim": 1, "reverse_distillation": 200, "fastflow": 500, "stfpm": 100}
DEFAULT_STEPS = {"efficient_ad": 70_000}
# ref-code: anomalib 2.7 padim/torch_model.py _N_FEATURES_DEFAULTS (the PaDiM paper's); other backbones: choice.
PADIM_N_FEATURES = {"resnet18": 100, "wide_resnet50_2": 550}
PADIM_OTHER_N_FEATURES = 100
# EfficientAD's pretrained teacher (ref-code: anomalib 2.7 efficient_ad/lightning_model.py WEIGHTS_DOWNLOAD_INFO):
# the zip's URL; it unpacks to <anomalib's pre_trained cache>/efficientad_pretrained_weights/.
TEACHER_URL = (
    "https://github.com/open-edge-platform/anomalib/releases/download/efficientad_pretrained_weights/"
    "efficientad_pretrained_weights.zip"
)
IMAGENETTE_URL = "https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz"  # ref-code: IMAGENETTE_DOWNLOAD_INFO
PENALTY_SOURCES = ("auto", "imagenette", "stand_in")
MAP_QUANTILES = ("train", "none")


def teacher_name(model_size: str) -> str:
    """The name under which EfficientAD's PDN teacher is recorded as the run's backbone."""
    return f"efficientad_teacher_{model_size}"


def teacher_path(model_size: str) -> Path:
    """Where anomalib 2.7 reads EfficientAD's pretrained teacher of ``model_size`` (``small`` or ``medium``): its
    cache of pretrained weights (``~/.cache/anomalib/pre_trained`` on Linux; a light import of anomalib's path
    helpers, not of its models)."""
    from anomalib.utils.path import get_pretrained_weights_dir

    folder = get_pretrained_weights_dir() / "efficientad_pretrained_weights"
    return folder / f"pretrained_teacher_{model_size}.pth"


@dataclass
class PatchcoreOptions:
    """PatchCore (``model.patchcore.*``); ref-code: anomalib 2.7 patchcore/lightning_model.py.

    Attributes:
        coreset_sampling_ratio: share of the gathered patch features the k-center-greedy coreset keeps.
        num_neighbors: memory-bank neighbours that reweight the image score.
    """

    coreset_sampling_ratio: float = 0.1
    num_neighbors: int = 9

    def __post_init__(self) -> None:
        if not 0 < self.coreset_sampling_ratio <= 1:
            raise ValueError(f"model.patchcore.coreset_sampling_ratio={self.coreset_sampling_ratio} must be in (0, 1]")
        if self.num_neighbors < 1:
            raise ValueError(f"model.patchcore.num_neighbors={self.num_neighbors} must be ≥ 1")


@dataclass
class PadimOptions:
    """PaDiM (``model.padim.*``).

    Attributes:
        n_features: channels kept by the random selection; ``None``: anomalib's default for the backbone (ref-code:
            padim/torch_model.py, resnet18 100, wide_resnet50_2 550), else 100 or all when fewer (choice).
    """

    n_features: int | None = None

    def __post_init__(self) -> None:
        if self.n_features is not None and self.n_features < 1:
            raise ValueError(f"model.padim.n_features={self.n_features} must be ≥ 1 (or null)")


@dataclass
class EfficientAdOptions:
    """EfficientAD (``model.efficient_ad.*``); ref-code: anomalib 2.7 efficient_ad/lightning_model.py unless said.

    Attributes:
        model_size: ``small`` or ``medium`` (the PDN).
        teacher_out_channels: the teacher's output channels (the pretrained teachers have 384).
        lr, weight_decay: Adam's.
        padding: padded convolutions in the PDNs. pad_maps: pad the maps to the input's size.
        imagenet_dir: the penalty images (ImageNet, as the paper; anomalib uses imagenette), an image folder
            (``<dir>/<class>/<image>``); choice: under ``data/`` (anomalib: ``./datasets/imagenette``, downloaded).
        penalty: where the penalty images come from: ``imagenette`` (``imagenet_dir``), ``stand_in`` (nine
            photographs that ship with scikit-image, none of them a synthetic category's source: a labelled offline
            stand-in), ``auto`` (resolved by the run: ``imagenette`` when ``imagenet_dir`` holds it, else the
            stand-in with ``backbone.allow_stand_in=true``). anomalib cannot train without a penalty set.
        map_quantiles: ``train`` (choice): after training, the maps are normalised by their 0.9 and 0.995
            quantiles on the training images (anomalib computes them on its validation split, which by default
            is the test set; the paper holds out training images); ``none``: the raw maps, unnormalised.
    """

    model_size: str = "small"
    teacher_out_channels: int = 384
    lr: float = 1.0e-4
    weight_decay: float = 1.0e-5
    padding: bool = False
    pad_maps: bool = True
    imagenet_dir: str = "data/imagenette"
    penalty: str = "auto"
    map_quantiles: str = "train"

    def __post_init__(self) -> None:
        if self.model_size not in ("small", "medium"):
            raise ValueError(f"model.efficient_ad.model_size={self.model_size!r}; choices: small, medium")
        if self.penalty not in PENALTY_SOURCES:
            raise ValueError(f"model.efficient_ad.penalty={self.penalty!r}; choices: {', '.join(PENALTY_SOURCES)}")
        if self.map_quantiles not in MAP_QUANTILES:
            raise ValueError(
                f"model.efficient_ad.map_quantiles={self.map_quantiles!r}; choices: {', '.join(MAP_QUANTILES)}"
            )
        for key in ("teacher_out_channels",):
            if getattr(self, key) < 1:
                raise ValueError(f"model.efficient_ad.{key}={getattr(self, key)} must be ≥ 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("model.efficient_ad.lr must be > 0 and weight_decay ≥ 0")


@dataclass
class ReverseDistillationOptions:
    """Reverse Distillation (``model.reverse_distillation.*``); ref-code: reverse_distillation/lightning_model.py.

    Attributes:
        anomaly_map_mode: ``add`` or ``multiply``: how the levels' maps combine.
    """

    anomaly_map_mode: str = "add"

    def __post_init__(self) -> None:
        if self.anomaly_map_mode not in ("add", "multiply"):
            raise ValueError(
                f"model.reverse_distillation.anomaly_map_mode={self.anomaly_map_mode!r}; choices: add, multiply"
            )


@dataclass
class FastflowOptions:
    """FastFlow (``model.fastflow.*``); ref-code: anomalib 2.7 fastflow/lightning_model.py.

    Attributes:
        flow_steps: flow blocks per level. conv3x3_only: only 3×3 convolutions in the subnetworks.
        hidden_ratio: the subnetworks' hidden channels over their input channels.
    """

    flow_steps: int = 8
    conv3x3_only: bool = False
    hidden_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.flow_steps < 1 or self.hidden_ratio <= 0:
            raise ValueError("model.fastflow.flow_steps must be ≥ 1 and hidden_ratio > 0")


@dataclass
class AnomalibConfig:
    """One of anomalib 2.7's models as a baseline (``model=anomalib model.name=<baseline>``; every option labelled in
    ``configs/model/anomalib.yaml``).

    Attributes:
        name: the baseline, a key of :data:`BASELINES`.
        image_size: the input side (``data.image_size``, or ``data.tile_size`` with tiles): RD's and FastFlow's
            networks are built for it.
        epochs: passes over the training images (``None``: :data:`DEFAULT_EPOCHS`); the memory banks take one.
        steps: EfficientAD's budget in optimiser steps (``None``: :data:`DEFAULT_STEPS`); only EfficientAD.
        offline_backbone: the backbone that stands in, with ``backbone.allow_stand_in=true``, where the asked one's
            ImageNet weights are not in the torch cache (only for baselines that take it; RD and FastFlow take
            ResNets only, and get the asked one with random weights instead, labelled a stand-in too).
        patchcore, padim, efficient_ad, reverse_distillation, fastflow: each baseline's own options.
    """

    name: str = "patchcore"
    image_size: int = 256
    epochs: int | None = None
    steps: int | None = None
    offline_backbone: str = "tf_efficientnet_lite0"
    patchcore: PatchcoreOptions = field(default_factory=PatchcoreOptions)
    padim: PadimOptions = field(default_factory=PadimOptions)
    efficient_ad: EfficientAdOptions = field(default_factory=EfficientAdOptions)
    reverse_distillation: ReverseDistillationOptions = field(default_factory=ReverseDistillationOptions)
    fastflow: FastflowOptions = field(default_factory=FastflowOptions)

    def __post_init__(self) -> None:
        if self.name not in BASELINES:
            raise ValueError(f"model.name={self.name!r} is not an anomalib baseline; choices: {', '.join(BASELINES)}")
        if self.image_size < 32:
            raise ValueError(f"model.image_size={self.image_size} must be ≥ 32")
        if self.name == "efficient_ad" and self.image_size < 256:
            raise ValueError(
                f"model.name=efficient_ad needs an input of at least 256 px (anomalib's autoencoder ends in an 8×8 "
                f"convolution on the input downsampled 32 times), got {self.image_size}: set data.image_size"
            )
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"model.epochs={self.epochs} must be ≥ 1 (or null: the baseline's default)")
        if self.name in MEMORY_BANKS and self.epochs not in (None, 1):
            raise ValueError(
                f"model.epochs={self.epochs}: {BASELINES[self.name][1]} gathers its memory bank in one pass "
                "(anomalib: max_epochs=1); leave model.epochs=null"
            )
        if self.steps is not None and (self.name != "efficient_ad" or self.steps < 1):
            raise ValueError(f"model.steps={self.steps}: a budget ≥ 1 in optimiser steps, for efficient_ad only")
        if self.offline_backbone not in OFFLINE_BACKBONES:
            raise ValueError(
                f"model.offline_backbone={self.offline_backbone!r}; choices: {', '.join(OFFLINE_BACKBONES)}"
            )

    @property
    def title(self) -> str:
        """The baseline's name as its paper writes it (e.g. ``PatchCore``)."""
        return BASELINES[self.name][1]

    def budget(self) -> tuple[int, int | None]:
        """``(epochs, steps)``: the training budget, defaults filled in (``steps`` ``None`` but for EfficientAD)."""
        if self.name == "efficient_ad":
            return 1, self.steps or DEFAULT_STEPS[self.name]
        return self.epochs or DEFAULT_EPOCHS[self.name], None

    def resolve_run(self, backbone: BackboneConfig, data: Any = None) -> tuple[AnomalibConfig, BackboneConfig]:
        """This run's setting on this machine, checked before any work (the hook of ``pipeline.training.run_config``;
        also run when a model is built): anomalib installed, the budget and anomalib's default backbone and
        layers filled in, the weights present or their labelled stand-in, EfficientAD's penalty images found or
        their stand-in, and ``data.batch_size=1`` for EfficientAD. Idempotent: a resolved setting comes back as is.

        Args:
            backbone: ``backbone.*`` (``anomalib_default``: anomalib's default for :attr:`name`). data: ``data.*``
                (only its ``batch_size`` is read; ``None`` when a model is rebuilt from a checkpoint).
        Returns:
            The model config and the backbone, resolved (the backbone as it will run: its ``stand_in_for`` set when
            it stands in for the one asked for, as for every family).
        Raises:
            ConfigError: anomalib absent or of another version; a backbone or layer the baseline does not take;
                weights or penalty images absent while ``backbone.allow_stand_in`` is false (naming how to get
                them); EfficientAD with ``data.batch_size`` ≠ 1.
        """
        from anomalib_lite.errors import ConfigError

        require_anomalib(self.name)
        epochs, steps = self.budget()
        model = dataclasses.replace(self, epochs=None if self.name == "efficient_ad" else epochs, steps=steps)
        try:
            if self.name == "efficient_ad":
                model, backbone = _resolve_efficient_ad(model, backbone)
                batch = getattr(data, "batch_size", 1)
                if batch != 1:
                    raise ConfigError(
                        f"data.batch_size={batch}: EfficientAD trains on one image per step (its paper; anomalib "
                        "refuses any other): set data.batch_size=1"
                    )
                return model, backbone
            backbone = _resolve_backbone(model, backbone)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        return model, backbone


def require_anomalib(name: str) -> None:
    """Check, without importing it, that anomalib 2.7 is installed for baseline ``name``.

    Raises:
        ConfigError: one line naming the extra that installs it.
    """
    from anomalib_lite.errors import ConfigError

    title = BASELINES.get(name, (None, name))[1]
    try:
        version = importlib.metadata.version("anomalib")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"model.name={name}: {title} is anomalib's model, and anomalib is not installed: {EXTRA}"
        ) from None
    if not version.startswith(ANOMALIB_VERSIONS + "."):
        raise ConfigError(
            f"model.name={name}: the baselines are written against anomalib {ANOMALIB_VERSIONS}, found {version}: "
            f"{EXTRA}"
        )


def _resolve_backbone(model: AnomalibConfig, backbone: BackboneConfig) -> BackboneConfig:
    """The backbone a CNN-feature baseline runs with (see :meth:`AnomalibConfig.resolve_run`)."""
    name = model.name
    if backbone.name == ANOMALIB_DEFAULT:
        backbone = dataclasses.replace(backbone, name=DEFAULT_BACKBONE[name])
    if backbone.name not in SUPPORTED[name]:
        raise ValueError(
            f"backbone.name={backbone.name}: anomalib's {model.title} takes {', '.join(SUPPORTED[name])} here "
            f"(or backbone={ANOMALIB_DEFAULT}: its default, {DEFAULT_BACKBONE[name]})"
        )
    layers = backbone.layers or _default_layers(name, backbone.name)
    if name == "fastflow" and list(layers) != DEFAULT_LAYERS[name]:
        raise ValueError(f"backbone.layers={layers}: anomalib's FastFlow taps layer1..layer3 only (leave it null)")
    backbone = dataclasses.replace(backbone, layers=list(layers))
    if backbone.stand_in_for is not None or backbone.weights == "none":
        return backbone  # resolved already, or random weights asked for (tests)
    spec = BACKBONES[backbone.name]
    if spec.pip_package or torchvision_weights_path(backbone.name)[1].is_file():
        return backbone
    if name in ("reverse_distillation", "fastflow"):
        return _random_stand_in(model, backbone)
    replaced = cached_or_offline(backbone, model.offline_backbone)  # warns, or refuses without allow_stand_in
    stand_in_layers = [LITE_OF_RESNET.get(layer, layer) for layer in layers]
    return dataclasses.replace(replaced, layers=stand_in_layers)


def _default_layers(name: str, backbone: str) -> list[str]:
    """anomalib's default layers of baseline ``name``, in ``backbone``'s stage names."""
    layers = DEFAULT_LAYERS[name]
    return [LITE_OF_RESNET[layer] for layer in layers] if BACKBONES[backbone].pip_package else list(layers)


def _random_stand_in(model: AnomalibConfig, backbone: BackboneConfig) -> BackboneConfig:
    """RD and FastFlow take ResNets only: without the asked one's weights, the same network with random weights,
    labelled a stand-in (or a refusal without ``backbone.allow_stand_in``)."""
    url, path = torchvision_weights_path(backbone.name)
    if not backbone.allow_stand_in:
        raise ValueError(
            f"backbone.name={backbone.name}: its ImageNet weights are not in the torch cache ({path}). Fetch them "
            f"with: python scripts/prepare_data.py weights --name {backbone.name}  (or download {url} there); or "
            f"run anomalib's {model.title} on this network with random weights, marked as a stand-in: "
            "backbone.allow_stand_in=true"
        )
    log.warning(
        "ImageNet weights of %s are not in the torch cache (%s): anomalib's %s takes ResNets only, so it runs on %s "
        "with random weights, a stand-in (python scripts/prepare_data.py weights --name %s fetches them).",
        backbone.name,
        path,
        model.title,
        backbone.name,
        backbone.name,
    )
    return dataclasses.replace(backbone, weights="none", stand_in_for=backbone.name)


def _resolve_efficient_ad(model: AnomalibConfig, backbone: BackboneConfig) -> tuple[AnomalibConfig, BackboneConfig]:
    """EfficientAD's teacher (recorded as the run's backbone) and penalty images (see
    :meth:`AnomalibConfig.resolve_run`)."""
    options = model.efficient_ad
    name = teacher_name(options.model_size)
    if backbone.name not in (ANOMALIB_DEFAULT, name):
        raise ValueError(
            f"backbone.name={backbone.name}: EfficientAD distils its own pretrained teacher (a PDN); leave "
            f"backbone={ANOMALIB_DEFAULT}"
        )
    if backbone.layers:
        raise ValueError(f"backbone.layers={backbone.layers}: EfficientAD's teacher has no layers to choose")
    backbone = dataclasses.replace(backbone, name=name)
    allowed, path = backbone.allow_stand_in, teacher_path(options.model_size)
    if backbone.weights == "imagenet" and backbone.stand_in_for is None and not path.is_file():
        if not allowed:
            raise ValueError(
                f"model.name=efficient_ad: its pretrained teacher is not in anomalib's cache ({path}): download "
                f"{TEACHER_URL} and unzip it into {path.parent.parent}; or train with a random teacher, marked as a "
                "stand-in: backbone.allow_stand_in=true"
            )
        log.warning("EfficientAD's pretrained teacher is not at %s: a random teacher stands in for it.", path)
        backbone = dataclasses.replace(backbone, weights="none", stand_in_for=name)
    penalty = options.penalty
    if penalty == "auto":
        penalty = "imagenette" if Path(options.imagenet_dir).is_dir() else "stand_in"
        if penalty == "stand_in":
            if not allowed:
                raise ValueError(
                    f"model.efficient_ad.imagenet_dir={options.imagenet_dir}: no such folder of penalty images; "
                    f"download {IMAGENETTE_URL} and extract it there; or use scikit-image's photographs, marked as a "
                    "stand-in: backbone.allow_stand_in=true (or model.efficient_ad.penalty=stand_in)"
                )
            log.warning(
                "EfficientAD's penalty images are not at %s: scikit-image's photographs stand in for them.",
                options.imagenet_dir,
            )
    elif penalty == "imagenette" and not Path(options.imagenet_dir).is_dir():
        raise ValueError(
            f"model.efficient_ad.penalty=imagenette but model.efficient_ad.imagenet_dir={options.imagenet_dir} is no "
            f"folder: download {IMAGENETTE_URL} and extract it there"
        )
    efficient_ad = dataclasses.replace(options, penalty=penalty)
    return dataclasses.replace(model, efficient_ad=efficient_ad), backbone
