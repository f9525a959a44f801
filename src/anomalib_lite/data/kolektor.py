"""Kolektor Surface-Defect Dataset 2 (Božič et al., Computers in Industry 129, 2021): ``data=ksdd2``, read in its
published layout, one category (``ksdd2``).

```
<root>/train/<id>.png and <root>/train/<id>_GT.png     training images and their ground-truth masks
<root>/test/<id>.png and <root>/test/<id>_GT.png       test images and their masks
```

An image is anomalous when its mask holds a defect pixel (binarised as every mask is:
:func:`~anomalib_lite.data.images.mask_foreground`), read at the mask's own size. Unsupervised protocol
(*choice*, the one of the unsupervised papers that use KSDD2: the dataset itself is published for supervised
training): train on the normal training images only (the published count is 2085 of 2331; the 246 defective
ones are left out), test on the whole test split (894 normal, 110 defective). The archive ships two stray copies,
``train/10301 (copy).png`` and ``train/10301_GT (copy).png``: files whose name ends in `` (copy)`` are left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalib_lite.data.datamodule import DataModule, ImageRecord
from anomalib_lite.data.images import list_images, mask_pixels
from anomalib_lite.data.one_class import DownloadFile
from anomalib_lite.data.registry import DataConfig, Dataset, records_datamodule, register_dataset
from anomalib_lite.errors import ConfigError, DataError

log = logging.getLogger(__name__)

KSDD2_CATEGORY = "ksdd2"
KSDD2_SPLITS = ("train", "test")
GT = "_GT"
COPY = " (copy)"
# The URL is the one vicos.si's page gives (it redirects to data.vicos.si/datasets/KSDD/KolektorSDD2.zip). Its
# authors publish no checksum; this sha256 (of 853 126 555 bytes, the host's Content-Length) is one a third party
# recorded on GitHub, and it could not be checked here (no network).
KSDD2_DOWNLOAD = DownloadFile(
    "KolektorSDD2.zip",
    "https://go.vicos.si/kolektorsdd2",
    "",
    "edcdb486809b24f1d17b785e30c52fafc5999554dd5fe18ddf77b61ceb6f36a8",
)
KSDD2_LAYOUT = """expected layout (KolektorSDD2 as published):
  <root>/train/<id>.png with <root>/train/<id>_GT.png
  <root>/test/<id>.png with <root>/test/<id>_GT.png"""
KSDD2_HOW_TO_GET = (
    "KolektorSDD2: `python scripts/prepare_data.py ksdd2 --root <root>` downloads it (from "
    f"{KSDD2_DOWNLOAD.url}, https://www.vicos.si/resources/kolektorsdd2/; CC BY-NC-SA 4.0) and unpacks it; "
    "`--archive KolektorSDD2.zip` uses a copy you downloaded."
)


@dataclass
class KolektorConfig(DataConfig):
    """KolektorSDD2's options (those of every dataset; one category, ``ksdd2``)."""

    name: str = "ksdd2"
    root: str = "data/ksdd2"
    category: Any = KSDD2_CATEGORY


def ksdd2_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """The ``(image, mask)`` pairs of a split folder, by image name; stray `` (copy)`` files are left out.

    Raises:
        DataError: listing the images without their ``<id>_GT.png``.
    """
    files = list_images(folder)
    copies = [p for p in files if p.stem.endswith(COPY)]
    if copies:
        log.info("%s: left out, duplicates the archive ships: %s", folder, ", ".join(p.name for p in copies))
    images = [p for p in files if not p.stem.endswith((GT, COPY))]
    pairs = [(image, image.with_name(f"{image.stem}{GT}{image.suffix}")) for image in images]
    missing = [str(image) for image, mask in pairs if not mask.is_file()]
    if missing:
        raise DataError(f"{len(missing)} image(s) without their <id>_GT mask: {', '.join(missing[:5])}\n{KSDD2_LAYOUT}")
    return pairs


def ksdd2_records(root: Path) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Train records (the training images whose mask is empty, label 0) and test records (every test image,
    label 1 with its mask and defect ``defect`` when the mask holds a defect pixel, else 0).

    Raises:
        DataError: a split folder missing or without images, an image without its mask, an unreadable mask.
    """
    records = {}
    for split in KSDD2_SPLITS:
        pairs = ksdd2_pairs(root / split)
        if not pairs:
            raise DataError(f"No images in {root / split}\n{KSDD2_LAYOUT}")
        records[split] = [
            ImageRecord(image, 1, mask, "defect") if mask_pixels(mask).any() else ImageRecord(image, 0)
            for image, mask in pairs
        ]
    train = [r for r in records["train"] if r.label == 0]
    log.info(
        "ksdd2: %d normal training images (%d defective ones left out); %d test images, %d defective",
        len(train),
        len(records["train"]) - len(train),
        len(records["test"]),
        sum(r.label for r in records["test"]),
    )
    return train, records["test"]


@register_dataset("ksdd2", KolektorConfig)
class KolektorSDD2(Dataset):
    """KolektorSDD2 under ``data.root`` (see the module); its one category is ``ksdd2``."""

    def categories(self, cfg: KolektorConfig) -> list[str]:
        """``["ksdd2"]``, once ``data.root`` holds ``train/`` and ``test/``.

        Raises:
            ConfigError: another category. DataError: a split folder missing (where it looked, how to get it).
        """
        wanted = self.requested(cfg, [KSDD2_CATEGORY])
        if wanted != [KSDD2_CATEGORY]:
            raise ConfigError(f"category={cfg.category!r}: KolektorSDD2 has one category, {KSDD2_CATEGORY}")
        for split in KSDD2_SPLITS:
            if not (Path(cfg.root) / split).is_dir():
                raise DataError(
                    f"Dataset not found: looked for {Path(cfg.root) / split}\n{KSDD2_LAYOUT}\n{KSDD2_HOW_TO_GET}"
                )
        return wanted

    def datamodule(self, cfg: KolektorConfig, category: str) -> DataModule:
        """The records of :func:`ksdd2_records`, decoded at ``cfg.image_size``."""
        train, test = ksdd2_records(Path(cfg.root))
        return records_datamodule(cfg, category, train, test)
