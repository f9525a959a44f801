"""Real-IAD (Wang et al., CVPR 2024): ``data=realiad``, read in its published layout with its per-category split
files.

```
<root>/realiad_<resolution>/<category>/OK/S0001/<category>_0001_OK_C1_<time>.jpg        normal samples
<root>/realiad_<resolution>/<category>/NG/<code>/S0027/<…>_NG_C3_<time>.jpg and <…>_mask.png
<root>/<data.split_dir>/<category>.json      {"meta": {...}, "train": [...], "test": [...]}
```

Each entry of the split file is one image (one view) with ``category``, ``anomaly_class`` (``OK`` or a defect
code), ``image_path`` and ``mask_path`` (``null`` for normal images), both relative to the category's image folder
(as open-edge-platform/anomalib reads them). Every object ("sample") is photographed from 5 views, ``C1``–``C5``,
named in the file name; ``data.views`` keeps some of them.

Protocol (*choice*): the split file's train list for training (normal images only: entries whose class is not
``OK`` are refused in it), its test list for testing, each view an image of its own, scored on its own (the
paper's image-level and pixel-level results). The paper's sample-level result (an object's score is the maximum
over its 5 views) is not computed. The defect codes are named as the dataset's page names them (AK pit,
BX deformation, CH abrasion, HS scratch, PS damage, QS missing parts, YW foreign objects, ZW contamination).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from anomalib_lite.data.datamodule import DataModule, ImageRecord
from anomalib_lite.data.registry import DataConfig, Dataset, records_datamodule, register_dataset
from anomalib_lite.errors import ConfigError, DataError

REALIAD_CATEGORIES = [
    "audiojack",
    "bottle_cap",
    "button_battery",
    "end_cap",
    "eraser",
    "fire_hood",
    "mint",
    "mounts",
    "pcb",
    "phone_battery",
    "plastic_nut",
    "plastic_plug",
    "porcelain_doll",
    "regulator",
    "rolled_strip_base",
    "sim_card_set",
    "switch",
    "tape",
    "terminalblock",
    "toothbrush",
    "toy",
    "toy_brick",
    "transistor1",
    "u_block",
    "usb",
    "usb_adaptor",
    "vcpill",
    "wooden_beads",
    "woodstick",
    "zipper",
]
RESOLUTIONS = ("256", "512", "1024", "raw")
VIEWS = ("C1", "C2", "C3", "C4", "C5")
NORMAL = "OK"
DEFECTS = {
    "AK": "pit",
    "BX": "deformation",
    "CH": "abrasion",
    "HS": "scratch",
    "PS": "damage",
    "QS": "missing_parts",
    "YW": "foreign_objects",
    "ZW": "contamination",
}
_VIEW = re.compile(r"_(C[1-5])_")
REALIAD_LAYOUT = """expected layout (Real-IAD as published):
  <root>/realiad_<data.resolution>/<category>/{OK,NG}/...       images and <name>_mask.png masks
  <root>/<data.split_dir>/<category>.json                       split file: "train" and "test" lists of
      {"category", "anomaly_class", "image_path", "mask_path"}, paths relative to the category's image folder"""
REALIAD_HOW_TO_GET = (
    "Real-IAD: request access at https://huggingface.co/datasets/Real-IAD/Real-IAD (its authors approve each "
    "request; CC BY-NC-SA 4.0), download realiad_<resolution> and realiad_jsons and unpack them under <root>; "
    "`python scripts/prepare_data.py realiad --root <root>` then checks that it loads (no download: access needs "
    "the approval)."
)


@dataclass
class RealIADConfig(DataConfig):
    """Real-IAD's options.

    Attributes:
        resolution: the published image folder, ``realiad_<resolution>``: 256, 512, 1024 or raw (*choice*: 1024,
            decoded at ``image_size``).
        split_dir: the folder of the per-category split files, under ``root`` (``realiad_jsons/realiad_jsons``:
            the published multi-view split; ``realiad_jsons/realiad_jsons_sv``: single-view; ``…_fuiad_0.x``:
            the fully unsupervised ones, with anomalous training images).
        views: the camera views kept (``C1``…``C5``; *choice*: all).
    """

    name: str = "realiad"
    root: str = "data/realiad"
    resolution: str = "1024"
    split_dir: str = "realiad_jsons/realiad_jsons"
    views: list[str] = field(default_factory=lambda: list(VIEWS))

    def __post_init__(self) -> None:
        super().__post_init__()
        if str(self.resolution) not in RESOLUTIONS:
            raise ValueError(f"data.resolution={self.resolution!r}; choices: {', '.join(RESOLUTIONS)}")
        unknown = [v for v in self.views if v not in VIEWS]
        if unknown or not self.views:
            raise ValueError(f"data.views={self.views}: each one of {', '.join(VIEWS)}, at least one")


