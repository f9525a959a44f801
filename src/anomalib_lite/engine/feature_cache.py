"""Frozen features computed once per run: a cache of a stage's :attr:`Stage.features`, by dataset index.

A stage whose frozen network sees the un-augmented training images declares it with
``Stage.features``; the engine then runs that function once over the stage's images (in order,
in the training precision, so the features are stored in the dtype training would compute them
in) and hands each batch its rows as ``batch["features"]``, looked up by ``batch["index"]``. The
data loader is unchanged, so the batches' order is the uncached one.

Where it lives: on the training device when it fits the budget; on CUDA, else in pinned host
memory; else nowhere (``auto`` logs why and trains uncached; ``on`` raises). ``auto`` also leaves it
off when it would not pay: when the cache runs the frozen network on as many inputs as the whole
(remaining) training would without it (:func:`frozen_inputs`), e.g. one epoch, or IGD's distillation
on fewer random patches than the training set has.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from anomalib_lite.data.datamodule import available_host_bytes
from anomalib_lite.errors import ConfigError
from anomalib_lite.models.base import Stage

log = logging.getLogger(__name__)
MODES = ("auto", "on", "off")
# Images read twice to detect random transforms (a random flip escapes all of them with chance 2^-8).
PROBE_IMAGES = 8


def random_transform_reason(dataset: Dataset) -> str | None:
    """Why ``dataset``'s items cannot be cached (no ``index`` entry, or images that differ between two
    reads of the first :data:`PROBE_IMAGES` items: a random transform), or ``None``."""
    if "index" not in dataset[0]:
        return "its batches carry no 'index' entry"
    for i in range(min(PROBE_IMAGES, len(dataset))):
        if not torch.equal(dataset[i]["image"], dataset[i]["image"]):
            return f"its training images are randomly transformed (two reads of image {i} differ)"
    return None


def memory_format(tensor: Tensor) -> torch.memory_format:
    """``channels_last`` for a 4-D tensor laid out so (e.g. features of a channels-last model), else contiguous."""
    if tensor.dim() == 4 and not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def empty_rows(tensor: Tensor, rows: int, device: torch.device | str) -> Tensor:
    """An uninitialised ``rows×…`` tensor of ``tensor``'s row shape, dtype and memory format, on ``device``."""
    shape = (rows, *tensor.shape[1:])
    return torch.empty(shape, dtype=tensor.dtype, device=device, memory_format=memory_format(tensor))


def frozen_inputs(stage: Stage, images: int, steps: int, batch_size: int) -> tuple[int, int]:
    """``(cached, uncached)``: the inputs the frozen network sees to build the cache over ``images``
    training images, and to train ``steps`` steps of ``batch_size`` images without it."""
    per_step = batch_size * stage.features_per_image
    if stage.features_per_step is not None:
        per_step = stage.features_per_step(batch_size)
    return images * stage.features_per_image, steps * per_step


def images_per_call(stage: Stage, batch_size: int) -> int:
    """Images per call of ``stage.features`` while the cache fills: the training batch ``batch_size``, or
    fewer where an uncached step runs the frozen network on fewer inputs than ``features_per_image`` of each
    image of the batch (``features_per_step``, e.g. IGD's random patches) and those inputs are a whole number
    of images' worth: then as many images as hold one step's inputs.

    Why: a convolution's kernel, and so the last bits of its sums, is chosen by the shape of its input (and,
    on a CPU, by the thread count for that shape); a call of the frozen network on as many inputs as a step's
    computes the same values for each input in both paths, at any thread count, so training from the cache
    equals training without it (a different count differs in the last bits, which Adam amplifies over steps).
    """
    if stage.features_per_step is None:
        return batch_size
    per_step, per_image = stage.features_per_step(batch_size), stage.features_per_image
    if per_step % per_image == 0 and 0 < per_step // per_image < batch_size:
        return per_step // per_image
    return batch_size


