"""Datasets and the datamodule that turns them into batches.

``datamodule`` holds the batch contract (records → decoded tensors in memory → loaders); ``images`` reads files;
``registry`` maps ``data=<name>`` to a :class:`~anomalib_lite.data.registry.Dataset` and its options. One module per
kind of dataset registers itself on import: ``mvtec`` (MVTec AD, VisA, BTAD), ``synthetic`` (the embedded
offline set), ``folder`` (a user's own images), ``one_class`` (MNIST, Fashion-MNIST, CIFAR-10, mnist5k);
``download`` and ``conversion`` fetch and convert the published archives.
"""

from anomalib_lite.data import folder, mvtec, one_class, synthetic  # noqa: F401  (registers the datasets)
from anomalib_lite.data.datamodule import DataModule, ImageRecord, ImageSet, ValidationSplit
from anomalib_lite.data.registry import (
    DataConfig,
    Dataset,
    build_datamodule,
    categories,
    dataset_config_class,
    dataset_names,
    register_dataset,
)

__all__ = [
    "DataConfig",
    "DataModule",
    "Dataset",
    "ImageRecord",
    "ImageSet",
    "ValidationSplit",
    "build_datamodule",
    "categories",
    "dataset_config_class",
    "dataset_names",
    "register_dataset",
]
