"""MVTec LOCO AD (Bergmann et al., IJCV 130:947–969, 2022): ``data=mvtec_loco``, read in its published layout.

```
<root>/<category>/train/good/*.png                  normal training images
<root>/<category>/validation/good/*.png             normal validation images (not used)
<root>/<category>/test/good/*.png                   normal test images
<root>/<category>/test/logical_anomalies/*.png      logical anomalies (a part missing, misplaced, too many…)
<root>/<category>/test/structural_anomalies/*.png   structural anomalies (scratches, dents, contamination…)
<root>/<category>/ground_truth/<type>/<image name>/000.png, 001.png, …   one mask per defect region
```

An anomalous image's masks are merged into one (a pixel is a defect when any of its masks marks it; see
:func:`~anomalib_lite.data.images.mask_pixels`). ``data.anomaly_types`` chooses the anomalous test images:
``all`` (both folders), ``structural`` or ``logical``; the normal test images are always there, so each
choice is a test split of its own (the paper reports the two kinds separately and together).

Not reproduced: the paper's sPRO metric (PRO with per-defect saturation thresholds from ``defects_config.json``);
the pixel metrics here are the shared ones (AUPRO, pixel AUROC) on the merged masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anomalib_lite.data.datamodule import ImageRecord
from anomalib_lite.data.images import list_images
from anomalib_lite.data.mvtec import MVTecLayout
from anomalib_lite.data.one_class import DownloadFile
from anomalib_lite.data.registry import DataConfig, register_dataset
from anomalib_lite.errors import DataError

LOCO_CATEGORIES = ["breakfast_box", "juice_bottle", "pushpins", "screw_bag", "splicing_connectors"]
ANOMALY_TYPES = {
    "all": ("logical_anomalies", "structural_anomalies"),
    "logical": ("logical_anomalies",),
    "structural": ("structural_anomalies",),
}
# URL and sha256: as open-edge-platform/anomalib records them (src/anomalib/data/datasets/image/mvtec_loco.py);
# MVTec publishes no checksum.
LOCO_DOWNLOAD = DownloadFile(
    "mvtec_loco_anomaly_detection.tar.xz",
    "https://www.mydrive.ch/shares/48237/1b9106ccdfbb09a0c414bd49fe44a14a/download/430647091-1646842701/"
    "mvtec_loco_anomaly_detection.tar.xz",
    "",
    "9e7c84dba550fd2e59d8e9e231c929c45ba737b6b6a6d3814100f54d63aae687",
)
LOCO_LAYOUT = """expected layout (MVTec LOCO AD as published):
  <root>/<category>/train/good/*.png
  <root>/<category>/test/{good,logical_anomalies,structural_anomalies}/*.png
  <root>/<category>/ground_truth/{logical_anomalies,structural_anomalies}/<image name>/000.png, 001.png, ..."""
LOCO_HOW_TO_GET = (
    "MVTec LOCO AD: `python scripts/prepare_data.py mvtec_loco --root <root>` downloads it (from mydrive.ch, the "
    "link of https://www.mvtec.com/company/research/datasets/mvtec-loco, whose licence it accepts for you: "
    "CC BY-NC-SA 4.0) and unpacks it; `--archive mvtec_loco_anomaly_detection.tar.xz` uses a copy you downloaded."
)


@dataclass
class LocoConfig(DataConfig):
    """MVTec LOCO AD's options.

    Attributes:
        anomaly_types: the anomalous test images: ``all``, ``structural`` or ``logical`` (normal ones always).
    """

    name: str = "mvtec_loco"
    root: str = "data/mvtec_loco"
    anomaly_types: str = "all"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.anomaly_types not in ANOMALY_TYPES:
            raise ValueError(f"data.anomaly_types={self.anomaly_types!r}; choices: {', '.join(ANOMALY_TYPES)}")


def loco_records(root: Path, category: str, anomaly_types: str = "all") -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Train and test records of one category: ``train/good`` (label 0); ``test/good`` (0) and the anomalous
    folders ``anomaly_types`` names (1, defect = the folder), each with its mask folder
    ``ground_truth/<type>/<image name>/`` where it exists (merged when read).

    Raises:
        DataError: no training images, or a test folder missing (naming it and the layout).
    """
    base = root / category
    train = [ImageRecord(p, 0) for p in list_images(base / "train" / "good")]
    if not train:
        raise DataError(f"No training images in {base / 'train' / 'good'}\n{LOCO_LAYOUT}")
    test: list[ImageRecord] = []
    for folder in ("good", *ANOMALY_TYPES[anomaly_types]):
        images = base / "test" / folder
        if not images.is_dir():
            raise DataError(f"No test folder {images}\n{LOCO_LAYOUT}\n{LOCO_HOW_TO_GET}")
        for image in list_images(images):
            if folder == "good":
                test.append(ImageRecord(image, 0))
            else:
                masks = base / "ground_truth" / folder / image.stem
                test.append(ImageRecord(image, 1, masks if masks.is_dir() else None, folder))
    return train, test


@register_dataset("mvtec_loco", LocoConfig)
class MVTecLOCO(MVTecLayout):
    """MVTec LOCO AD: 5 categories; ``data.anomaly_types`` selects the anomalies tested (see the module)."""

    known, how_to_get, layout = LOCO_CATEGORIES, LOCO_HOW_TO_GET, LOCO_LAYOUT

    def records(self, cfg: LocoConfig, category: str) -> tuple[list[ImageRecord], list[ImageRecord]]:
        """One category's records (:func:`loco_records`)."""
        return loco_records(Path(cfg.root), category, cfg.anomaly_types)