class FeatureCache:
    """The features of every item of a dataset: name → ``N×…`` tensor, row ``i`` for dataset index ``i``.

    Args:
        tensors: the stored features (on ``device``, or in pinned host memory).
        device: the training device the looked-up rows are delivered to.
    """

    def __init__(self, tensors: dict[str, Tensor], device: torch.device) -> None:
        self.tensors, self.device = tensors, device
        # On CUDA, tensors on the CPU are the pinned host tier (``cuda`` and ``cuda:0`` compare unequal).
        self.pinned = device.type == "cuda" and next(iter(tensors.values())).is_cpu
        self._staging: dict[str, Tensor] = {}
        self._copied: torch.cuda.Event | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def lookup(self, index: Tensor) -> dict[str, Tensor]:
        """The rows of dataset indices ``index`` (``B``), on the training device: name → ``B×…``."""
        if not self.pinned:
            # Gathered into rows of the stored memory format (``index_select`` alone returns contiguous rows).
            index = index.to(self.device)
            return {
                name: torch.index_select(t, 0, index, out=empty_rows(t, len(index), t.device))
                for name, t in self.tensors.items()
            }
        # Pinned host memory: gather into a pinned staging buffer, then copy without blocking; the
        # buffer is reused only once the previous copy is done.
        if self._copied is not None:
            self._copied.synchronize()
        index = index.cpu()
        rows = {}
        for name, t in self.tensors.items():
            staging = self._staging.get(name)
            if staging is None or staging.shape[0] < len(index):
                staging = self._staging[name] = empty_rows(t, len(index), "cpu").pin_memory()
            torch.index_select(t, 0, index, out=staging[: len(index)])
            rows[name] = staging[: len(index)].to(self.device, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()
        return rows

    def wrap(self, step: Callable[[dict], dict[str, Tensor]]) -> Callable[[dict], dict[str, Tensor]]:
        """``step`` given each batch with its cached ``features`` added."""

        def cached_step(batch: dict) -> dict[str, Tensor]:
            return step({**batch, "features": self.lookup(batch["index"])})

        return cached_step


def _budget(place: str, budget_gb: float | None, device: torch.device) -> int:
    """Bytes the cache may take in ``place`` (``device`` or ``host``): ``budget_gb``, or half the free memory."""
    if budget_gb is not None:
        return int(budget_gb * 1e9)
    if place == "device" and device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    return available_host_bytes() // 2


def build_feature_cache(
    stage: Stage,
    dataset: Dataset,
    batch_size: int,
    device: torch.device,
    precision: Callable[[], contextlib.AbstractContextManager],
    mode: str = "auto",
    budget_gb: float | None = None,
    steps: int | None = None,
) -> FeatureCache | None:
    """Compute ``stage.features`` over ``dataset`` once, where it fits; ``None`` when not cached.

    Args:
        stage: the stage; nothing is cached when its ``features`` is ``None``.
        dataset: the stage's images; items carry ``index`` and ``image``.
        batch_size: the training batch size. The training batch the loader forms is ``batch_size`` images, or the
            whole set when it holds fewer; the cache is filled in calls of that many images (never padded beyond
            the set), or of one step's inputs where a step draws fewer (:func:`images_per_call`).
        device: the training device. precision: a new autocast context of training, per call.
        mode: ``auto`` (cache when possible, else log why), ``on`` (cache or raise) or ``off``.
        budget_gb: bytes (×10⁹) the cache may take; ``None``: half the free memory of where it goes.
        steps: the optimiser steps left to train with it; ``auto`` caches only when that saves frozen-network
            inputs (:func:`frozen_inputs`). ``None``: not weighed.
    Raises:
        ConfigError: ``mode=on`` and the images are randomly transformed, or the cache fits nowhere.
    """
    if mode == "off" or stage.features is None:
        return None

    def decline(reason: str) -> None:
        if mode == "on":
            raise ConfigError(f"trainer.feature_cache=on, but stage '{stage.name}' cannot be cached: {reason}")
        log.info("feature cache off for stage '%s': %s", stage.name, reason)

    # The loader's training batch: batch_size images, or every image of a smaller set (one batch per epoch).
    batch_size = min(batch_size, len(dataset))
    reason = random_transform_reason(dataset)
    if reason is not None:
        decline(reason)
        return None
    if mode == "auto" and steps is not None:
        cached, uncached = frozen_inputs(stage, len(dataset), steps, batch_size)
        if cached >= uncached:
            log.info(
                "feature cache off for stage '%s': it would run the frozen network on %d inputs, training "
                "without it on %d (%d steps); trainer.feature_cache=on caches anyway",
                stage.name,
                cached,
                uncached,
                steps,
            )
            return None
    start = time.perf_counter()
    with precision():
        probe = stage.features(dataset[0]["image"][None].to(device))
    need = len(dataset) * sum(t[0].numel() * t.element_size() for t in probe.values())
    places = ["device"] + (["host"] if device.type == "cuda" else [])
    place = next((p for p in places if need <= _budget(p, budget_gb, device)), None)
    if place is None:
        decline(
            f"it needs {need / 1e9:.2f} GB, more than the budget in {' or '.join(places)} memory "
            f"({_budget(places[-1], budget_gb, device) / 1e9:.2f} GB; set trainer.feature_cache_budget_gb)"
        )
        return None
    pinned = place == "host"
    # Stored in the features' memory format (channels-last with ``trainer.channels_last``), so rows need no reorder.
    tensors = {name: empty_rows(t, len(dataset), "cpu" if pinned else device) for name, t in probe.items()}
    if pinned:
        tensors = {name: t.pin_memory() for name, t in tensors.items()}
    rows = images_per_call(stage, batch_size)
    for batch in DataLoader(dataset, batch_size=rows, generator=torch.Generator()):  # global RNG untouched
        # A short last batch is padded to the call size (a training step's inputs, see images_per_call):
        # convolution kernels are chosen by batch size, and a different one changes the last bits.
        images, count = batch["image"], len(batch["index"])
        images = images[torch.arange(rows) % count]
        with precision():
            features = stage.features(images.to(device, non_blocking=True))
        index = batch["index"].to(tensors[next(iter(tensors))].device)
        for name, value in features.items():
            tensors[name].index_copy_(0, index, value[:count].to(tensors[name].device))
    cache = FeatureCache(tensors, device)
    log.info(
        "feature cache for stage '%s': %d images, %.1f MB (%s) in %s memory, built in %.1f s",
        stage.name,
        len(dataset),
        cache.nbytes / 1e6,
        next(iter(tensors.values())).dtype,
        "pinned host" if pinned else str(device),
        time.perf_counter() - start,
    )
    return cache
