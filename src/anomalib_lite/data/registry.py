"""The datasets a run can use (``data=<name>``), behind one registry as the model families are.

A dataset is a :class:`Dataset` subclass, registered under its name with the config dataclass of its options
(``@register_dataset("mvtec", DataConfig)``); it says which categories a config covers and builds one category's
:class:`~anomalib_lite.data.datamodule.DataModule`. Importing :mod:`anomalib_lite.data` registers the built-in
ones; a new one needs its module (and a ``configs/data/<name>.yaml`` for the command line), nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from anomalib_lite.data.datamodule import DataModule, ImageRecord, image_bytes
from anomalib_lite.data.tiling import Tiling
from anomalib_lite.errors import ConfigError


def check_share(key: str, value: float) -> None:
    """Refuse a share outside (0, 1), naming the option ``data.<key>``."""
    if not 0 < value < 1:
        raise ValueError(f"data.{key}={value} must be in (0, 1)")


def physical_memory_bytes() -> int | None:
    """This machine's physical memory, or ``None`` where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_one_image_fits(size: int) -> None:
    """Refuse, with the config, an ``image_size`` at which one decoded image (and its mask) would take more
    than this machine's whole memory: no run can hold it. The data's own check, once the number of images is
    known and before any is decoded, is :func:`~anomalib_lite.data.datamodule.check_image_memory`.

    Raises:
        ValueError: naming ``data.image_size``, one image's size and the machine's memory.
    """
    total = physical_memory_bytes()
    if total is not None and image_bytes(size) > total:
        raise ValueError(
            f"data.image_size={size}: one decoded image takes {image_bytes(size) / 1e9:.1f} GB ({size}×{size}×3 "
            f"bytes and a {size}×{size} mask), more than this machine's {total / 1e9:.1f} GB of memory"
        )


@dataclass
class DataConfig:
    """Options every dataset has.

    Attributes:
        name: the dataset (``data=<name>``). root: where it lives.
        category: one name, a list of names, or ``all`` (set from the top-level ``category``).
        image_size: side of the square inputs (and of the masks).
        batch_size: training batch size. num_workers: loader worker processes.
        skip_unreadable: leave unreadable images out with a warning instead of failing.
        tile_size: ``None`` (off), or the side of the tiles the model is trained on and predicts, cut from the
            ``image_size`` images; maps are stitched back to ``image_size`` before evaluation (see
            :mod:`~anomalib_lite.data.tiling`). tile_overlap: the least overlap of neighbouring tiles, in pixels.
    """

    name: str = "mvtec"
    root: str = "data/mvtec"
    category: Any = "all"
    image_size: int = 256
    batch_size: int = 16
    num_workers: int = 0
    skip_unreadable: bool = False
    tile_size: int | None = None
    tile_overlap: int = 0

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"data.image_size={self.image_size} must be ≥ 32")
        self.tiling()
        check_one_image_fits(self.image_size)
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size={self.batch_size} must be ≥ 1")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers={self.num_workers} must be ≥ 0")

    def tiling(self) -> Tiling | None:
        """The tile grid of ``tile_size`` (``None`` when off).

        Raises:
            ValueError: naming ``data.tile_size`` or ``data.tile_overlap``, for a grid that cannot be.
        """
        if self.tile_size is None:
            if self.tile_overlap:
                raise ValueError(f"data.tile_overlap={self.tile_overlap} needs data.tile_size (null: no tiles)")
            return None
        return Tiling(self.image_size, self.tile_size, self.tile_overlap)


def records_datamodule(cfg: DataConfig, category: str, train: list[ImageRecord], test: list[ImageRecord]) -> DataModule:
    """A category's train and test records decoded as ``cfg`` says (``image_size``, batches, workers, unreadable
    files; see :meth:`DataModule.from_records`), named ``<dataset>/<category>``."""
    return DataModule.from_records(
        train, test, cfg.image_size, cfg.batch_size, cfg.num_workers, cfg.skip_unreadable, f"{cfg.name}/{category}"
    )


class Dataset:
    """A dataset: which categories a config covers (checked before any work) and one category's data."""

    def categories(self, cfg: DataConfig) -> list[str]:
        """The categories ``cfg`` covers.

        Raises:
            ConfigError: an unknown category (the message lists the choices).
            DataError: the dataset is missing (where it looked, the layout, how to get it).
        """
        raise NotImplementedError

    def datamodule(self, cfg: DataConfig, category: str) -> DataModule:
        """Prepare (e.g. generate) and load one category."""
        raise NotImplementedError

    @staticmethod
    def requested(cfg: DataConfig, choices: list[str]) -> list[str]:
        """The categories ``cfg.category`` asks for: ``all`` → ``choices``, else the name or list given."""
        if cfg.category == "all":
            return list(choices)
        return [cfg.category] if isinstance(cfg.category, str) else list(cfg.category)


_DATASETS: dict[str, tuple[Dataset, type[DataConfig]]] = {}


def register_dataset(name: str, config: type[DataConfig]) -> Callable[[type[Dataset]], type[Dataset]]:
    """Class decorator: make ``data=<name>`` build the decorated :class:`Dataset` (instantiated without
    arguments) with options of dataclass ``config``; a function call registers one class under several names."""

    def add(cls: type[Dataset]) -> type[Dataset]:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        _DATASETS[name] = (cls(), config)
        return cls

    return add


def dataset_names() -> list[str]:
    """The registered datasets, in registration order."""
    return list(_DATASETS)


def dataset_config_class(name: str) -> type[DataConfig]:
    """The options dataclass of dataset ``name``.

    Raises:
        ConfigError: no such dataset (the message lists the choices).
    """
    if name not in _DATASETS:
        raise ConfigError(f"data={name!r} is unknown; choices: {', '.join(_DATASETS)}")
    return _DATASETS[name][1]


def categories(cfg: DataConfig) -> list[str]:
    """The categories a run covers (see :meth:`Dataset.categories`), checked before any work."""
    dataset_config_class(cfg.name)
    return _DATASETS[cfg.name][0].categories(cfg)


def build_datamodule(cfg: DataConfig, category: str) -> DataModule:
    """Prepare and load one category of the dataset ``cfg.name``: a :class:`DataModule`, trained on tiles when
    ``cfg.tile_size`` is set (:meth:`DataModule.use_tiles`)."""
    dataset_config_class(cfg.name)
    datamodule = _DATASETS[cfg.name][0].datamodule(cfg, category)
    tiling = cfg.tiling()
    if tiling is not None:
        datamodule.use_tiles(tiling)
    return datamodule


def input_size(image_size: int, tile_size: int | None) -> int:
    """The side of the model's input: ``tile_size`` when tiling, else ``image_size``. The config resolver
    ``${input_size:${data.image_size},${data.tile_size}}`` of the model configs that need their input side."""
    return tile_size or image_size


if not OmegaConf.has_resolver("input_size"):
    OmegaConf.register_new_resolver("input_size", input_size)
