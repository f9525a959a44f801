"""One-class data: the real MNIST / CIFAR-10 files in ../shared/data, the protocol, mnist5k, clear errors."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from anomalib_lite.data import build_datamodule
from anomalib_lite.data.one_class import load_split, mnist5k_splits, one_class_datamodule, read_idx, resize_images
from anomalib_lite.data.sources import Mnist5kConfig, OneClassConfig
from anomalib_lite.errors import DataError

from conftest import SHARED_DATA

MNIST = SHARED_DATA / "mnist-t10k"
CIFAR = SHARED_DATA / "cifar10-sample"
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason=f"{MNIST} (real MNIST test split) is absent")
needs_cifar = pytest.mark.skipif(not CIFAR.is_dir(), reason=f"{CIFAR} (real CIFAR-10 sample) is absent")
# The published class counts of the MNIST test split.
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_mnist
def test_mnist_idx_files_read_with_their_published_counts():
    images, labels = load_split("mnist", MNIST, train=False)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == MNIST_TEST_COUNTS
    # Digits are white on black: borders are empty, centres are not.
    assert images[:, :2].mean() < 1 and images[:, 10:18, 10:18].mean() > 60


@needs_mnist
def test_one_class_protocol_on_the_real_test_split():
    images, labels = load_split("mnist", MNIST, train=False)
    splits = (images, labels, images, labels)  # the test split stands in for the training one here
    dm = one_class_datamodule("mnist", splits, normal_class=7, image_size=32, grey_to_rgb=True, batch_size=64)
    assert len(dm.train_set) == MNIST_TEST_COUNTS[7]
    assert len(dm.test_set) == 10000
    test_labels = np.array([r.label for r in dm.test_set.records])
    assert (test_labels == 0).sum() == MNIST_TEST_COUNTS[7]
    assert np.array_equal(test_labels == 0, labels == 7)
    assert not dm.has_masks
    batch = next(iter(dm.test_loader()))
    assert batch["image"].shape == (64, 3, 32, 32)
    grey = one_class_datamodule("mnist", splits, 7, 32, grey_to_rgb=False, batch_size=8)
    assert next(iter(grey.train_loader()))["image"].shape == (8, 1, 32, 32)


@needs_mnist
def test_grey_is_replicated_to_three_equal_channels():
    images, _ = load_split("mnist", MNIST, train=False)
    rgb = resize_images(images[:5], 32, grey_to_rgb=True)
    assert rgb.shape == (5, 32, 32, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    # Same-size input is not resampled.
    assert np.array_equal(resize_images(images[:5], 28, grey_to_rgb=False)[..., 0], images[:5])


@needs_cifar
def test_cifar_batches_read_and_missing_test_batch_is_named(tmp_path):
    images, labels = load_split("cifar10", CIFAR, train=True)
    assert images.shape == (50, 32, 32, 3) and np.bincount(labels).tolist() == [5] * 10
    # The pickled rows are channel-planar (1024 R, then G, then B): a sky-blue airplane is bluer than red.
    assert images.std() > 20
    with pytest.raises(DataError, match="(?s)test_batch.*prepare_data.py cifar10"):
        load_split("cifar10", CIFAR, train=False)
    nested = tmp_path / "cifar-10-batches-py"
    shutil.copytree(CIFAR, nested)
    shutil.copy(nested / "data_batch_1", nested / "test_batch")
    cfg = OneClassConfig(name="cifar10", root=str(tmp_path), normal_class=3, batch_size=4)
    dm = build_datamodule(cfg, "3")
    assert len(dm.train_set) == 5 and len(dm.test_set) == 10
    assert sum(r.label == 0 for r in dm.test_set.records) == 1  # one cat in data_batch_1


def test_mnist5k_split_is_per_class_deterministic_and_disjoint():
    train_x, train_y, test_x, test_y = mnist5k_splits(0.2, seed=0)
    assert np.bincount(train_y).tolist() == [400] * 10 and np.bincount(test_y).tolist() == [100] * 10
    again = mnist5k_splits(0.2, seed=0)
    assert np.array_equal(again[2], test_x)
    other = mnist5k_splits(0.2, seed=1)
    assert not np.array_equal(other[2], test_x)
    train_rows = {row.tobytes() for row in train_x}
    assert not any(row.tobytes() in train_rows for row in test_x)
    dm = build_datamodule(Mnist5kConfig(normal_class=4), "4")
    labels = np.array([r.label for r in dm.test_set.records])
    assert len(dm.train_set) == 400 and len(labels) == 1000 and (labels == 0).sum() == 100


def test_missing_and_truncated_files_are_named(tmp_path):
    every_missing_file = r"train-images-idx3-ubyte\[\.gz\], train-labels-idx1-ubyte\[\.gz\] not found"
    with pytest.raises(DataError, match=rf"(?s){every_missing_file}.*prepare_data.py mnist"):
        load_split("mnist", tmp_path, train=True)
    header = b"\x00\x00\x08\x03" + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(28 * 28 * 3)))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: holds 2352 bytes"):
        read_idx(path)
    with pytest.raises(ValueError, match="normal_class=10"):
        OneClassConfig(normal_class=10)


def test_idx_reader_matches_an_independent_decoding(tmp_path: Path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    header = b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in array.shape)
    (tmp_path / "x-ubyte").write_bytes(header + array.tobytes())
    assert np.array_equal(read_idx(tmp_path / "x-ubyte"), array)
