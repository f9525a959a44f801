"""Datasets and the datamodule that turns them into batches (see DESIGN.md, "Batch")."""

from anomalib_lite.data.datamodule import DataModule, ImageRecord, ImageSet, ValidationSplit
from anomalib_lite.data.sources import DATA_CONFIGS, DataConfig, build_datamodule, categories

__all__ = [
    "DATA_CONFIGS",
    "DataConfig",
    "DataModule",
    "ImageRecord",
    "ImageSet",
    "ValidationSplit",
    "build_datamodule",
    "categories",
]
