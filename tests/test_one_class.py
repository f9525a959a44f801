"""One-class data: MNIST / CIFAR-10 files made in their published formats, the protocol, mnist5k, clear errors."""

from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from anomalib_lite.data import build_datamodule
from anomalib_lite.data.one_class import (
    Mnist5kConfig,
    OneClassConfig,
    load_split,
    mnist5k_splits,
    one_class_datamodule,
    read_cifar_batch,
    read_idx,
    resize_images,
)
from anomalib_lite.errors import DataError

from conftest import MNIST_T10K_COUNTS, cifar_batch_bytes, cifar_images


def test_mnist_idx_files_read_back_as_written(mnist_files, tmp_path):
    images, labels = load_split("mnist", mnist_files.root, train=False)
    assert images.shape == (996, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [n // 10 for n in MNIST_T10K_COUNTS]
    assert np.array_equal(images, mnist_files.test_images) and np.array_equal(labels, mnist_files.test_labels)
    # Digits are white on black: borders are empty, centres are not.
    assert images[:, :2].mean() < 1 and images[:, 10:18, 10:18].mean() > 60
    # The same files uncompressed, in torchvision's MNIST/raw/ layout, read the same.
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in mnist_files.root.glob("t10k-*.gz"):
        (raw / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    again = load_split("mnist", tmp_path, train=False)
    assert np.array_equal(again[0], images) and np.array_equal(again[1], labels)


def test_one_class_protocol_on_mnist_files(mnist_files):
    cfg = OneClassConfig(name="mnist", root=str(mnist_files.root), normal_class=7, image_size=32, batch_size=64)
    dm = build_datamodule(cfg, "7")
    labels = mnist_files.test_labels
    assert len(dm.train_set) == (mnist_files.train_labels == 7).sum() == 125
    assert len(dm.test_set) == len(labels) == 996
    test_labels = np.array([r.label for r in dm.test_set.records])
    assert (test_labels == 0).sum() == MNIST_T10K_COUNTS[7] // 10
    assert np.array_equal(test_labels == 0, labels == 7)
    assert not dm.has_masks
    batch = next(iter(dm.test_loader()))
    assert batch["image"].shape == (64, 3, 32, 32)
    splits = (mnist_files.train_images, mnist_files.train_labels, mnist_files.test_images, labels)
    grey = one_class_datamodule("mnist", splits, 7, 32, grey_to_rgb=False, batch_size=8)
    assert next(iter(grey.train_loader()))["image"].shape == (8, 1, 32, 32)


def test_grey_is_replicated_to_three_equal_channels(mnist_files):
    images = mnist_files.test_images[:5]
    rgb = resize_images(images, 32, grey_to_rgb=True)
    assert rgb.shape == (5, 32, 32, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    assert rgb[:, :2].max() == 0 and rgb[:, 12:20, 12:20].mean() > 60  # resampled, still a centred digit
    # Same-size input is not resampled.
    assert np.array_equal(resize_images(images, 28, grey_to_rgb=False)[..., 0], images)


def test_cifar_batches_read_and_missing_test_batch_is_named(cifar10_files, tmp_path):
    images, labels = load_split("cifar10", cifar10_files.root, train=True)
    assert images.shape == (50, 32, 32, 3) and np.bincount(labels).tolist() == [5] * 10
    assert np.array_equal(images, cifar10_files.train_images) and np.array_equal(labels, cifar10_files.train_labels)
    # The pickled rows are channel-planar (1024 R, then G, then B): red grows down the images, green across them.
    with (cifar10_files.root / "data_batch_1").open("rb") as f:
        red_plane = pickle.load(f, encoding="bytes")[b"data"][0, :1024].reshape(32, 32)
    assert (red_plane == 8 * np.arange(32)[:, None]).all()
    assert (images[..., 0] == 8 * np.arange(32)[:, None]).all() and (images[..., 1] == 8 * np.arange(32)).all()
    with pytest.raises(DataError, match="(?s)test_batch.*prepare_data.py cifar10"):
        load_split("cifar10", cifar10_files.root, train=False)
    nested = tmp_path / "cifar-10-batches-py"
    shutil.copytree(cifar10_files.root, nested)
    test_labels = [3, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    test_batch = cifar_batch_bytes(cifar_images(test_labels), test_labels, "testing batch 1 of 1")
    (nested / "test_batch").write_bytes(test_batch)
    cfg = OneClassConfig(name="cifar10", root=str(tmp_path), normal_class=3, batch_size=4)
    dm = build_datamodule(cfg, "3")
    assert len(dm.train_set) == 5 and len(dm.test_set) == 12
    assert [r.label for r in dm.test_set.records] == [int(c != 3) for c in test_labels]  # three cats, in place


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


class Call:
    """Pickles as ``function(*args)``: what a crafted file makes a plain ``pickle.load`` run."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _payloads(marker: Path) -> dict[str, object]:
    """Each would create ``marker`` if unpickled by a plain ``pickle.load``."""
    import builtins
    import os

    from numpy.testing._private.utils import runstring

    make = f"open({str(marker)!r}, 'w').close()"
    return {
        "posix.system": Call(os.system, f"touch {marker}"),
        "builtins.eval": Call(builtins.eval, make),
        "builtins.open": Call(builtins.open, str(marker), "w"),
        "numpy.testing._private.utils.runstring": Call(runstring, make, {}),  # numpy, but not an array
    }


@pytest.mark.parametrize("name", list(_payloads(Path("x"))))
@pytest.mark.parametrize("nested", [False, True])
def test_a_crafted_cifar_batch_runs_nothing_and_is_refused_in_one_line_naming_the_file(
    cifar10_files, tmp_path, name, nested
):
    root = tmp_path / "cifar"
    shutil.copytree(cifar10_files.root, root)
    marker = tmp_path / "ran"
    payload = _payloads(marker)[name]
    function = payload.function.__name__  # pickled as posix.system, __builtin__.eval, io.open, ...
    if nested:  # a real batch whose labels are the payload
        batch = pickle.loads((root / "data_batch_1").read_bytes())
        payload = {**batch, b"labels": payload}
    (root / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError) as refused:
        load_split("cifar10", root, train=True)
    message = str(refused.value)
    assert message.startswith(f"{root / 'data_batch_1'}: ") and "\n" not in message
    assert f".{function}, which a CIFAR-10 batch never holds" in message
    assert not marker.exists()


def _python2_batch(images: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2's pickle wrote it (protocol 0 here; the official files use 2, same objects):
    ``str`` keys and values that Python 3 reads as bytes, the array under ``numpy.core`` as in numpy's own
    Python 2 pickles (numpy's test_pickle_py2_bytes_encoding)."""

    def string(raw: bytes) -> str:
        return "S'" + "".join(f"\\x{byte:02x}" for byte in raw) + "'\n"

    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    array = (
        "cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I0\ntS'b'\ntR"
        f"(I1\n(I{rows.shape[0]}\nI{rows.shape[1]}\ntcnumpy\ndtype\n(S'u1'\nI0\nI1\ntR(I3\nS'|'\nNNNI-1\nI-1\nI0\ntb"
        f"I00\n{string(rows.tobytes())}tb"
    )
    label_list = "(l" + "".join(f"I{label}\na" for label in labels)
    text = f"(dS'batch_label'\nS'training batch 1 of 5'\nsS'labels'\n{label_list}sS'data'\n{array}s."
    return text.encode("ascii")


def test_batches_pickled_by_python_2_or_re_pickled_at_any_protocol_read_as_a_plain_unpickler_reads_them(tmp_path):
    labels = [3, 0, 9, 3]
    images = cifar_images(labels)
    official = _python2_batch(images, labels)
    reference = pickle.loads(official, encoding="bytes")  # our own bytes: safe to load unrestricted
    assert np.array_equal(reference[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), images)
    files = {"python2": official}
    for protocol in (2, 3, 4, 5):  # re-pickled copies with str keys
        files[f"protocol{protocol}"] = pickle.dumps({key.decode(): value for key, value in reference.items()}, protocol)
    for name, raw in files.items():
        (tmp_path / name).write_bytes(raw)
        got_images, got_labels = read_cifar_batch(tmp_path / name)
        assert np.array_equal(got_images, images) and got_labels.tolist() == labels, name


def test_a_batch_of_object_arrays_or_unequal_counts_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), dtype=object), b"labels": [1]}, protocol=2))
    with pytest.raises(DataError, match="data_batch_1: .*dtype object holds Python objects"):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [1]}, protocol=2))
    with pytest.raises(DataError, match="data_batch_1: 2 images but 1 labels"):
        read_cifar_batch(path)
