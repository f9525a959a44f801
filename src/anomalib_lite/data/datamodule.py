"""Records → decoded tensors in memory → loaders that yield the batch contract."""

from __future__ import annotations

import dataclasses
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from anomalib_lite.data.images import read_image, read_mask, to_model_input
from anomalib_lite.data.tiling import Tiling
from anomalib_lite.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def available_host_bytes() -> int:
    """Host memory available to new allocations (``MemAvailable`` of ``/proc/meminfo`` where present)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def image_bytes(size: int, channels: int = 3) -> int:
    """Bytes one decoded image takes in an :class:`ImageSet`: ``size×size×channels`` uint8 and its ``size×size``
    bool mask."""
    return size * size * (channels + 1)


def check_image_memory(count: int, size: int, channels: int = 3, what: str = "") -> None:
    """Refuse, before anything is decoded or allocated, ``count`` images whose decoded arrays alone (see
    :func:`image_bytes`) would not fit in the host memory available now.

    A lower bound of what the run needs (the model, its activations and the anomaly maps come on top), so a
    refusal is certain to be right; the check is that no image is decoded into memory that cannot hold them.

    Args:
        count: images to decode. size: their side (``data.image_size``). channels: 3 (RGB) or 1 (grey).
        what: the data, for the message (e.g. ``mvtec/bottle``).
    Raises:
        ConfigError: naming ``data.image_size``, the estimate and the memory available.
    """
    need, available = count * image_bytes(size, channels), available_host_bytes()
    if need > available:
        raise ConfigError(
            f"data.image_size={size}: the {count} decoded images of {what or 'the data'} ({size}×{size}×{channels} "
            f"bytes each, with a mask) would take {need / 1e9:.2f} GB, more than the {available / 1e9:.2f} GB of "
            "memory available; lower data.image_size"
        )


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


@dataclass(frozen=True)
class ValidationSplit:
    """Which test images a model holds out as its validation set (see :meth:`DataModule.split_validation`).

    Attributes:
        fraction: share of each group of images drawn. seed: the draw's seed.
        by_defect: draw per defect kind, anomalous images only (MSFI's paper), instead of from the
            anomalous and the normal images. coverage: with ``by_defect``, the share of defect kinds drawn from.
    """

    fraction: float
    seed: int
    by_defect: bool = False
    coverage: float = 1.0


class ImageSet(Dataset):
    """A split held in memory at a fixed size; items follow the batch contract, plus ``index`` (the
    item's position in the split: long ``B`` in a batch) and ``defect`` (the record's defect type).

    Args:
        records: one per image. images: ``N×H×W×C`` uint8, ``C`` 3 (RGB) or 1 (grey).
        masks: ``N×H×W`` bool ground truth. mask_valid: ``N`` bool, whether each mask is known.
    """

    def __init__(
        self, records: list[ImageRecord], images: torch.Tensor, masks: torch.Tensor, mask_valid: torch.Tensor
    ) -> None:
        self.records, self.images, self.masks, self.mask_valid = records, images, masks, mask_valid

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: list[int], names: list[str]) -> ImageSet:
        """A split without masks from ``N×H×W×C`` uint8 images; ``names`` stand in for paths and defects."""
        records = [
            ImageRecord(Path(name), int(label), None, Path(name).parent.name) for name, label in zip(names, labels)
        ]
        n, height, width = images.shape[:3]
        return cls(
            records,
            torch.from_numpy(np.ascontiguousarray(images)),
            torch.zeros(n, height, width, dtype=torch.bool),
            torch.tensor([label == 0 for label in labels], dtype=torch.bool),
        )

    def subset(self, indices: list[int]) -> ImageSet:
        """The images at ``indices``, in that order."""
        index = torch.tensor(indices, dtype=torch.long)
        return ImageSet(
            [self.records[i] for i in indices], self.images[index], self.masks[index], self.mask_valid[index]
        )

    @classmethod
    def load(
        cls, records: list[ImageRecord], size: int, skip_unreadable: bool = False, workers: int = 4, desc: str = ""
    ) -> ImageSet:
        """Decode image files (and masks) once, resized to ``size×size``, into arrays allocated once (the
        memory :func:`check_image_memory` estimates: no second copy while they are gathered).

        Raises:
            DataError: listing every unreadable file (unless ``skip_unreadable``: dropped with a warning).
        """
        images = np.empty((len(records), size, size, 3), dtype=np.uint8)
        masks = np.zeros((len(records), size, size), dtype=bool)

        def load(i: int) -> bool | DataError:
            """Decode record ``i`` into its rows; whether its mask is known, or the error."""
            record = records[i]
            try:
                images[i] = read_image(record.path, size)
                if record.mask_path is not None:
                    masks[i] = read_mask(record.mask_path, size)
                    return True
                return record.label == 0
            except DataError as exc:
                return exc

        with ThreadPoolExecutor(max(1, workers)) as pool:
            loaded = list(
                tqdm(pool.map(load, range(len(records))), total=len(records), desc=f"load {desc}", leave=False)
            )
        errors = [str(item) for item in loaded if isinstance(item, DataError)]
        if errors and not skip_unreadable:
            raise DataError(
                f"{len(errors)} file(s) of the {desc} split cannot be read:\n  "
                + "\n  ".join(errors)
                + "\nFix or remove them, or pass data.skip_unreadable=true to leave them out."
            )
        for message in errors:
            log.warning("skipped: %s", message)
        kept = [i for i, item in enumerate(loaded) if not isinstance(item, DataError)]
        if len(kept) < len(records):
            images, masks = images[kept], masks[kept]
        return cls(
            [records[i] for i in kept],
            torch.from_numpy(images),
            torch.from_numpy(masks),
            torch.tensor([loaded[i] for i in kept], dtype=torch.bool),
        )

    def tiles(self, tiling: Tiling) -> ImageSet:
        """Every image cut into the tiles of ``tiling`` (see :mod:`.tiling`), masks with them: ``N·n²`` items.

        A tile's record is its image's (path, mask file, ``mask_valid``); its label is 1 when its mask holds a
        defect pixel, 0 when it holds none (its defect then ``good``); a tile of an anomalous image whose mask is
        unknown keeps label 1 (*choice*: where the defect is is unknown).

        Raises:
            ValueError: the images are not ``tiling.image_size`` px.
        """
        images = tiling.cut(self.images.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).contiguous()
        masks = tiling.cut(self.masks)
        valid = self.mask_valid.repeat_interleave(tiling.per_image)
        records = [record for record in self.records for _ in range(tiling.per_image)]
        has_defect = masks.flatten(1).any(1).tolist()
        records = [
            dataclasses.replace(r, label=int(d), defect=r.defect if d else "good") if v and r.label == 1 else r
            for r, v, d in zip(records, valid.tolist(), has_defect)
        ]
        return ImageSet(records, images, masks, valid)

    def empty_masks(self) -> list[str]:
        """Paths of the anomalous images whose mask is known but holds no foreground pixel."""
        return [
            str(record.path)
            for record, valid, mask in zip(self.records, self.mask_valid.tolist(), self.masks)
            if record.label == 1 and valid and not mask.any()
        ]

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
            "defect": record.defect,  # the test sub-folder (``good`` for normal images), for per-defect metrics
            "index": index,  # the item's position, by which the engine's feature cache finds its features
        }


class DataModule:
    """Train and test splits of one dataset category, and their loaders.

    Args:
        train_set: normal training images. test_set: test images (normal and anomalous).
        batch_size: training batch size (``data.batch_size``). num_workers: loader worker processes
            (decoding happens once, up front). name: ``<dataset>/<category>``, for messages.

    *choice*: a ``batch_size`` above the training set's size is clamped to it, with a log line, not refused:
    the training loader already gives the whole set per step then (clamped, training is the same), a sweep
    over categories of different sizes should not stop at the smallest, and every batch the run forms (the
    feature cache's, the test and validation loaders') stays within what a training step holds, instead of
    padding to or batching by a size no step uses (``data.batch_size=100000`` on 60 images took 18.8 GB).
    Attributes:
        tiling: the tile grid the model is trained on (:meth:`use_tiles`), or ``None`` (whole images).
        requested_batch_size: ``batch_size`` as given, before it is clamped (to the images, or to the tiles).
        empty_masks: paths of the anomalous test images (of the test split as given, before any
            :meth:`split_validation`) whose mask holds no foreground pixel at this image size (see
            :func:`~anomalib_lite.data.images.mask_foreground`); they are logged as a warning, count in
            the pixel metrics as images without a defect pixel, and belong in the run's note.
    Raises:
        DataError: a split is empty.
    """

    def __init__(self, train_set: ImageSet, test_set: ImageSet, batch_size: int, num_workers: int = 0, name: str = ""):
        self.name = name
        self.batch_size = self.requested_batch_size = batch_size
        self.num_workers = num_workers
        self.train_set, self.test_set = train_set, test_set
        self.validation_set: ImageSet | None = None
        self.tiling: Tiling | None = None
        if len(self.train_set) == 0:
            raise DataError(f"{name}: no readable training image")
        if len(self.test_set) == 0:
            raise DataError(f"{name}: no readable test image")
        if self.batch_size > len(self.train_set):
            log.info(
                "%s: data.batch_size=%d is above the %d training images: batches of %d (the whole set per step)",
                name,
                self.batch_size,
                len(self.train_set),
                len(self.train_set),
            )
            self.batch_size = len(self.train_set)
        self.empty_masks = self.test_set.empty_masks()
        if self.empty_masks:
            log.warning(
                "%s: %d anomalous test image(s) have a mask with no foreground pixel at %d px (an empty mask "
                "file, or a defect too small to survive resizing); their pixels all count as normal in the "
                "pixel metrics:\n  %s",
                name,
                len(self.empty_masks),
                self.test_set.images.shape[1],
                "\n  ".join(self.empty_masks),
            )

    def use_tiles(self, tiling: Tiling) -> None:
        """Train on tiles (``data.tile_size``, see :mod:`.tiling`): the training images (and a validation split,
        now or when it is made) become their tiles, while the test images stay whole, for a model wrapped to
        predict them tile by tile (``anomalib_lite.pipeline.tiling``) and evaluated on whole-image maps.

        Raises:
            ValueError: the images are not ``tiling.image_size`` px.
        """
        self.tiling = tiling
        self.train_set = self.train_set.tiles(tiling)
        self.batch_size = min(self.requested_batch_size, len(self.train_set))  # clamped to the tiles, not the images
        if self.validation_set is not None:
            self.validation_set = self.validation_set.tiles(tiling)
        log.info(
            "%s: %d training tiles of %d px (%d per image of %d px)",
            self.name,
            len(self.train_set),
            tiling.tile_size,
            tiling.per_image,
            tiling.image_size,
        )

    @classmethod
    def from_records(
        cls,
        train: list[ImageRecord],
        test: list[ImageRecord],
        image_size: int,
        batch_size: int,
        num_workers: int = 0,
        skip_unreadable: bool = False,
        name: str = "",
    ) -> DataModule:
        """Decode image files of both splits (see :meth:`ImageSet.load`) into a datamodule.

        Raises:
            ConfigError: the decoded images would not fit in memory (:func:`check_image_memory`), before any is read.
            DataError: as :meth:`ImageSet.load`, or a split is empty.
        """
        check_image_memory(len(train) + len(test), image_size, 3, name)
        return cls(
            ImageSet.load(train, image_size, skip_unreadable, desc=f"{name} train"),
            ImageSet.load(test, image_size, skip_unreadable, desc=f"{name} test"),
            batch_size,
            num_workers,
            name,
        )

    @property
    def has_masks(self) -> bool:
        """True when at least one anomalous test image has a mask (pixel metrics exist)."""
        labels = torch.tensor([r.label for r in self.test_set.records])
        return bool((self.test_set.mask_valid & (labels == 1)).any())

    def train_loader(self, generator: torch.Generator | None = None, pin_memory: bool = False) -> DataLoader:
        """Shuffled training batches; ``generator`` fixes the order (the engine seeds it per epoch);
        ``pin_memory`` for fast, non-blocking copies to a GPU (the engine sets it on CUDA only)."""
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=self.num_workers,
            # Choice: the last partial batch is dropped (when there is more than one batch); IGD's global ref-code
            # keeps it (p256/ssim_main.py:117, drop_last=False), its local one drops it (p32/ssim_main.py:129).
            drop_last=len(self.train_set) > self.batch_size,
            pin_memory=pin_memory,
        )

    def split_validation(self, split: ValidationSplit) -> None:
        """Move the images ``split`` draws from the test set into :attr:`validation_set`, out of the test set.

        ``split.by_defect`` false: a seeded ``fraction`` of the anomalous images that have masks and,
        separately, of the normal images, so both kinds are represented. True (MSFI's paper): a seeded
        ``coverage`` share of the defect kinds (at least one), and ``fraction`` (at least one image, and
        never a kind's last one) of each chosen kind's anomalous images with masks; no normal image.
        Either way the reported metrics then use the rest of the test set only.

        Raises:
            DataError: no anomalous test image has a mask, or the split would be empty.
        """
        records = self.test_set.records
        labels = torch.tensor([r.label for r in records])
        masked = torch.nonzero((labels == 1) & self.test_set.mask_valid)[:, 0]
        if len(masked) == 0:
            raise DataError(f"{self.name}: a validation split needs anomalous test images with masks; none has one")
        generator = torch.Generator().manual_seed(split.seed)
        if split.by_defect:
            kinds = sorted({records[i].defect for i in masked.tolist()})
            n_kinds = max(1, round(len(kinds) * split.coverage))
            chosen_kinds = [kinds[i] for i in torch.randperm(len(kinds), generator=generator)[:n_kinds].tolist()]
            groups = [torch.tensor([i for i in masked.tolist() if records[i].defect == kind]) for kind in chosen_kinds]
        else:
            groups = [masked, torch.nonzero(labels == 0)[:, 0]]
        chosen: list[int] = []
        for group in groups:
            # Per defect kind, one image at least stays in the test set (a kind of one image gives none).
            most = len(group) - 1 if split.by_defect else len(group)
            n = min(most, max(1, round(len(group) * split.fraction))) if len(group) else 0
            chosen += group[torch.randperm(len(group), generator=generator)[:n]].tolist()
        if not chosen:
            raise DataError(
                f"{self.name}: the validation split is empty: each chosen defect kind has a single anomalous "
                "test image with a mask, which stays in the test set; raise model.weight_search.coverage"
            )
        chosen.sort()
        kept = sorted(set(range(len(records))) - set(chosen))
        self.validation_set = self.test_set.subset(chosen)
        if self.tiling is not None:
            self.validation_set = self.validation_set.tiles(self.tiling)
        self.test_set = self.test_set.subset(kept)

    def validation_loader(self, generator: torch.Generator | None = None, pin_memory: bool = False) -> DataLoader:
        """Shuffled batches of the validation split (see :meth:`split_validation`); ``pin_memory`` as
        :meth:`train_loader`."""
        if self.validation_set is None:
            raise DataError(f"{self.name}: no validation split was made")
        return DataLoader(
            self.validation_set,
            batch_size=self.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=self.num_workers,
            pin_memory=pin_memory,
        )

    def test_loader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return DataLoader(self.test_set, batch_size=self.batch_size, num_workers=self.num_workers)