def split_file(cfg: RealIADConfig, category: str) -> Path:
    """The split file of ``category``: ``<root>/<split_dir>/<category>.json``."""
    return Path(cfg.root) / cfg.split_dir / f"{category}.json"


def image_folder(cfg: RealIADConfig, category: str) -> Path:
    """The category's image folder: ``<root>/realiad_<resolution>/<category>``."""
    return Path(cfg.root) / f"realiad_{cfg.resolution}" / category


def realiad_records(cfg: RealIADConfig, category: str) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Train and test records from the category's split file, the views of ``cfg.views`` only.

    Raises:
        DataError: an unreadable or malformed split file, an anomalous training entry, or no image left in a
            split (naming the file).
    """
    path = split_file(cfg, category)
    try:
        split = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the split file ({exc})\n{REALIAD_LAYOUT}") from exc
    if not isinstance(split, dict) or not all(isinstance(split.get(key), list) for key in ("train", "test")):
        raise DataError(f"{path}: a split file has a 'train' and a 'test' list\n{REALIAD_LAYOUT}")
    normal = (split.get("meta") or {}).get("normal_class", NORMAL)
    folder = image_folder(cfg, category)
    records = {}
    for key in ("train", "test"):
        records[key] = []
        for number, entry in enumerate(split[key]):
            try:
                image, defect, mask = entry["image_path"], entry["anomaly_class"], entry.get("mask_path")
            except (TypeError, KeyError) as exc:
                raise DataError(f"{path}: {key}[{number}] has no {exc}: {entry!r}") from exc
            view = _VIEW.search(Path(image).name)
            if view is not None and view[1] not in cfg.views:
                continue
            if defect == normal:
                records[key].append(ImageRecord(folder / image, 0))
            elif key == "train":
                raise DataError(
                    f"{path}: train[{number}] is anomalous ({defect}); this protocol trains on normal images only "
                    f"(the fully unsupervised split files mix them in)"
                )
            else:
                mask_path = folder / mask if mask else None
                records[key].append(ImageRecord(folder / image, 1, mask_path, DEFECTS.get(defect, defect)))
        if not records[key]:
            raise DataError(f"{path}: no {key} image of the views {', '.join(cfg.views)}")
    return records["train"], records["test"]


def realiad_categories_in(cfg: RealIADConfig) -> list[str]:
    """The categories under ``cfg.root`` with both their split file and their image folder.

    Raises:
        DataError: none (where it looked, the layout, how to get it).
    """
    found = [c for c in REALIAD_CATEGORIES if split_file(cfg, c).is_file() and image_folder(cfg, c).is_dir()]
    if not found:
        looked = f"{Path(cfg.root) / cfg.split_dir}/<category>.json and {image_folder(cfg, '<category>')}"
        raise DataError(f"No Real-IAD category found: looked for {looked}\n{REALIAD_LAYOUT}\n{REALIAD_HOW_TO_GET}")
    return found


@register_dataset("realiad", RealIADConfig)
class RealIAD(Dataset):
    """Real-IAD: 30 categories, each from its split file (see the module)."""

    def categories(self, cfg: RealIADConfig) -> list[str]:
        """The requested categories, each with its split file and image folder.

        Raises:
            ConfigError: not a Real-IAD category. DataError: its split file or image folder missing.
        """
        wanted = self.requested(cfg, REALIAD_CATEGORIES)
        for category in wanted:
            if category not in REALIAD_CATEGORIES:
                choices = ", ".join(REALIAD_CATEGORIES)
                raise ConfigError(f"category={category!r} is not a Real-IAD category; choices: all, {choices}")
            for needed in (split_file(cfg, category), image_folder(cfg, category)):
                if not needed.exists():
                    raise DataError(f"Dataset not found: looked for {needed}\n{REALIAD_LAYOUT}\n{REALIAD_HOW_TO_GET}")
        return wanted

    def datamodule(self, cfg: RealIADConfig, category: str) -> DataModule:
        """The records of :func:`realiad_records`, decoded at ``cfg.image_size``."""
        train, test = realiad_records(cfg, category)
        return records_datamodule(cfg, category, train, test)
