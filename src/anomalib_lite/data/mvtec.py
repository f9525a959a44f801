"""Datasets in the MVTec AD folder layout: MVTec AD itself (``data=mvtec``), VisA and BTAD once converted
(``data=visa``, ``data=btad``, see :mod:`.conversion`), MPDD (``data=mpdd``, published in this layout), and any
dataset laid out the same way.

```
<root>/<category>/train/good/*.png
<root>/<category>/test/<defect or good>/*.png
<root>/<category>/ground_truth/<defect>/<name>_mask.png     (optional per image)
```
"""

from __future__ import annotations

from pathlib import Path

from anomalib_lite.data.conversion import BTAD_CATEGORIES, BTAD_HOW_TO_GET, VISA_CATEGORIES, VISA_HOW_TO_GET
from anomalib_lite.data.datamodule import DataModule, ImageRecord
from anomalib_lite.data.images import IMAGE_SUFFIXES, list_images
from anomalib_lite.data.one_class import DownloadFile
from anomalib_lite.data.registry import DataConfig, Dataset, records_datamodule, register_dataset
from anomalib_lite.errors import ConfigError, DataError

MVTEC_CATEGORIES = [
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
]

MPDD_CATEGORIES = ["bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"]
# MPDD (Jezek et al., ICUMT 2021) is shared from a OneDrive folder (the link of github.com/stepanje/MPDD, also in
# open-edge-platform/anomalib's mpdd.py) that serves no file at a fixed URL: no download, no published checksum.
MPDD_DOWNLOAD = DownloadFile("MPDD.zip", "", "")
MPDD_HOW_TO_GET = (
    "MPDD: download it from https://vutbr-my.sharepoint.com/:f:/g/personal/xjezek16_vutbr_cz/"
    "EhHS_ufVigxDo3MC6Lweau0BVMuoCmhMZj6ddamiQ7-FnA?e=oHKCxI (linked from github.com/stepanje/MPDD; CC BY-NC-SA "
    "4.0), then `python scripts/prepare_data.py mpdd --archive <the .zip or .tar> --root <root>` unpacks it."
)

LAYOUT = """expected layout:
  <root>/<category>/train/good/*.png
  <root>/<category>/test/good/*.png and <root>/<category>/test/<defect>/*.png
  <root>/<category>/ground_truth/<defect>/<image name>_mask.png   (optional)"""

HOW_TO_GET = (
    "MVTec AD: download it from https://www.mvtec.com/company/research/datasets/mvtec-ad and extract it "
    "so that <root>/bottle/train/good exists; or point data.root at your copy."
)


def categories_in(root: Path) -> list[str]:
    """Category folders under ``root`` that hold ``train/good``."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())


def check_category(root: Path, category: str, how_to_get: str = HOW_TO_GET, layout: str = LAYOUT) -> None:
    """Fail before any work when ``category`` is not usable under ``root``.

    The dataset's own category names are not offered as choices when ``root`` holds no category: a
    moved or missing ``root`` is the problem then, whatever the category (a dataset in this layout may
    have categories of its own).

    Args:
        root: dataset root. category: requested category.
        how_to_get: instructions shown when the dataset is missing. layout: the layout shown then.
    Raises:
        ConfigError: ``root`` holds categories, and ``category`` is not one of them (the message lists them).
        DataError: ``root`` is no such folder, or holds no ``category``: where it looked, the layout, how to get it.
    """
    found = categories_in(root)
    if category in found:
        return
    if found:
        raise ConfigError(f"category={category!r} is not a category found under {root}; choices: {', '.join(found)}")
    looked = root / category / "train" / "good"
    if not root.is_dir():
        raise DataError(
            f"Dataset not found: looked for {looked}, but data.root={root} is no such folder\n{layout}\n{how_to_get}"
        )
    raise DataError(f"Dataset not found: looked for {looked}\n{layout}\n{how_to_get}")


def find_mask(ground_truth: Path, defect: str, image: Path) -> Path | None:
    """The mask of a test image: ``<name>_mask.<ext>`` or ``<name>.<ext>`` under ``ground_truth/<defect>``."""
    folder = ground_truth / defect
    for stem in (f"{image.stem}_mask", image.stem):
        for suffix in IMAGE_SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def mvtec_records(root: Path, category: str) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Train and test records of one category.

    Returns:
        ``(train, test)``: train = ``train/good`` (label 0); test = every ``test/<defect>``
        folder, label 0 for ``good`` and 1 otherwise, with its mask where one exists.
    Raises:
        DataError: the category has no training or no test images.
    """
    base = root / category
    train = [ImageRecord(p, 0) for p in list_images(base / "train" / "good")]
    test: list[ImageRecord] = []
    test_dir = base / "test"
    defects = sorted(p.name for p in test_dir.iterdir() if p.is_dir()) if test_dir.is_dir() else []
    for defect in defects:
        for image in list_images(test_dir / defect):
            if defect == "good":
                test.append(ImageRecord(image, 0))
            else:
                test.append(ImageRecord(image, 1, find_mask(base / "ground_truth", defect, image), defect))
    if not train:
        raise DataError(f"No training images in {base / 'train' / 'good'}\n{LAYOUT}")
    if not test:
        raise DataError(f"No test images under {test_dir}\n{LAYOUT}")
    return train, test


class MVTecLayout(Dataset):
    """A dataset in the MVTec AD layout under ``data.root``; ``category=all`` means every category found there.

    Attributes:
        known: the dataset's own categories, looked for when ``data.root`` holds none and ``category=all``.
        how_to_get: shown when absent. layout: its folder layout, shown then.
    """

    known: list[str] = MVTEC_CATEGORIES
    how_to_get: str = HOW_TO_GET
    layout: str = LAYOUT

    def categories(self, cfg: DataConfig) -> list[str]:
        """The requested categories, each checked under ``cfg.root`` (see :func:`check_category`)."""
        root = Path(cfg.root)
        wanted = self.requested(cfg, categories_in(root) or self.known)
        for category in wanted:
            check_category(root, category, self.how_to_get, self.layout)
        return wanted

    def records(self, cfg: DataConfig, category: str) -> tuple[list[ImageRecord], list[ImageRecord]]:
        """One category's train and test records (:func:`mvtec_records`; a dataset in a layout of its own
        overrides this)."""
        return mvtec_records(Path(cfg.root), category)

    def datamodule(self, cfg: DataConfig, category: str) -> DataModule:
        """One category's records (:meth:`records`), decoded at ``cfg.image_size``."""
        train, test = self.records(cfg, category)
        return records_datamodule(cfg, category, train, test)


@register_dataset("mvtec", DataConfig)
class MVTecAD(MVTecLayout):
    """MVTec AD (Bergmann et al., CVPR 2019): 15 categories."""


@register_dataset("visa", DataConfig)
class VisA(MVTecLayout):
    """VisA (Zou et al., ECCV 2022), converted by ``scripts/prepare_data.py visa``: 12 categories."""

    known, how_to_get = VISA_CATEGORIES, VISA_HOW_TO_GET


@register_dataset("btad", DataConfig)
class BTAD(MVTecLayout):
    """BTAD (Mishra et al., 2021), converted by ``scripts/prepare_data.py btad``: categories 01, 02, 03."""

    known, how_to_get = BTAD_CATEGORIES, BTAD_HOW_TO_GET


@register_dataset("mpdd", DataConfig)
class MPDD(MVTecLayout):
    """MPDD (Jezek et al., ICUMT 2021), metal parts in the MVTec AD layout: 6 categories."""

    known, how_to_get = MPDD_CATEGORIES, MPDD_HOW_TO_GET
