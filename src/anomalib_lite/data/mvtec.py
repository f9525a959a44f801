"""Datasets in the MVTec AD folder layout (MVTec AD itself, and any dataset laid out the same way).

```
<root>/<category>/train/good/*.png
<root>/<category>/test/<defect or good>/*.png
<root>/<category>/ground_truth/<defect>/<name>_mask.png     (optional per image)
```
"""

from __future__ import annotations

from pathlib import Path

from anomalib_lite.data.datamodule import ImageRecord
from anomalib_lite.data.images import IMAGE_SUFFIXES, list_images
from anomalib_lite.errors import ConfigError, DataError

MVTEC_CATEGORIES = [
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
]  # fmt: skip

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


def check_category(root: Path, category: str, known: list[str], how_to_get: str = HOW_TO_GET) -> None:
    """Fail before any work when ``category`` is not usable under ``root``.

    Args:
        root: dataset root. category: requested category.
        known: the dataset's own category names, listed when ``root`` holds none.
        how_to_get: instructions shown when the dataset is missing.
    Raises:
        ConfigError: the category is not one of the choices (found, or ``known``).
        DataError: the dataset is absent: where it looked, the layout, how to get it.
    """
    found = categories_in(root)
    choices = found or known
    if category not in choices:
        where = f"found under {root}" if found else f"of this dataset ({root} holds none)"
        raise ConfigError(f"category={category!r} is not a category {where}; choices: {', '.join(choices)}")
    if category not in found:
        raise DataError(f"Dataset not found: looked for {root / category / 'train' / 'good'}\n{LAYOUT}\n{how_to_get}")


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
