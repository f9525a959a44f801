"""Records → decoded tensors in memory → loaders that yield the batch contract."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from anomalib_lite.data.images import read_image, read_mask, to_model_input
from anomalib_lite.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRecord:
    """One image of a split.

    Attributes:
        path: the image file. label: 0 normal, 1 anomalous.
        mask_path: its ground-truth mask, or ``None`` (normal images: all zeros;
            anomalous images without a mask: excluded from pixel metrics).
        defect: the defect type (``good`` for normal images).
    """

    path: Path
    label: int
    mask_path: Path | None = None
    defect: str = "good"


class ImageSet(Dataset):
    """A split decoded once into memory at a fixed size; items follow the batch contract.

    Args:
        records: the images. size: side of the square they are resized to.
        skip_unreadable: drop unreadable files with a warning instead of failing.
        workers: decoding threads. desc: progress-bar label.
    Raises:
        DataError: listing every unreadable file (unless ``skip_unreadable``).
    """

    def __init__(
        self, records: list[ImageRecord], size: int, skip_unreadable: bool = False, workers: int = 4, desc: str = ""
    ) -> None:
        def load(record: ImageRecord) -> tuple[np.ndarray, np.ndarray, bool] | DataError:
            try:
                image = read_image(record.path, size)
                if record.mask_path is not None:
                    return image, read_mask(record.mask_path, size), True
                return image, np.zeros((size, size), dtype=bool), record.label == 0
            except DataError as exc:
                return exc

        with ThreadPoolExecutor(max(1, workers)) as pool:
            loaded = list(tqdm(pool.map(load, records), total=len(records), desc=f"load {desc}", leave=False))
        errors = [str(item) for item in loaded if isinstance(item, DataError)]
        if errors and not skip_unreadable:
            raise DataError(
                f"{len(errors)} file(s) of the {desc} split cannot be read:\n  "
                + "\n  ".join(errors)
                + "\nFix or remove them, or pass data.skip_unreadable=true to leave them out."
            )
        for message in errors:
            log.warning("skipped: %s", message)
        kept = [(r, item) for r, item in zip(records, loaded) if not isinstance(item, DataError)]
        self.records = [r for r, _ in kept]
        self.images = torch.from_numpy(np.stack([item[0] for _, item in kept])) if kept else torch.empty(0)
        self.masks = torch.from_numpy(np.stack([item[1] for _, item in kept])) if kept else torch.empty(0)
        self.mask_valid = torch.tensor([item[2] for _, item in kept], dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        return {
            "image": to_model_input(self.images[index]),
            "label": torch.tensor(record.label, dtype=torch.long),
            "mask": self.masks[index][None].float(),
            "mask_valid": self.mask_valid[index],
            "path": str(record.path),
        }


class DataModule:
    """Train and test splits of one dataset category, and their loaders.

    Args:
        train: normal training records. test: test records (normal and anomalous).
        image_size: side of the square inputs. batch_size: training batch size.
        num_workers: loader worker processes (decoding happens once, up front).
        skip_unreadable: drop unreadable files with a warning instead of failing.
        name: ``<dataset>/<category>``, for messages.
    """

    def __init__(
        self,
        train: list[ImageRecord],
        test: list[ImageRecord],
        image_size: int,
        batch_size: int,
        num_workers: int = 0,
        skip_unreadable: bool = False,
        name: str = "",
    ) -> None:
        self.name = name
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_set = ImageSet(train, image_size, skip_unreadable, desc=f"{name} train")
        self.test_set = ImageSet(test, image_size, skip_unreadable, desc=f"{name} test")
        if len(self.train_set) == 0:
            raise DataError(f"{name}: no readable training image")
        if len(self.test_set) == 0:
            raise DataError(f"{name}: no readable test image")

    @property
    def has_masks(self) -> bool:
        """True when at least one anomalous test image has a mask (pixel metrics exist)."""
        labels = torch.tensor([r.label for r in self.test_set.records])
        return bool((self.test_set.mask_valid & (labels == 1)).any())

    def train_loader(self, generator: torch.Generator | None = None) -> DataLoader:
        """Shuffled training batches; ``generator`` fixes the order (the engine seeds it per epoch)."""
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=self.num_workers,
            drop_last=len(self.train_set) > self.batch_size,
        )

    def test_loader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return DataLoader(self.test_set, batch_size=self.batch_size, num_workers=self.num_workers)
