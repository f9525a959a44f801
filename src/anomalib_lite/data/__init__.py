"""Datasets and the datamodule that turns them into batches.

``datamodule`` holds the batch contract (records → decoded tensors in memory → loaders); ``images`` reads files;
``registry`` maps ``data=<name>`` to a :class:`~anomalib_lite.data.registry.Dataset` and its options. One module per
kind of dataset registers itself on import: ``mvtec`` (MVTec AD, VisA, BTAD, MPDD), ``mvtec_ad2`` (MVTec AD 2),
``mvtec_loco`` (MVTec LOCO AD), ``kolektor`` (KolektorSDD2), ``realiad`` (Real-IAD), ``synthetic`` (the embedded
offline set), ``folder`` (a user's own images), ``one_class`` (MNIST, Fashion-MNIST, CIFAR-10, mnist5k);
``download`` and ``conversion`` fetch, unpack and convert the published archives; ``tiling`` cuts large images
into tiles and stitches maps back (``data.tile_size``).
"""

from anomalib_lite.data import (  # noqa: F401  (registers the datasets)
    folder,
    kolektor,
    mvtec,
    mvtec_ad2,
    mvtec_loco,
    one_class,
    realiad,
    synthetic,
)
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
