"""A user's own images (``data=folder``): normal images in one folder, anomalous ones in another, optional masks."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalib_lite.data.datamodule import DataModule, ImageRecord
from anomalib_lite.data.images import list_images
from anomalib_lite.data.mvtec import find_mask
from anomalib_lite.data.registry import DataConfig, Dataset, check_share, register_dataset
from anomalib_lite.errors import DataError


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
        check_share("test_split", self.test_split)


def folder_paths(cfg: FolderConfig) -> dict[str, Path]:
    """The folders ``cfg`` names (``normal_dir``, ``abnormal_dir`` and, where set, ``test_normal_dir`` and
    ``mask_dir``), under ``cfg.root``, each checked to exist.

    Returns:
        option name (``normal_dir``, …) → folder.
    Raises:
        DataError: a folder does not exist, naming the option and the path (a mistyped ``mask_dir`` is not
            ignored: the test images would silently have no masks).
    """
    root = Path(cfg.root)
    folders = {
        "normal_dir": cfg.normal_dir,
        "abnormal_dir": cfg.abnormal_dir,
        "test_normal_dir": cfg.test_normal_dir,
        "mask_dir": cfg.mask_dir or None,
    }
    paths = {key: root / value for key, value in folders.items() if value is not None}
    for key, path in paths.items():
        if not path.is_dir():
            raise DataError(
                f"data.{key}: folder {path} does not exist.\nThe folder dataset expects normal images in "
                "data.normal_dir, anomalous ones in data.abnormal_dir, and optionally data.test_normal_dir "
                "and data.mask_dir (masks named like their image, or <name>_mask), all under data.root."
            )
    return paths


def folder_records(cfg: FolderConfig) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Train and test records: ``normal_dir`` (less the held-out share, or all of it with ``test_normal_dir``)
    for training; the held-out or ``test_normal_dir`` images and ``abnormal_dir`` (with masks) for testing.

    Raises:
        DataError: a folder does not exist (see :func:`folder_paths`), or no training image.
    """
    paths = folder_paths(cfg)
    normal = list_images(paths["normal_dir"])
    if "test_normal_dir" in paths:
        train, test_normal = normal, list_images(paths["test_normal_dir"])
    else:
        shuffled = random.Random(0).sample(normal, len(normal))
        n_test = max(1, round(len(normal) * cfg.test_split))
        train, test_normal = sorted(shuffled[n_test:]), sorted(shuffled[:n_test])
    mask_dir = paths.get("mask_dir")
    test = [ImageRecord(p, 0) for p in test_normal] + [
        ImageRecord(p, 1, find_mask(mask_dir.parent, mask_dir.name, p) if mask_dir else None, "abnormal")
        for p in list_images(paths["abnormal_dir"])
    ]
    if not train:
        raise DataError(f"data.normal_dir: no training images in {paths['normal_dir']}")
    return [ImageRecord(p, 0) for p in train], test


@register_dataset("folder", FolderConfig)
class Folder(Dataset):
    """``data=folder``: one category, named by ``category`` (default ``folder``)."""

    def categories(self, cfg: FolderConfig) -> list[str]:
        """``[str(cfg.category)]``, once every folder the options name is found (before any work).

        Raises:
            DataError: a folder is missing (see :func:`folder_paths`).
        """
        folder_paths(cfg)
        return [str(cfg.category)]

    def datamodule(self, cfg: FolderConfig, category: str) -> DataModule:
        """The images of :func:`folder_records`, decoded at ``cfg.image_size``."""
        train, test = folder_records(cfg)
        return DataModule.from_records(
            train, test, cfg.image_size, cfg.batch_size, cfg.num_workers, cfg.skip_unreadable, f"{cfg.name}/{category}"
        )
