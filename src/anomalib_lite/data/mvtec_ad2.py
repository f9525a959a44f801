"""MVTec AD 2 (Heckler-Kram et al., arXiv:2503.21622, 2025): ``data=mvtec_ad2``, read in its published layout.

```
<root>/<category>/train/good/*.png                          normal training images
<root>/<category>/validation/good/*.png                     normal validation images (not used)
<root>/<category>/test_public/good/*.png                    normal test images
<root>/<category>/test_public/bad/*.png                     anomalous test images
<root>/<category>/test_public/ground_truth/bad/<name>_mask.png
<root>/<category>/test_private/, test_private_mixed/        no ground truth (not used)
```

Protocol: train on ``train/good``, evaluate on ``test_public`` (the only test split with ground truth; the
private ones are scored by MVTec's evaluation server, benchmark.mvtec.com). ``validation/good`` is left unused
(*choice*: no model here selects anything on normal images).
"""

from __future__ import annotations

from pathlib import Path

from anomalib_lite.data.datamodule import ImageRecord
from anomalib_lite.data.images import list_images
from anomalib_lite.data.mvtec import MVTecLayout, find_mask
from anomalib_lite.data.one_class import DownloadFile
from anomalib_lite.data.registry import DataConfig, register_dataset
from anomalib_lite.errors import DataError

MVTEC_AD2_CATEGORIES = ["can", "fabric", "fruit_jelly", "rice", "sheet_metal", "vial", "wallplugs", "walnuts"]
# URL and sha256: as open-edge-platform/anomalib records them (src/anomalib/data/datamodules/image/mvtecad2.py);
# MVTec publishes no checksum.
MVTEC_AD2_DOWNLOAD = DownloadFile(
    "mvtec_ad_2.tar.gz",
    "https://www.mydrive.ch/shares/121573/7f68fe2c4f7c2ceaa08f463aaeb2f414/download/466712769-1743422799/"
    "mvtec_ad_2.tar.gz",
    "",
    "c0ded99ef32bfc8e352d52beb44515e5b292b8598cb963aadfa91ca0763505e4",
)
MVTEC_AD2_LAYOUT = """expected layout (MVTec AD 2 as published):
  <root>/<category>/train/good/*.png
  <root>/<category>/test_public/good/*.png and <root>/<category>/test_public/bad/*.png
  <root>/<category>/test_public/ground_truth/bad/<image name>_mask.png"""
MVTEC_AD2_HOW_TO_GET = (
    "MVTec AD 2: `python scripts/prepare_data.py mvtec_ad2 --root <root>` downloads it (from mydrive.ch, the "
    "link of https://www.mvtec.com/company/research/datasets/mvtec-ad-2, whose licence it accepts for you: "
    "CC BY-NC-SA 4.0) and unpacks it; `--archive mvtec_ad_2.tar.gz` uses a copy you downloaded."
)
TEST = "test_public"


def mvtec_ad2_records(root: Path, category: str) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Train and test records of one category: ``train/good`` (label 0); ``test_public/good`` (0) and
    ``test_public/bad`` (1, defect ``bad``, with its mask where one exists).

    Raises:
        DataError: no training images, or no ``test_public`` images (naming the folder and the layout).
    """
    base = root / category
    train = [ImageRecord(p, 0) for p in list_images(base / "train" / "good")]
    test_dir = base / TEST
    test = [ImageRecord(p, 0) for p in _images(test_dir / "good")]
    masks = test_dir / "ground_truth"
    test += [ImageRecord(p, 1, find_mask(masks, "bad", p), "bad") for p in _images(test_dir / "bad")]
    if not train:
        raise DataError(f"No training images in {base / 'train' / 'good'}\n{MVTEC_AD2_LAYOUT}")
    if not test:
        raise DataError(
            f"No test images in {test_dir}/good or {test_dir}/bad\n{MVTEC_AD2_LAYOUT}\n{MVTEC_AD2_HOW_TO_GET}"
        )
    return train, test


def _images(folder: Path) -> list[Path]:
    return list_images(folder) if folder.is_dir() else []


@register_dataset("mvtec_ad2", DataConfig)
class MVTecAD2(MVTecLayout):
    """MVTec AD 2: 8 categories, evaluated on ``test_public`` (see the module)."""

    known, how_to_get, layout = MVTEC_AD2_CATEGORIES, MVTEC_AD2_HOW_TO_GET, MVTEC_AD2_LAYOUT

    def records(self, cfg: DataConfig, category: str) -> tuple[list[ImageRecord], list[ImageRecord]]:
        """One category's records (:func:`mvtec_ad2_records`)."""
        return mvtec_ad2_records(Path(cfg.root), category)
